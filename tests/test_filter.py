import json

import pytest

from synthsteer.cli import main
from synthsteer.errors import SynthsteerError
from synthsteer.filter import FilterConfig, filter_run
from synthsteer.runs import read_run


def _run(path, texts):
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"settings": {"method": "plain"}, "settings_hash": "h"}))
    (path / "records-00000.jsonl").write_text("".join(
        json.dumps({"id": f"r{i}", "index": i, "text": t, "provenance": {"method": "plain", "seed": 0}}) + "\n"
        for i, t in enumerate(texts)))
    return path


def test_filter_drops_short_duplicate_and_contaminated(tmp_path, capsys):
    test_q = "A baker sells 12 loaves on Monday and twice as many on Tuesday. How many loaves did the baker sell?"
    run = _run(tmp_path / "run", [
        "short one",
        "Tom has three apples and buys five more apples at the store today.",
        "tom has three apples and buys five more apples   at the store today.",  # duplicate up to case/space
        test_q,  # a copy of the test set
        "Sara reads 20 pages a day for a week and then rests. How many pages did she read in total?",
    ])
    ref = tmp_path / "test.jsonl"
    ref.write_text(json.dumps({"question": test_q}) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["filter", str(run), "--dedup", "--decontaminate", str(ref), "--field", "question",
              "--min-length", "4", "--out", str(tmp_path / "clean")])
    assert e.value.code == 0
    kept = read_run(tmp_path / "clean")
    assert [r["id"] for r in kept] == ["r1", "r4"]
    assert kept[0]["provenance"] == {"method": "plain", "seed": 0}  # provenance kept as it was
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert manifest["filter_summary"] == {"input": 5, "kept": 2, "too_short": 1, "duplicate": 1, "contaminated": 1}
    assert "kept 2 of 5" in capsys.readouterr().out


def test_filter_refuses_to_overwrite_its_input(tmp_path):
    run = _run(tmp_path / "run", ["a b c"])
    with pytest.raises(SynthsteerError, match="is the input .*; write somewhere else"):
        filter_run(FilterConfig(run=str(run), out=str(run)))


def test_unfinished_run_and_duplicate_ids_are_reported_and_deduplicated(tmp_path, capsys):
    import json

    from synthsteer.filter import FilterConfig, filter_run
    from synthsteer.runs import RunDir

    run = RunDir(tmp_path / "run", {"method": "plain"}, info={"n_requested": 5})
    recs = [{"id": f"r{i}", "index": i, "text": f"sample number {i} here"} for i in range(3)]
    run.append(recs)
    run.close()
    with open(tmp_path / "run" / "records-00000.jsonl", "a") as f:  # a duplicate line, as a broken merge leaves
        f.write(json.dumps(recs[1]) + "\n")
    summary = filter_run(FilterConfig(run=str(tmp_path / "run"), out=str(tmp_path / "out")))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {tmp_path / 'run'}: 1 duplicate ids (kept the first of each); unfinished: 3 of 5 "
                   "records (rerun its generate command to complete it)"]
    assert summary["input"] == 3 and summary["kept"] == 3


def test_label_consistent_drops_records_whose_label_the_real_data_contradicts(tmp_path, capsys):
    from synthsteer.data import load_records
    from synthsteer.runs import RunDir

    # two labels a judge can learn from 300 real rows: math word problems and Wikipedia comments
    math = [(r.text, "math") for r in load_records("builtin:gsm8k/train", limit=200)]
    talk = [(r.text, "comment") for r in load_records("builtin:jigsaw/train", field="comment_text", limit=200)]
    real = tmp_path / "real.jsonl"
    real.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in math[:150] + talk[:150]))
    unseen = [x for pair in zip(math[150:], talk[150:]) for x in pair]  # 100 rows, alternating
    swap = {"math": "comment", "comment": "math"}
    run = RunDir(tmp_path / "run", {"method": "test"}, info={"n_requested": 100})
    # the first 50 records carry their true label, the last 50 the other one
    run.append([{"id": f"r{i}", "index": i, "text": t, "label": lab if i < 50 else swap[lab], "provenance": {}}
                for i, (t, lab) in enumerate(unseen)])
    run.finish()
    run.close()
    out = tmp_path / "clean"
    with pytest.raises(SystemExit) as e:
        main(["filter", str(tmp_path / "run"), "--label-consistent", str(real), "--field", "text", "--label-field",
              "label", "--device", "cpu", "--out", str(out)])
    assert e.value.code == 0 and "label-inconsistent" in capsys.readouterr().out
    kept = {r["index"] for r in read_run(out)}
    assert len(kept & set(range(50))) >= 48 and len(kept & set(range(50, 100))) <= 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filter_summary"]["label_inconsistent"] == 100 - len(kept)
