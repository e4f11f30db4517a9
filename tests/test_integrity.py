"""Integrity without holes: what a hostile or unlucky user does to artifacts is found before it is
used (checkpoints, cache entries, LM weights, seeds), a full disk costs nothing already written, two
writers never share an output, and older artifacts keep working (with a warning) until stamped."""

from __future__ import annotations

import errno
import fcntl
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import interrupt_on_call, tiny_model
from hostile import snapshot

from synthsteer import FitConfig, SynthsteerError, fit_soft_prompt, load_soft_prompt
from synthsteer.cli import main
from synthsteer.runs import read_run

GOLDEN = Path(__file__).parent / "data" / "golden"
PLAIN = ["generate", "--method", "plain", "--model", "tiny", "--device", "cpu", "--top-k", "20", "--batch-size", "4",
         "--max-new-tokens", "12", "--seed", "5"]  # tools/make_golden.py's plain run, n aside


def test_every_bit_of_a_seed_counts_and_small_seeds_keep_their_keys():
    from synthsteer.randomness import mix32, sample_key

    assert [sample_key(2**32, i) for i in range(4)] != [sample_key(0, i) for i in range(4)]
    assert sample_key(2**63 - 1, 3) != sample_key(2**31 - 1, 3)
    for seed in (0, 5, 2**32 - 1):  # below 2**32, the derivation the first runs were written with
        assert sample_key(seed, 2) == int(mix32(mix32(torch.tensor(seed)) ^ 2))


def test_seed_two_to_the_32_gives_other_records_than_seed_0(tmp_path, capsys):
    for seed in ("0", str(2**32)):
        main_ok([*PLAIN[:-1], seed, "--n", "2", "--out", str(tmp_path / seed)])
    texts = [[r["text"] for r in read_run(tmp_path / s)] for s in ("0", str(2**32))]
    assert texts[0] != texts[1]


