"""decoder.py's transformers cache surgery still holds for the installed transformers.

The decoder writes chunked prefills into a `StaticCache`'s tensors, marks how many slots are
written and drops retired rows in place: internals, not transformers' public interface. These tests
check each attribute it relies on, then that the surgery gives the cache (and the tokens) that a
single padded forward and transformers' own `generate` give. When one fails, transformers changed
what the section "transformers' cache internals" of decoder.py relies on: update it (and its
written-against version) rather than this test.
"""

import pytest
import torch
import transformers

import synthsteer.decoder as decoder
from synthsteer.decoder import (TRANSFORMERS_WRITTEN_AGAINST, Prefix, RowBatch, SamplingConfig, decode, keep_rows,
                                new_cache, place_rows, set_length)

from conftest import tiny_model


def changed(what: str) -> str:
    return (f"transformers {transformers.__version__} changed {what}: decoder.py's cache surgery "
            f"(written against transformers {TRANSFORMERS_WRITTEN_AGAINST}) needs updating")


def kv_shape(model) -> tuple[int, int]:
    """(kv heads, head dim) of a tiny test model's attention."""
    cfg = model.config
    return cfg.num_key_value_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def forward(model, ids: torch.Tensor, cache, slots: int, start: int = 0) -> torch.Tensor:
    """Run `ids` [B, T] (unpadded) into `cache` of `slots` slots from slot `start`; last log-probs."""
    b, t = ids.shape
    mask = torch.zeros(b, slots, dtype=torch.long)
    mask[:, : start + t] = 1
    positions = torch.arange(start, start + t).expand(b, t)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return torch.log_softmax(out.logits[:, -1].float(), -1)


def long_ids(i: int, n: int) -> list[int]:
    return [(7 * j + 3 * i) % 90 + 5 for j in range(n)]


# ---------------------------------------------------------------- what the surgery relies on


def test_static_cache_has_what_the_surgery_relies_on():
    model = tiny_model("llama")
    heads, head_dim = kv_shape(model)
    cache = new_cache(model.config, static_slots=12)
    assert isinstance(cache, transformers.StaticCache), changed("new_cache's StaticCache")
    assert isinstance(cache.layers, list) and len(cache.layers) == model.config.num_hidden_layers, \
        changed("Cache.layers (one cache layer per decoder layer)")
    for layer in cache.layers:
        assert type(layer).__name__ == "StaticLayer", changed(f"the layer class of a full-attention StaticCache "
                                                              f"(now {type(layer).__name__})")
        assert layer.is_initialized is False, changed("StaticLayer.is_initialized before the first forward")
        assert callable(getattr(layer, "lazy_initialization", None)), changed("StaticLayer.lazy_initialization")
    assert decoder.can_place_rows(cache), changed("StaticLayer")

    with torch.no_grad():
        forward(model, torch.tensor([long_ids(i, 5) for i in range(3)]), cache, slots=12)
    for layer in cache.layers:
        assert layer.is_initialized is True, changed("StaticLayer.is_initialized after a forward")
        for name in ("keys", "values"):
            t = getattr(layer, name)
            assert isinstance(t, torch.Tensor) and tuple(t.shape) == (3, heads, 12, head_dim), \
                changed(f"StaticLayer.{name} (expected [batch, kv heads, max_cache_len, head dim])")
        n = layer.cumulative_length
        assert isinstance(n, torch.Tensor) and n.dim() == 0 and int(n) == 5, \
            changed("StaticLayer.cumulative_length (expected a 0-d tensor: the tokens written so far)")
        assert layer.batch_size == 3, changed("StaticLayer.batch_size")
    assert cache.batch_size == 3, changed("StaticCache.batch_size (read from its layers' batch_size)")


