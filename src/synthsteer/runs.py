"""Generation run directories: a manifest plus append-only JSON-lines shards.

    RUN/manifest.json          method, every setting, their hash, fingerprints, version
    RUN/records-00000.jsonl    one record per line: id, text, its fields (a record format), provenance
    RUN/rejects-00000.jsonl    samples whose text did not parse into the record format, with the reason

A rerun of the same command opens the same directory, skips ids already written and adds only what
is missing. Records are appended a batch at a time and fsynced; a torn last line (a kill in the
middle of a write) is cut off on open, so nothing is lost or duplicated beyond that batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

from .artifacts import Claim, read_json, write_json
from .errors import SynthsteerError
from .logs import log


def settings_hash(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _check_record(r, where: str) -> dict:
    """A record as every reader needs it: an object with a string id, a non-negative integer index, a
    string text and, when present, an object of provenance; anything else is damage, named."""
    if not isinstance(r, dict):
        raise SynthsteerError(f"{where}: a record must be a JSON object, not a {type(r).__name__}")
    for key, kinds, what in (("id", str, "a string"), ("text", str, "a string"), ("index", int, "an integer")):
        if key not in r:
            raise SynthsteerError(f"{where}: the record has no {key!r}")
        if not isinstance(r[key], kinds) or isinstance(r[key], bool):
            raise SynthsteerError(f"{where}: the record's {key!r} is not {what}")
    if r["index"] < 0:
        raise SynthsteerError(f"{where}: the record's 'index' is negative")
    if "provenance" in r and not isinstance(r["provenance"], dict):
        raise SynthsteerError(f"{where}: the record's 'provenance' is not an object")
    return r


def _parse_line(line: bytes, where: str) -> dict:
    try:
        return _check_record(json.loads(line.decode("utf-8")), where)
    except UnicodeDecodeError:
        raise SynthsteerError(f"{where}: not valid UTF-8") from None
    except RecursionError:
        raise SynthsteerError(f"{where}: JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, and ints beyond Python's digit limit
        raise SynthsteerError(f"{where}: malformed record line (not JSON)") from None


def _repair(shard: Path) -> list[dict]:
    """Records of a shard being appended to. A torn last line (a kill in the middle of a write: no
    newline yet) is cut off; a damaged line anywhere else is an error, never a truncation, so that
    no whole record is ever dropped."""
    raw = shard.read_bytes()
    lines = raw.split(b"\n")
    torn = lines.pop()  # b"" when the shard ends with a newline
    records = [_parse_line(line, f"{shard}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if torn:
        with open(shard, "r+b") as f:
            f.truncate(len(raw) - len(torn))
    return records


def shards(path: Path, pattern: str = "records-*.jsonl") -> list[Path]:
    """A run's shard files, in order. synthsteer writes them as plain files: a symlink (it could lead to
    a file of the user's, which an append would grow), a directory, a FIFO or a device is refused."""
    found = sorted(Path(path).glob(pattern))
    for shard in found:
        if shard.is_symlink() or not shard.is_file():
            raise SynthsteerError(f"{shard}: not a plain file (a symlink, directory, FIFO or device); a run's shards "
                                  "are files synthsteer wrote")
    return found


def read_manifest(path: Path) -> dict:
    """A run's manifest.json, checked: an object with its settings (an object naming the method) and
    their hash; every damage is one line naming the file and the field."""
    where = Path(path) / "manifest.json"
    if where.is_symlink() or (where.exists() and not where.is_file()):
        raise SynthsteerError(f"{where}: not a plain file (a symlink, directory or device)")
    try:
        manifest = read_json(where)
    except FileNotFoundError:
        raise SynthsteerError(f"{path}: not a synthsteer run directory (no manifest.json)") from None
    except (OSError, ValueError, RecursionError):
        raise SynthsteerError(f"{where}: not readable JSON (torn or edited)") from None
    if not isinstance(manifest, dict):
        raise SynthsteerError(f"{where}: must be a JSON object, not a {type(manifest).__name__}")
    settings = manifest.get("settings")
    if not isinstance(settings, dict):
        raise SynthsteerError(f"{where}: {'lacks' if settings is None else 'has a malformed'} 'settings' entry")
    if not isinstance(manifest.get("settings_hash"), str):
        raise SynthsteerError(f"{where}: lacks its 'settings_hash'")
    for key, kinds in (("method", str), ("lm", dict), ("data", dict), ("seed", int)):
        if key in settings and settings[key] is not None and not isinstance(settings[key], kinds):
            raise SynthsteerError(f"{where}: settings.{key} is a {type(settings[key]).__name__}, "
                                  f"not a{'n' if kinds is int else ''} {'object' if kinds is dict else kinds.__name__}")
    n = manifest.get("n_requested")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise SynthsteerError(f"{where}: n_requested is not a count")
    return manifest