def main_ok(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (0, None), args


def test_lm_fingerprint_covers_more_than_the_embeddings():
    from synthsteer.lm import check_fingerprint, fingerprint

    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    b.get_input_embeddings().weight.data.copy_(a.get_input_embeddings().weight.data)
    fa, fb = fingerprint(a, "a"), fingerprint(b, "b")
    assert fa["embedding_sha256"] == fb["embedding_sha256"]
    with pytest.raises(SynthsteerError, match="differs in weights_sha256"):
        check_fingerprint(fa, fb, "--prompt p")
    # the same weights in bf16 agree with float32 (rounded alike), so --dtype does not break a prompt
    assert fingerprint(a.to(torch.bfloat16), "a")["weights_sha256"] == fa["weights_sha256"]


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    from synthsteer.encoders import encode_cached

    class Counting:
        fingerprint, calls = "counting", 0

        def encode(self, texts, progress=False):
            Counting.calls += 1
            return torch.arange(len(texts) * 3, dtype=torch.float32).reshape(len(texts), 3)

    enc, texts = Counting(), ["a", "b"]
    first = encode_cached(enc, texts, cache_dir=tmp_path)
    [entry] = list(tmp_path.rglob("*.safetensors"))
    for damage in (lambda raw: raw[: len(raw) // 2], lambda raw: raw[:-4] + b"\x00\x00\x80\x7f"):
        entry.write_bytes(damage(entry.read_bytes()))
        assert torch.equal(encode_cached(enc, texts, cache_dir=tmp_path), first)
    assert Counting.calls == 3  # each damaged entry was embedded again, then served from the rebuilt one
    encode_cached(enc, texts, cache_dir=tmp_path)
    assert Counting.calls == 3


@pytest.fixture
def interrupted_fit(lm_dir, small_jsonl, tmp_path, monkeypatch):
    """A fit of 6 steps interrupted after its checkpoint of step 2, on a copy of the data."""
    import synthsteer.softsrv.fit as fit_mod

    data = tmp_path / "q.jsonl"
    shutil.copy(small_jsonl, data)
    cfg = FitConfig(data=str(data), field="question", model=str(lm_dir), out=str(tmp_path / "p"), device="cpu",
                    steps=6, save_every=2, batch_size=4, prompt_length=4, mlp_hidden=8)
    real = interrupt_on_call(monkeypatch, fit_mod, "example_loss", 4)
    with pytest.raises(KeyboardInterrupt):
        fit_soft_prompt(cfg, progress=False)
    monkeypatch.setattr(fit_mod, "example_loss", real)
    assert (tmp_path / "p" / "train_state" / "state.json").exists()
    return cfg, tmp_path / "p"


def _damage_weights(out: Path):
    path = out / "train_state" / "prompt.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-512:] = b"\xff" * 512  # values beyond float range, the file still parses
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (_damage_weights, "prompt.safetensors of step 2 does not match the sha256 it records"),
    (lambda out: (out / "train_state" / "state.json").write_text('{"step": 2, "hist'), "state.json is not readable"),
    (lambda out: (out / "train_state" / "optimizer.safetensors").write_bytes(b"\x00" * 64),
     "optimizer.safetensors of step 2 does not match"),
    (lambda out: (out / "train_state" / "optimizer.safetensors.json").unlink(), "optimizer.safetensors.json of step 2 is missing"),
    (lambda out: (out / "train_state" / "extra.bin").write_bytes(b"x"), "extra.bin of step 2 was not written by it"),
    (lambda out: _edit(out / "train_state" / "state.json", step=9), "step 9 is not a step of this run"),
    (lambda out: _edit(out / "train_state" / "state.json", files=None), "records no sha256 of its files"),
    (lambda out: _edit(out / "train_state" / "state.json", guards="x"), "malformed guards"),
    (lambda out: _edit(out / "train_state" / "state.json", history=[float("nan"), 1.0]), "malformed loss history"),
    (lambda out: _edit(out / "train_state" / "state.json", val_history=["x"]), "malformed loss history"),
    (lambda out: _edit(out / "train_state" / "config.json", fit=5), "does not record this run's settings"),
])
def test_a_damaged_checkpoint_is_refused_with_its_step(interrupted_fit, damage, message):
    cfg, out = interrupted_fit
    damage(out)
    before = snapshot(out)
    with pytest.raises(SynthsteerError, match=message):
        fit_soft_prompt(cfg, resume=True, progress=False)
    assert snapshot(out) == before


def _edit(path: Path, **changes):
    state = json.loads(path.read_text())
    state.update(changes)
    if changes.get("files", 1) is None:
        del state["files"]
    path.write_text(json.dumps(state))


def test_a_resume_on_changed_data_is_refused_and_on_the_same_data_continues(interrupted_fit):
    cfg, out = interrupted_fit
    data = Path(cfg.data)
    original = data.read_text()
    data.write_text(original.replace("?", "!?"))
    with pytest.raises(SynthsteerError, match="trained on other data .*data_sha256 differs"):
        fit_soft_prompt(cfg, resume=True, progress=False)
    data.write_text(original)
    _, meta = load_soft_prompt(fit_soft_prompt(cfg, resume=True, progress=False))
    assert len(meta["loss_history"]) == 6 and meta["data_sha256"]


def test_a_second_fit_on_one_out_is_refused_by_the_lock(interrupted_fit):
    cfg, out = interrupted_fit
    before = snapshot(out)
    with open(out / ".lock", "a+") as other:  # another fit holding the output
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SynthsteerError, match="another process is writing this prompt right now"):
            fit_soft_prompt(cfg, resume=True, progress=False)
    assert snapshot(out) == before


