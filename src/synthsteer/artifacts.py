"""Writing artifacts so that an interrupted run never leaves a half-written one behind.

Everything is safetensors + JSON: nothing here ever unpickles.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import SynthsteerError, first_line


def cache_root() -> Path:
    """$SYNTHSTEER_CACHE (an empty value means unset: never the current directory), else ~/.cache/synthsteer."""
    root = Path(os.environ.get("SYNTHSTEER_CACHE") or Path.home() / ".cache" / "synthsteer").expanduser()
    if root.exists() and not root.is_dir() or any(p.exists() and not p.is_dir() for p in root.parents):
        raise SynthsteerError(f"SYNTHSTEER_CACHE={root}: not a directory; point it at one (or unset it)")
    return root


def check_out(path, flag: str = "--out") -> None:
    """Refuse an output path that cannot become a directory, before any work is done or any file is
    written: an existing file, a path under a file, a symlink loop, a place this user cannot write (a
    mkdir probe in the nearest existing parent, removed at once: permission bits alone miss /proc,
    read-only mounts and root)."""
    import tempfile

    p = Path(path).expanduser()
    try:
        if not p.absolute().name:
            raise SynthsteerError(f"{flag} {path}: the file system's root; name a directory under it")
        p.resolve(strict=False)
    except RuntimeError:  # Python raises RuntimeError on a symlink loop
        raise SynthsteerError(f"{flag} {path}: a symlink loop") from None
    except OSError as e:  # a name too long, and the like
        raise SynthsteerError(f"{flag} {path}: not a usable path ({e.strerror})") from None
    try:
        if p.is_symlink() and not p.exists():
            raise SynthsteerError(f"{flag} {path}: a symlink to nothing ({os.readlink(p)})")
        if p.exists() and not p.is_dir():
            raise SynthsteerError(f"{flag} {path}: exists and is a file, not a directory")
        parent = p
        while not parent.exists() and not parent.is_symlink():
            parent = parent.parent
    except OSError as e:
        raise SynthsteerError(f"{flag} {path}: not a usable path ({e.strerror})") from None
    if not parent.is_dir():
        raise SynthsteerError(f"{flag} {path}: {parent} is a file, so nothing can be created under it")
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".synthsteer-probe-"))
    except OSError as e:
        raise SynthsteerError(f"{flag} {path}: cannot create anything in {parent} ({e.strerror})") from None


# ---------------------------------------------------------------- whose directory is it?
#
# A directory is synthsteer's only when its marker says so, and only for the kind the marker names:
# a `config.json` or a `manifest.json` proves nothing (a Hugging Face model directory has the
# first). --overwrite and resume accept a marked directory whose every entry is one its kind
# writes, and nothing else; a directory written before markers existed is accepted for resume
# (which only adds) when all of its entries fit the kind, never for replacement (which deletes).

MARKER = ".synthsteer.json"
COMMON = (MARKER, MARKER + ".tmp", ".lock", "log.txt")
KINDS: dict[str, tuple[str, ...]] = {  # the top-level entries each kind writes (glob patterns)
    "prompt": ("config.json", "config.json.tmp", "prompt.safetensors", "prompt.safetensors.tmp", "train_state",
               "train_state.partial", "train_state.old"),
    "expert": ("synthsteer_expert.json", "synthsteer_expert.json.tmp", "adapter_model.safetensors",
               "adapter_config.json", "README.md", "train_state", "train_state.partial", "train_state.old"),
    "run": ("manifest.json", "manifest.json.tmp", "records-*.jsonl", "rejects-*.jsonl"),
    "eval": ("report.json", "report.json.tmp", "report.html", "report.html.tmp"),
    "export": ("README.md", "data"),
    "student": ("results.json", "results.json.tmp", "results.html", "results.html.tmp", "untrained.json",
                "untrained.json.tmp", "students"),
    "student-model": ("synthsteer_student.json", "synthsteer_student.json.tmp", "adapter_model.safetensors",
                      "adapter_config.json", "README.md", "model.safetensors", "config.json", "generation_config.json",
                      "scores.json", "scores.json.tmp", "train_state", "train_state.partial", "train_state.old"),
}
META_FILE = {"prompt": "config.json", "expert": "synthsteer_expert.json", "run": "manifest.json",
             "eval": "report.json", "export": "README.md", "student": "results.json",
             "student-model": "synthsteer_student.json"}  # what a legacy (unmarked) directory must hold


def marker_kind(path: Path) -> str | None:
    """The kind `path`'s marker names, or None (no marker, or not one synthsteer wrote)."""
    m = _marker(path)
    kind = m.get("kind")
    return kind if isinstance(kind, str) and kind in KINDS else None