class _Shards:
    """One family of a run's append-only shards (`records-*.jsonl` or `rejects-*.jsonl`): the ids on
    disk, a torn last line cut on open, whole lines appended, fsynced."""

    def __init__(self, path: Path, family: str, shard_size: int):
        self.path, self.family, self.shard_size = path, family, shard_size
        self.files = shards(path, f"{family}-*.jsonl")
        self.ids: set[str] = set()
        self.reasons: Counter = Counter()
        self._count_last = 0
        for shard in self.files:
            recs = _repair(shard)
            self.ids.update(r["id"] for r in recs)
            self.reasons.update(r["reject"] for r in recs if isinstance(r.get("reject"), str))
            self._count_last = len(recs)

    def append(self, records: list[dict]) -> None:
        fresh = [r for r in records if r["id"] not in self.ids]
        while fresh:
            if not self.files or self._count_last >= self.shard_size:
                self.files.append(self.path / f"{self.family}-{len(self.files):05d}.jsonl")
                self._count_last = 0
            room = self.shard_size - self._count_last
            chunk, fresh = fresh[:room], fresh[room:]
            data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk).encode("utf-8")
            # unbuffered, so that on a full disk nothing is left in a buffer for close() to write after the cut
            with open(self.files[-1], "ab", buffering=0) as f:
                size = f.seek(0, os.SEEK_END)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[f.write(view):]
                    os.fsync(f.fileno())
                except OSError as e:  # a full disk: the shard goes back to its last whole record
                    f.truncate(size)
                    raise OSError(e.errno, e.strerror, str(self.files[-1])) from None
            self._count_last += len(chunk)
            self.ids.update(r["id"] for r in chunk)
            self.reasons.update(r["reject"] for r in chunk if "reject" in r)


class RunDir:
    """An open run directory, locked against other writers until `close()`.

    Args:
        path: the run directory (created when missing; an existing one must be a synthsteer run).
        settings: everything that determines the records; a rerun must pass the same.
        info: the rest of the manifest (fingerprints, version, requested n): may change on rerun.
        shard_size: records per shard file.
        inputs: what the command reads: the run may not be, contain or sit inside any of them.
        guards: facts a rerun must share that are not settings (the data's hash): recorded on the
            first run, compared on every later one.
    """

    def __init__(self, path: str | Path, settings: dict, info: dict | None = None, shard_size: int = 10_000,
                 inputs=(), guards: dict | None = None):
        self.path = Path(path)
        self.shard_size = shard_size
        self.hash = settings_hash(settings)
        self.claim = Claim(self.path, "run", inputs=inputs, verb="add records to")
        manifest_path = self.path / "manifest.json"
        old = read_manifest(self.path) if manifest_path.exists() else None
        if old is not None and old["settings_hash"] != self.hash:
            diff = sorted(k for k in set(old["settings"]) | set(settings) if old["settings"].get(k) != settings.get(k))
            raise SynthsteerError(f"--out {self.path}: this run was made with other settings "
                                  f"(differs in {', '.join(diff) or 'version'}); use a new --out")
        recorded = (old or {}).get("guards", {})
        for key, value in (guards or {}).items():
            if isinstance(recorded, dict) and key in recorded and recorded[key] != value:
                raise SynthsteerError(f"--out {self.path}: this run began on other data ({key} differs: the data "
                                      "changed since); restore it, or use a new --out")
        self.claim.open()  # locked before a torn line is cut: only the one writer repairs
        try:
            self.kept = _Shards(self.path, "records", shard_size)
            self.rejected = _Shards(self.path, "rejects", shard_size)
            self.manifest = {"settings": settings, "settings_hash": self.hash, **(info or {}),
                             "guards": {**(recorded if isinstance(recorded, dict) else {}), **(guards or {})}}
            write_json(manifest_path, self.manifest)
        except BaseException as e:
            self.claim.close(failed=isinstance(e, (SynthsteerError, OSError)))
            raise

    @property
    def ids(self) -> set[str]:
        """The ids of the records on disk (rejects not included)."""
        return self.kept.ids

    def append(self, records: list[dict]) -> None:
        """Append a block's records; one carrying a `reject` reason goes to the rejects shards."""
        self.kept.append([r for r in records if "reject" not in r])
        self.rejected.append([r for r in records if "reject" in r])

    def finish(self, **info) -> None:
        self.manifest.update(info, records=len(self.kept.ids))
        if self.rejected.ids:
            self.manifest.update(rejects=len(self.rejected.ids), reject_reasons=dict(self.rejected.reasons.most_common()))
        write_json(self.path / "manifest.json", self.manifest)

    def close(self) -> None:
        """Release the run's lock (also released by the OS when the process dies, kill -9 included)."""
        self.claim.close()


