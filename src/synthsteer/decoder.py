"""The one decoding loop every method uses.

A method is "branches per sample + a rule that combines their next-token log-probabilities":
plain sampling and hard prompts have one branch (a token prefix), SoftSRV one branch whose prefix
is soft-prompt embeddings, STEER several. The decoder puts every branch of many samples in one
batch as rows (prefixes left-padded, a KV cache per row), samples one token per sample, appends it
to all of that sample's rows, and retires samples as they finish.

Sampling is Gumbel-max with noise hashed from (sample key, step, token): a sample's tokens depend
on its own key only, never on which other samples share its batch or on the device's RNG, so a
rerun, a resume or another batch size draws the same random numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .lm import keeps_logits
from .options import SamplingConfig  # noqa: F401  (the sampling settings, re-exported)
from .randomness import MASK32, mix32, sample_key  # noqa: F401  (sample_key: the decoder's key, re-exported)


@dataclass
class Prefix:
    """What a row starts from: token ids, soft-prompt embeddings [t, d], or embeddings then ids;
    which of the decoder's models runs it; and, for a peft model, which adapter (None = the base
    weights), so an expert and its base share one forward."""

    ids: list[int] | None = None
    embeds: torch.Tensor | None = None
    model: int = 0
    adapter: str | None = None


# ---------------------------------------------------------------- the sampling math (pure)


def uniform_noise(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """U(0,1) noise [R, V] determined by (key, step, token id) alone."""
    tok = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    h = mix32(mix32(keys.to(torch.int64)[:, None] ^ (step * 0x9E3779B1 & MASK32)) ^ tok[None, :])
    h = mix32(h + tok[None, :])
    return ((h >> 8).to(torch.float64) + 0.5) / float(1 << 24)


def filter_scores(scores: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set everything outside the top-k tokens and outside the top-p nucleus to -inf."""
    if top_k and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # drop a token when the tokens ranked above it already cover top_p
        drop = (probs.cumsum(-1) - probs) >= top_p
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def sample_tokens(logprobs: torch.Tensor, keys: torch.Tensor, step: int, sampling: SamplingConfig) -> torch.Tensor:
    """One token per row from log-probabilities [R, V]: argmax when greedy, else Gumbel-max over the
    filtered, tempered scores (an exact sample from their softmax)."""
    if sampling.temperature == 0:
        return logprobs.argmax(-1)
    scores = filter_scores(logprobs.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    gumbel = -torch.log(-torch.log(uniform_noise(keys, step, scores.shape[-1]))).to(scores.dtype)
    return (scores + gumbel).argmax(-1)


# ---------------------------------------------------------------- transformers' cache internals
#
# Every touch of a transformers cache beyond handing it to the model's forward is in this section.
# Written against transformers 5.24.0 (cache_utils.py), it relies on:
#   Cache.layers                         one cache layer per decoder layer
#   StaticLayer (the class, by name)     full attention: slot i holds position i's key and value
#     .keys, .values                     [batch, kv heads, max_cache_len, head dim], allocated by
#     .is_initialized, .lazy_initialization(keys, values)  (from the shapes, dtype and device of its
#                                        arguments: batch, heads and head dims, not the slot count)
#     .cumulative_length                 a 0-d tensor: the slot the next update() writes first
#     .batch_size                        set by lazy_initialization, read by Cache.batch_size
#   DynamicCache.batch_select_indices(rows)  keeps rows of every (DynamicLayer) layer
# RowBatch._call hands the cache to the forward as `past_key_values`, which 5.24 deprecates for
# `cache` (removal announced for 5.40): a release that ignores it would decode into a cache of its own.
# tests/test_cache_surgery.py checks each of these and fails, naming this section, if transformers
# changes one of them.

TRANSFORMERS_WRITTEN_AGAINST = "5.24.0"


def new_cache(config, static_slots: int | None = None):
    """A `DynamicCache`, or a `StaticCache` of `static_slots` slots, for a model of `config`."""
    from transformers import DynamicCache, StaticCache

    if static_slots is None:
        return DynamicCache(config=config)
    return StaticCache(config=config, max_cache_len=static_slots)


def can_place_rows(cache) -> bool:
    """Whether `place_rows` can write into `cache`: plain full-attention static layers only (a
    sliding-window layer keeps a rolling window, not one slot per position)."""
    return all(type(layer).__name__ == "StaticLayer" for layer in cache.layers)


def place_rows(cache, part, rows: torch.Tensor, start: int, batch: int) -> None:
    """Copy every slot of the static cache `part` into rows `rows`, slots start: of `cache`,
    allocating `cache` for `batch` rows on first use."""
    for layer, small in zip(cache.layers, part.layers):
        if not layer.is_initialized:
            # lazy_initialization reads only the shape, dtype and device of its arguments
            layer.lazy_initialization(small.keys.new_zeros(()).expand(batch, *small.keys.shape[1:]),
                                      small.values.new_zeros(()).expand(batch, *small.values.shape[1:]))
        stop = start + small.keys.shape[2]
        layer.keys[rows, :, start:stop] = small.keys
        layer.values[rows, :, start:stop] = small.values


def set_length(cache, n: int) -> None:
    """Mark the first `n` slots of a static cache written: the next forward writes slot n."""
    # place_rows writes slots behind update()'s back, so the layers still count 0 written
    for layer in cache.layers:
        layer.cumulative_length.fill_(n)


def keep_rows(cache, rows: torch.Tensor) -> None:
    """Keep only `rows` of the cache's batch, in that order (a row may repeat)."""
    from transformers import StaticCache

    if not isinstance(cache, StaticCache):
        cache.batch_select_indices(rows)
        return
    # StaticLayer has no batch_select_indices: slice its tensors (losing the static address that
    # torch.compile's cudagraphs want, which eager decoding does not use)
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys, layer.values = layer.keys[rows], layer.values[rows]
            layer.batch_size = len(rows)


# ---------------------------------------------------------------- rows of one model


class RowBatch:
    """Rows decoded by one model: their KV cache, attention mask, positions and adapters.

    Long prefixes (STEER's negative prompts) get a `StaticCache` sized for the prefix plus every new
    token: each step writes one slot in place, where a `DynamicCache` copies the whole cache
    (torch.cat) every step, which then dominates decoding. Short prefixes keep the `DynamicCache`,
    which attends only over what is there and is faster for them. The 2-D attention mask spans all
    slots: ones for real prefix tokens and tokens written so far."""

    STATIC_FROM = 64  # prefix width from which the static cache pays off (bench/bench_steer.py)

    def __init__(self, model: torch.nn.Module, adapters: list[str | None], max_new_tokens: int):
        self.model, self.max_new_tokens = model, max_new_tokens
        self.embed = model.get_input_embeddings()
        # only the last position's logits are needed
        self._keep = {"logits_to_keep": 1} if keeps_logits(model) else {}
        # peft's mixed-batch inference: one adapter name per row, "__base__" for the base weights
        self.adapters = ["__base__" if a is None else a for a in adapters] if any(adapters) else None
        self.cache = None

    def _call(self, cache, mask, positions, adapters: list[str] | None, **kw) -> torch.Tensor:
        """One forward into `cache`; the last position's log-probs [R, V]."""
        if adapters is not None:
            kw["adapter_names"] = adapters
        out = self.model(attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                         **self._keep, **kw)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def _embed_rows(self, prefixes: list[Prefix]) -> list[torch.Tensor]:
        dev, dtype = self.embed.weight.device, self.embed.weight.dtype
        rows = []
        for p in prefixes:
            parts = []
            if p.embeds is not None:
                parts.append(p.embeds.to(dev, dtype))
            if p.ids:
                parts.append(self.embed(torch.tensor(p.ids, device=dev)))
            rows.append(torch.cat(parts))
        return rows

    def _run_padded(self, rows: list[torch.Tensor], width: int, cache, cache_len: int,
                    adapters: list[str] | None) -> torch.Tensor:
        """Forward left-padded rows of at most `width` tokens into `cache` (of `cache_len` slots);
        returns the last position's log-probs."""
        embeds = rows[0].new_zeros(len(rows), width, rows[0].shape[1])
        mask = torch.zeros(len(rows), cache_len, dtype=torch.long, device=embeds.device)
        for i, r in enumerate(rows):
            embeds[i, width - r.shape[0]:] = r
            mask[i, width - r.shape[0]: width] = 1
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        return self._call(cache, mask, positions, adapters, inputs_embeds=embeds)

    def prefill(self, prefixes: list[Prefix]) -> torch.Tensor:
        """Run the left-padded prefixes; returns next-token log-probs [R, V].

        Identical prefixes (the one instruction of a zero-shot run, the BOS of SoftSRV + STEER's base
        branch, a negative prompt shared by a block) are run once and their cache rows copied to
        every row that has them: the prefill costs one row per distinct prefix."""
        first: dict[tuple, int] = {}  # prefix -> its position among the distinct ones
        distinct, inverse = [], []
        for i, (p, a) in enumerate(zip(prefixes, self.adapters or [None] * len(prefixes))):
            key = prefix_key(p, a)
            if key not in first:
                first[key] = len(distinct)
                distinct.append(i)
            inverse.append(first[key])
        if len(distinct) == len(prefixes):
            return self._prefill(prefixes)
        if self.adapters is not None:
            self.adapters = [self.adapters[i] for i in distinct]
        logprobs = self._prefill([prefixes[i] for i in distinct])
        rows = torch.tensor(inverse, device=logprobs.device)
        self.select(rows)  # copies each distinct row's cache, mask and adapter to the rows that share it
        return logprobs[rows]

    def _prefill(self, prefixes: list[Prefix]) -> torch.Tensor:
        """Run the left-padded prefixes (all distinct); returns next-token log-probs [R, V]."""
        rows = self._embed_rows(prefixes)
        lengths = [r.shape[0] for r in rows]
        width = max(lengths)
        slots = width + self.max_new_tokens
        self.mask = torch.zeros(len(rows), slots, dtype=torch.long, device=rows[0].device)
        for i, n in enumerate(lengths):
            self.mask[i, width - n: width] = 1
        self.length = width
        self.positions = (self.mask[:, :width].cumsum(-1) - 1).clamp(min=0)[:, -1:]
        self.static = width >= self.STATIC_FROM
        if not self.static:
            self.cache = new_cache(self.model.config)
            return self._run_padded(rows, width, self.cache, width, self.adapters)
        self.cache = new_cache(self.model.config, static_slots=slots)
        chunks = prefill_chunks(lengths)
        if len(chunks) == 1 or not can_place_rows(self.cache):
            return self._run_padded(rows, width, self.cache, slots, self.adapters)
        return self._prefill_in_chunks(rows, chunks, width)

    def _prefill_in_chunks(self, rows: list[torch.Tensor], chunks: list[list[int]], width: int) -> torch.Tensor:
        """Prefill the static cache chunk by chunk; returns next-token log-probs [R, V].

        Each chunk of similar-length rows is padded only to its own longest row, run into a cache of
        its own, and its keys and values placed right-aligned (ending at slot `width`) in the shared
        cache: the cache a single padded forward would give (positions come from position_ids, not
        slots), for less compute and far less memory than one forward over every row."""
        logprobs = None
        for idx in chunks:
            w = max(rows[i].shape[0] for i in idx)
            part = new_cache(self.model.config, static_slots=w)
            adapters = None if self.adapters is None else [self.adapters[i] for i in idx]
            lp = self._run_padded([rows[i] for i in idx], w, part, w, adapters)
            if logprobs is None:
                logprobs = lp.new_empty(len(rows), lp.shape[-1])
            sel = torch.tensor(idx, device=lp.device)
            logprobs[sel] = lp
            place_rows(self.cache, part, sel, start=width - w, batch=len(rows))
        set_length(self.cache, width)
        return logprobs

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row; returns the next log-probs [R, V]."""
        self.mask[:, self.length] = 1
        self.length += 1
        self.positions = self.positions + 1
        mask = self.mask if self.static else self.mask[:, : self.length]
        return self._call(self.cache, mask, self.positions, self.adapters, input_ids=tokens[:, None])

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (retiring finished samples)."""
        self.mask, self.positions = self.mask[rows], self.positions[rows]
        if self.adapters is not None:
            self.adapters = [self.adapters[i] for i in rows.tolist()]
        keep_rows(self.cache, rows)


def prefix_key(p: Prefix, adapter: str | None) -> tuple:
    """What makes two rows' prefixes the same: token ids, the very same embeddings tensor (a
    non-contextual soft prompt), and the adapter."""
    return (adapter, tuple(p.ids or ()), None if p.embeds is None else id(p.embeds))


def prefix_length(p: Prefix) -> int:
    return (0 if p.embeds is None else p.embeds.shape[0]) + len(p.ids or ())


PREFILL_TOKENS = 4096  # padded tokens per prefill forward: big enough for full-speed matmuls


def prefill_chunks(lengths: list[int], max_tokens: int | None = None) -> list[list[int]]:
    """Row indices in chunks of similar length (length buckets, longest first within each), each
    chunk at most `max_tokens` (default `PREFILL_TOKENS`) padded tokens (and at least one row)."""
    max_tokens = PREFILL_TOKENS if max_tokens is None else max_tokens
    chunks = []
    for bucket in length_buckets(lengths):
        rows = sorted(bucket, key=lambda i: -lengths[i])
        chunk: list[int] = []
        for i in rows:
            if chunk and (len(chunk) + 1) * lengths[chunk[0]] > max_tokens:
                chunks.append(chunk)
                chunk = []
            chunk.append(i)
        chunks.append(chunk)
    return chunks


def length_buckets(lengths: list[int], slack: float = 1.5) -> list[list[int]]:
    """Row indices grouped so that no row is padded to more than `slack` times its length (+16)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets and lengths[i] <= slack * lengths[buckets[-1][0]] + 16:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


# ---------------------------------------------------------------- the loop

LENGTH_CLASS = 4.0  # rows whose prefixes differ more than 4x in length get separate caches

# log-probs [B, branches, V] of the samples still running -> scores [B, V]; `step` and `samples` (the
# running samples' indices in the batch) let a rule vary over time or per sample
Combine = Callable[..., torch.Tensor]


@dataclass
class Decoded:
    """One sample's continuation: its tokens (stop token excluded), why it ended ("eos": a stop
    token; "length": max_new_tokens), and the summed log-probability of its tokens under the
    combined, renormalised scores (before temperature and filtering)."""

    tokens: list[int]
    finish: str
    logprob: float


@dataclass
class RowGroup:
    """Rows of one model and one length class, decoded in one batch with one cache.

    `sample` and `branch` say whose row each is: `sample` indexes the running samples (renumbered
    as samples retire), `branch` the sample's branches."""

    batch: RowBatch
    sample: torch.Tensor  # [R] long
    branch: torch.Tensor  # [R] long
    prefixes: list[Prefix]

    def prefill(self) -> torch.Tensor:
        """The rows' first next-token log-probs [R, V]."""
        return self.batch.prefill(self.prefixes)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append each running sample's token [B] to its rows; the next log-probs [R, V]."""
        return self.batch.step(tokens[self.sample])

    def retire(self, renumber: torch.Tensor) -> None:
        """Drop the rows of finished samples and renumber the rest: `renumber` maps each running
        sample to its index among those that go on, -1 for one that has finished."""
        rows = (renumber[self.sample] >= 0).nonzero().squeeze(1)
        self.batch.select(rows)
        self.sample, self.branch = renumber[self.sample[rows]], self.branch[rows]
        self.prefixes = [self.prefixes[i] for i in rows.tolist()]

    def __len__(self) -> int:
        return len(self.sample)


