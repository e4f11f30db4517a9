"""fit under torchrun: 2 CPU processes (gloo) give the prompt one process gives with the same global batch."""

import subprocess
import sys

import pytest
from conftest import interrupt_on_call
import torch
from safetensors.torch import load_file


def _fit_args(lm_dir, data, out):
    return ["fit", "--data", str(data), "--field", "question", "--model", str(lm_dir), "--encoder", "lm-mean",
            "--parameterization", "mc", "--prompt-length", "4", "--mlp-hidden", "8", "--steps", "4",
            "--batch-size", "6", "--lr", "0.03", "--warmup", "1", "--precision", "fp32", "--device", "cpu",
            "--out", str(out)]


def test_two_process_fit_equals_one_process(lm_dir, small_jsonl, tmp_path):
    env_cmd = [sys.executable, "-m", "synthsteer.cli"]
    one = subprocess.run([*env_cmd, *_fit_args(lm_dir, small_jsonl, tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "synthsteer.cli", *_fit_args(lm_dir, small_jsonl, tmp_path / "two")],
                         capture_output=True, text=True, timeout=600)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "not available" in two.stderr.lower():
        pytest.skip("torch.distributed has no gloo backend here")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_file(str(tmp_path / d / "prompt.safetensors")) for d in ("one", "two"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_resume_under_torchrun_continues_a_checkpoint(lm_dir, small_jsonl, tmp_path, monkeypatch):
    import synthsteer.softsrv.fit as fit_mod
    from synthsteer.cli import main

    args = _fit_args(lm_dir, small_jsonl, tmp_path / "p") + ["--save-every", "2"]
    full = subprocess.run([sys.executable, "-m", "synthsteer.cli", *_fit_args(lm_dir, small_jsonl, tmp_path / "full")],
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    interrupt_on_call(monkeypatch, fit_mod, "example_loss", 3)
    with pytest.raises(SystemExit):
        main(args)  # killed in step 3, after the checkpoint of step 2
    assert (tmp_path / "p" / "train_state" / "state.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                              "29518", "-m", "synthsteer.cli", *args, "--resume"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (load_file(str(tmp_path / d / "prompt.safetensors")) for d in ("full", "p"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


def test_two_process_student_equals_one_process(lm_dir, tmp_path):
    """`student` under torchrun: each rank trains its share of every batch; rank 0 scores and writes."""
    args = ["student", "--model", str(lm_dir), "--template", "Question: {question}\nAnswer: {answer}",
            "--train", "real=builtin:gsm8k/train", "--eval", "builtin:gsm8k/test", "--eval-limit", "4", "--sizes", "8",
            "--steps", "3", "--batch-size", "4", "--dropout", "0", "--precision", "fp32", "--metrics", "loss",
            "--max-length", "96", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "synthsteer.cli", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29519", "-m", "synthsteer.cli", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=600)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "not available" in two.stderr.lower():
        pytest.skip("torch.distributed has no gloo backend here")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_file(str(tmp_path / d / "students" / "real-8-s0" / "adapter_model.safetensors")) for d in ("one", "two"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    assert (tmp_path / "two" / "results.json").exists()
