"""Records: the target examples every method learns from or compares against.

A source is a path (`.jsonl`, `.json` list, `.csv`, `.parquet`, each optionally `.gz`/`.bz2`/`.xz`
compressed; a glob of such files; a `datasets` directory saved with `save_to_disk`), a hub dataset
name with an optional subset (loaded through `datasets.load_dataset`), or `builtin:NAME[/SPLIT]` for
the bundled sets. Local files are parsed here rather than by `datasets` so that a bad line is reported
as FILE:LINE and nothing is cached behind the user's back; `--limit` stops reading early. Text comes
from one field or a `str.format` template over the row's fields. Every record gets a stable id: the
row's id field when it has one, else a hash of the row's content.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import hashlib
import io
import json
import lzma
import math
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SynthsteerError

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    splits: tuple[str, ...]
    field: str  # default text field
    license: str
    description: str
    label_field: str | None = None


BUILTIN: dict[str, BuiltinDataset] = {
    d.name: d
    for d in (
        BuiltinDataset("gsm8k", ("train", "test"), "question", "MIT (OpenAI)",
                       "grade-school math word problems (question, answer)"),
        BuiltinDataset("mbpp", ("train", "validation", "test", "prompt"), "text", "CC-BY-4.0 (Google)",
                       "basic Python programming tasks (text, code, test_list); split by task_id"),
        BuiltinDataset("boolq", ("train", "heldout"), "question", "CC-BY-SA-3.0",
                       "yes/no questions with passages (BoolQ dev, split by question hash)",
                       label_field="label"),
        BuiltinDataset("commonsenseqa", ("train", "dev"), "question", "MIT",
                       "5-way multiple-choice commonsense questions (question, choices, answer)"),
        BuiltinDataset("jigsaw", ("train", "heldout"), "comment_text", "labels CC0, text CC-BY-SA-3.0",
                       "balanced toxic / non-toxic Wikipedia comments (split by comment hash)",
                       label_field="label_name"),
    )
}


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class DataSpec:
    """Where records come from and how their text is made; stored with every artifact."""

    source: str
    field: str | None = None
    template: str | None = None
    split: str | None = None
    limit: int | None = None
    subset: str | None = None  # a hub dataset's configuration (`glue` + `sst2`)

    def __post_init__(self):
        if not self.source or not str(self.source).strip():
            raise SynthsteerError("--data: empty; give a file, a `datasets` directory, a hub name or builtin:NAME")
        if self.subset and (self.source.startswith("builtin:") or _is_local(self.source)):
            raise SynthsteerError(f"--subset {self.subset}: only hub datasets have subsets; --data {self.source} is not one")
        if self.field and self.template:
            raise SynthsteerError("--field and --template exclude each other: give one")
        if self.template is not None:
            template_fields(self.template)  # refuses a malformed or unsafe template now, not at record 1

    def as_dict(self) -> dict:
        """What artifacts record; `subset` only when set, so records made before it existed keep their settings."""
        d = asdict(self)
        if d["subset"] is None:
            del d["subset"]
        return d

    def describe(self) -> str:
        how = f"template {self.template!r}" if self.template else f"field {self.text_field()!r}"
        return f"{self.source} ({how})"

    def text_field(self) -> str | None:
        if self.field or self.template:
            return self.field
        if self.source.startswith("builtin:"):
            name = self.source[len("builtin:"):].split("/")[0]
            if name in BUILTIN:
                return BUILTIN[name].field
        return None


# ---------------------------------------------------------------- reading raw rows


def _decode(raw: bytes, path: Path) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise SynthsteerError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {col})"
        ) from None
    return text.removeprefix("\ufeff")


def _read_jsonl(raw: bytes, path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    for lineno, line in enumerate(_decode(raw, path).split("\n"), 1):  # not splitlines: U+2028 is valid inside JSON strings
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SynthsteerError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise SynthsteerError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_json(raw: bytes, path: Path, limit: int | None = None) -> list[dict]:
    try:
        rows = json.loads(_decode(raw, path))
    except json.JSONDecodeError as e:
        raise SynthsteerError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if isinstance(rows, dict):  # {"data": [...]} and similar single-key wrappers
        lists = [v for v in rows.values() if isinstance(v, list)]
        rows = lists[0] if len(lists) == 1 else rows
    if not isinstance(rows, list):
        raise SynthsteerError(f"{path}: expected a JSON list of objects")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SynthsteerError(f"{path}: item {i} is a {type(row).__name__}, expected an object")
    return rows[:limit]


def _read_csv(raw: bytes, path: Path, limit: int | None = None) -> list[dict]:
    reader = csv.DictReader(io.StringIO(_decode(raw, path), newline=""))
    rows = []
    for row in reader:
        if limit is not None and len(rows) >= limit:
            break
        if None in row:  # more cells than header columns
            raise SynthsteerError(f"{path}:{reader.line_num}: row has more cells than the header has columns")
        rows.append(dict(row))
    return _typed_columns(rows)


def _typed_columns(rows: list[dict]) -> list[dict]:
    """CSV cells are text; a column whose every non-empty cell is an integer (or a number) becomes
    one, as `datasets` and pandas would read it (labels 0/1 stay labels, not strings)."""
    for column in (rows[0] if rows else {}):
        cells = [row[column] for row in rows if row[column] != ""]
        for kind in (int, float):
            try:
                values = [kind(c) for c in cells]
            except ValueError:
                continue
            if kind is float and not all(math.isfinite(v) for v in values):
                break  # "nan"/"inf" words are text here
            for row in rows:
                row[column] = kind(row[column]) if row[column] != "" else None
            break
    return rows


def _read_parquet(path: Path, limit: int | None = None) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        if limit is None:
            return pq.read_table(path).to_pylist()
        rows = []
        for batch in pq.ParquetFile(path).iter_batches(batch_size=min(limit, 65536)):
            rows += batch.to_pylist()
            if len(rows) >= limit:
                break
        return rows[:limit]
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise SynthsteerError(f"{path}: not a readable parquet file ({e})") from None


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _kind(path: Path) -> str:
    """The format suffix under any compression suffix: data.jsonl.gz -> .jsonl."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in OPENERS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _is_local(source: str) -> bool:
    path = Path(source).expanduser()
    return (path.exists() or glob.has_magic(source) or source.startswith((".", "/", "~"))
            or _kind(path) in (*READERS, ".parquet"))


