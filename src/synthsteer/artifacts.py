"""Writing artifacts so that an interrupted run never leaves a half-written one behind.

Everything is safetensors + JSON: nothing here ever unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


def check_out(path, flag: str = "--out") -> None:
    """Refuse an output path that cannot become a directory, before any work is done or any file is
    written: an existing file, a path under a file, a place this user cannot write (a mkdir probe in
    the nearest existing parent, removed at once: permission bits alone miss /proc and root)."""
    import tempfile

    from .errors import SynthsteerError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise SynthsteerError(f"{flag} {path}: exists and is a file, not a directory")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SynthsteerError(f"{flag} {path}: {parent} is a file, so nothing can be created under it")
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".synthsteer-probe-"))
    except OSError as e:
        raise SynthsteerError(f"{flag} {path}: cannot create anything in {parent} ({e.strerror})") from None


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: readers see the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def restore_interrupted(path: Path, marker: str) -> None:
    """Undo a swap that a kill cut in two: `path` already moved aside to `.old`, its replacement not
    yet moved in. The old version is whole, so it comes back (when it holds `marker`, the file
    that says synthsteer wrote it)."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / marker).exists():
        os.replace(old, path)


@contextmanager
def atomic_dir(path: Path):
    """Yield a scratch directory that replaces `path` only once the block finishes without error."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