def group_rows(models: list[torch.nn.Module], prefixes: list[list[Prefix]], max_new_tokens: int,
               device: torch.device) -> list[RowGroup]:
    """One group per model and length class, rows in (sample, branch) order: short rows (prompts)
    never attend over the slots of long ones (STEER's negative prompts)."""
    n, nb = len(prefixes), len(prefixes[0])
    groups = []
    for m, model in enumerate(models):
        rows = [(i, b) for i in range(n) for b in range(nb) if prefixes[i][b].model == m]
        for cls in length_buckets([prefix_length(prefixes[i][b]) for i, b in rows], slack=LENGTH_CLASS):
            part = [rows[j] for j in sorted(cls)]
            groups.append(RowGroup(RowBatch(model, [prefixes[i][b].adapter for i, b in part], max_new_tokens),
                                   sample=torch.tensor([i for i, _ in part], device=device),
                                   branch=torch.tensor([b for _, b in part], device=device),
                                   prefixes=[prefixes[i][b] for i, b in part]))
    return groups


def gather_branches(groups: list[RowGroup], lps: list[torch.Tensor], samples: int, branches: int) -> torch.Tensor:
    """The groups' row log-probs [R, V] as each running sample's branches' [samples, branches, V]."""
    if len(groups) == 1:
        # a lone group holds every row of the running samples (a sample's rows retire together), in
        # (sample, branch) order
        return lps[0].view(samples, branches, -1)
    logprobs = torch.empty(samples, branches, lps[0].shape[-1], device=lps[0].device)
    for g, lp in zip(groups, lps):
        logprobs[g.sample, g.branch] = lp
    return logprobs


