import pytest
import torch
from conftest import interrupt_on_call

from synthsteer.data import load_records
from synthsteer.errors import SynthsteerError
from synthsteer.lm import load_lm
from synthsteer.softsrv.config import FitConfig, SoftPromptConfig
from synthsteer.softsrv.fit import example_loss, fit_soft_prompt, tokenize_examples
from synthsteer.softsrv.prompt import SoftPrompt, load_soft_prompt


@pytest.mark.parametrize("kind", ["nsp", "mp", "mc"])
def test_parameterization_shapes_and_gradients(kind):
    cfg = SoftPromptConfig(parameterization=kind, length=6, hidden_size=10, context_dim=7, num_bases=3,
                           mlp_hidden=5, mlp_layers=3)
    p = SoftPrompt(cfg)
    p.init_from_vocab(torch.randn(50, 10))
    z = torch.nn.functional.normalize(torch.randn(4, 7), dim=-1)
    out = p(z)
    assert out.shape == (4, 6, 10)
    out.pow(2).sum().backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in p.parameters())
    if kind == "nsp":
        assert torch.equal(out[0], out[1])  # no context
    else:
        assert not torch.allclose(out[0], out[1])  # contextual


def test_mc_is_t_independent_mlps():
    cfg = SoftPromptConfig(parameterization="mc", length=3, hidden_size=4, context_dim=5, mlp_hidden=6, mlp_layers=2)
    p = SoftPrompt(cfg)
    p.init_from_vocab(torch.randn(20, 4))
    z = torch.randn(2, 5)
    for i in range(3):  # soft token i is MLP_i(z), written out by hand
        h = torch.nn.functional.gelu(z @ p.weights[0][i] + p.biases[0][i])
        assert torch.allclose(p(z)[:, i], h @ p.weights[1][i] + p.biases[1][i], atol=1e-6)


def test_mp_is_softmax_mixture_of_bases():
    cfg = SoftPromptConfig(parameterization="mp", length=3, hidden_size=4, context_dim=5, num_bases=2)
    p = SoftPrompt(cfg)
    p.init_from_vocab(torch.randn(20, 4))
    z = torch.randn(1, 5)
    a = torch.softmax(p.mix(z), -1)[0]
    assert torch.allclose(p(z)[0], a[0] * p.bases[0] + a[1] * p.bases[1], atol=1e-6)


def _fit_config(lm_dir, data, out, **kw):
    base = dict(data=str(data), field="question", out=str(out), model=str(lm_dir), encoder="lm-mean",
                parameterization="mc", prompt_length=8, mlp_hidden=16, steps=60, batch_size=6, lr=3e-2,
                warmup=5, save_every=20, device="cpu")
    return FitConfig(**{**base, **kw})


def test_fit_learns_and_leaves_lm_untouched(lm_dir, small_jsonl, tmp_path):
    lm = load_lm(str(lm_dir), device="cpu")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    texts = [r.text for r in load_records(str(small_jsonl), field="question")]
    examples = tokenize_examples(lm, texts, 128)
    with torch.no_grad():
        nll, n = example_loss(lm, None, examples)
    unprompted = nll.item() / n
    out = fit_soft_prompt(_fit_config(lm_dir, small_jsonl, tmp_path / "p", steps=200), lm=lm, progress=False)
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the frozen LM is bit-identical
    prompt, meta = load_soft_prompt(out)
    assert meta["final_loss"] < 0.6 * unprompted, (meta["final_loss"], unprompted)
    assert meta["lm"]["name"] == str(lm_dir) and not (out / "train_state").exists()
    # only the prompt has gradients: nothing in the LM requires grad
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_fit_resume_equals_uninterrupted(lm_dir, small_jsonl, tmp_path, monkeypatch):
    cfg = _fit_config(lm_dir, small_jsonl, tmp_path / "full", steps=30, save_every=10, parameterization="mp")
    full = fit_soft_prompt(cfg, progress=False)
    # interrupt a second run right after its step-20 checkpoint
    import synthsteer.softsrv.fit as fit_mod

    calls = {"n": 0}
    real = fit_mod.example_loss

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] > 21:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fit_mod, "example_loss", flaky)
    cfg2 = _fit_config(lm_dir, small_jsonl, tmp_path / "cut", steps=30, save_every=10, parameterization="mp")
    with pytest.raises(KeyboardInterrupt):
        fit_soft_prompt(cfg2, progress=False)
    assert (tmp_path / "cut" / "train_state" / "state.json").exists()
    assert not (tmp_path / "cut" / "prompt.safetensors").exists()
    monkeypatch.setattr(fit_mod, "example_loss", real)
    with pytest.raises(SynthsteerError, match="already exists; pass --resume"):
        fit_soft_prompt(cfg2, progress=False)
    resumed = fit_soft_prompt(cfg2, resume=True, progress=False)
    a, ma = load_soft_prompt(full)
    b, mb = load_soft_prompt(resumed)
    assert ma["loss_history"] == mb["loss_history"]
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k


