"""Generation run directories: a manifest plus append-only JSON-lines shards.

    RUN/manifest.json          method, every setting, their hash, fingerprints, version
    RUN/records-00000.jsonl    one record per line: id, text, provenance

A rerun of the same command opens the same directory, skips ids already written and adds only what
is missing. Records are appended a batch at a time and fsynced; a torn last line (a kill in the
middle of a write) is cut off on open, so nothing is lost or duplicated beyond that batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .artifacts import read_json, write_json
from .errors import SynthsteerError
from .logs import log


def settings_hash(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _repair(shard: Path) -> list[dict]:
    """Records of a shard; a torn or unparsable tail is truncated away."""
    raw = shard.read_bytes()
    records, good = [], 0
    for line in raw.split(b"\n")[:-1] if raw.endswith(b"\n") else raw.split(b"\n"):
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        good += len(line) + 1
    if good != len(raw):
        with open(shard, "r+b") as f:
            f.truncate(good)
    return records


class RunDir:
    """An open run directory.

    Args:
        path: the run directory (created when missing).
        settings: everything that determines the records; a rerun must pass the same.
        info: the rest of the manifest (fingerprints, version, requested n): may change on rerun.
        shard_size: records per shard file.
    """

    def __init__(self, path: str | Path, settings: dict, info: dict | None = None, shard_size: int = 10_000):
        self.path = Path(path)
        self.shard_size = shard_size
        self.hash = settings_hash(settings)
        manifest_path = self.path / "manifest.json"
        if manifest_path.exists():
            old = read_json(manifest_path)
            if old.get("settings_hash") != self.hash:
                diff = sorted(k for k in set(old.get("settings", {})) | set(settings)
                              if old.get("settings", {}).get(k) != settings.get(k))
                raise SynthsteerError(f"--out {self.path}: this run was made with other settings "
                                      f"(differs in {', '.join(diff) or 'version'}); use a new --out")
        elif self.path.exists() and any(p.name not in (".lock", "manifest.json.tmp", "log.txt")
                                        for p in self.path.iterdir()):
            # (a run killed while writing its first manifest leaves only those two: it starts afresh)
            raise SynthsteerError(f"--out {self.path}: exists and is not a synthsteer run directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.path)
        self.manifest = {"settings": settings, "settings_hash": self.hash, **(info or {})}
        write_json(manifest_path, self.manifest)
        self.shards = sorted(self.path.glob("records-*.jsonl"))
        self.ids: set[str] = set()
        self._count_last = 0
        for shard in self.shards:
            recs = _repair(shard)
            self.ids.update(r["id"] for r in recs)
            self._count_last = len(recs)

    def append(self, records: list[dict]) -> None:
        fresh = [r for r in records if r["id"] not in self.ids]
        while fresh:
            if not self.shards or self._count_last >= self.shard_size:
                self.shards.append(self.path / f"records-{len(self.shards):05d}.jsonl")
                self._count_last = 0
            room = self.shard_size - self._count_last
            chunk, fresh = fresh[:room], fresh[room:]
            with open(self.shards[-1], "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk))
                f.flush()
                os.fsync(f.fileno())
            self._count_last += len(chunk)
            self.ids.update(r["id"] for r in chunk)

    def finish(self, **info) -> None:
        self.manifest.update(info, records=len(self.ids))
        write_json(self.path / "manifest.json", self.manifest)

    def close(self) -> None:
        """Release the run's lock (also released by the OS when the process dies, kill -9 included)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _lock(path: Path):
    """An exclusive lock on the run directory, so that two writers never append to one run."""
    import fcntl

    f = open(path / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SynthsteerError(f"--out {path}: another process is writing this run right now; wait for it, "
                              "or use another --out") from None
    return f


def read_run(path: str | Path) -> list[dict]:
    """All records of a run directory, in index order."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        raise SynthsteerError(f"{path}: not a synthsteer run directory (no manifest.json)")
    records = []
    for shard in sorted(path.glob("records-*.jsonl")):
        for lineno, line in enumerate(shard.read_text(encoding="utf-8").split("\n"), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise SynthsteerError(f"{shard}:{lineno}: malformed record line") from None
    return sorted(records, key=lambda r: r.get("index", 0))


def checked_records(path: str | Path) -> list[dict]:
    """`read_run` for readers of a finished run (eval, filter): one warning line when the run is
    unfinished (fewer records than it was asked for) or holds an id twice; one record per id."""
    
    records = read_run(path)
    n = read_json(Path(path) / "manifest.json").get("n_requested")
    seen, unique = set(), []
    for r in records:  # the first record of each id, in index order
        if r["id"] not in seen:
            seen.add(r["id"])
            unique.append(r)
    problems = []
    if len(unique) < len(records):
        problems.append(f"{len(records) - len(unique)} duplicate ids (kept the first of each)")
    if n is not None and len(unique) < n:
        problems.append(f"unfinished: {len(unique)} of {n} records (rerun its generate command to complete it)")
    if problems:
        log.warning(f"{path}: {'; '.join(problems)}")
    return unique
