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
import re
import stat
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SynthsteerError, first_line
from .options import json_fields, refuse_undecodable
from .records import RecordFormat, template_fields

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
    fields: tuple[str, ...] | None = None  # a json record's fields (--format json --fields): text is the object
    rename: tuple[tuple[str, str], ...] | None = None  # row fields renamed (old, new) before anything reads them

    def __post_init__(self):
        if self.fields is not None:
            if self.field or self.template:
                raise SynthsteerError("--format json takes --fields, not --field or --template")
            object.__setattr__(self, "fields", RecordFormat.json(tuple(self.fields)).fields)
        if not self.source or not str(self.source).strip():
            raise SynthsteerError("--data: empty; give a file, a `datasets` directory, a hub name or builtin:NAME")
        if self.subset and (self.source.startswith("builtin:") or _is_local(self.source)):
            raise SynthsteerError(f"--subset {self.subset}: only hub datasets have subsets; --data {self.source} is not one")
        if self.field and self.template:
            raise SynthsteerError("--field and --template exclude each other: give one")
        _check_split(self.source, self.split)
        for flag_name, value in (("--field", self.field), ("--template", self.template)):
            if value:  # a spec an artifact recorded skips the config's check
                refuse_undecodable(flag_name, value)
        if self.template is not None:
            template_fields(self.template)  # refuses a malformed or unsafe template now, not at record 1

    @classmethod
    def of(cls, options, *, source: str | None = None, limit: int | None = None) -> DataSpec:
        """The spec that `options` (a `DataOptions`: --data, --field, --template, --format, --fields, --split,
        --subset) name; with `source`, that source's rows made into text the way `options` say (a
        `TextOptions`: eval's real data, filter's references)."""
        fields = json_fields(options)
        rename = None
        if options.rename:
            pairs = [item.split("=", 1) for item in options.rename]
            if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
                raise SynthsteerError(f"--rename {' '.join(options.rename)}: expected OLD=NEW")
            rename = tuple((old.strip(), new.strip()) for old, new in pairs)
        if source is not None:
            return cls(source, field=options.field, template=options.template, fields=fields, rename=rename)
        return cls(options.data, field=options.field, template=options.template, split=options.split, limit=limit,
                   subset=options.subset, fields=fields, rename=rename)

    def as_dict(self) -> dict:
        """What artifacts record; `subset` only when set, so records made before it existed keep their settings."""
        d = asdict(self)
        for key in ("subset", "fields", "rename"):  # only when set: artifacts made before them keep their settings
            if d[key] is None:
                del d[key]
            elif key != "subset":
                d[key] = [list(x) if isinstance(x, tuple) else x for x in d[key]]
        return d

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
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # never valid UTF-8: Excel's and Notepad's "Unicode" text
        raise SynthsteerError(f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise SynthsteerError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {col})"
        ) from None
    return text.removeprefix("\ufeff")


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json's object hook: a key given twice would otherwise keep its last value without a word."""
    row = dict(pairs)
    if len(row) != len(pairs):
        keys = [k for k, _ in pairs]
        raise _DuplicateKey(next(k for i, k in enumerate(keys) if k in keys[:i]))
    return row


_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys)  # built once: json.loads(s, hook) builds one per call
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how one gets into JSON text that is valid UTF-8
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def _line_of(text: str, pattern: str) -> int:
    """The line of the first match of `pattern` outside JSON strings (1 when none)."""
    for m in re.finditer(f"{_JSON_STRING}|({pattern})", text):
        if m.group(1):
            return text.count("\n", 0, m.start()) + 1
    return 1