def test_nan_loss_stops_with_message(lm_dir, small_jsonl, tmp_path, monkeypatch):
    import synthsteer.softsrv.fit as fit_mod

    real, calls = fit_mod.example_loss, {"n": 0}

    def blows_up(*a, **k):
        calls["n"] += 1
        nll, n = real(*a, **k)
        return (nll * float("nan"), n) if calls["n"] >= 3 else (nll, n)

    monkeypatch.setattr(fit_mod, "example_loss", blows_up)
    with pytest.raises(SynthsteerError, match="fit mc: the loss became nan at step 2; lower --lr"):
        fit_soft_prompt(_fit_config(lm_dir, small_jsonl, tmp_path / "p", steps=5), progress=False)
    assert not (tmp_path / "p" / "prompt.safetensors").exists()


def test_bad_settings_name_the_flag():
    with pytest.raises(SynthsteerError, match="--lr must be a positive number"):
        FitConfig(lr=float("nan"))
    with pytest.raises(SynthsteerError, match="--parameterization xx"):
        FitConfig(parameterization="xx")
    with pytest.raises(SynthsteerError, match="--batch-size must be at least 1"):
        FitConfig(batch_size=0)


def test_prompt_refuses_another_lm(lm_dir, small_jsonl, tmp_path):
    from synthsteer.generation import GenerateConfig, generate

    out = fit_soft_prompt(_fit_config(lm_dir, small_jsonl, tmp_path / "p", steps=2, parameterization="nsp"),
                          progress=False)
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(lm_dir)
    torch.nn.init.normal_(other.get_input_embeddings().weight)
    other.save_pretrained(tmp_path / "other")
    import shutil

    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(lm_dir / f, tmp_path / "other" / f)
    with pytest.raises(SynthsteerError, match="differs in embedding_sha256"):
        generate(GenerateConfig(out=str(tmp_path / "run"), prompt=str(out), model=str(tmp_path / "other"), n=2,
                                device="cpu"), progress=False)
    assert not (tmp_path / "run").exists()


