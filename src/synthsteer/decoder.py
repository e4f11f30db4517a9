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
        """Run the left-padded prefixes; returns next-token log-probs [R, V].

        Rows are run in chunks of similar length (`prefill_chunks`), each padded only to its own
        longest row, and their keys and values are then placed right-aligned in the shared cache: the
        same cache a single padded forward would give (positions come from position_ids, not slots),
        for less compute and far less memory than one forward over every row."""
        from transformers import DynamicCache, StaticCache

        rows = self._embed_rows(prefixes)
        lengths = [r.shape[0] for r in rows]
        width = max(lengths)
        dev = rows[0].device
        self.mask = torch.zeros(len(rows), width + self.max_new_tokens, dtype=torch.long, device=dev)
        for i, n in enumerate(lengths):
            self.mask[i, width - n: width] = 1
        self.length = width
        self.positions = (self.mask[:, :width].cumsum(-1) - 1).clamp(min=0)[:, -1:]
        self.static = width >= self.STATIC_FROM
        if not self.static:
            self.cache = DynamicCache(config=self.model.config)
            return self._run_padded(rows, width, self.cache, width, self.adapters)
        self.cache = StaticCache(config=self.model.config, max_cache_len=width + self.max_new_tokens)
        buckets = prefill_chunks(lengths)
        if len(buckets) == 1 or not all(type(layer).__name__ == "StaticLayer" for layer in self.cache.layers):
            return self._run_padded(rows, width, self.cache, width + self.max_new_tokens, self.adapters)
        logprobs = None
        for idx in buckets:
            w = max(lengths[i] for i in idx)
            part = StaticCache(config=self.model.config, max_cache_len=w)
            adapters = None if self.adapters is None else [self.adapters[i] for i in idx]
            lp = self._run_padded([rows[i] for i in idx], w, part, w, adapters)
            if logprobs is None:
                logprobs = lp.new_empty(len(rows), lp.shape[-1])
            sel = torch.tensor(idx, device=dev)
            logprobs[sel] = lp
            for layer, small in zip(self.cache.layers, part.layers):
                if not layer.is_initialized:
                    layer.lazy_initialization(small.keys.new_zeros((len(rows), *small.keys.shape[1:])),
                                              small.values.new_zeros((len(rows), *small.values.shape[1:])))
                layer.keys[sel, :, width - w: width] = small.keys
                layer.values[sel, :, width - w: width] = small.values
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(width)
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
        if not self.static:
            self.cache.batch_select_indices(rows)
            return
        for layer in self.cache.layers:
            if layer.is_initialized:
                layer.keys, layer.values = layer.keys[rows], layer.values[rows]
                layer.batch_size = len(rows)


def prefix_key(p: Prefix, adapter: str | None) -> tuple:
    """What makes two rows' prefixes the same: token ids, the very same embeddings tensor (a
    non-contextual soft prompt), and the adapter."""
    return (adapter, tuple(p.ids or ()), None if p.embeds is None else id(p.embeds))


def prefix_length(p: Prefix) -> int:
    return (0 if p.embeds is None else p.embeds.shape[0]) + len(p.ids or ())


PREFILL_TOKENS = 4096  # padded tokens per prefill forward: big enough for full-speed matmuls


def prefill_chunks(lengths: list[int], max_tokens: int = PREFILL_TOKENS) -> list[list[int]]:
    """Row indices in chunks of similar length (length buckets, longest first within each), each
    chunk at most `max_tokens` padded tokens (and at least one row)."""
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


def decode(models: torch.nn.Module | list[torch.nn.Module], prefixes: list[list[Prefix]], keys: list[int],
           sampling: SamplingConfig, eos_token_ids: set[int] | int, combine: Combine | None = None,
           on_step: Callable[[int], None] | None = None, trace: list | None = None) -> list[list[int]]:
    """Decode one continuation per sample; returns the token ids only (see `decode_full`)."""
    return [d.tokens for d in decode_full(models, prefixes, keys, sampling, eos_token_ids, combine, on_step, trace)]


def decode_full(models: torch.nn.Module | list[torch.nn.Module], prefixes: list[list[Prefix]], keys: list[int],
                sampling: SamplingConfig, eos_token_ids: set[int] | int, combine: Combine | None = None,
                on_step: Callable[[int], None] | None = None, trace: list | None = None) -> list[Decoded]:
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
    # one group of rows per model and length class, each with its own cache: short rows (prompts)
    # never attend over the slots of long ones (STEER's negative prompts)
    groups = []  # [RowBatch, sample index of each row, branch of each row, prefixes]
    for m, model in enumerate(models):
        rows = [(i, b) for i in range(n) for b in range(nb) if prefixes[i][b].model == m]
        for cls in length_buckets([prefix_length(prefixes[i][b]) for i, b in rows], slack=LENGTH_CLASS):
            part = [rows[j] for j in sorted(cls)]
            batch = RowBatch(model, [prefixes[i][b].adapter for i, b in part], sampling.max_new_tokens)
            groups.append([batch, torch.tensor([i for i, _ in part], device=dev),
                           torch.tensor([b for _, b in part], device=dev), [prefixes[i][b] for i, b in part]])
    with torch.no_grad():
        lps = [g[0].prefill(g[3]) for g in groups]
        alive = torch.arange(n, device=dev)
        key_t = torch.tensor(keys, dtype=torch.int64, device=dev)
        eos_t = torch.tensor(sorted(eos), device=dev)
        out = torch.full((n, sampling.max_new_tokens), -1, dtype=torch.long, device=dev)
        logprob = torch.zeros(n, dtype=torch.float64, device=dev)
        single = len(groups) == 1
        for step in range(sampling.max_new_tokens):
            if single:  # one batch holds every row, in (sample, branch) order
                logprobs = lps[0].view(len(alive), nb, -1)
            else:
                logprobs = torch.empty(len(alive), nb, lps[0].shape[-1], device=dev)
                for (_, sample_of, branch_of, _), lp in zip(groups, lps):
                    logprobs[sample_of, branch_of] = lp
            scores = torch.log_softmax(combine(logprobs, step=step, samples=alive), dim=-1)
            if trace is not None:
                trace.append((alive.clone(), scores.clone()))
            tokens = sample_tokens(scores, key_t[alive], step, sampling)
            done = torch.isin(tokens, eos_t)
            chosen = scores.gather(1, tokens[:, None]).squeeze(1).double()
            out[alive, step] = tokens.masked_fill(done, -1)  # a stop token is not part of the sample
            logprob[alive] += chosen.masked_fill(done, 0.0)
            if step + 1 == sampling.max_new_tokens:
                break
            if done.any():
                keep = (~done).nonzero().squeeze(1)
                if len(keep) == 0:
                    break
                renumber = torch.full((len(alive),), -1, dtype=torch.long, device=dev)
                renumber[keep] = torch.arange(len(keep), device=dev)
                for g in groups:
                    rows = (renumber[g[1]] >= 0).nonzero().squeeze(1)
                    g[0].select(rows)
                    g[1], g[2] = renumber[g[1][rows]], g[2][rows]
                groups = [g for g in groups if len(g[1])]  # a length class whose samples have all finished
                alive, tokens = alive[keep], tokens[keep]
            if on_step:
                on_step(len(alive))
            lps = [g[0].step(tokens[g[1]]) for g in groups]
    tokens = [[t for t in row if t >= 0] for row in out.tolist()]
    return [Decoded(toks, "length" if len(toks) == sampling.max_new_tokens else "eos", lp)
            for toks, lp in zip(tokens, logprob.tolist())]
