"""kill -9 at known points, then rerun: nothing lost, nothing duplicated, the same result.

Each case runs the CLI in a subprocess that SIGKILLs itself at the n-th call of a function
(tests/kill_at.py), reruns the same command in this process, and compares with an uninterrupted
run: generate's records byte for byte (a torn last line repaired), fit's prompt and expert's
adapter to 1e-6 (the same steps replayed from the last checkpoint are the same arithmetic on CPU).
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthsteer.cli import main as cli_main
from synthsteer.runs import read_run

GOLDEN = Path(__file__).parent / "data" / "golden"
KILL_AT = str(Path(__file__).parent / "kill_at.py")

GENERATE = {
    "softsrv": ["--method", "softsrv", "--prompt", str(GOLDEN / "prompt"), "--context-mix", "0.3"],
    "hard": ["--method", "hard", "--model", "tiny", "--shots", "2", "--data", "builtin:gsm8k/train",
             "--field", "question"],
    "steer": ["--method", "steer", "--expert", str(GOLDEN / "expert"), "--negatives", "3",
              "--data", "builtin:gsm8k/train", "--field", "question"],
}
# (function, n-th call, kill_at options): where the process dies
GENERATE_POINTS = {
    "first-manifest": ("os:replace", 1, ["--match", "manifest.json"]),  # the first manifest not yet in place
    "before-first-write": ("synthsteer.runs:RunDir.append", 1, []),
    "mid-shard": ("os:fsync", 3, ["--torn", "37"]),  # block 2 half on disk: a torn last line
    "between-blocks": ("synthsteer.runs:RunDir.append", 3, []),
    "records-before-manifest": ("synthsteer.runs:RunDir.finish", 1, []),
}
TRAIN = {
    "fit": ["fit", "--model", "tiny", "--data", "builtin:gsm8k", "--field", "question", "--limit", "16",
            "--encoder", "lm-mean", "--parameterization", "mc", "--prompt-length", "4", "--mlp-hidden", "8"],
    "expert": ["expert", "--model", "tiny", "--data", "builtin:gsm8k", "--field", "question", "--limit", "16",
               "--r", "2", "--alpha", "4"],
}
TRAIN_POINTS = {
    "first-step": ("synthsteer.training:lr_at", 1, []),
    "after-a-checkpoint": ("synthsteer.training:lr_at", 4, []),
    "inside-a-checkpoint": ("synthsteer.training:save_optimizer", 2, []),
    "between-checkpoint-renames": ("os:replace", 1, ["--match", "train_state.old"]),
    "result-before-cleanup": ("shutil:rmtree", 1, ["--match", "train_state"]),
}
WEIGHTS = {"fit": "prompt.safetensors", "expert": "adapter_model.safetensors"}


def main(args):
    with pytest.raises(SystemExit) as exit:
        cli_main(args)
    assert exit.value.code == 0


def _killed(target, n, opts, args):
    proc = subprocess.run([sys.executable, KILL_AT, target, str(n), *opts, "--", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {target} #{n}: {proc.stderr[-1500:]}"


def _generate_args(method, out):
    return ["generate", *GENERATE[method], "--n", "10", "--batch-size", "2", "--max-new-tokens", "8", "--seed", "3",
            "--device", "cpu", "--out", str(out)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    out = {}
    for method in GENERATE:
        main(_generate_args(method, root / method))
        out[method] = root / method
    for kind, args in TRAIN.items():
        main([*args, "--steps", "6", "--save-every", "2", "--out", str(root / kind)])
        out[kind] = root / kind
    return out


def _lines(run: Path) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in read_run(run)]


@pytest.mark.parametrize("point", list(GENERATE_POINTS))
@pytest.mark.parametrize("method", list(GENERATE))
def test_generate_killed_then_rerun_writes_the_same_records(method, point, uninterrupted, tmp_path):
    out = tmp_path / "run"
    _killed(*GENERATE_POINTS[point], _generate_args(method, out))
    main(_generate_args(method, out))
    assert _lines(out) == _lines(uninterrupted[method])  # none lost, none twice, the same bytes
    shards = sorted(out.glob("records-*.jsonl"))
    assert all(s.read_bytes().endswith(b"\n") for s in shards)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == 10
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".synthsteer.json", "log.txt", "manifest.json", *(s.name for s in shards)]


@pytest.mark.parametrize("point", list(TRAIN_POINTS))
@pytest.mark.parametrize("kind", list(TRAIN))
def test_training_killed_then_resumed_gives_the_same_weights(kind, point, uninterrupted, tmp_path):
    args = [*TRAIN[kind], "--steps", "6", "--save-every", "2", "--out", str(tmp_path / kind)]
    _killed(*TRAIN_POINTS[point], args)
    main([*args, "--resume"])
    a, b = (load_file(str(d / WEIGHTS[kind])) for d in (tmp_path / kind, uninterrupted[kind]))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (k, (a[k] - b[k]).abs().max())
    meta = json.loads((tmp_path / kind / ("config.json" if kind == "fit" else "synthsteer_expert.json")).read_text())
    whole = json.loads((uninterrupted[kind] / ("config.json" if kind == "fit" else "synthsteer_expert.json"))
                       .read_text())
    assert meta["loss_history"] == whole["loss_history"]
    assert sorted(p.name for p in (tmp_path).iterdir()) == [kind]  # no .old, .partial or .new left behind
    assert not (tmp_path / kind / "train_state").exists()


def test_two_generate_processes_on_one_run_one_is_refused(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "synthsteer.cli", "generate", "--method", "plain", "--model", "tiny", "--n", "400",
            "--batch-size", "1", "--max-new-tokens", "32", "--device", "cpu", "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob("records-*.jsonl")):
            time.sleep(0.05)
        second = subprocess.run(args, capture_output=True, text=True, timeout=300)
        still_running = first.poll() is None
    finally:
        first.kill()
        first.wait()
    assert still_running, "the first writer finished before the second started; make it longer"
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == (f"error: --out {out}: another process is writing this run "
                                                      "right now; wait for it, or use another --out")
    records = read_run(out)  # whatever the first wrote before its kill: whole, in order, once each
    assert [r["index"] for r in records] == list(range(len(records))) and records
