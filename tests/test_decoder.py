import pytest
import torch

from synthsteer.decoder import Prefix, SamplingConfig, decode, filter_scores, sample_key, sample_tokens, uniform_noise

from conftest import tiny_model


@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2", "gemma"])
@pytest.mark.parametrize("length", [5, 70])  # short prefixes use a DynamicCache, long ones a StaticCache
def test_greedy_matches_hf_generate_with_inputs_embeds(kind, length):
    model = tiny_model(kind)
    d = model.get_input_embeddings().weight.shape[1]
    torch.manual_seed(1)
    embeds = torch.randn(3, length, d) * model.get_input_embeddings().weight.std()
    greedy = SamplingConfig(temperature=0, max_new_tokens=20)
    ours = decode(model, [[Prefix(embeds=e)] for e in embeds], [0, 1, 2], greedy, eos_token_ids=2)
    ref = model.generate(inputs_embeds=embeds, attention_mask=torch.ones(3, length, dtype=torch.long),
                         max_new_tokens=20, do_sample=False, eos_token_id=2, pad_token_id=0)
    for row, mine in zip(ref.tolist(), ours):
        expected = []
        for tok in row:
            if tok == 2:
                break
            expected.append(tok)
        assert mine == expected


def test_greedy_left_padded_token_prefixes_match_one_at_a_time():
    model = tiny_model("llama")
    prefixes = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    greedy = SamplingConfig(temperature=0, max_new_tokens=15)
    batched = decode(model, [[Prefix(ids=p)] for p in prefixes], [0, 1, 2], greedy, eos_token_ids=2)
    for p, got in zip(prefixes, batched):
        ref = model.generate(input_ids=torch.tensor([p]), max_new_tokens=15, do_sample=False,
                             eos_token_id=2, pad_token_id=0)[0, len(p):].tolist()
        assert got == (ref[: ref.index(2)] if 2 in ref else ref)


def test_sampling_depends_on_key_not_batch():
    model = tiny_model("llama")
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=12)
    keys = [sample_key(7, i) for i in range(4)]
    prefixes = [[Prefix(ids=[3, 4 + i])] for i in range(4)]
    together = decode(model, prefixes, keys, cfg, eos_token_ids=2)
    alone = [decode(model, [p], [k], cfg, eos_token_ids=2)[0] for p, k in zip(prefixes, keys)]
    assert together == alone
    assert len({tuple(x) for x in together}) > 1


def test_gumbel_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logp = probs.log().expand(20000, 4)
    keys = torch.arange(20000)
    toks = sample_tokens(logp, keys, step=3, sampling=SamplingConfig())
    freq = torch.bincount(toks, minlength=4).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)
    u = uniform_noise(keys[:100], 0, 50)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02


def test_filters():
    s = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_scores(s, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_scores(s, top_p=0.75)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_scores(s, top_p=0.5)).tolist() == [[False, True, True, True]]


def test_a_length_class_that_finishes_first_leaves_the_others_running():
    """Prefixes of 3 and 200 tokens decode in separate length classes; when every sample of one class
    has ended, the other class goes on (this crashed with an empty forward before)."""
    model = tiny_model("llama")
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=40)
    eos = list(range(2, 12))  # ten stop tokens: samples end after a few steps, at different steps
    keys = [sample_key(3, i) for i in range(6)]
    prefixes = [[Prefix(ids=[3, 4 + i, 5])] if i % 2 else [Prefix(ids=[(7 * j + i) % 90 + 5 for j in range(200)])]
                for i in range(6)]
    together = decode(model, prefixes, keys, cfg, eos_token_ids=eos)
    alone = [decode(model, [p], [k], cfg, eos_token_ids=eos)[0] for p, k in zip(prefixes, keys)]
    assert together == alone
    short, long = [len(together[i]) for i in range(1, 6, 2)], [len(together[i]) for i in range(0, 6, 2)]
    assert max(short) < max(long) or max(long) < max(short)  # one class ran out before the other