def test_static_layers_allocate_from_shapes_and_write_where_the_length_says():
    """place_rows hands lazy_initialization zero-stride views; set_length decides the next slot."""
    model = tiny_model("llama")
    heads, head_dim = kv_shape(model)
    cache = new_cache(model.config, static_slots=10)
    layer = cache.layers[0]
    like = torch.zeros(()).expand(4, heads, 3, head_dim)
    layer.lazy_initialization(like, like)
    assert tuple(layer.keys.shape) == (4, heads, 10, head_dim) and layer.keys.stride()[0] > 0, \
        changed("StaticLayer.lazy_initialization (expected to allocate [batch, heads, max_cache_len, head dim] "
                "from its arguments' shapes)")
    assert layer.is_initialized and layer.batch_size == 4, changed("StaticLayer.lazy_initialization")

    cache = new_cache(model.config, static_slots=10)
    with torch.no_grad():
        forward(model, torch.tensor([long_ids(0, 4)]), cache, slots=10)
        set_length(cache, 6)
        forward(model, torch.tensor([[9]]), cache, slots=10, start=6)
    for layer in cache.layers:
        written = layer.keys[0].abs().sum((0, 2)) > 0  # per slot
        assert written.tolist() == [True] * 4 + [False] * 2 + [True] + [False] * 3, \
            changed("where StaticLayer.update writes (expected: from slot cumulative_length)")
        assert int(layer.cumulative_length) == 7, changed("StaticLayer.cumulative_length after an update")


def test_dynamic_cache_has_what_the_surgery_relies_on():
    model = tiny_model("llama")
    heads, head_dim = kv_shape(model)
    cache = new_cache(model.config)
    assert isinstance(cache, transformers.DynamicCache), changed("new_cache's DynamicCache")
    assert callable(getattr(cache, "batch_select_indices", None)), changed("DynamicCache.batch_select_indices")
    with torch.no_grad():
        forward(model, torch.tensor([long_ids(i, 5) for i in range(3)]), cache, slots=5)
    before = [layer.keys.clone() for layer in cache.layers]
    assert all(tuple(k.shape) == (3, heads, 5, head_dim) for k in before), changed("DynamicLayer.keys")
    keep_rows(cache, torch.tensor([2, 0, 0]))
    for layer, k in zip(cache.layers, before):
        assert torch.equal(layer.keys, k[[2, 0, 0]]), changed("DynamicCache.batch_select_indices")


def test_the_model_fills_the_cache_passed_as_past_key_values():
    """transformers 5.24 deprecates `past_key_values` for `cache`: if a release ignores it, the model
    would decode into a cache of its own and every step would forget the prefix."""
    model = tiny_model("llama")
    for cache, slots in ((new_cache(model.config), 5), (new_cache(model.config, static_slots=8), 8)):
        with torch.no_grad():
            forward(model, torch.tensor([long_ids(0, 5)]), cache, slots)
        assert int(cache.get_seq_length()) == 5, changed("the forward's past_key_values argument")


# ---------------------------------------------------------------- the surgery end to end


@pytest.fixture
def small_prefill(monkeypatch):
    """Prefill chunks of at most 150 padded tokens (one row each, for these prefixes), counting the
    chunks placed by place_rows."""
    monkeypatch.setattr(decoder, "PREFILL_TOKENS", 150)
    placed = []

    def counting(cache, part, rows, start, batch):
        placed.append(len(rows))
        return place_rows(cache, part, rows, start, batch)

    monkeypatch.setattr(decoder, "place_rows", counting)
    return placed


