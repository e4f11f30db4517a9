import json
import sys
from pathlib import Path

import pytest
import torch

from synthsteer.data import load_records
from synthsteer.decoder import Prefix, SamplingConfig, decode
from synthsteer.errors import SynthsteerError
from synthsteer.generation import GenerateConfig, generate
from synthsteer.runs import read_run
from synthsteer.steer import ExpertConfig, NegativePool, negative_prompt, steer_combine, steer_score, train_expert

from conftest import interrupt_on_call, tiny_model

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from steer_reference import steer_one  # noqa: E402


def test_score_is_the_formula():
    e, b, n = torch.log_softmax(torch.randn(3, 2, 7), -1)
    s = steer_score(e, b, n, gamma=0.2, eta=0.6)
    assert torch.allclose(s, 1.2 * e - 0.2 * b - 0.6 * n)
    assert torch.equal(steer_score(e, b, n, 0.0, 0.0), e)
    combined = steer_combine(0.5, 0.1)(torch.stack([e, b, n], dim=1))
    assert torch.allclose(combined, 1.5 * e - 0.5 * b - 0.1 * n)


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    m = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    return m.eval()


@pytest.mark.parametrize("kind", ["llama", "llama-merged", "gpt2"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("neg_len", [4, 70])  # long negatives: static cache, length-bucketed prefill
@pytest.mark.parametrize("share", ["sample", "block"])
def test_batched_cached_scores_equal_naive_recomputation(kind, batch, neg_len, share):
    """Lockstep decoding with KV caches gives the scores of the reference algorithm, which recomputes
    expert and base over the whole sequence at every step (20 greedy tokens, prompts of different
    lengths). llama: a LoRA expert sharing one forward with its base; llama-merged: the expert as a
    merged copy beside the base without LoRA (`--merge-expert`); gpt2: a full second model. block:
    every sample has the same negative prompt (`--negative-share block`), prefilled once."""
    import copy

    gamma, eta = 0.5, 0.3
    greedy = SamplingConfig(temperature=0, max_new_tokens=20)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16, 17, 18]][:batch]
    negatives = [[20 + (j % 60) for j in range(neg_len + 3 * i)] for i in range(batch)]
    if share == "block":
        negatives = [negatives[0]] * batch
    if kind == "llama":
        expert = _lora(tiny_model("llama", seed=0))
        models, roles, base, peft = [expert], {"e": (0, "default"), "b": (0, None)}, None, True
    elif kind == "llama-merged":
        expert = _lora(tiny_model("llama", seed=0))
        merged, plain = copy.deepcopy(expert).merge_and_unload(), copy.deepcopy(expert).unload()
        models, roles, base, peft = [merged, plain], {"e": (0, None), "b": (1, None)}, None, True
    else:
        expert, base = tiny_model("gpt2", seed=1), tiny_model("gpt2", seed=0)
        models, roles, peft = [expert, base], {"e": (0, None), "b": (1, None)}, False
    prefixes = [[Prefix(ids=p, model=roles["e"][0], adapter=roles["e"][1]),
                 Prefix(ids=p, model=roles["b"][0], adapter=roles["b"][1]),
                 Prefix(ids=n, model=roles["e"][0], adapter=roles["e"][1])] for p, n in zip(prompts, negatives)]
    trace = []
    keys = list(range(batch))
    out = decode(models, prefixes, keys, greedy, eos_token_ids=2, combine=steer_combine(gamma, eta), trace=trace)
    for i, (p, n) in enumerate(zip(prompts, negatives)):
        ref_tokens, ref_scores = steer_one(expert, base, p, n, gamma, eta, keys[i], greedy, {2}, peft=peft)
        assert out[i] == ref_tokens
        mine = [scores[(alive == i).nonzero()[0, 0]] for alive, scores in trace if (alive == i).any()]
        assert len(mine) == len(ref_scores)
        for a, b in zip(mine, ref_scores):
            assert torch.allclose(a, b, atol=1e-4)


