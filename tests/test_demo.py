import json

import pytest

from synthsteer.cli import main


def test_demo_end_to_end_small(tmp_path, capsys):
    """The demo pipeline at toy size: fit, generate both ways, score, print the table."""
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), "--steps", "4", "--n", "24", "--heldout", "24", "--max-new-tokens", "16",
              "--device", "cpu"])
    assert e.value.code == 0
    result = json.loads((out / "demo.json").read_text())
    for name in ("softsrv mc", "unsteered", "real (train questions)"):
        m = result[name]["mauve"]
        assert 0 < m["mean"] <= 1 and len(m["scores"]) == 3 and m["n_q"] == 24
        assert 0 <= result[name]["distinct_2"] <= 1
    printed = capsys.readouterr().out
    assert "MAUVE" in printed and "softsrv mc" in printed
    assert len(list((out / "softsrv").glob("records-*.jsonl"))) == 1