def retire(groups: list[RowGroup], keep: torch.Tensor, running: int) -> list[RowGroup]:
    """Keep only the running samples `keep` (indices among the `running`), in every group; drops a
    group whose samples have all finished."""
    renumber = torch.full((running,), -1, dtype=torch.long, device=keep.device)
    renumber[keep] = torch.arange(len(keep), device=keep.device)
    for g in groups:
        g.retire(renumber)
    return [g for g in groups if len(g)]


@dataclass
class Transcript:
    """What every sample has drawn: tokens [N, max_new_tokens] (-1 where none: past its end, or its
    stop token) and the summed log-prob of those tokens [N] (float64: hundreds of steps add up)."""

    tokens: torch.Tensor
    logprob: torch.Tensor

    @classmethod
    def empty(cls, n: int, max_new_tokens: int, device: torch.device) -> Transcript:
        return cls(torch.full((n, max_new_tokens), -1, dtype=torch.long, device=device),
                   torch.zeros(n, dtype=torch.float64, device=device))

    def record(self, samples: torch.Tensor, step: int, tokens: torch.Tensor, scores: torch.Tensor,
               done: torch.Tensor) -> None:
        """Write the running `samples`' tokens of `step` and add their log-probs under `scores`
        [B, V]; a stop token (`done`) is not part of the sample."""
        chosen = scores.gather(1, tokens[:, None]).squeeze(1).double()
        self.tokens[samples, step] = tokens.masked_fill(done, -1)
        self.logprob[samples] += chosen.masked_fill(done, 0.0)

    def decoded(self) -> list[Decoded]:
        max_new_tokens = self.tokens.shape[1]
        tokens = [[t for t in row if t >= 0] for row in self.tokens.tolist()]
        return [Decoded(toks, "length" if len(toks) == max_new_tokens else "eos", lp)
                for toks, lp in zip(tokens, self.logprob.tolist())]