def _read_file(path: Path, limit: int | None) -> list[dict]:
    kind, opener = _kind(path), OPENERS.get(path.suffix.lower())
    if kind == ".parquet":
        if opener is not None:
            raise SynthsteerError(f"{path}: a compressed parquet file; parquet compresses its own columns, "
                                  "so decompress it (or write it with compression='zstd')")
        return _read_parquet(path, limit)
    if kind not in READERS:
        raise SynthsteerError(f"{path}: unknown file type {kind or path.suffix!r}; use .jsonl, .json, .csv or .parquet "
                              "(optionally .gz, .bz2 or .xz)")
    try:
        if opener is None:
            raw = path.read_bytes()
        else:
            with opener(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise SynthsteerError(f"{path}: could not decompress ({e})") from None
    return READERS[kind](raw, path, limit)


def _read_datasets_dir(path: Path, split: str | None, limit: int | None = None) -> list[dict]:
    import datasets

    if not any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
        raise SynthsteerError(f"{path}: a directory, but not a dataset written by `datasets` (save_to_disk)")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        split = split or ("train" if "train" in ds else next(iter(ds)))
        if split not in ds:
            raise SynthsteerError(f"{path}: no split {split!r}; splits: {', '.join(ds)}")
        ds = ds[split]
    return (ds.select(range(min(limit, len(ds)))) if limit is not None else ds).to_list()


def _read_builtin(name: str, split: str | None, limit: int | None = None) -> list[dict]:
    if "/" in name:
        name, split = name.split("/", 1)
    if name not in BUILTIN:
        raise SynthsteerError(f"builtin:{name}: no such bundled dataset; bundled: {', '.join(BUILTIN)}")
    info = BUILTIN[name]
    split = split or info.splits[0]
    if split not in info.splits:
        raise SynthsteerError(f"builtin:{name}: no split {split!r}; splits: {', '.join(info.splits)}")
    with lzma.open(BUILTIN_DIR / name / f"{split}.jsonl.xz", "rb") as f:
        return _read_jsonl(f.read(), BUILTIN_DIR / name / f"{split}.jsonl.xz", limit)


def _read_hub(name: str, split: str | None, subset: str | None, limit: int | None) -> list[dict]:
    import datasets

    split = split or "train"
    if limit is not None and "[" not in split:
        split = f"{split}[:{limit}]"  # `datasets` slices before anything becomes Python objects
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SynthsteerError(
            f"{name}{f' (subset {subset})' if subset else ''}: no such file, and loading it as a hub dataset "
            f"failed ({first})"
        ) from None
    return ds.to_list()


def load_rows(source: str, split: str | None = None, *, subset: str | None = None,
              limit: int | None = None) -> list[dict]:
    """Raw rows (dicts) of a source, before any text is made from them; at most `limit`."""
    if source.startswith("builtin:"):
        rows = _read_builtin(source[len("builtin:"):], split, limit)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            rows = _read_datasets_dir(path, split, limit)
        elif path.is_file():
            rows = _read_file(path, limit)
        elif glob.has_magic(source):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not files:
                raise SynthsteerError(f"{source}: no file matches")
            rows = []
            for f in files:  # in name order, so ids and --limit are the same on every machine
                rows += _read_file(f, None if limit is None else limit - len(rows))
                if limit is not None and len(rows) >= limit:
                    break
        elif _is_local(source):
            raise SynthsteerError(f"{source}: no such file")
        else:
            rows = _read_hub(source, split, subset, limit)
    if not rows:
        raise SynthsteerError(f"{source}: the dataset is empty")
    return rows


# ---------------------------------------------------------------- rows to records


def template_fields(template: str) -> list[str]:
    """The row fields a template reads. Only plain named fields are allowed: `str.format` would
    otherwise evaluate attribute and index lookups (`{question.__class__}`) and nested fields."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise SynthsteerError(f"--template {template!r}: not a valid template ({e})") from None
    names = []
    for _, name, spec, _ in parts:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise SynthsteerError(f"--template {template!r}: use named fields like {{question}}, not positional ones")
        if not name.isidentifier():
            raise SynthsteerError(f"--template {template!r}: {{{name}}} is not a plain field name (no attributes or "
                                  "indexes)")
        if spec and "{" in spec:
            raise SynthsteerError(f"--template {template!r}: nested fields in a format spec are not allowed")
        names.append(name)
    if not names:
        raise SynthsteerError(f"--template {template!r}: names no field (use {{field}})")
    return names


def _row_id(row: dict, id_field: str) -> str | None:
    value = row.get(id_field)
    return None if value is None or value == "" else str(value)


def content_id(row: dict) -> str:
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def infer_text_field(rows: list[dict], source: str) -> str:
    """The text column when it is unambiguous: one named `text`, else the only column holding strings
    (in the first 100 rows); otherwise an error that lists the columns."""
    if all("text" in row for row in rows[:100]):
        return "text"
    strings = [k for k in rows[0] if all(isinstance(row.get(k), str) for row in rows[:100])]
    if len(strings) == 1:
        return strings[0]
    raise SynthsteerError(f"{source}: say which text to use with --field NAME or --template; "
                          f"{'string ' if strings else ''}fields: {', '.join(strings or rows[0])}")


def make_records(rows: list[dict], spec: DataSpec, id_field: str = "id") -> list[Record]:
    text_field = spec.text_field()
    if spec.template is None and text_field is None:
        text_field = infer_text_field(rows, spec.source)
    needed = template_fields(spec.template) if spec.template else [text_field]
    records, seen = [], {}
    for i, row in enumerate(rows):
        missing = [f for f in needed if f not in row]
        if missing:
            raise SynthsteerError(f"{spec.source}: record {i + 1} has no field {missing[0]!r}; "
                                  f"fields: {', '.join(row)}")
        if spec.template:
            try:
                text = spec.template.format(**row)
            except (ValueError, TypeError) as e:
                raise SynthsteerError(f"{spec.source}: record {i + 1}: --template {spec.template!r} does not apply "
                                      f"({e})") from None
        else:
            text = row[text_field]
            if not isinstance(text, str):
                kind = "null" if text is None else f"a {type(text).__name__}"
                raise SynthsteerError(f"{spec.source}: record {i + 1}: field {text_field!r} is {kind}, not text")
        if not text.strip():
            raise SynthsteerError(f"{spec.source}: record {i + 1}: the text is empty")
        rid = _row_id(row, id_field)
        if rid is None:
            rid = content_id(row)
            if rid in seen:  # identical rows: keep both, with distinct but stable ids
                seen[rid] += 1
                rid = f"{rid}-{seen[rid]}"
            else:
                seen[rid] = 0
        elif rid in seen:
            raise SynthsteerError(f"{spec.source}: id {rid!r} appears twice (records {seen[rid] + 1} and {i + 1})")
        else:
            seen[rid] = i
        records.append(Record(rid, text, row))
    return records


def load_records(spec: DataSpec | str, *, field: str | None = None, template: str | None = None,
                 split: str | None = None, limit: int | None = None, subset: str | None = None) -> list[Record]:
    """Load a source as records with text and stable ids.

    Args:
        spec: a `DataSpec`, or a source string combined with the keyword arguments.
        field: the row field holding the text (default: the builtin set's text field).
        template: a `str.format` template over row fields, e.g. "{question}\\n{answer}".
        split: the split for builtin, `datasets` directory and hub sources (hub: slicing like "train[:10%]").
        limit: read only the first `limit` records.
        subset: a hub dataset's configuration ("sst2" of "glue").
    """
    if isinstance(spec, str):
        spec = DataSpec(spec, field=field, template=template, split=split, limit=limit, subset=subset)
    return make_records(load_rows(spec.source, spec.split, subset=spec.subset, limit=spec.limit), spec)


def builtin_table() -> list[dict]:
    """One row per bundled split: name, split, size, text field, licence."""
    out = []
    for info in BUILTIN.values():
        for split in info.splits:
            n = len(_read_builtin(info.name, split))
            out.append({"source": f"builtin:{info.name}/{split}", "records": n, "field": info.field,
                        "label": info.label_field or "", "license": info.license,
                        "description": info.description})
    return out
