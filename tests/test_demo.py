import json

import pytest

from synthsteer.cli import main


def test_demo_end_to_end_small(tmp_path, capsys):
    """The demo pipeline at toy size (on tiny; `make demo` runs it on smollm2): fit, generate four ways,
    score, print the table and a verdict computed from it."""
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), "--model", "tiny", "--train-limit", "64", "--steps", "4", "--n", "24",
              "--heldout", "24", "--max-new-tokens", "16", "--device", "cpu"])
    assert e.value.code == 0
    result = json.loads((out / "demo.json").read_text())
    assert result["model"] == "tiny" and result["fit_steps"] == 4
    methods = result["methods"]
    assert set(methods) == {"softsrv mc", "zero-shot", "few-shot (3)", "unsteered", "real (train questions)"}
    for name, row in methods.items():
        m = row["mauve"]
        assert 0 < m["mean"] <= 1 and len(m["scores"]) == 3 and m["n_q"] == 24
        assert 0 <= row["distinct_2"] <= 1 and len(row["samples"]) == 4
    # the table is eval's: the same numbers as its report, which has every metric and the ceiling
    report = json.loads((out / "eval" / "report.json").read_text())
    assert result["report"] == str(out / "eval" / "report.json") and "real vs real" in report["metrics"]
    assert report["real"]["n"] == 24 and set(report["sets"]) == set(methods)
    for name, row in methods.items():
        scored = report["metrics"][name]
        assert row["mauve"] == scored["mauve"] and row["distinct_2"] == scored["distinct_2"]
        assert set(row["samples"]) <= set(scored["examples"]["synthetic"])
    best = max((k for k in methods if k not in ("softsrv mc", "real (train questions)")),
               key=lambda k: methods[k]["mauve"]["mean"])
    assert best in result["verdict"] and "softsrv mc" in result["verdict"]
    printed = capsys.readouterr().out
    assert "MAUVE" in printed and "few-shot (3)" in printed and "verdict" in printed
    assert len(list((out / "softsrv").glob("records-*.jsonl"))) == 1
    few = json.loads((out / "few-shot" / "manifest.json").read_text())["settings"]
    assert few["shots"] == 3 and few["sampling"]["top_p"] == 0.95


def test_verdict_follows_the_numbers():
    from synthsteer.demo import verdict

    def m(mean, std=0.01):
        return {"mean": mean, "std": std}

    assert "beats every baseline" in verdict({"ours": m(0.9), "a": m(0.5), "b": m(0.7)}, "ours")
    assert "does NOT beat" in verdict({"ours": m(0.3), "a": m(0.5), "b": m(0.7)}, "ours")
    assert "no clear winner" in verdict({"ours": m(0.69, 0.05), "b": m(0.7)}, "ours")