def test_negative_pool_draws_and_truncation(lm_dir):
    pool = NegativePool(["a", "b", "c"], ["x", "y", "z"])
    draw = pool.draw(2, seed=0, index=5)
    assert draw == pool.draw(2, seed=0, index=5) and len(set(draw)) == 2
    assert len(pool.draw(10, seed=0, index=1)) == 3
    pool.add(["d"], ["w"])
    assert len(pool) == 4
    near = NegativePool(["a", "b", "c"], ["x", "y", "z"], torch.tensor([[1.0, 0], [0, 1.0], [0.7, 0.7]]))
    assert near.draw(2, 0, 0, context=torch.tensor([1.0, 0.1])) == [0, 2]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    texts = ["one two three four", "five six seven eight"]
    ids, used = negative_prompt(tok, texts, "\n\n", max_tokens=1000)
    assert tok.decode(ids) == "one two three four\n\nfive six seven eight\n\n" and used == 2
    # a cap inside the second example: the prompt ends after the first, at its separator
    cut, used = negative_prompt(tok, texts, "\n\n", max_tokens=len(ids) - 2)
    assert tok.decode(cut) == "one two three four\n\n" and used == 1
    first, used = negative_prompt(tok, texts, "\n\n", max_tokens=2)  # not even one fits: the first, cut
    assert first == ids[:2] and used == 1


