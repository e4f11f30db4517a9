import json

import pytest
from conftest import interrupt_on_call

from synthsteer.cli import main
from synthsteer.errors import SynthsteerError
from synthsteer.generation import GenerateConfig, generate
from synthsteer.runs import read_run
from synthsteer.softsrv.config import FitConfig
from synthsteer.softsrv.fit import fit_soft_prompt


@pytest.fixture(scope="module")
def prompt_dir(lm_dir, small_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("prompt") / "p"
    return fit_soft_prompt(FitConfig(data=str(small_jsonl), field="question", out=str(out), model=str(lm_dir),
                                     encoder="lm-mean", prompt_length=4, mlp_hidden=16, steps=20, batch_size=6,
                                     lr=3e-2, warmup=2, device="cpu"), progress=False)


def _config(prompt_dir, out, **kw):
    return GenerateConfig(**{**dict(out=str(out), prompt=str(prompt_dir), n=10, batch_size=4, max_new_tokens=12,
                                    context_noise=0.1, context_mix=0.3, seed=3, device="cpu"), **kw})


def _texts(run):
    return [(r["id"], r["text"], r["provenance"]["source_id"]) for r in read_run(run)]


def test_softsrv_run_records_and_provenance(prompt_dir, small_jsonl, tmp_path):
    run = generate(_config(prompt_dir, tmp_path / "run"), progress=False)
    records = read_run(run)
    assert [r["index"] for r in records] == list(range(10))
    assert len({r["id"] for r in records}) == 10
    manifest = json.loads((run / "manifest.json").read_text())
    for r in records:
        p = r["provenance"]
        assert p["method"] == "softsrv" and p["parameterization"] == "mc" and p["seed"] == 3
        assert p["settings_hash"] == manifest["settings_hash"] and r["id"].startswith(p["settings_hash"][:8])
        assert 0 < r["num_tokens"] <= 12 and r["finish"] in ("eos", "length")
    # contexts cycle through the 12 training examples in an order drawn from the seed
    from synthsteer.data import load_records
    from synthsteer.randomness import shuffled_cycle

    train, order = load_records(str(small_jsonl), field="question"), shuffled_cycle(3, 12)
    assert sorted(order) == list(range(12)) and order != list(range(12))
    assert [r["provenance"]["source_id"] for r in records] == [train[order[i]].id for i in range(10)]
    assert all(r["provenance"]["mix_id"] in {t.id for t in train} for r in records)
    assert manifest["records"] == 10 and manifest["settings"]["context_mix"] == 0.3


def test_interrupted_generate_resumes_to_identical_records(prompt_dir, tmp_path, monkeypatch):
    full = generate(_config(prompt_dir, tmp_path / "full"), progress=False)
    import synthsteer.engine as eng

    real = interrupt_on_call(monkeypatch, eng, "decode_full", 3)
    with pytest.raises(KeyboardInterrupt):
        generate(_config(prompt_dir, tmp_path / "cut"), progress=False)
    assert len(read_run(tmp_path / "cut")) == 8
    # a torn half-line at the end, as a kill in mid-write would leave
    shard = tmp_path / "cut" / "records-00000.jsonl"
    with open(shard, "a") as f:
        f.write('{"id": "torn", "te')
    monkeypatch.setattr(eng, "decode_full", real)
    resumed = generate(_config(prompt_dir, tmp_path / "cut"), progress=False)
    assert _texts(resumed) == _texts(full)
    # running again adds nothing; asking for more adds only the missing ones
    generate(_config(prompt_dir, tmp_path / "cut"), progress=False)
    assert len(read_run(resumed)) == 10
    more = generate(_config(prompt_dir, tmp_path / "cut", n=13), progress=False)
    assert _texts(more)[:10] == _texts(full) and len(read_run(more)) == 13


def test_batch_size_does_not_change_records(prompt_dir, tmp_path):
    a = generate(_config(prompt_dir, tmp_path / "a", batch_size=5), progress=False)
    b = generate(_config(prompt_dir, tmp_path / "b", batch_size=2), progress=False)
    assert _texts(a) == _texts(b)


def test_other_settings_refuse_the_same_run_dir(prompt_dir, tmp_path):
    generate(_config(prompt_dir, tmp_path / "run"), progress=False)
    with pytest.raises(SynthsteerError, match="differs in sampling"):
        generate(_config(prompt_dir, tmp_path / "run", temperature=0.5), progress=False)


def test_plain_and_cli_generate(lm_dir, prompt_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--method", "plain", "--model", str(lm_dir), "--n", "3", "--max-new-tokens", "8",
              "--out", str(tmp_path / "plain"), "--device", "cpu"])
    assert e.value.code == 0
    assert [r["provenance"]["method"] for r in read_run(tmp_path / "plain")] == ["plain"] * 3
    cfg = tmp_path / "gen.yaml"
    cfg.write_text(f"prompt: {prompt_dir}\nn: 4\nmax-new-tokens: 6\ndevice: cpu\nseed: 9\n")
    with pytest.raises(SystemExit) as e:
        main(["generate", "--config", str(cfg), "--n", "2", "--out", str(tmp_path / "soft")])
    assert e.value.code == 0
    records = read_run(tmp_path / "soft")
    assert len(records) == 2 and records[0]["provenance"]["seed"] == 9  # YAML value, flag wins for n
    with pytest.raises(SystemExit) as e:
        main(["generate", "--prompt", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "not a soft-prompt directory" in capsys.readouterr().err
    cfg.write_text("colour: blue\n")
    with pytest.raises(SystemExit) as e:
        main(["generate", "--config", str(cfg)])
    assert e.value.code == 2 and "gen.yaml: unknown setting 'colour'" in capsys.readouterr().err


def test_label_field_copies_the_source_label(lm_dir, tmp_path):
    # sorted by label, as Jigsaw's train split is: the first records of a run must still sample both
    rows = [{"id": f"x{i}", "text": f"example number {i} is {'good' if i >= 10 else 'bad'}", "label": int(i >= 10)}
            for i in range(20)]
    data = tmp_path / "l.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompt = fit_soft_prompt(FitConfig(data=str(data), field="text", out=str(tmp_path / "p"), model=str(lm_dir),
                                       encoder="lm-mean", prompt_length=2, mlp_hidden=8, steps=2, device="cpu"),
                             progress=False)
    run = generate(GenerateConfig(out=str(tmp_path / "run"), prompt=str(prompt), n=6, max_new_tokens=4,
                                  label_field="label", device="cpu"), progress=False)
    recs = read_run(run)
    sources = [int(r["provenance"]["source_id"][1:]) for r in recs]
    assert len(set(sources)) == 6 and [r["label"] for r in recs] == [int(i >= 10) for i in sources]
    assert {r["label"] for r in recs} == {0, 1}
    with pytest.raises(SynthsteerError, match="--label-field colour: not a field"):
        generate(GenerateConfig(out=str(tmp_path / "run2"), prompt=str(prompt), n=2, label_field="colour",
                                device="cpu"), progress=False)


