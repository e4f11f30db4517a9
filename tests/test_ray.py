"""--ray: a local Ray with 2 workers writes the records a local run writes, byte for byte."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from synthsteer import GenerateConfig, generate
from synthsteer.runs import read_run

ray = pytest.importorskip("ray")
GOLDEN = Path(__file__).parent / "data" / "golden"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (generate() joins it and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("SYNTHSTEER_", "HF_"))}})
    yield
    ray.shutdown()


def _lines(run):
    return [json.dumps(r, sort_keys=True) for r in read_run(run)]


def _config(out, **kw):
    base = dict(method="softsrv", prompt=str(GOLDEN / "prompt"), context_mix=0.3, n=12, batch_size=3,
                max_new_tokens=10, seed=1, device="cpu")
    return GenerateConfig(**{**base, **kw, "out": str(out)})


def _ray(out, workers, **kw):
    return _config(out, ray=True, workers=workers, **kw)


def test_one_and_two_workers_write_the_local_records(tmp_path, capsys):
    local = generate(_config(tmp_path / "local"), progress=False)
    one = generate(_ray(tmp_path / "one", 1), progress=False)
    two = generate(_ray(tmp_path / "two", 2), progress=False)
    assert len(_lines(local)) == 12
    assert _lines(one) == _lines(local) and _lines(two) == _lines(local)
    assert "ray: 2 worker(s)" in capsys.readouterr().err
    # the engine is where records are decoded, not what they are: the same settings, the same run
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (local, two)]
    assert manifests[0]["settings_hash"] == manifests[1]["settings_hash"]


def test_steer_pool_is_independent_of_the_number_of_workers(tmp_path, small_jsonl):
    kw = dict(method="steer", prompt=None, expert=str(GOLDEN / "expert"), data=str(small_jsonl),
              field="question", negatives=3, context_mix=0.0, top_k=10)
    for lag in (0, 1):
        local = generate(_config(tmp_path / f"local{lag}", pool_lag=lag, **kw), progress=False)
        two = generate(_ray(tmp_path / f"two{lag}", 2, pool_lag=lag, **kw), progress=False)
        assert _lines(two) == _lines(local)
        # block b (records 3b .. 3b+2) draws its negatives from the real examples and blocks 0 .. b-1-lag
        synthetic = 0
        for r in read_run(local):
            for neg in r["provenance"]["negative_ids"]:
                if neg.startswith(r["id"][:8]):
                    synthetic += 1
                    assert int(neg[9:]) < (r["index"] // 3 - lag) * 3, (r["id"], neg)
        assert synthetic > 0
    assert _lines(tmp_path / "local0") != _lines(tmp_path / "local1")  # the lag is a setting of the method


def test_a_local_run_resumes_on_ray(tmp_path, monkeypatch):
    import synthsteer.engine as eng
    from conftest import interrupt_on_call

    whole = generate(_config(tmp_path / "whole"), progress=False)
    real = interrupt_on_call(monkeypatch, eng, "decode_full", 3)
    with pytest.raises(KeyboardInterrupt):
        generate(_config(tmp_path / "cut"), progress=False)
    monkeypatch.setattr(eng, "decode_full", real)
    assert len(read_run(tmp_path / "cut")) == 6
    generate(_ray(tmp_path / "cut", 2), progress=False)
    assert _lines(tmp_path / "cut") == _lines(whole)


def _worker_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray::_Worker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_killed_worker_has_its_block_retried(tmp_path, capsys):
    whole = generate(_config(tmp_path / "whole", n=40, batch_size=2, max_new_tokens=24), progress=False)
    out = tmp_path / "killed"
    result = {}
    thread = threading.Thread(target=lambda: result.update(path=generate(
        _ray(out, 2, n=40, batch_size=2, max_new_tokens=24), progress=False)))
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and not any(s.stat().st_size for s in out.glob("records-*.jsonl")):
        time.sleep(0.02)
    pids = _worker_pids()
    assert pids, "no Ray worker process found"
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=300)
    assert result.get("path") == out
    assert "a worker died on block" in capsys.readouterr().err
    assert _lines(out) == _lines(whole)  # none lost, none twice


def test_ray_flags_need_the_ray_engine(tmp_path):
    from synthsteer.errors import SynthsteerError

    with pytest.raises(SynthsteerError, match="--workers needs --ray"):
        _config(tmp_path / "x", workers=2)
    with pytest.raises(SynthsteerError, match="lm=.*ray=True"):
        generate(_ray(tmp_path / "y", 1), lm=object())
    assert not (tmp_path / "y").exists()