@pytest.fixture(scope="module")
def expert_dir(lm_dir, small_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("expert") / "e"
    return train_expert(ExpertConfig(data=str(small_jsonl), field="question", out=str(out), model=str(lm_dir),
                                     r=4, alpha=8, steps=6, batch_size=4, save_every=3, device="cpu"), progress=False)


def _gen(expert_dir, small_jsonl, out, **kw):
    base = dict(out=str(out), method="steer", expert=str(expert_dir), data=str(small_jsonl), field="question", n=6,
                batch_size=2, max_new_tokens=10, negatives=3, seed=4, device="cpu")
    return generate(GenerateConfig(**{**base, **kw}), progress=False)


def test_block_shared_negatives_are_whole_examples_recorded_as_used(expert_dir, small_jsonl, tmp_path, capsys):
    from synthsteer.generation import build_method

    config = dict(out=str(tmp_path / "m"), method="steer", expert=str(expert_dir), data=str(small_jsonl),
                  field="question", n=6, batch_size=3, max_new_tokens=10, negatives=3, seed=4, device="cpu",
                  negative_max_tokens=300)
    texts = {r.id: r.text for r in load_records(str(small_jsonl), field="question")}
    for share in ("sample", "block"):
        method = build_method(GenerateConfig(**config, negative_share=share))
        planned = method.plan([0, 1, 2], [7, 8, 9])
        prov = [p.provenance for p in planned]
        tok = method.lm.tokenizer
        for r, p in ((p.request, p.provenance) for p in planned):
            # the prompt is BOS and exactly the examples provenance names, each with its separator
            assert tok.decode(r.branches["negative"].ids[1:]) == "".join(texts[i] + "\n\n" for i in p["negative_ids"])
            assert len(r.branches["negative"].ids) <= 301
        drawn = [tuple(p["negative_ids"]) for p in prov]
        assert (len(set(drawn)) == 1) == (share == "block")
    assert "drawn ones did not fit" in capsys.readouterr().err  # 300 tokens hold about 2 of these questions
    block = read_run(_gen(expert_dir, small_jsonl, tmp_path / "block", negative_share="block", batch_size=3))
    negs = [tuple(r["provenance"]["negative_ids"]) for r in block]
    assert negs[0] == negs[1] == negs[2] and negs[3] == negs[4] == negs[5] and negs[0] != negs[3]
    assert json.loads((tmp_path / "block" / "manifest.json").read_text())["settings"]["negative_share"] == "block"


def test_expert_trains_lora_only(expert_dir, lm_dir):
    meta = json.loads((expert_dir / "synthsteer_expert.json").read_text())
    assert meta["lm"]["name"] == str(lm_dir) and len(meta["loss_history"]) == 6
    assert meta["instruction"].startswith("### Instruction:")
    assert (expert_dir / "adapter_model.safetensors").exists() and not (expert_dir / "train_state").exists()


def test_gamma_eta_zero_is_sampling_from_the_expert(expert_dir, small_jsonl, tmp_path):
    steer = read_run(_gen(expert_dir, small_jsonl, tmp_path / "steer", gamma=0.0, eta=0.0))
    plain = read_run(_gen(expert_dir, small_jsonl, tmp_path / "expert", method="hard"))
    assert [r["text"] for r in steer] == [r["text"] for r in plain]
    assert steer[0]["provenance"]["gamma"] == 0.0 and len(steer[0]["provenance"]["negative_ids"]) == 3


def test_steer_run_reproduces_and_its_pool_grows(expert_dir, small_jsonl, tmp_path, capsys):
    a = read_run(_gen(expert_dir, small_jsonl, tmp_path / "a", negatives=100))
    assert "--negatives 100 is more than the 12 real examples" in capsys.readouterr().err
    b = read_run(_gen(expert_dir, small_jsonl, tmp_path / "b", negatives=100))
    assert [r["text"] for r in a] == [r["text"] for r in b]
    negs = [r["provenance"]["negative_ids"] for r in a]
    # K larger than the pool: each sample draws the whole pool as it stood when its batch began, in
    # its own order, and keeps the whole examples that fit the LM's context (512 - 10 new - BOS)
    real = {r.id for r in load_records(str(small_jsonl), field="question")}
    for n, ids in enumerate(negs):
        assert set(ids) <= real | {r["id"] for r in a[: n - n % 2]} and len(set(ids)) == len(ids) >= 2
    assert set(negs[2] + negs[3] + negs[4] + negs[5]) - real  # written samples joined the pool
    assert "drawn ones did not fit" in capsys.readouterr().err
    p = a[0]["provenance"]
    assert p["method"] == "steer" and p["gamma"] == 0.2 and p["eta"] == 0.6 and p["K"] == 100


def test_interrupted_steer_run_resumes_identically(expert_dir, small_jsonl, tmp_path, monkeypatch):
    full = read_run(_gen(expert_dir, small_jsonl, tmp_path / "full"))
    import synthsteer.engine as eng

    real = interrupt_on_call(monkeypatch, eng, "decode_full", 2)
    with pytest.raises(KeyboardInterrupt):
        _gen(expert_dir, small_jsonl, tmp_path / "cut")
    monkeypatch.setattr(eng, "decode_full", real)
    resumed = read_run(_gen(expert_dir, small_jsonl, tmp_path / "cut"))
    assert [(r["id"], r["text"], r["provenance"]["negative_ids"]) for r in resumed] == \
        [(r["id"], r["text"], r["provenance"]["negative_ids"]) for r in full]


def test_softsrv_plus_steer_and_baselines(lm_dir, small_jsonl, tmp_path):
    from synthsteer.softsrv import FitConfig, fit_soft_prompt

    prompt = fit_soft_prompt(FitConfig(data=str(small_jsonl), field="question", out=str(tmp_path / "p"),
                                       model=str(lm_dir), encoder="lm-mean", prompt_length=3, mlp_hidden=8, steps=3,
                                       device="cpu"), progress=False)
    run = read_run(generate(GenerateConfig(out=str(tmp_path / "ss"), method="steer", prompt=str(prompt), n=4,
                                           max_new_tokens=6, negative_draw="nearest", device="cpu"), progress=False))
    assert all(r["provenance"]["source_id"] and 0 < len(r["provenance"]["negative_ids"]) <= 10 for r in run)
    few = read_run(generate(GenerateConfig(out=str(tmp_path / "few"), method="hard", model=str(lm_dir), shots=2,
                                           data=str(small_jsonl), field="question", n=3, max_new_tokens=5, top_k=10,
                                           device="cpu"), progress=False))
    assert all(len(r["provenance"]["shot_ids"]) == 2 for r in few)
    with pytest.raises(SynthsteerError, match="needs --expert DIR"):
        generate(GenerateConfig(out=str(tmp_path / "x"), method="steer", device="cpu"), progress=False)


def test_cli_expert_and_steer_with_a_full_expert(lm_dir, small_jsonl, tmp_path):
    from synthsteer.cli import main

    with pytest.raises(SystemExit) as e:
        main(["expert", "--data", str(small_jsonl), "--field", "question", "--model", str(lm_dir), "--r", "2",
              "--alpha", "4", "--steps", "2", "--batch-size", "3", "--out", str(tmp_path / "e"), "--device", "cpu"])
    assert e.value.code == 0 and (tmp_path / "e" / "adapter_config.json").exists()
    with pytest.raises(SystemExit) as e:  # a finished expert is not retrained
        main(["expert", "--data", str(small_jsonl), "--field", "question", "--model", str(lm_dir), "--out",
              str(tmp_path / "e"), "--device", "cpu"])
    assert e.value.code == 2
    # a full fine-tuned model as the expert: expert and negative rows on it, base rows on the base LM
    with pytest.raises(SystemExit) as e:
        main(["generate", "--method", "steer", "--expert", str(lm_dir), "--model", str(lm_dir), "--data",
              str(small_jsonl), "--field", "question", "--gamma", "0.4", "--eta", "0.2", "--negatives", "2",
              "--n", "3", "--max-new-tokens", "5", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert e.value.code == 0
    recs = read_run(tmp_path / "run")
    assert [(r["provenance"]["gamma"], r["provenance"]["eta"], len(r["provenance"]["negative_ids"])) for r in recs] \
        == [(0.4, 0.2, 2)] * 3
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["expert"]["kind"] == "full" and manifest["settings"]["negatives"] == 2


def test_expert_resume_equals_uninterrupted(lm_dir, small_jsonl, tmp_path, monkeypatch):
    import synthsteer.steer.expert as expert_mod

    def cfg(out):
        return ExpertConfig(data=str(small_jsonl), field="question", out=str(out), model=str(lm_dir), r=2, alpha=4,
                            dropout=0.0, steps=6, batch_size=3, save_every=2, device="cpu")

    full = train_expert(cfg(tmp_path / "full"), progress=False)
    real, calls = expert_mod.example_loss, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(expert_mod, "example_loss", dies)
    with pytest.raises(KeyboardInterrupt):
        train_expert(cfg(tmp_path / "cut"), progress=False)
    monkeypatch.setattr(expert_mod, "example_loss", real)
    assert json.loads((tmp_path / "cut" / "train_state" / "state.json").read_text())["step"] == 4
    resumed = train_expert(cfg(tmp_path / "cut"), resume=True, progress=False)
    a = json.loads((full / "synthsteer_expert.json").read_text())["loss_history"]
    b = json.loads((resumed / "synthsteer_expert.json").read_text())["loss_history"]
    assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.parametrize("kept", [1, 3, 5])
def test_steer_resumed_after_a_partly_written_block_is_identical(expert_dir, small_jsonl, tmp_path, kept):
    full = read_run(_gen(expert_dir, small_jsonl, tmp_path / "full"))
    cut = _gen(expert_dir, small_jsonl, tmp_path / "cut")
    shard = cut / "records-00000.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:kept]))  # blocks of 2: a kill inside block 0, 1 or 2, half of it on disk
    resumed = read_run(_gen(expert_dir, small_jsonl, tmp_path / "cut"))
    assert [(r["id"], r["text"], r["provenance"]["negative_ids"]) for r in resumed] == \
        [(r["id"], r["text"], r["provenance"]["negative_ids"]) for r in full]