def read_records(path: str | Path, family: str = "records") -> list[dict]:
    """Every record line of a run (`family="rejects"`: every reject), checked (UTF-8, a JSON object with
    id, index and text), in file order."""
    records = []
    for shard in shards(path, f"{family}-*.jsonl"):
        raw = shard.read_bytes()
        for lineno, line in enumerate(raw.split(b"\n"), 1):
            if line.strip():
                records.append(_parse_line(line, f"{shard}:{lineno}"))
    return records


def read_run(path: str | Path) -> list[dict]:
    """All records of a run directory, in index order (the manifest and every line checked)."""
    path = Path(path)
    read_manifest(path)
    records = sorted(read_records(path), key=lambda r: r["index"])
    for a, b in zip(records, records[1:]):
        if a["index"] == b["index"] and a["id"] != b["id"]:  # a run writes one record per index
            raise SynthsteerError(f"{path}: index {a['index']} holds two records ({a['id']!r} and {b['id']!r}); "
                                  "records of another run were put into it")
    return records


def checked_records(path: str | Path) -> list[dict]:
    """`read_run` for readers of a finished run (eval, filter): one warning line when the run is
    unfinished (fewer records than it was asked for) or holds an id twice; one record per id."""
    records = read_run(path)
    n = read_manifest(Path(path)).get("n_requested")
    seen, unique = set(), []
    for r in records:  # the first record of each id, in index order
        if r["id"] not in seen:
            seen.add(r["id"])
            unique.append(r)
    problems = []
    if len(unique) < len(records):
        problems.append(f"{len(records) - len(unique)} duplicate ids (kept the first of each)")
    rejects = len({r["id"] for r in read_records(path, "rejects")})  # samples that did not parse count as done
    if n is not None and len(unique) + rejects < n:
        problems.append(f"unfinished: {len(unique) + rejects} of {n} {'samples' if rejects else 'records'} (rerun its "
                        "generate command to complete it)")
    if problems:
        log.warning(f"{path}: {'; '.join(problems)}")
    return unique


def split_name(item: str) -> tuple[str, str]:
    """A command-line set or run, `NAME=PATH` or `PATH`, as (name, path); eval and export read the
    same items, so they share this one rule. It splits at the first '=' unless the whole item is an
    existing path or starts like one (builtin:, /, ., ~): a file or run named `a=b` stays itself.
    Unnamed, the name is the basename (a data file's without its extension)."""
    if "=" in item and not item.startswith(("builtin:", "/", ".", "~")) and not Path(item).exists():
        name, path = item.split("=", 1)
        if name:
            return name, path
    base = Path(item.rstrip("/"))
    return (base.stem if base.suffix in (".jsonl", ".json", ".csv", ".parquet") else base.name) or item, item
