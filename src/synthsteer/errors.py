"""The one exception type users see.

Anything a user can fix (a missing file, a bad flag, a prompt trained for another LM) raises
`SynthsteerError`; the CLI prints its message on one line and exits with code 2. Everything else
is a bug and keeps its traceback.
"""


class SynthsteerError(Exception):
    """A user-facing error with a one-line message that names the file, line or flag at fault."""


def first_line(e: BaseException) -> str:
    """The first line of a third-party exception's message (its type when it has none), for the one
    line a SynthsteerError says."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
