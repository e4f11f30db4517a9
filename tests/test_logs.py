"""Logs people can read: progress as a few plain lines off a terminal, --quiet, OUT/log.txt."""

import json
import re

import pytest

from synthsteer.cli import main


def _run(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0


def test_generate_piped_prints_ten_lines_and_keeps_a_log(tmp_path, capsys):
    out = tmp_path / "run"
    _run(["generate", "--method", "plain", "--model", "tiny", "--n", "40", "--batch-size", "2", "--max-new-tokens", "4",
          "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    progress = [line for line in err if line.startswith("generate plain: ")]
    assert len(progress) == 10 and progress[-1].startswith("generate plain: 40/40 samples (100%)")
    assert all("\r" not in line and "tok_s" in line and "eta" in line for line in progress)
    assert not [line for line in err if "Loading weights" in line or "Warning" in line]  # third-party chatter
    log = (out / "log.txt").read_text()
    assert "40/40 samples (100%)" in log and re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d DEBUG generate plain", log, re.M)
    # a rerun appends to the same log; --quiet prints nothing but the result line
    _run(["generate", "--method", "plain", "--model", "tiny", "--n", "44", "--batch-size", "2", "--max-new-tokens",
          "4", "--device", "cpu", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("run written to")
    assert "44/44 samples (100%)" in (out / "log.txt").read_text()


def test_fit_progress_shows_the_loss_config_json_records(tmp_path, capsys):
    out = tmp_path / "p"
    _run(["fit", "--data", "builtin:gsm8k", "--field", "question", "--limit", "16", "--model", "tiny", "--encoder",
          "lm-mean", "--steps", "5", "--batch-size", "4", "--prompt-length", "4", "--mlp-hidden", "8", "--device",
          "cpu", "--out", str(out), "--log-level", "warning"])
    assert capsys.readouterr().err == ""  # --log-level warning: no progress lines on screen
    last = [line for line in (out / "log.txt").read_text().splitlines() if "fit mc: 5/5 steps" in line][-1]
    final = json.loads((out / "config.json").read_text())["final_loss"]
    assert f" loss {final:,.3f} " in last and "loss_ema" in last


def test_faiss_lines_from_mauve_go_to_the_log_not_the_terminal(capfd, caplog):
    import numpy as np

    from synthsteer.metrics import mauve_score

    caplog.set_level("DEBUG", logger="synthsteer")
    rng = np.random.default_rng(0)
    mauve_score(rng.normal(size=(100, 8)), rng.normal(size=(60, 8)), seeds=(0,))
    assert "clustering" not in capfd.readouterr().err  # faiss writes to descriptor 2 directly
    assert "WARNING clustering 160 points to 6 centroids" in caplog.text


def test_the_python_api_keeps_debug_lines_off_the_terminal(tmp_path, capsys):
    from synthsteer.logs import log, log_file

    with log_file(tmp_path):  # no CLI setup(): the state a script or notebook is in
        log.debug("internal detail")
        log.info("a note for the user")
    err = capsys.readouterr().err
    assert "a note for the user" in err and "internal detail" not in err
    assert "internal detail" in (tmp_path / "log.txt").read_text()


def test_the_python_api_honours_quiet_and_restores_the_console(tmp_path, capsys):
    import warnings

    from transformers.utils import logging as hf_logging

    from synthsteer import GenerateConfig, generate
    from synthsteer.logs import log

    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()  # a notebook's own settings
    hf_logging.enable_progress_bar()
    showwarning = warnings.showwarning
    try:
        generate(GenerateConfig(model="tiny", method="plain", n=2, max_new_tokens=3, device="cpu",
                                out=str(tmp_path / "q"), quiet=True))
        assert capsys.readouterr().err == ""  # no progress, no notes, no weight-loading bars
        log.info("after the call")
        assert "after the call" in capsys.readouterr().err  # quiet ended with the call that asked for it
        assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
        assert warnings.showwarning is showwarning  # Python warnings reach the notebook again
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()