def test_a_full_disk_keeps_every_whole_record_and_the_rerun_completes(tmp_path, monkeypatch, capsys):
    import os
    import types

    import synthsteer.runs as runs

    out = tmp_path / "run"
    calls = {"n": 0}

    def full(fd):
        calls["n"] += 1
        if calls["n"] == 2:  # the second block's records: the disk fills up under them
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.fsync(fd)

    # only the run's own appends see the full disk (runs.py's `os`), not the manifest or marker writes
    monkeypatch.setattr(runs, "os", types.SimpleNamespace(**{**vars(os), "fsync": full}))
    with pytest.raises(SystemExit) as e:
        main([*PLAIN, "--n", "6", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error:") and "the disk is full" in err[-1]
    assert len(read_run(out)) == 4  # the first block, whole; nothing of the second
    monkeypatch.setattr(runs, "os", os)
    main_ok([*PLAIN, "--n", "6", "--out", str(out)])
    golden = (GOLDEN / "runs" / "plain" / "records-00000.jsonl").read_text()
    assert (out / "records-00000.jsonl").read_text() == golden


def test_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    import synthsteer.artifacts as artifacts

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "run" / "manifest.json.tmp"))

    monkeypatch.setattr(artifacts, "write_json", read_only)
    monkeypatch.setattr("synthsteer.runs.write_json", read_only)
    with pytest.raises(SystemExit) as e:
        main([*PLAIN, "--n", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "the file system is read-only" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()  # what it began to create is taken back


def test_an_older_unmarked_run_resumes_and_gains_its_marker(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(GOLDEN / "runs" / "plain", run)
    (run / ".synthsteer.json").unlink()
    first = (run / "records-00000.jsonl").read_bytes()
    main_ok([*PLAIN, "--n", "7", "--out", str(run)])
    assert (run / "records-00000.jsonl").read_bytes().startswith(first) and len(read_run(run)) == 7
    assert json.loads((run / ".synthsteer.json").read_text())["kind"] == "run"


def test_an_older_prompt_warns_until_stamped(tmp_path, caplog):
    prompt = tmp_path / "prompt"
    shutil.copytree(GOLDEN / "prompt", prompt)
    (prompt / ".synthsteer.json").unlink()
    meta = json.loads((prompt / "config.json").read_text())
    del meta["weights_sha256"], meta["lm"]["weights_sha256"]
    (prompt / "config.json").write_text(json.dumps(meta))
    gen = ["generate", "--method", "softsrv", "--prompt", str(prompt), "--device", "cpu", "--n", "1",
           "--max-new-tokens", "2"]
    main_ok([*gen, "--out", str(tmp_path / "a")])
    assert "re-stamp it: synthsteer stamp" in caplog.text
    caplog.clear()
    main_ok(["stamp", str(prompt), "--device", "cpu"])
    stamped = json.loads((prompt / "config.json").read_text())
    assert stamped["weights_sha256"] and stamped["lm"]["weights_sha256"] and (prompt / ".synthsteer.json").exists()
    main_ok([*gen, "--out", str(tmp_path / "b")])
    assert "re-stamp" not in caplog.text
    # once marked, a missing sha256 is no longer an older artifact's: it is refused
    del stamped["weights_sha256"]
    (prompt / "config.json").write_text(json.dumps(stamped))
    with pytest.raises(SynthsteerError, match="records no sha256 of prompt.safetensors"):
        load_soft_prompt(prompt)


def test_export_replaces_its_own_exports_only(tmp_path):
    run = str(GOLDEN / "runs" / "plain")
    for target in ("ds", "x.jsonl", "x.parquet"):
        main_ok(["export", run, "--to", str(tmp_path / target)])
        main_ok(["export", run, "--to", str(tmp_path / target), "--overwrite"])
    assert json.loads((tmp_path / "ds" / ".synthsteer.json").read_text())["kind"] == "export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "x.jsonl", "x.parquet"]  # no .partial or .old left


def test_overwrite_never_touches_the_users_own_name_old_and_name_new(lm_dir, small_jsonl, tmp_path):
    cfg = FitConfig(data=str(small_jsonl), field="question", model=str(lm_dir), device="cpu", steps=2, batch_size=4,
                    prompt_length=4, mlp_hidden=8, out=str(tmp_path / "keep"))
    for name in ("keep.old", "keep.new", ".keep.synthsteer-old-copy"):
        fit_soft_prompt(FitConfig(**{**cfg.__dict__, "out": str(tmp_path / name), "seed": 7}), progress=False)
    fit_soft_prompt(cfg, progress=False)
    others = snapshot(*(tmp_path / n for n in ("keep.old", "keep.new", ".keep.synthsteer-old-copy")))
    fit_soft_prompt(cfg, overwrite=True, progress=False)
    assert snapshot(*(tmp_path / n for n in ("keep.old", "keep.new", ".keep.synthsteer-old-copy"))) == others
    shutil.rmtree(tmp_path / "keep")  # a swap half of a marked prompt without its role is not a leftover either
    (tmp_path / ".keep.synthsteer-old-copy").rename(tmp_path / ".keep.synthsteer-old")
    fit_soft_prompt(cfg, progress=False)
    assert (tmp_path / ".keep.synthsteer-old").is_dir() and (tmp_path / "keep" / "prompt.safetensors").exists()


def test_a_tilde_path_means_home_for_writing_as_for_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    main_ok([*PLAIN, "--n", "1", "--out", "~/run"])
    assert len(read_run(tmp_path / "home" / "run")) == 1 and not (tmp_path / "~").exists()


def test_a_cache_entry_that_is_a_directory_is_left_alone(tmp_path):
    from synthsteer.encoders import encode_cached

    class Fixed:
        fingerprint = "fixed"

        def encode(self, texts, progress=False):
            return torch.ones(len(texts), 2)

    encode_cached(Fixed(), ["a"], cache_dir=tmp_path)
    [entry] = list(tmp_path.rglob("*.safetensors"))
    entry.unlink()
    entry.mkdir()  # something else sits where the entry goes
    assert torch.equal(encode_cached(Fixed(), ["a"], cache_dir=tmp_path), torch.ones(1, 2))
    assert entry.is_dir() and not list(tmp_path.rglob("*.tmp"))


def test_an_export_in_progress_holds_its_target(tmp_path):
    run = str(GOLDEN / "runs" / "plain")
    main_ok(["export", run, "--to", str(tmp_path / "ds")])
    from synthsteer import ExportConfig, export_runs

    with open(tmp_path / "ds" / ".lock", "a+") as other:  # another export writing ds right now
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(tmp_path)
        with pytest.raises(SynthsteerError, match="another process is writing this export right now"):
            export_runs(ExportConfig(runs=(run,), to=str(tmp_path / "ds"), overwrite=True))
        assert snapshot(tmp_path) == before


def test_overwrite_from_inside_the_output_is_refused(lm_dir, small_jsonl, tmp_path, monkeypatch):
    cfg = FitConfig(data=str(small_jsonl), field="question", model=str(lm_dir), device="cpu", steps=2, batch_size=4,
                    prompt_length=4, mlp_hidden=8, out=str(tmp_path / "p"))
    fit_soft_prompt(cfg, progress=False)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path / "p")
    with pytest.raises(SynthsteerError, match="holds the current directory"):
        fit_soft_prompt(FitConfig(**{**cfg.__dict__, "out": "."}), overwrite=True, progress=False)
    assert snapshot(tmp_path) == before


def test_a_full_disk_under_a_weight_save_is_one_line(tmp_path, monkeypatch, capsys):
    """safetensors (and peft through it) raise their own error type, with the errno in its message."""
    import synthsteer.softsrv.prompt as prompt_mod

    def full(*a, **k):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(prompt_mod, "save_file", full)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", "builtin:gsm8k", "--field", "question", "--model", "tiny", "--device", "cpu",
              "--steps", "2", "--batch-size", "2", "--limit", "8", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1] == "error: the disk is full; nothing was half-written, the previous state is kept"
    assert not any("Traceback" in line for line in err)
    assert not list((tmp_path / "p").glob("*.safetensors*"))


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KB tmpfs, where this machine lets the tests mount one (root, no container limits); skipped
    elsewhere (the simulated full disk above runs everywhere)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk_keeps_whole_records_and_the_rerun_completes(small_disk, tmp_path, capsys):
    import subprocess

    args = ["generate", "--method", "plain", "--model", "tiny", "--device", "cpu", "--n", "1500", "--batch-size",
            "100", "--max-new-tokens", "16"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(small_disk / "run")])
    assert e.value.code == 2 and "the disk is full" in capsys.readouterr().err.strip().splitlines()[-1]
    kept = read_run(small_disk / "run")  # every line whole: read_run refuses a torn one
    assert 0 < len(kept) < 1500 and len(kept) % 100 == 0
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_disk)], check=True)
    main_ok([*args, "--out", str(small_disk / "run")])
    main_ok([*args, "--out", str(tmp_path / "ref")])
    assert (small_disk / "run" / "records-00000.jsonl").read_bytes() == (tmp_path / "ref" / "records-00000.jsonl").read_bytes()