def decode(models: torch.nn.Module | list[torch.nn.Module], prefixes: list[list[Prefix]], keys: list[int],
           sampling: SamplingConfig, eos_token_ids: set[int] | int, combine: Combine | None = None,
           on_step: Callable[[int], None] | None = None, trace: list | None = None) -> list[list[int]]:
    """Decode one continuation per sample; returns the token ids only (see `decode_full`)."""
    return [d.tokens for d in decode_full(models, prefixes, keys, sampling, eos_token_ids, combine, on_step, trace)]


def decode_full(models: torch.nn.Module | list[torch.nn.Module], prefixes: list[list[Prefix]], keys: list[int],
                sampling: SamplingConfig, eos_token_ids: set[int] | int, combine: Combine | None = None,
                on_step: Callable[[int], None] | None = None, trace: list | None = None,
                constraint=None) -> list[Decoded]:
    """Decode one continuation per sample.

    Args:
        models: the frozen causal LM, or several (a branch's `Prefix.model` indexes them); each model
            runs all of its rows in one forward per step.
        prefixes: per sample, one `Prefix` per branch (every sample has the same number of branches).
        keys: per sample, its random key (`sample_key(seed, index)`).
        sampling: temperature, top-k, top-p, max new tokens.
        eos_token_ids: ids that end a sample (not included in its output).
        combine: log-probs [B, branches, V] (and keywords `step`, `samples`) -> scores [B, V];
            renormalised before sampling. Default: the single branch as it is.
        on_step: called with the number of samples still running after each step (progress bars).
        trace: if a list, each step appends (sample indices still running, their scores [B, V]).
        constraint: per-sample grammars (`constrain.RowMatchers`): each step, the tokens a running
            sample's grammar forbids are removed (and the rest renormalised) before it draws.

    Returns:
        Per sample, its `Decoded` continuation.
    """
    models = models if isinstance(models, (list, tuple)) else [models]
    eos = {eos_token_ids} if isinstance(eos_token_ids, int) else set(eos_token_ids)
    n, nb = len(prefixes), len(prefixes[0])
    if combine is None:
        if nb != 1:
            raise ValueError("several branches per sample need a combine rule")
        combine = lambda lp, **_: lp[:, 0]  # noqa: E731
    dev = models[0].get_input_embeddings().weight.device
    groups = group_rows(models, prefixes, sampling.max_new_tokens, dev)
    transcript = Transcript.empty(n, sampling.max_new_tokens, dev)
    with torch.no_grad():
        lps = [g.prefill() for g in groups]
        alive = torch.arange(n, device=dev)  # the running samples
        key_t = torch.tensor(keys, dtype=torch.int64, device=dev)
        eos_t = torch.tensor(sorted(eos), device=dev)
        for step in range(sampling.max_new_tokens):
            logprobs = gather_branches(groups, lps, len(alive), nb)
            scores = torch.log_softmax(combine(logprobs, step=step, samples=alive), dim=-1)
            if constraint is not None:
                scores = torch.log_softmax(constraint.mask(scores, alive), dim=-1)
            if trace is not None:
                trace.append((alive.clone(), scores.clone()))
            tokens = sample_tokens(scores, key_t[alive], step, sampling)
            if constraint is not None:
                constraint.advance(alive, tokens)
            done = torch.isin(tokens, eos_t)
            transcript.record(alive, step, tokens, scores, done)
            if step + 1 == sampling.max_new_tokens:
                break
            if done.any():
                keep = (~done).nonzero().squeeze(1)
                if len(keep) == 0:
                    break
                groups = retire(groups, keep, len(alive))
                alive, tokens = alive[keep], tokens[keep]
            if on_step:
                on_step(len(alive))
            lps = [g.step(tokens) for g in groups]
    return transcript.decoded()
