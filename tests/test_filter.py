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
    with pytest.raises(SynthsteerError, match="--out must differ"):
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