def _marker(path: Path) -> dict:
    """The marker's content ({} when there is none or it is not one synthsteer wrote)."""
    try:
        m = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return m if isinstance(m, dict) else {}


def foreign_entries(path: Path, kind: str) -> list[str]:
    """Top-level entries of `path` that a `kind` directory never holds."""
    allowed = (*COMMON, *KINDS[kind])
    return sorted(p.name for p in Path(path).iterdir() if not any(fnmatch.fnmatchcase(p.name, a) for a in allowed))


def write_marker(path: Path, kind: str, role: str | None = None) -> None:
    """Say that synthsteer wrote `path` as a `kind` (`role`: "new"/"old" for the two halves of a swap)."""
    from ._version import __version__

    write_json(Path(path) / MARKER, {"kind": kind, "synthsteer_version": __version__, "files": list(KINDS[kind]),
                                     "note": "written by synthsteer: what it may replace in this directory",
                                     **({"role": role} if role else {})})


def ownership(path: Path, kind: str) -> str:
    """'absent', 'empty', 'ours' (marked as `kind`, nothing foreign), 'legacy' (unmarked, but
    holding only what `kind` writes, its meta file included) or 'foreign'."""
    path = Path(path)
    if not path.exists():
        return "absent"
    entries = [p.name for p in path.iterdir()]
    if not entries:
        return "empty"
    if foreign_entries(path, kind):
        return "foreign"
    if marker_kind(path) == kind:
        return "ours"
    if MARKER not in entries and (path / META_FILE[kind]).exists():
        return "legacy"
    return "foreign"


def refuse_foreign(path: Path, kind: str, flag: str, verb: str) -> None:
    """Refuse to `verb` a directory that is not a `kind` synthsteer wrote, saying why."""
    other = marker_kind(path)
    strays = foreign_entries(path, kind)
    if other and other != kind:
        why = f"it is a synthsteer {other} directory, not {_a(kind)} one"
    elif strays:
        why = f"it holds {strays[0]!r}, which synthsteer did not write" + (
            f" (and {len(strays) - 1} more)" if len(strays) > 1 else "")
    elif ownership(path, kind) == "legacy":
        why = "written by an older synthsteer, without the marker that proves it; remove it yourself or use " \
              "another output"
    else:
        why = "synthsteer's marker is missing"
    raise SynthsteerError(f"{flag} {path}: not {_a(kind)} directory synthsteer wrote ({why}); refusing to {verb} it")


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def check_disjoint(out: Path, inputs, flag: str = "--out") -> None:
    """Refuse an output that is, contains or sits inside one of the command's inputs (symlinks
    resolved first): writing there could overwrite or delete what the command reads."""
    import glob

    target = Path(out).expanduser().resolve()
    paths = []
    for item in inputs:
        if item:
            item = str(item)
            paths += [(item, Path(p)) for p in glob.glob(item)] if glob.has_magic(item) else [(item, Path(item))]
    for item, src in paths:
        try:
            src = src.expanduser()
            if not src.exists():
                continue
            src = src.resolve()
        except (OSError, RuntimeError):  # a name too long, ~nosuchuser, a loop: not a path this could write into
            continue
        if target == src:
            raise SynthsteerError(f"{flag} {out}: is the input {item}; write somewhere else")
        if src in target.parents:
            raise SynthsteerError(f"{flag} {out}: lies inside the input {item}; write somewhere else")
        if target in src.parents:
            raise SynthsteerError(f"{flag} {out}: contains the input {item}; write somewhere else")


