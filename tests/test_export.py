"""synthsteer export: runs into one dataset (parquet, JSON lines, a Hub-layout folder, the Hub)."""

import json
from pathlib import Path

import pytest

from synthsteer import ExportConfig, export_runs, to_dataset
from synthsteer.cli import main

RUNS = Path(__file__).parent / "data" / "golden" / "runs"


def test_two_methods_in_one_dataset():
    ds = to_dataset((f"soft={RUNS / 'softsrv'}", str(RUNS / "steer")))
    assert ds.num_rows == 12 and sorted(set(ds["method"])) == ["softsrv", "steer"]
    assert sorted(set(ds["run"])) == ["soft", "steer"]
    rows = {r["method"]: r for r in ds}
    # one schema for both: a column a method lacks is empty there
    assert rows["softsrv"]["provenance.negative_ids"] is None and rows["steer"]["provenance.negative_ids"]
    assert rows["steer"]["provenance.source_id"] is None and rows["softsrv"]["provenance.source_id"]
    settings = json.loads(rows["steer"]["settings"])
    assert settings["method"] == "steer" and settings["gamma"] == rows["steer"]["provenance.gamma"]
    assert rows["softsrv"]["model"] == "tiny" and len(rows["softsrv"]["settings_hash"]) == 16


def test_parquet_and_jsonl_files(tmp_path):
    from datasets import Dataset

    pq = export_runs(ExportConfig(runs=(str(RUNS / "plain"), str(RUNS / "hard")), to=str(tmp_path / "x.parquet")))
    back = Dataset.from_parquet(pq)
    assert back.num_rows == 12 and set(back["method"]) == {"plain", "hard"}
    lines = Path(export_runs(ExportConfig(runs=str(RUNS / "plain"), to=str(tmp_path / "x.jsonl")))).read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["method"] == "plain"
    with pytest.raises(Exception, match="already exists; pass --overwrite"):
        export_runs(ExportConfig(runs=str(RUNS / "plain"), to=str(tmp_path / "x.jsonl")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl", "x.parquet"]  # no partial files left


def _report(tmp_path):
    d = tmp_path / "eval"
    d.mkdir()
    (d / "report.json").write_text(json.dumps({
        "real": {"source": "builtin:gsm8k/test", "n": 400},
        "metrics": {"softsrv": {"mauve": {"mean": 0.5, "std": 0.01}, "distinct_2": 0.6}}}))
    return d


def test_folder_with_card_loads_with_datasets(tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    out = export_runs(ExportConfig(runs=(str(RUNS / "softsrv"), str(RUNS / "steer")), to=str(tmp_path / "ds"),
                              report=str(_report(tmp_path))))
    card = DatasetCard.load(Path(out) / "README.md")
    meta = card.data.to_dict()
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert "MIT (OpenAI)" in card.text and "0.500 ± 0.010" in card.text and '"gamma": 0.2' in card.text
    ds = load_dataset(str(out), split="train")
    assert ds.num_rows == 12 and "provenance.negative_ids" in ds.column_names


def test_hub_push_uploads_the_folder(tmp_path, monkeypatch):
    """No network here: HfApi is replaced by a stand-in that records what would be uploaded."""
    import huggingface_hub
    from huggingface_hub import DatasetCard

    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["repo"] = (repo_id, kw)

    def upload_folder(self, *, repo_id, folder_path, **kw):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls["files"] = files
        calls["card"] = DatasetCard.load(Path(folder_path) / "README.md")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = export_runs(ExportConfig(runs=str(RUNS / "softsrv"), to="hub:me/synthetic-gsm8k", private=True, split="train"))
    assert url == "https://huggingface.co/datasets/me/synthetic-gsm8k"
    assert calls["repo"] == ("me/synthetic-gsm8k", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls["files"] == ["README.md", "data/train-00000-of-00001.parquet"]
    assert calls["card"].data.to_dict()["configs"][0]["data_files"][0]["split"] == "train"
    assert "synthsteer" in calls["card"].data.to_dict()["tags"]


def test_cli_export_and_its_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(RUNS / "plain"), "--to", str(tmp_path / "p.parquet")])
    assert e.value.code == 0 and (tmp_path / "p.parquet").exists()
    for args, message in ((["export", "--to", str(tmp_path / "q.jsonl")], "give at least one run directory"),
                          (["export", str(tmp_path), "--to", str(tmp_path / "q.jsonl")], "not a synthsteer run"),
                          (["export", str(RUNS / "plain"), "--to", "hub:nope"], "use hub:ORG/NAME"),
                          (["export", f"a={RUNS / 'plain'}", f"a={RUNS / 'hard'}", "--to", str(tmp_path / "q.jsonl")],
                           "two runs share a name")):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and message in err[-1], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]


def test_name_equals_path_is_one_rule(tmp_path, monkeypatch):
    """eval's --synthetic and export's runs read NAME=PATH alike (runs.split_name)."""
    from synthsteer.export import _named
    from synthsteer.runs import split_name

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b").mkdir()  # a directory whose name holds '=': itself, not a name and a path
    for item, expected in (("mc=runs/x", ("mc", "runs/x")), ("few-shot (3)=runs/few", ("few-shot (3)", "runs/few")),
                           ("runs/x/", ("x", "runs/x/")), ("data/set.jsonl", ("set", "data/set.jsonl")),
                           ("builtin:gsm8k/test", ("test", "builtin:gsm8k/test")), ("./c=d", ("c=d", "./c=d")),
                           ("/abs/e=f", ("e=f", "/abs/e=f")), ("a=b", ("a=b", "a=b")), ("=x", ("=x", "=x")),
                           ("n=a=b", ("n", "a=b"))):
        assert split_name(item) == expected, item
    assert _named("soft=runs/x") == ("soft", Path("runs/x"))


def test_read_report_is_the_typed_report_and_names_damaged_fields(tmp_path):
    import re

    from synthsteer.errors import SynthsteerError
    from synthsteer.export import read_report

    d = _report(tmp_path)
    r = read_report(str(d))  # a report with only what the first reports had
    assert r.real.source == "builtin:gsm8k/test" and r.real.n == 400 and r.sets == {} and r.warnings == ()
    assert r.metrics["softsrv"].values == {"mauve": {"mean": 0.5, "std": 0.01}, "distinct_2": 0.6}
    base = json.loads((d / "report.json").read_text())
    for damage, message in (
            ({"sets": {"a": {"source": "x", "n": "many"}}}, "'sets.a.n' must be an integer, not str"),
            ({"warnings": ["ok", 3]}, "warnings[1] must be a string, not int"),
            ({"seconds": {"featurize": 1, "metrics": 2}}, "lacks 'seconds.total'"),
            ({"metrics": {"a": {"verdict": 1}}}, "'metrics.a.verdict' must be a string"),
            ({"metrics": {"a": {"examples": {"neighbours": [{"synthetic": "s", "real": "r"}]}}}},
             "lacks 'metrics.a.examples.neighbours[0].cosine'")):
        (d / "report.json").write_text(json.dumps({**base, **damage}))
        with pytest.raises(SynthsteerError, match=re.escape(f"--report {d}: report.json") + ".*" + re.escape(message)):
            read_report(str(d))