LENGTHS = [64, 71, 100, 180, 65, 130]  # very different, all >= RowBatch.STATIC_FROM, one length class


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma"])
def test_chunked_static_prefill_matches_one_padded_forward(kind, small_prefill, monkeypatch):
    model = tiny_model(kind)
    assert min(LENGTHS) >= RowBatch.STATIC_FROM
    prefixes = [Prefix(ids=long_ids(i, n)) for i, n in enumerate(LENGTHS)] + [Prefix(ids=long_ids(2, 100))]
    steps = 8

    def run(chunked: bool):
        with monkeypatch.context() as m:
            if not chunked:  # the fallback: one forward over every row, padded to the longest
                m.setattr(decoder, "can_place_rows", lambda cache: False)
            batch = RowBatch(model, [None] * len(prefixes), max_new_tokens=steps)
            with torch.no_grad():
                lps = [batch.prefill(prefixes)]
                for _ in range(steps - 1):
                    lps.append(batch.step(lps[-1].argmax(-1)))
        return batch, lps

    ours, lps = run(chunked=True)
    assert len(small_prefill) >= 4, "the prefill did not run in chunks: the test no longer tests the surgery"
    ref, ref_lps = run(chunked=False)
    assert ours.static and ref.static
    real = ours.mask.bool()  # padding slots differ (zeros against the pad embeddings' keys); they are masked
    for layer, ref_layer in zip(ours.cache.layers, ref.cache.layers):
        for name in ("keys", "values"):
            got, want = getattr(layer, name), getattr(ref_layer, name)
            assert got.shape == want.shape, changed(f"the shape of StaticLayer.{name}")
            assert torch.allclose(got.transpose(1, 2)[real], want.transpose(1, 2)[real], atol=1e-5), \
                changed(f"StaticLayer.{name}: chunked prefill's cache differs from a single padded forward's")
    for step, (got, want) in enumerate(zip(lps, ref_lps)):
        assert torch.allclose(got, want, atol=1e-4), \
            changed(f"the static cache: chunked prefill's log-probs differ from a single forward's at step {step}")
        assert torch.equal(got.argmax(-1), want.argmax(-1)), changed("the static cache (greedy tokens differ)")


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_chunked_static_prefill_decodes_like_generate(kind, small_prefill):
    model = tiny_model(kind)
    rows = [long_ids(i, n) for i, n in enumerate(LENGTHS)]
    greedy = SamplingConfig(temperature=0, max_new_tokens=16)
    ours = decode(model, [[Prefix(ids=r)] for r in rows], list(range(len(rows))), greedy, eos_token_ids=2)
    assert len(small_prefill) >= 4, "the prefill did not run in chunks: the test no longer tests the surgery"
    for r, got in zip(rows, ours):
        ref = model.generate(input_ids=torch.tensor([r]), max_new_tokens=16, do_sample=False, eos_token_id=2,
                             pad_token_id=0)[0, len(r):].tolist()
        assert got == (ref[: ref.index(2)] if 2 in ref else ref), \
            changed(f"the static cache: a {len(r)}-token prefix decodes unlike transformers' generate")


@pytest.mark.parametrize("length", [5, 90])  # a DynamicCache, a StaticCache
def test_kept_rows_decode_as_if_prefilled_alone(length, small_prefill):
    """Retiring rows (keep_rows, also how identical prefixes share one prefill) leaves each kept row
    exactly the cache it had."""
    model = tiny_model("llama")
    prefixes = [Prefix(ids=long_ids(i, length + 10 * i)) for i in range(4)]
    rows = torch.tensor([2, 0, 0])  # reordered, one repeated
    with torch.no_grad():
        batch = RowBatch(model, [None] * 4, max_new_tokens=6)
        lp = batch.prefill(prefixes)[rows]
        batch.select(rows)
        alone = RowBatch(model, [None] * 3, max_new_tokens=6)
        ref = alone.prefill([prefixes[i] for i in rows.tolist()])
        assert torch.allclose(lp, ref, atol=1e-5)
        for _ in range(5):
            tokens = ref.argmax(-1)
            lp, ref = batch.step(tokens), alone.step(tokens)
            assert torch.allclose(lp, ref, atol=1e-4), changed("what keep_rows relies on (kept rows decode differently)")
    assert batch.static == (length >= RowBatch.STATIC_FROM)
    if batch.static:
        assert batch.cache.batch_size == 3, changed("StaticLayer.batch_size")
