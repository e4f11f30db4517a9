import json

import pytest

from synthsteer.cli import main
from synthsteer.data import BUILTIN, DataSpec, load_records
from synthsteer.errors import SynthsteerError


def test_builtin_splits_and_sizes():
    assert len(load_records("builtin:gsm8k")) == 7473
    assert len(load_records("builtin:gsm8k/test")) == 1319
    mbpp = {s: load_records(f"builtin:mbpp/{s}") for s in BUILTIN["mbpp"].splits}
    assert [len(mbpp[s]) for s in ("prompt", "test", "validation", "train")] == [10, 500, 90, 374]
    assert min(r.meta["task_id"] for r in mbpp["train"]) == 601 and max(r.meta["task_id"] for r in mbpp["test"]) == 510
    boolq = load_records("builtin:boolq/train") + load_records("builtin:boolq/heldout")
    assert len(boolq) == 3270 and len({r.id for r in boolq}) == 3270
    tox = load_records("builtin:jigsaw", split="heldout", field="comment_text")
    assert {r.meta["label_name"] for r in tox} == {"toxic", "non-toxic"}


def test_template_and_ids(tmp_path):
    recs = load_records("builtin:gsm8k", template="Q: {question}\nA: {answer}", limit=2)
    assert recs[0].text.startswith("Q: Natalia") and "\nA: " in recs[0].text
    assert recs[0].id == "gsm8k-train-00000"
    p = tmp_path / "x.jsonl"
    p.write_text('{"t": "a"}\n{"t": "b"}\n{"t": "a"}\n')
    ids = [r.id for r in load_records(str(p), field="t")]
    assert len(set(ids)) == 3 and ids == [r.id for r in load_records(str(p), field="t")]


def test_formats_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"r{i}", "text": f"example {i}", "label": i % 2} for i in range(5)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text("id,text,label\n" + "".join(f"{r['id']},{r['text']},{r['label']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    for name in ("a.jsonl", "a.json", "a.csv", "a.parquet", "hf"):
        recs = load_records(str(tmp_path / name), field="text")
        assert [(r.id, r.text) for r in recs] == [(r["id"], r["text"]) for r in rows], name


@pytest.mark.parametrize("content,expected", [
    (b"", "the dataset is empty"),
    (b'{"text": "ok"}\n{"text": broken}\n', "bad.jsonl:2: malformed JSON line"),
    (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "bad.jsonl:2: not valid UTF-8 (byte 0xe9"),
    (b'{"text": "ok"}\n{"other": "x"}\n', "record 2 has no field 'text'; fields: other"),
])
def test_data_errors(tmp_path, content, expected):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(SynthsteerError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_records(str(p), field="text")


def test_missing_file_and_builtin():
    with pytest.raises(SynthsteerError, match="nope.jsonl: no such file"):
        load_records("data/nope.jsonl", field="text")
    with pytest.raises(SynthsteerError, match="no such bundled dataset"):
        load_records("builtin:nothing")
    with pytest.raises(SynthsteerError, match="no split 'dev'"):
        load_records(DataSpec("builtin:gsm8k", split="dev"))


@pytest.mark.parametrize("content,expected", [
    (None, "missing.jsonl: no such file"),
    (b"", "the dataset is empty"),
    (b'{"text": 1}\n{oops\n', ":2: malformed JSON line"),
    (b'{"text": "\xff"}\n', ":1: not valid UTF-8"),
    (b'{"question": "q"}\n', "has no field 'text'; fields: question"),
])
def test_cli_data_errors_exit_2_with_one_line(tmp_path, capsys, content, expected):
    p = tmp_path / ("missing.jsonl" if content is None else "d.jsonl")
    if content is not None:
        p.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", str(p), "--field", "text", "--out", str(out), "--model", "tiny"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing half-written


def test_datasets_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["datasets"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "builtin:gsm8k/train" in text and "7,473" in text and "builtin:jigsaw/heldout" in text


def test_unreachable_hub_dataset_is_a_clear_error():
    with pytest.raises(SynthsteerError, match="no-such-org/no-such-set: no such file, and loading it as a hub dataset failed"):
        load_records("no-such-org/no-such-set", field="text")


def test_text_field_is_inferred_when_unambiguous(tmp_path):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("review,label\ngreat phone,1\nbroke in a day,0\n")
    assert [r.text for r in load_records(str(reviews))] == ["great phone", "broke in a day"]  # the only text column
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "a", "title": "x"}\n{"text": "b", "title": "y"}\n')
    assert [r.text for r in load_records(str(texts))] == ["a", "b"]  # a column named text
    both = tmp_path / "b.jsonl"
    both.write_text('{"q": "a", "a": "x", "n": 1}\n')
    with pytest.raises(SynthsteerError, match=r"--field NAME or --template; string fields: q, a"):
        load_records(str(both))


def test_compressed_files_globs_and_early_limit(tmp_path):
    import bz2
    import gzip
    import lzma

    rows = [{"id": f"r{i}", "text": f"example {i}"} for i in range(6)]
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "a.jsonl.bz2").write_bytes(bz2.compress(lines))
    (tmp_path / "a.csv.xz").write_bytes(lzma.compress(b"id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in rows).encode()))
    for name in ("a.jsonl.gz", "a.jsonl.bz2", "a.csv.xz"):
        assert [r.text for r in load_records(str(tmp_path / name))] == [r["text"] for r in rows], name
    # a malformed line inside a compressed file is still FILE:LINE
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n{oops\n'))
    with pytest.raises(SynthsteerError, match=r"bad.jsonl.gz:2: malformed JSON line"):
        load_records(str(tmp_path / "bad.jsonl.gz"))
    (tmp_path / "trunc.jsonl.gz").write_bytes(gzip.compress(lines)[:20])
    with pytest.raises(SynthsteerError, match=r"trunc.jsonl.gz: could not decompress"):
        load_records(str(tmp_path / "trunc.jsonl.gz"))
    # shards in name order; --limit stops reading: the broken line after the limit is never parsed
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (shards / "part-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:]) + "{broken\n")
    assert [r.id for r in load_records(str(shards / "part-*.jsonl"), limit=4)] == ["r0", "r1", "r2", "r3"]
    with pytest.raises(SynthsteerError, match=r"part-1.jsonl:4: malformed JSON line"):
        load_records(str(shards / "part-*.jsonl"))
    with pytest.raises(SynthsteerError, match=r"nothing-\*.jsonl: no file matches"):
        load_records(str(shards / "nothing-*.jsonl"))
    assert len(load_records("builtin:gsm8k", limit=7)) == 7


def test_hub_subset_and_slice_go_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, *, split=None, **kw):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"sentence": "a fine film", "label": 1}, {"sentence": "dull", "label": 0}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recs = load_records("glue", subset="sst2", limit=2)
    assert calls == [("glue", "sst2", "train[:2]")] and [r.text for r in recs] == ["a fine film", "dull"]
    load_records(DataSpec("glue", subset="sst2", split="validation[:10%]", limit=5))
    assert calls[-1] == ("glue", "sst2", "validation[:10%]")  # a slice the user gave is kept
    with pytest.raises(SynthsteerError, match="--subset sst2: only hub datasets have subsets"):
        DataSpec("builtin:gsm8k", subset="sst2")
    assert "subset" not in DataSpec("x.jsonl").as_dict() and DataSpec("glue", subset="sst2").as_dict()["subset"] == "sst2"