def _deepest_line(text: str) -> int:
    """The line where JSON text first reaches its deepest nesting."""
    depth = deepest = where = 0
    for m in re.finditer(rf"{_JSON_STRING}|[\[{{\]}}]", text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, m.start()
        elif c in "]}":
            depth -= 1
    return text.count("\n", 0, where) + 1


def _parse_json(text: str, path: Path, lineno: int | None = None, what: str = "JSON"):
    """One JSON document, every failure a FILE:LINE error; `lineno`: the line of a .jsonl file `text` is
    (None: `text` is a whole .json file)."""
    at = lambda line: f"{path}:{line if lineno is None else lineno}"
    try:
        return _JSON.decode(text)
    except json.JSONDecodeError as e:
        raise SynthsteerError(f"{at(e.lineno)}: malformed {what} ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise SynthsteerError(f"{at(_deepest_line(text))}: JSON nested too deeply") from None
    except ValueError:  # int() refuses integers longer than this (a guard against quadratic parsing)
        digits = sys.get_int_max_str_digits()
        line = _line_of(text, rf"-?[0-9]{{{digits + 1},}}(?![.eE0-9])")
        raise SynthsteerError(f"{at(line)}: a number with more than {digits} digits") from None
    except _DuplicateKey as e:
        where = path if lineno is None else at(lineno)  # json does not say where in a whole file
        raise SynthsteerError(f"{where}: key {e.args[0]!r} appears twice in one object") from None


def _lone_surrogate(row: dict) -> str | None:
    """The field of `row` whose text (or nested text, or key) holds a lone surrogate, else None.
    JSON can spell one (an unpaired \\ud800 escape); no UTF-8 text can hold it, so hashing, tokenizing or
    writing it would fail later."""
    for key, value in row.items():
        stack = [key, value]
        while stack:  # not recursive: the nesting may be as deep as json allows
            v = stack.pop()
            if isinstance(v, str):
                if _SURROGATE.search(v):
                    return key
            elif isinstance(v, dict):
                stack += [*v, *v.values()]
            elif isinstance(v, list):
                stack += v
    return None


def _surrogate_error(where: str, field_name: str) -> SynthsteerError:
    return SynthsteerError(f"{where}: field {field_name!r} holds a lone surrogate (an unpaired \\ud800-\\udfff "
                           "escape), which is not text")


def _read_jsonl(raw: bytes, path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    for lineno, line in enumerate(_decode(raw, path).split("\n"), 1):  # not splitlines: U+2028 is valid inside JSON strings
        if limit is not None and len(rows) >= limit:
            break
        line = line.removeprefix("\ufeff")  # files joined with `cat` keep each one's byte-order mark
        if not line.strip():
            continue
        row = _parse_json(line, path, lineno, "JSON line")
        if not isinstance(row, dict):
            raise SynthsteerError(f"{path}:{lineno}: expected a JSON object, got {_json_kind(row)}")
        if _SURROGATE_ESCAPE.search(line) and (bad := _lone_surrogate(row)) is not None:
            raise _surrogate_error(f"{path}:{lineno}", bad)
        rows.append(row)
    return rows


def _read_json(raw: bytes, path: Path, limit: int | None = None) -> list[dict]:
    text = _decode(raw, path)
    rows, key = _parse_json(text, path), None
    if isinstance(rows, dict):  # {"data": [...]}, {"version": 1, "data": [...]} and similar wrappers
        lists = [k for k, v in rows.items() if isinstance(v, list)]
        if len(lists) == 1:
            key, rows = lists[0], rows[lists[0]]
    if not isinstance(rows, list):
        raise SynthsteerError(f"{path}: expected a JSON list of objects, got {_json_kind(rows)}")
    of = f" of {key!r}" if key else ""
    check_surrogates = _SURROGATE_ESCAPE.search(text) is not None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SynthsteerError(f"{path}: item {i}{of} is {_json_kind(row)}, expected an object")
        if check_surrogates and (bad := _lone_surrogate(row)) is not None:
            raise _surrogate_error(f"{path}: item {i}{of}", bad)
    return rows[:limit]


CSV_FIELD_LIMIT = 256 << 20  # csv's default, 128 KiB, is shorter than real passages; this still bounds a runaway quote


def _read_csv(raw: bytes, path: Path, limit: int | None = None) -> list[dict]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    # strict: a quote never closed is an error, not a cell that swallows the rest of the file
    reader = csv.reader(io.StringIO(_decode(raw, path), newline=""), strict=True)
    header, rows, start = None, [], 1  # start: the line the record being read begins on
    try:
        for cells in reader:
            at, start = f"{path}:{start}", reader.line_num + 1
            if not cells:
                continue  # a blank line, skipped as csv.DictReader does
            if header is None:
                header = cells
                named = [c for c in cells if c]  # unnamed ('') columns, e.g. Excel's trailing ones, cannot be asked for
                if len(set(named)) != len(named):
                    twice = next(c for i, c in enumerate(named) if c in named[:i])
                    raise SynthsteerError(f"{at}: column {twice!r} appears twice in the header")
                continue
            if limit is not None and len(rows) >= limit:
                break
            if len(cells) != len(header):
                more = "more" if len(cells) > len(header) else "fewer"
                raise SynthsteerError(f"{at}: row has {more} cells than the header has columns")
            rows.append(dict(zip(header, cells)))
    except csv.Error as e:
        why = "a quote in the row starting here is never closed" if "unexpected end of data" in str(e) else str(e)
        raise SynthsteerError(f"{path}:{start}: malformed CSV ({why})") from None
    return _typed_columns(rows)


# the shapes pandas reads as numbers; int() and float() also take "1_000", "٣" and "infinity"
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")
_FLOAT = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _typed_columns(rows: list[dict]) -> list[dict]:
    """CSV cells are text; a column whose every non-empty cell is an integer (or a number) becomes
    one, as `datasets` and pandas would read it (labels 0/1 stay labels, not strings)."""
    for column in (rows[0] if rows else {}):
        cells = [row[column] for row in rows if row[column] != ""]
        for kind, shape in ((int, _INT), (float, _FLOAT)):
            if not all(shape.fullmatch(c) for c in cells):
                continue
            try:
                values = [kind(c) for c in cells]
            except ValueError:  # an integer longer than int() takes (sys.get_int_max_str_digits): text
                continue
            if kind is float and not all(math.isfinite(v) for v in values):
                break  # "nan"/"inf" words are text here
            for row in rows:
                row[column] = kind(row[column]) if row[column] != "" else None
            break
    return rows


def _read_parquet(path: Path, limit: int | None = None) -> list[dict]:
    import pyarrow.parquet as pq

    unreadable = lambda e: SynthsteerError(f"{path}: not a readable parquet file ({first_line(e)})")
    try:  # pyarrow raises several types for corrupt files
        parquet = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001
        raise unreadable(e) from None
    names = parquet.schema_arrow.names
    if len(set(names)) != len(names):  # to_pylist would keep the last column of a name
        twice = next(c for i, c in enumerate(names) if c in names[:i])
        raise SynthsteerError(f"{path}: column {twice!r} appears twice")
    try:
        if limit is None:
            return parquet.read().to_pylist()
        rows = []
        for batch in parquet.iter_batches(batch_size=min(limit, 65536)):
            rows += batch.to_pylist()
            if len(rows) >= limit:
                break
        return rows[:limit]
    except Exception as e:  # noqa: BLE001
        raise unreadable(e) from None


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _kind(path: Path) -> str:
    """The format suffix under any compression suffix: data.jsonl.gz -> .jsonl."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in OPENERS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _path(source: str) -> Path:
    try:
        return Path(source).expanduser()
    except RuntimeError:  # ~someone, and no such user
        raise SynthsteerError(f"{source}: cannot expand {source.split('/')[0]} (no such user)") from None


def _what(path: Path) -> str | None:
    """'dir', 'file', 'other' (a pipe or a device) or None when nothing is there."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name
        return None
    except OSError as e:  # a name too long, a loop of links, a parent we may not enter
        raise SynthsteerError(f"{path}: cannot look at it ({e.strerror or e})") from None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _is_local(source: str) -> bool:
    path = _path(source)
    return (_what(path) is not None or glob.has_magic(source) or source.startswith((".", "/", "~"))
            or _kind(path) in (*READERS, ".parquet"))


def is_plain_file(source: str) -> bool:
    """Whether a source is a file or a glob of files (not builtin, a datasets directory or a hub name)."""
    if source.startswith("builtin:"):
        return False
    path = _path(source)
    what = _what(path)
    return what in ("file", "other") or (what is None and (glob.has_magic(source) or _kind(path) in (*READERS, ".parquet")))


def _check_split(source: str, split: str | None) -> None:
    """Refuse a --split that would be ignored (a file has no splits) or that contradicts builtin:NAME/SPLIT."""
    if not split:
        return
    if source.startswith("builtin:"):
        named = source.partition("/")[2]
        if named and named != split:
            raise SynthsteerError(f"--split {split} contradicts --data {source}")
        return
    if is_plain_file(source):
        raise SynthsteerError(f"--split {split}: only builtin, datasets-directory and hub sources have splits; "
                              f"--data {source} is a file")


def _read_file(path: Path, limit: int | None) -> list[dict]:
    kind, opener = _kind(path), OPENERS.get(path.suffix.lower())
    if kind == ".parquet":
        if opener is not None:
            raise SynthsteerError(f"{path}: a compressed parquet file; parquet compresses its own columns, "
                                  "so decompress it (or write it with compression='zstd')")
        return _read_parquet(path, limit)
    if kind not in READERS:
        what = f"unknown file type {kind!r}" if kind else "no file type suffix"
        raise SynthsteerError(f"{path}: {what}; use .jsonl, .json, .csv or .parquet (optionally .gz, .bz2 or .xz)")
    try:
        if opener is None:
            raw = path.read_bytes()
        else:
            with opener(path, "rb") as f:
                raw = f.read()
    except (EOFError, lzma.LZMAError, zlib.error) as e:
        raise SynthsteerError(f"{path}: could not decompress ({e})") from None
    except OSError as e:
        if e.errno is None:  # gzip and bz2 report a corrupt stream as an OSError without an errno
            raise SynthsteerError(f"{path}: could not decompress ({e})") from None
        raise SynthsteerError(f"{path}: cannot read it ({e.strerror})") from None
    return READERS[kind](raw, path, limit)


def _read_datasets_dir(path: Path, split: str | None, limit: int | None = None) -> list[dict]:
    import datasets

    if not any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
        raise SynthsteerError(f"{path}: a directory, but not a dataset written by `datasets` (save_to_disk)")
    unreadable = lambda e: SynthsteerError(f"{path}: not a readable datasets directory ({first_line(e)})")
    try:  # metadata that is not JSON or names missing .arrow files fails in many ways, deep inside `datasets`
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise unreadable(e) from None
    if isinstance(ds, datasets.DatasetDict):
        if not ds:
            raise SynthsteerError(f"{path}: the dataset is empty (a DatasetDict without splits)")
        split = split or ("train" if "train" in ds else next(iter(ds)))
        if split not in ds:
            raise SynthsteerError(f"{path}: no split {split!r}; splits: {', '.join(ds)}")
        ds = ds[split]
    elif split and split != str(ds.split or ""):  # one Dataset has no splits to choose from: not silently ignored
        what = f"one dataset (split {ds.split})" if ds.split else "one dataset, not a DatasetDict of splits"
        raise SynthsteerError(f"--split {split}: {path} holds {what}")
    try:  # a truncated .arrow file is only read here
        return (ds.select(range(min(limit, len(ds)))) if limit is not None else ds).to_list()
    except Exception as e:  # noqa: BLE001
        raise unreadable(e) from None


def _read_builtin(name: str, split: str | None, limit: int | None = None) -> list[dict]:
    if "/" in name:
        name, named = name.split("/", 1)
        split = named or split  # builtin:gsm8k/ names no split
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
    except Exception as e:  # noqa: BLE001  (no network, no such repo, a bad script: many types)
        raise SynthsteerError(
            f"{name}{f' (subset {subset})' if subset else ''}: no such file, and loading it as a hub dataset "
            f"failed ({first_line(e)})"
        ) from None
    return ds.to_list()


def load_rows(source: str, split: str | None = None, *, subset: str | None = None,
              limit: int | None = None) -> list[dict]:
    """Raw rows (dicts) of a source, before any text is made from them; at most `limit`."""
    _check_split(source, split)  # DataSpec checks it too; load_rows is also called without one
    if source.startswith("builtin:"):
        rows = _read_builtin(source[len("builtin:"):], split, limit)
    else:
        path = _path(source)
        what = _what(path)
        if what == "dir":
            rows = _read_datasets_dir(path, split, limit)
        elif what == "file":
            rows = _read_file(path, limit)
        elif what == "other":  # reading a pipe would wait for a writer, perhaps forever
            raise SynthsteerError(f"{source}: not a regular file (a pipe or a device); save the data to a file")
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
    if spec.template is None and spec.fields is None and text_field is None:
        text_field = infer_text_field(rows, spec.source)
    needed = list(spec.fields) if spec.fields else template_fields(spec.template) if spec.template else [text_field]
    records, seen = [], {}
    names = dict(spec.rename or ())
    for i, original in enumerate(rows):
        row = {names.get(k, k): v for k, v in original.items()} if names else original
        missing = [f for f in needed if f not in row]
        if missing:
            raise SynthsteerError(f"{spec.source}: record {i + 1} has no field {missing[0]!r}; "
                                  f"fields: {', '.join(row)}")
        if spec.fields:
            text = json.dumps({f: row[f] if isinstance(row[f], str) else str(row[f]) for f in spec.fields},
                              ensure_ascii=False)
        elif spec.template:
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
        rid = _row_id(original, id_field)
        if rid is None:
            rid = content_id(original)  # ids do not change with --rename
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


def records_digest(records: list[Record]) -> str:
    """A hash of records' ids and texts: a resumed run continues only on the data it began with."""
    h = hashlib.sha256()
    for r in records:
        for part in (r.id, r.text):
            b = part.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()
