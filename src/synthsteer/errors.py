"""The one exception type users see.

Anything a user can fix (a missing file, a bad flag, a prompt trained for another LM) raises
`SynthsteerError`; the CLI prints its message on one line and exits with code 2. Everything else
is a bug and keeps its traceback.
"""


class SynthsteerError(Exception):
    """A user-facing error with a one-line message that names the file, line or flag at fault."""


def require_at_least_one(config, names: tuple[str, ...]) -> None:
    """Refuse a config whose count fields are below 1, naming the flag."""
    for name in names:
        if getattr(config, name) < 1:
            raise SynthsteerError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