def test_two_writers_on_one_run_one_is_refused(prompt_dir, tmp_path):
    import fcntl

    out = tmp_path / "locked"
    generate(_config(prompt_dir, out, n=2), progress=False)
    before = (out / "records-00000.jsonl").read_bytes()
    with open(out / ".lock", "a+") as other:  # another process holding the run
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SynthsteerError, match="another process is writing this run right now"):
            generate(_config(prompt_dir, out, n=4), progress=False)
    assert (out / "records-00000.jsonl").read_bytes() == before  # nothing written, nothing repaired
    assert len(read_run(generate(_config(prompt_dir, out, n=4), progress=False))) == 4  # free again


def test_later_commands_reuse_the_recorded_text_field(lm_dir, tmp_path, capsys):
    """Two string fields (no inference possible): fit says --field once; generate and eval do not repeat it."""
    rows = [{"q": f"how many apples are in basket {i}?", "a": f"{i} apples"} for i in range(8)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompt = fit_soft_prompt(FitConfig(data=str(data), field="q", out=str(tmp_path / "p"), model=str(lm_dir),
                                       encoder="lm-mean", prompt_length=2, mlp_hidden=8, steps=2, device="cpu"),
                             progress=False)
    run = generate(GenerateConfig(out=str(tmp_path / "run"), prompt=str(prompt), data=str(data), n=4,
                                  max_new_tokens=4, device="cpu"), progress=False)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["settings"]["data"]["field"] == "q"
    with pytest.raises(SynthsteerError, match="--field NAME or --template; string fields: q, a"):
        generate(GenerateConfig(out=str(tmp_path / "run2"), method="hard", shots=2, data=str(data), n=2,
                                max_new_tokens=4, model=str(lm_dir), device="cpu"), progress=False)
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"q": f"is basket {i} full?", "a": "yes"}) + "\n" for i in range(6)))
    with pytest.raises(SystemExit) as e:
        main(["eval", "--real", str(heldout), "--synthetic", str(run), "--out", str(tmp_path / "ev"),
              "--mauve-seeds", "0", "--device", "cpu"])
    assert e.value.code == 0 and "Batches" not in capsys.readouterr().err  # no third-party bar off a terminal
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["config"]["field"] == "q" and report["real"]["n"] == 6
