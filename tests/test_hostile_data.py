"""Hostile data files: each must be refused with one `error:` line naming the file and line (or the
flag), never a traceback, and never be read silently wrong. The accepted neighbours of each case
(a long CSV passage, a surrogate pair, a split on a builtin set) are checked below the table."""

from __future__ import annotations

import bz2
import gzip
import os
from pathlib import Path

import pytest
from hostile import Case, check_table

from synthsteer.data import DataSpec, load_records, load_rows
from synthsteer.errors import SynthsteerError

DEEP = "[" * 100_000 + "]" * 100_000  # far past json's recursion limit
BIG = "9" * 5000  # past int()'s 4300-digit limit


def build(d: Path) -> dict[str, str]:
    """Write the hostile files into `d`; returns name -> path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir()
    files = {
        # CSV
        "short.csv": "question,answer\nq1,a1\nq2\n",
        "long.csv": "question,answer\nq1,a1,extra\n",
        "unclosed.csv": 'question,answer\nq1,a1\nq2,"a2\nq3,a3\n',
        "junk_after_quote.csv": 'question,answer\n"q1"x,a1\n',
        "dup_header.csv": "question,question\nq1,a1\n",
        "utf16.csv": "question\nq1\n".encode("utf-16"),
        # JSON lines
        "deep.jsonl": '{"question": "q"}\n{"question": "q", "d": ' + DEEP + "}\n",
        "bigint.jsonl": '{"question": "q"}\n{"question": "q", "n": ' + BIG + "}\n",
        "negbigint.jsonl": '{"question": "q", "n": -' + BIG + "}\n",
        "surrogate.jsonl": '{"question": "ok"}\n{"question": "a\\ud800b"}\n',
        "low_surrogate.jsonl": '{"question": "a\\uDC00"}\n',
        "swapped_pair.jsonl": '{"question": "\\ude00\\ud83d"}\n',
        "nested_surrogate.jsonl": '{"question": "ok", "meta": {"tags": ["x", "\\ud800"]}}\n',
        "surrogate_key.jsonl": '{"question": "ok", "\\udc00": 1}\n',
        "dup_key.jsonl": '{"question": "a", "question": "b"}\n',
        "null_line.jsonl": '{"question": "q"}\nnull\n',
        "list_line.jsonl": '[{"question": "q"}]\n',
        # JSON
        "deep.json": '[\n  {"question": "q"},\n  {"question": "q", "d": ' + DEEP + "}\n]\n",
        "bigint.json": '[\n  {"question": "q"},\n  {"question": "q", "n": ' + BIG + "}\n]\n",
        "big_scalar.json": BIG,
        "surrogate.json": '[{"question": "ok"}, {"question": "\\ud800"}]',
        "dup_key.json": '[{"question": "a", "question": "b"}]',
        "list_item.json": '[{"question": "q"}, [1, 2]]',
        "wrapped_strings.json": '{"question": "q", "tags": ["a", "b"]}',
        "string.json": '"just text"',
        # parquet
        "text.parquet": "question\nq1\n",
        "empty.parquet": "",
        # compression and file types
        "not_gzip.jsonl.gz": '{"question": "q"}\n',
        "not_bz2.jsonl.bz2": '{"question": "q"}\n',
        "no_suffix": '{"question": "q"}\n',
        "notes.txt": "question\n",
    }
    for name, content in files.items():
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    pq.write_table(pa.table({"question": [f"q{i}" for i in range(50)]}), d / "good.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["question", "question"]),
                   d / "dup_column.parquet")
    good = (d / "good.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(good[: len(good) // 2])
    (d / "zipped.parquet.gz").write_bytes(gzip.compress(good))
    corrupt = bytearray(gzip.compress(b'{"question": "q"}\n' * 1000))
    corrupt[30:40] = bytes(10)  # a deflate stream broken in the middle: zlib.error, not OSError
    (d / "corrupt.jsonl.gz").write_bytes(bytes(corrupt))
    (d / "short.csv.bz2").write_bytes(bz2.compress(b"question,answer\nq1\n"))
    (d / "dir.jsonl").mkdir()
    os.mkfifo(d / "fifo.jsonl")
    (d / "loop.jsonl").symlink_to(d / "loop.jsonl")
    (d / "locked.jsonl").write_text('{"question": "q"}\n')  # unreadable: see the monkeypatch below (tests run as root)
    (d / "plain.jsonl").write_text('{"question": "q"}\n')
    (d / "plain.csv").write_text("question\nq\n")
    build_datasets_dirs(d)
    return {p.name: str(p) for p in d.iterdir()}


def build_datasets_dirs(d: Path) -> None:
    import shutil

    import datasets

    rows = [{"question": f"q{i}"} for i in range(4)]
    one, two = d / "one", d / "two"
    datasets.Dataset.from_list(rows).save_to_disk(str(one))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows)}).save_to_disk(str(two))
    breakages = {
        "state_not_json": (one, lambda p: (p / "state.json").write_text("{oops")),
        "info_not_json": (one, lambda p: (p / "dataset_info.json").write_text("{oops")),
        "state_a_list": (one, lambda p: (p / "state.json").write_text("[1]")),
        "arrow_missing": (one, lambda p: [f.unlink() for f in p.glob("*.arrow")]),
        "arrow_truncated": (one, lambda p: [f.write_bytes(f.read_bytes()[:100]) for f in p.glob("*.arrow")]),
        "dict_not_json": (two, lambda p: (p / "dataset_dict.json").write_text("{oops")),
        "dict_split_missing": (two, lambda p: shutil.rmtree(p / "test")),
        "dict_no_splits": (two, lambda p: (p / "dataset_dict.json").write_text('{"splits": []}')),
    }
    for name, (src, breakage) in breakages.items():
        shutil.copytree(src, d / name)
        breakage(d / name)


def test_hostile_data_files_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    f = build(data)
    capsys.readouterr()  # save_to_disk's progress bars
    monkeypatch.chdir(tmp_path)
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.jsonl":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    out = str(tmp_path / "out")
    fit = lambda source, *more: ["fit", "--data", source, "--field", "question", "--model", "tiny",
                                 "--device", "cpu", "--out", out, *more]
    gen = lambda source, *more: ["generate", "--method", "hard", "--model", "tiny", "--device", "cpu",
                                 "--data", source, "--field", "question", "--out", out, *more]
    cases = [
        # 1. CSV rows that do not fit the header, and malformed CSV
        Case(fit(f["short.csv"]), "short.csv:3: row has fewer cells than the header has columns", "short CSV row"),
        Case(fit(f["short.csv.bz2"]), "short.csv.bz2:2: row has fewer cells", "short row in a compressed CSV"),
        Case(fit(f["long.csv"]), "long.csv:2: row has more cells than the header has columns", "long CSV row"),
        Case(fit(f["unclosed.csv"]), "unclosed.csv:3: malformed CSV (a quote in the row starting here is never closed)",
             "a quote that swallows the rest of the file"),
        Case(fit(f["junk_after_quote.csv"]), "junk_after_quote.csv:2: malformed CSV (',' expected", "text after a quote"),
        Case(fit(f["dup_header.csv"]), "dup_header.csv:1: column 'question' appears twice in the header",
             "a duplicate column would keep only its last cell"),
        Case(fit(f["utf16.csv"]), "utf16.csv: UTF-16 text", "Excel's 'Unicode text'"),
        # 3. nesting past the recursion limit
        Case(fit(f["deep.jsonl"]), "deep.jsonl:2: JSON nested too deeply", "deep .jsonl line"),
        Case(fit(f["deep.json"]), "deep.json:3: JSON nested too deeply", "deep .json item"),
        # 4. integers past int()'s digit limit
        Case(fit(f["bigint.jsonl"]), "bigint.jsonl:2: a number with more than 4300 digits", "5,000-digit int, .jsonl"),
        Case(fit(f["negbigint.jsonl"]), "negbigint.jsonl:1: a number with more than 4300 digits", "negative one"),
        Case(fit(f["bigint.json"]), "bigint.json:3: a number with more than 4300 digits", "5,000-digit int, .json"),
        Case(fit(f["big_scalar.json"]), "big_scalar.json:1: a number with more than 4300 digits", ".json of one number"),
        # 5. lone surrogates (valid JSON escapes, but not text)
        Case(fit(f["surrogate.jsonl"]), "surrogate.jsonl:2: field 'question' holds a lone surrogate", "\\ud800"),
        Case(fit(f["low_surrogate.jsonl"]), "low_surrogate.jsonl:1: field 'question' holds a lone surrogate",
             "\\uDC00, upper case"),
        Case(fit(f["swapped_pair.jsonl"]), "swapped_pair.jsonl:1: field 'question' holds a lone surrogate",
             "a pair in the wrong order"),
        Case(fit(f["nested_surrogate.jsonl"]), "nested_surrogate.jsonl:1: field 'meta' holds a lone surrogate",
             "in a field that is not the text: content ids hash it"),
        Case(fit(f["surrogate_key.jsonl"]), "surrogate_key.jsonl:1: field '\\udc00' holds a lone surrogate", "in a key"),
        Case(fit(f["surrogate.json"]), "surrogate.json: item 1: field 'question' holds a lone surrogate", ".json"),
        Case(gen(f["surrogate.jsonl"]), "surrogate.jsonl:2: field 'question' holds a lone surrogate", "via generate"),
        Case(["fit", "--data", f["plain.jsonl"], "--template", "\udcff{question}", "--model", "tiny", "--out", out],
             "--template '\\udcff{question}': holds bytes that are not UTF-8", "argv bytes that are not UTF-8"),
        Case(["fit", "--data", f["plain.jsonl"], "--template", "{question:>999999999}", "--model", "tiny", "--out", out],
             "asks for a width or precision over 9999", "a template that pads every record to a gigabyte"),
        # 9. other JSON shapes
        Case(fit(f["dup_key.jsonl"]), "dup_key.jsonl:1: key 'question' appears twice in one object", "duplicate key"),
        Case(fit(f["dup_key.json"]), "dup_key.json: key 'question' appears twice in one object", "duplicate key .json"),
        Case(fit(f["null_line.jsonl"]), "null_line.jsonl:2: expected a JSON object, got null", "a null line"),
        Case(fit(f["list_line.jsonl"]), "list_line.jsonl:1: expected a JSON object, got a list", "a list line"),
        Case(fit(f["list_item.json"]), "list_item.json: item 1 is a list, expected an object", "a list in the list"),
        Case(fit(f["wrapped_strings.json"]), "wrapped_strings.json: item 0 of 'tags' is a string, expected an object",
             "one object whose only list is not the rows"),
        Case(fit(f["string.json"]), "string.json: expected a JSON list of objects, got a string", "a scalar .json"),
        # parquet
        Case(fit(f["text.parquet"]), "text.parquet: not a readable parquet file", "a parquet that is text"),
        Case(fit(f["empty.parquet"]), "empty.parquet: not a readable parquet file", "an empty parquet"),
        Case(fit(f["truncated.parquet"]), "truncated.parquet: not a readable parquet file", "half a parquet"),
        Case(fit(f["zipped.parquet.gz"]), "zipped.parquet.gz: a compressed parquet file", "gzipped parquet"),
        *[Case(fit(f["dup_column.parquet"], *more), "dup_column.parquet: column 'question' appears twice",
               "two columns of one name (with --limit: it used to keep the last)") for more in ([], ["--limit", "1"])],
        # compression, file types, things that are not files
        Case(fit(f["not_gzip.jsonl.gz"]), "not_gzip.jsonl.gz: could not decompress", "not gzip"),
        Case(fit(f["not_bz2.jsonl.bz2"]), "not_bz2.jsonl.bz2: could not decompress", "not bzip2"),
        Case(fit(f["corrupt.jsonl.gz"]), "corrupt.jsonl.gz: could not decompress", "a deflate error"),
        Case(fit(f["no_suffix"]), "no_suffix: no file type suffix", "no suffix"),
        Case(fit(f["notes.txt"]), "notes.txt: unknown file type '.txt'", "unknown suffix"),
        Case(fit(f["dir.jsonl"]), "dir.jsonl: a directory, but not a dataset written by `datasets`", "a directory"),
        Case(fit(f["fifo.jsonl"]), "fifo.jsonl: not a regular file (a pipe or a device)", "a FIFO would block"),
        Case(fit(f["locked.jsonl"]), "locked.jsonl: cannot read it (Permission denied)", "PermissionError"),
        Case(fit(f["loop.jsonl"]), "loop.jsonl: cannot look at it (Too many levels of symbolic links)", "link loop"),
        # 6. datasets directories with broken metadata or data
        *[Case(fit(f[name]), f"{name}: not a readable datasets directory (", f"datasets dir: {name}")
          for name in ("state_not_json", "info_not_json", "state_a_list", "arrow_missing", "arrow_truncated",
                       "dict_not_json", "dict_split_missing")],
        Case(fit(f["dict_no_splits"]), "dict_no_splits: the dataset is empty (a DatasetDict without splits)", "no splits"),
        Case(fit(f["two"], "--split", "dev"), "two: no split 'dev'; splits: train, test", "a DatasetDict's unknown split"),
        Case(fit(f["one"], "--split", "test"), "--split test: ", "one Dataset: a split would be ignored"),
        # 7. --split with a plain file: it used to be ignored
        *[Case(fit(src, "--split", "train"), f"--split train: only builtin, datasets-directory and hub sources have "
                                             f"splits; --data {src} is a file", f"--split with {src}")
          for src in (f["plain.jsonl"], f["plain.csv"], f["good.parquet"], f["not_gzip.jsonl.gz"],
                      str(data / "plain.*"), str(data / "missing.json"), "plain.jsonl")],
        Case(gen(f["plain.jsonl"], "--split", "test"), "--split test: only builtin", "--split with a file, generate"),
        # 8. --split against builtin:NAME/SPLIT
        Case(fit("builtin:gsm8k/test", "--split", "train"), "--split train contradicts --data builtin:gsm8k/test",
             "two splits"),
        Case(gen("builtin:gsm8k/test", "--split", "train"), "--split train contradicts --data builtin:gsm8k/test",
             "two splits, generate"),
        Case(fit("builtin:gsm8k", "--split", "dev"), "builtin:gsm8k: no split 'dev'", "an unknown builtin split"),
    ]
    check_table(cases, [data, tmp_path], capsys, monkeypatch)


# ---------------------------------------------------------------- accepted neighbours


def test_long_csv_field_is_read_whole(tmp_path):
    passage = "word " * 40_000  # 200 KB, over csv's default 128 KiB field limit
    p = tmp_path / "long.csv"
    p.write_text(f'question,passage\nq1,"{passage}"\nq2,short\n')
    recs = load_records(str(p), field="passage")
    assert [len(r.text) for r in recs] == [len(passage), 5] and recs[0].text == passage


def test_csv_numbers_are_only_plain_numbers(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text(f"question,label,code,digits,big,score\n"
                 f"q1, 1 ,1_000,\u0663,{BIG},1.5\n"
                 f"q2,0,2_000,\u0664,1,2\n")
    rows = load_rows(str(p))
    assert [r["label"] for r in rows] == [1, 0]  # spaces around a number, as pandas reads them
    assert [r["code"] for r in rows] == ["1_000", "2_000"]  # int() would read 1000
    assert [r["digits"] for r in rows] == ["\u0663", "\u0664"]  # int() would read Arabic-Indic digits
    assert rows[0]["big"] == BIG  # too long for int(): the column stays text
    assert [r["score"] for r in rows] == [1.5, 2.0]


def test_csv_blank_lines_and_unnamed_columns_are_fine(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text('question,answer,,\n\nq1,"5"" screen",,\n\nq2,a2,,\n')
    rows = load_rows(str(p))
    assert [(r["question"], r["answer"]) for r in rows] == [("q1", '5" screen'), ("q2", "a2")]


def test_accepted_json_shapes(tmp_path):
    jl = tmp_path / "a.jsonl"
    # joined with cat: a BOM on every line; CRLF endings; a real surrogate pair; deep but within json's limit
    jl.write_bytes('\ufeff{"question": "a"}\r\n\ufeff{"question": "\\ud83d\\ude00", "d": [[[[1]]]]}\r\n'.encode())
    assert [r.text for r in load_records(str(jl), field="question")] == ["a", "\U0001F600"]
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"question": "q", "d": ' + "[" * 200 + "]" * 200 + "}\n")
    assert len(load_records(str(deep), field="question")) == 1
    big = tmp_path / "big.jsonl"
    big.write_text('{"question": "q", "n": ' + "9" * 4300 + "}\n")
    assert load_rows(str(big))[0]["n"] == int("9" * 4300)
    wrapped = tmp_path / "w.json"
    wrapped.write_text('{"version": "1.1", "data": [{"question": "q", "tags": ["x"]}]}')
    assert [r.text for r in load_records(str(wrapped), field="question")] == ["q"]


def test_split_is_accepted_where_there_are_splits(tmp_path):
    assert len(load_records("builtin:gsm8k/test", split="test")) == 1319  # the same split twice
    assert len(load_records(DataSpec("builtin:gsm8k", split="test"))) == 1319
    assert len(load_records("builtin:gsm8k/train", limit=3)) == 3
    assert len(load_records("builtin:gsm8k/", split="test")) == 1319  # a trailing slash names no split
    # what generation does with a recorded spec: rebuild it, with its split
    recorded = DataSpec("builtin:gsm8k/train", field="question", limit=5).as_dict()
    assert len(load_records(DataSpec(**{**recorded, "limit": 2, "split": None}))) == 2
    assert DataSpec(**DataSpec("builtin:gsm8k", split="test").as_dict()).split == "test"
    import datasets

    rows = [{"question": f"q{i}"} for i in range(3)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_records(str(tmp_path / "dd"), split="test")) == 1
    datasets.Dataset.from_list(rows, split="train").save_to_disk(str(tmp_path / "one"))
    assert len(load_records(str(tmp_path / "one"), split="train")) == 3  # the split it was saved as
    DataSpec("glue", subset="sst2", split="validation")  # a hub name keeps its split
    DataSpec(str(tmp_path / "not-yet-there"), split="train")  # may be a datasets directory


def test_paths_that_cannot_be_looked_at(tmp_path):
    # not in the CLI table: the output check (artifacts.check_disjoint) stats --data first and raises there
    with pytest.raises(SynthsteerError, match=r"cannot look at it \(File name too long\)"):
        load_records(str(tmp_path / ("x" * 300 + ".jsonl")))
    with pytest.raises(SynthsteerError, match="~no-such-user-here/x.jsonl: cannot expand ~no-such-user-here"):
        load_records("~no-such-user-here/x.jsonl")
    with pytest.raises(SynthsteerError, match="cannot expand ~no-such-user-here"):
        DataSpec("~no-such-user-here/x.jsonl", split="train")


def test_split_refusals_come_before_any_work():
    with pytest.raises(SynthsteerError, match="--split train contradicts --data builtin:mbpp/test"):
        DataSpec("builtin:mbpp/test", split="train")
    with pytest.raises(SynthsteerError, match="is a file"):
        load_rows("x.jsonl", split="train")  # load_rows is also called without a DataSpec