def check_not_inside_ours(out: Path, flag: str = "--out", within: Path | None = None) -> None:
    """Refuse an output inside another directory synthsteer wrote (a run, a prompt, a report): it would
    become an entry that directory never holds, or worse, one it does (an export named like a shard).
    `within`: the one directory the command itself claimed to hold its outputs (a student's models)."""
    allowed = Path(within).expanduser().resolve() if within is not None else None
    for parent in Path(out).expanduser().resolve().parents:
        kind = marker_kind(parent)
        if kind and parent != allowed:
            raise SynthsteerError(f"{flag} {out}: lies inside the synthsteer {kind} directory {parent}; write "
                                  "somewhere else")


def lock(path: Path, flag: str = "--out", what: str = "output"):
    """An exclusive lock on a directory synthsteer writes, so that two processes never write one
    output; released when the returned file is closed or the process dies (kill -9 included)."""
    import fcntl

    f = open(Path(path) / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SynthsteerError(f"{flag} {path}: another process is writing this {what} right now; wait for it, "
                              f"or use another {flag}") from None
    return f


class Claim:
    """An output directory of `kind` that this command writes: checked, then created, marked and
    locked on `open()`, released on `close()`. A command that fails before writing anything of its
    own leaves no trace: what `open()` added (the directory, its marker, its lock) is taken back.

    Args:
        path: the directory.
        kind: what it holds (a key of KINDS).
        flag: the flag that named it, for errors.
        inputs: paths the command reads; the output may not be, contain or sit inside any of them.
        verb: what the command would do to an existing directory, for errors.
        legacy_ok: accept an unmarked directory of an older synthsteer (to resume; never to replace).
        within: a directory the same command claimed, which may hold this one (`check_not_inside_ours`).
    """

    def __init__(self, path, kind: str, *, flag: str = "--out", inputs=(), verb: str = "write into",
                 legacy_ok: bool = True, within: Path | None = None):
        self.path, self.kind, self.flag = Path(path), kind, flag
        check_out(self.path, flag)
        check_disjoint(self.path, inputs, flag)
        check_not_inside_ours(self.path, flag, within)
        self.state = ownership(self.path, kind)
        self._seen = self._entries()
        if self.state == "foreign" or (self.state == "legacy" and not legacy_ok):
            refuse_foreign(self.path, kind, flag, verb)
        self._lock = None
        self._added: list[Path] = []

    def _entries(self) -> set[str]:
        return {p.name for p in self.path.iterdir()} - set(COMMON) if self.path.is_dir() else set()

    def changed_by_us(self) -> None:
        """Say that this process changed the directory since the check (a repaired swap), so that
        open() does not take it for another process's work."""
        self._seen = self._entries()

    def open(self) -> Claim:
        if self._lock is not None:
            return self
        self._before = {p.name for p in self.path.iterdir()} if self.path.exists() else set()
        try:
            if not self.path.exists():
                self._added.append(self.path)
                self.path.mkdir(parents=True)
            if not (self.path / ".lock").exists():
                self._added.append(self.path / ".lock")
            self._lock = lock(self.path, self.flag, self.kind)
            if self._entries() - self._seen:  # another process wrote here between the check and the lock
                raise SynthsteerError(f"{self.flag} {self.path}: another process wrote into it meanwhile; look at "
                                      "what it holds, then rerun")
            if marker_kind(self.path) != self.kind:
                self._added.append(self.path / MARKER)
                write_marker(self.path, self.kind)
        except BaseException:  # a full or read-only disk, a lock held elsewhere: leave no trace
            self.close(failed=True)
            raise
        return self

    def close(self, failed: bool = False) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if failed:
            self.rollback()

    def rollback(self) -> None:
        """Take back what `open()` added, when the directory holds nothing else that is new."""
        if not self._added:
            return
        created_dir = self._added[0] == self.path
        ours = {p.name for p in self._added if p != self.path}
        if created_dir:
            if all(p.name in (*ours, "log.txt") for p in self.path.iterdir()):
                shutil.rmtree(self.path, ignore_errors=True)
        elif all(p.name in ours or p.name in self._before for p in self.path.iterdir()):
            for p in self._added:
                if p != self.path:
                    p.unlink(missing_ok=True)
        self._added = []

    def __enter__(self) -> Claim:
        return self.open()

    def __exit__(self, kind, value, tb) -> None:
        # a refusal or a full disk takes back what open() added; an interrupted run keeps its log
        self.close(failed=isinstance(value, (SynthsteerError, OSError)))


def swap_paths(final: Path) -> tuple[Path, Path]:
    """Where a replacement of `final` is built (`new`) and where the old one waits while they swap
    (`old`): hidden names beside it that nobody picks for a directory of their own."""
    p = Path(final).resolve()  # `.` and `x/..` have no name to put beside
    return p.with_name(f".{p.name}.synthsteer-new"), p.with_name(f".{p.name}.synthsteer-old")


def marker_role(path: Path) -> str | None:
    role = _marker(path).get("role")
    return role if isinstance(role, str) else None


def is_swap_half(path: Path, kind: str, role: str) -> bool:
    """Whether `path` is what `swap_in` or `scratch_dir` leaves: a real directory (no link), marked as
    `kind` in `role`, holding nothing a `kind` does not write."""
    path = Path(path)
    return (path.is_dir() and not path.is_symlink() and marker_kind(path) == kind and marker_role(path) == role
            and not foreign_entries(path, kind))


def check_swap_room(final: Path, kind: str, flag: str) -> None:
    """Refuse a replacement of `final` when its swap places hold anything but synthsteer's leftovers,
    or when `final` is a symlink (the swap would replace the link, not what it points to)."""
    if Path(final).is_symlink():
        raise SynthsteerError(f"{flag} {final}: a symlink; to replace what it points to, give that directory "
                              f"({os.path.realpath(final)})")
    here = Path.cwd().resolve()
    if here == Path(final).resolve() or Path(final).resolve() in here.parents:
        raise SynthsteerError(f"{flag} {final}: holds the current directory, which cannot be swapped out; run "
                              "from outside it")
    for beside, role in zip(swap_paths(final), ("new", "old")):
        if (beside.exists() or beside.is_symlink()) and not is_swap_half(beside, kind, role):
            raise SynthsteerError(f"{flag} {final}: {beside} is in the way and synthsteer did not leave it there; "
                                  "move it away")


def scratch_dir(final: Path, kind: str, flag: str = "--out") -> Path:
    """A fresh, marked directory in which a replacement of `final` is built; the leftover of an
    earlier attempt is removed first, anything else there is refused."""
    check_swap_room(final, kind, flag)
    path = swap_paths(final)[0]
    remove_ours(path, kind, "new")
    path.mkdir(parents=True)
    write_marker(path, kind, role="new")
    return path


def swap_in(final: Path, work: Path, kind: str) -> None:
    """Replace `final` by `work` (its scratch_dir): readers see the old result or the new one, and a
    kill between the two renames is repaired by `restore_interrupted`."""
    final = Path(final).resolve()
    old = swap_paths(final)[1]
    remove_ours(old, kind, "old")
    if final.exists():
        write_marker(final, kind, role="old")  # before the rename: a kill right after it is repaired
        try:
            os.replace(final, old)
        except OSError:
            write_marker(final, kind)
            raise
    os.replace(work, final)
    write_marker(final, kind)
    remove_ours(old, kind, "old")


def remove_ours(path: Path, kind: str, role: str | None = None) -> None:
    """Delete a directory only when its marker says synthsteer wrote it as `kind` (in `role`)."""
    if is_swap_half(path, kind, role) if role else (Path(path).is_dir() and not Path(path).is_symlink()
                                                     and ownership(path, kind) == "ours"):
        shutil.rmtree(path, ignore_errors=True)


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


def restore_interrupted(path: Path, meta: str, kind: str | None = None) -> None:
    """Undo a swap that a kill cut in two: `path` already moved aside, its replacement not yet moved
    in. The old version is whole, so it comes back. A top-level output (`kind` given) waits in its
    swap place with a marker saying so (`swap_in`): a user's own directory is never moved. Inside an
    output (a checkpoint, `kind` None) the old one is `NAME.old`, as `atomic_dir` leaves it."""
    path = Path(path)
    if kind is None:
        old = path.with_name(path.name + ".old")
        if not path.exists() and (old / meta).exists():
            os.replace(old, path)
        return
    old = swap_paths(path)[1]
    if not path.exists() and not path.is_symlink() and (old / meta).exists() and is_swap_half(old, kind, "old"):
        os.replace(old, path)
        write_marker(path, kind)


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


# ---------------------------------------------------------------- reading artifacts back


def read_meta(path: Path, where: str) -> dict:
    """A JSON object an artifact records (config.json, a manifest, a report), or one line saying why not."""
    try:
        meta = read_json(path)
    except FileNotFoundError:
        raise SynthsteerError(f"{where}: {Path(path).name} is missing") from None
    except (OSError, ValueError, RecursionError):  # ValueError: JSON, UTF-8, ints beyond the digit limit
        raise SynthsteerError(f"{where}: {Path(path).name} is not valid JSON (torn or edited)") from None
    if not isinstance(meta, dict):
        raise SynthsteerError(f"{where}: {Path(path).name} must be a JSON object, not a {type(meta).__name__}")
    return meta


def need(meta: dict, key: str, kinds, where: str, *, optional: bool = False, ge: int | None = None,
         le: int | None = None, prefix: str = ""):
    """meta[key] checked: present (unless `optional`), of one of `kinds` (bool is never an int here),
    and within [ge, le]; one line naming the file's field otherwise."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if key not in meta or meta[key] is None:
        if optional:
            return None
        raise SynthsteerError(f"{where} lacks {prefix + key!r}")
    value = meta[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join({dict: "an object", list: "a list", str: "a string", int: "an integer",
                             float: "a number", bool: "true/false"}[k] for k in kinds)
        raise SynthsteerError(f"{where}: {prefix + key!r} must be {names}, not {type(value).__name__}")
    if ge is not None and value < ge or le is not None and value > le:
        raise SynthsteerError(f"{where}: {prefix + key!r} is {value}, outside [{ge}, {le}]")
    return value


def check_weights_sha(folder: Path, weights: Path, recorded, where: str) -> str:
    """The weights' sha256, which must match the one the artifact records. An artifact without one is
    refused, unless it predates synthsteer's markers (then one warning says how to re-stamp it)."""
    from .logs import log

    actual = sha256_file(weights)
    if not isinstance(recorded, str) or not recorded:
        if (Path(folder) / MARKER).exists():
            raise SynthsteerError(f"{where}: records no sha256 of {weights.name}, so its weights cannot be trusted; "
                                  f"if you trust them, re-stamp it: synthsteer stamp {folder}")
        log.warning(f"{where}: written by an older synthsteer without a sha256 of {weights.name}; if you trust it, "
                    f"re-stamp it: synthsteer stamp {folder}")
    elif actual != recorded:
        raise SynthsteerError(f"{where}: {weights.name} does not match the sha256 it records (torn or edited)")
    return actual


def tensor_shapes(path: Path, where: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a safetensors file's tensors, from its header alone (nothing allocated)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type, and OSError for short files
        raise SynthsteerError(f"{where}: {Path(path).name} is not a readable safetensors file "
                              f"({first_line(e)})") from None
