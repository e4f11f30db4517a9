"""The harness of the hostile-input tables: a case is a command line that must be refused cleanly.

Refused cleanly means: exit code 2, exactly one `error:` line on stderr that contains the expected
words, no traceback, nothing new on disk under the watched directories, and every file that was
there byte-identical afterwards (a refusal must never cost the user a file).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Case:
    args: list[str]
    expected: str
    why: str = ""  # what the case stands for, shown when it fails
    env: dict[str, str] = field(default_factory=dict)


def snapshot(*dirs: Path) -> dict[str, str]:
    """Every file and directory under `dirs`: path -> sha256 of its bytes ('dir' for a directory,
    'link' for a symlink that leads nowhere readable)."""
    out = {}
    for d in dirs:
        for p in [d, *d.rglob("*")] if d.exists() else []:
            key = str(p)
            if p.is_symlink() and not p.exists():
                out[key] = "link"
            elif p.is_dir():
                out[key] = "dir"
            elif p.is_file():
                try:
                    out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
                except OSError:
                    out[key] = "unreadable"
    return out


def refusal_problems(case: Case, watched: list[Path], capsys, monkeypatch) -> str | None:
    """Run `case` through the CLI; None when it was refused cleanly, else what went wrong."""
    from synthsteer.cli import main

    before = snapshot(*watched)
    with monkeypatch.context() as mp:
        for k, v in case.env.items():
            mp.setenv(k, v)
        try:
            with pytest.raises(SystemExit) as e:
                main(case.args)
            code = e.value.code
        except BaseException as e:  # noqa: BLE001  (a traceback escaping main() is the failure we look for)
            if isinstance(e, KeyboardInterrupt):
                raise
            capsys.readouterr()
            return f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    after = snapshot(*watched)
    problems = []
    if code != 2:
        problems.append(f"exit {code}")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif case.expected not in errors[0]:
        problems.append(f"said {errors[0]!r}")
    if any("Traceback" in line for line in err):
        problems.append("traceback")
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    for what, paths in (("new", new), ("gone", gone), ("changed", changed)):
        if paths:
            problems.append(f"{what}: {paths[:3]}")
    return "; ".join(problems) or None


def check_table(cases: list[Case], watched: list[Path], capsys, monkeypatch) -> None:
    failures = []
    for case in cases:
        problem = refusal_problems(case, watched, capsys, monkeypatch)
        if problem:
            failures.append(f"{case.why or ' '.join(case.args)}: {problem} (expected {case.expected!r})")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