def test_overwrite_keeps_the_old_result_until_the_new_one_is_complete(lm_dir, small_jsonl, tmp_path):
    out = fit_soft_prompt(_fit_config(lm_dir, small_jsonl, tmp_path / "p", steps=2), progress=False)
    before = (out / "prompt.safetensors").read_bytes()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SynthsteerError, match="the dataset is empty"):
        fit_soft_prompt(_fit_config(lm_dir, empty, out, steps=2), overwrite=True, progress=False)
    assert (out / "prompt.safetensors").read_bytes() == before  # refused before anything was removed
    fit_soft_prompt(_fit_config(lm_dir, small_jsonl, out, steps=3), overwrite=True, progress=False)
    assert (out / "prompt.safetensors").read_bytes() != before and len(load_soft_prompt(out)[1]["loss_history"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "p"]  # no .new or .old left behind
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(SynthsteerError, match="not a prompt directory synthsteer wrote .*; refusing to replace it"):
        fit_soft_prompt(_fit_config(lm_dir, small_jsonl, notes), overwrite=True, progress=False)
    assert (notes / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("change, flag", [({"lr": 0.05}, "--lr 0.03, not 0.05"),
                                          ({"prompt_length": 5}, "--prompt-length 8, not 5")])
def test_resume_with_other_settings_is_refused(lm_dir, small_jsonl, tmp_path, monkeypatch, change, flag):
    import synthsteer.softsrv.fit as fit_mod

    cfg = _fit_config(lm_dir, small_jsonl, tmp_path / "p", steps=6, save_every=2)
    real = interrupt_on_call(monkeypatch, fit_mod, "example_loss", 4)
    with pytest.raises(KeyboardInterrupt):
        fit_soft_prompt(cfg, progress=False)
    monkeypatch.setattr(fit_mod, "example_loss", real)
    assert (tmp_path / "p" / "train_state").exists()
    with pytest.raises(SynthsteerError, match=f"--resume: .* was trained with {flag}"):
        fit_soft_prompt(FitConfig(**{**cfg.__dict__, **change}), resume=True, progress=False)
    out = fit_soft_prompt(FitConfig(**{**cfg.__dict__, "save_every": 3}), resume=True, progress=False)
    assert len(load_soft_prompt(out)[1]["loss_history"]) == 6


def test_val_fraction_holds_out_records_and_logs_their_loss(lm_dir, small_jsonl, tmp_path, caplog):
    from synthsteer.training import split_validation

    records = load_records(str(small_jsonl), field="question")
    train, held = split_validation(records, 0.25, seed=0)
    assert len(held) == 3 and len(train) == 9 and not {r.id for r in train} & {r.id for r in held}
    # picked by id: dropping records never moves another record across the split
    assert {r.id for r in split_validation(records[::-1], 0.25, seed=0)[1]} == {r.id for r in held}
    caplog.set_level("INFO", logger="synthsteer")
    lm = load_lm(str(lm_dir), device="cpu")
    out = fit_soft_prompt(_fit_config(lm_dir, small_jsonl, tmp_path / "p", steps=40, save_every=10, val_fraction=0.25,
                                      precision="fp32"), progress=False, lm=lm)
    prompt, meta = load_soft_prompt(out)
    steps = [s for s, _ in meta["val_history"]]
    assert steps == [10, 20, 30, 40] and meta["final_val_loss"] == meta["val_history"][-1][1]
    assert "step 40: validation loss" in caplog.text
    # the logged figure is the final prompt's loss on exactly the held-out records, which it never trained on
    from synthsteer.encoders import encode_cached, load_encoder

    contexts = encode_cached(load_encoder("lm-mean", lm=lm), [r.text for r in held])
    with torch.no_grad():
        nll, n = example_loss(lm, prompt(contexts), tokenize_examples(lm, [r.text for r in held], 128))
    assert abs(nll.item() / n - meta["final_val_loss"]) < 1e-4
    assert meta["final_val_loss"] > meta["final_loss"]  # 9 training questions: it overfits, and the log shows it
    with pytest.raises(SynthsteerError, match="--val-fraction 0.99: leaves no training records"):
        fit_soft_prompt(_fit_config(lm_dir, small_jsonl, tmp_path / "q", steps=2, val_fraction=0.99), progress=False)


def test_target_loss_counts_the_target_tokens_only(lm_dir):
    """A student's loss, checked by hand: each pair alone through the LM, the log-probs of its target
    tokens summed; the batched, padded loss is the same, and the input tokens never count."""
    import torch
    from synthsteer.lm import load_lm
    from synthsteer.training import target_loss

    lm = load_lm(str(lm_dir), device="cpu")
    pairs = [([1, 5, 9, 13], [7, 8, 2]), ([1, 4], [6, 6, 6, 2]), ([1, 3, 3, 3, 3, 3], [9, 2])]
    expected = 0.0
    with torch.no_grad():
        for x, y in pairs:
            lp = torch.log_softmax(lm.model(input_ids=torch.tensor([x + y])).logits[0].float(), -1)
            expected -= sum(lp[len(x) - 1 + j, tok].item() for j, tok in enumerate(y))
        nll, n = target_loss(lm, pairs)
        assert n == 9 and nll.item() == pytest.approx(expected, rel=1e-4)
        changed = [([1, 5, 9, 14], [7, 8, 2]), *pairs[1:]]  # another input token changes the loss, not the count
        other, m = target_loss(lm, changed)
        assert m == 9 and other.item() != pytest.approx(nll.item(), rel=1e-6)
