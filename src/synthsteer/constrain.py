"""Constrained decoding: only tokens that keep a record parsable may be sampled.

The record format (records.py) becomes one grammar per run, compiled once by xgrammar (measured
against outlines-core on the lockstep decoder: bench/bench_constrain.py): the regex of what may
follow the forced prefix (the leading literal and the given fields), which is the same for every
record whatever its given values, with closed value sets where a field has them. Each sample gets
its own matcher, which reads every token the sample draws; at each step its mask removes what the
grammar forbids before the sample is drawn. A mask depends on the sample's own tokens only, so a
record is still a function of (seed, index), whatever the batch.
"""

from __future__ import annotations

import torch

from .errors import SynthsteerError
from .logs import log

INSTALL = "pip install 'synthsteer[constrain]' (xgrammar)"


def enabled(mode: str) -> bool:
    """Whether a run with a record format decodes under its grammar (--constrain auto|on|off)."""
    if mode == "off":
        return False
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        if mode == "on":
            raise SynthsteerError(f"--constrain on needs xgrammar: {INSTALL}") from None
        log.warning(f"records are decoded unconstrained: xgrammar is not installed ({INSTALL})")
        return False
    return True


class Grammar:
    """A record format compiled against an LM's vocabulary, once per run."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int], regex: str):
        import xgrammar as xgr  # `enabled` said it is there

        self.xgr, self.vocab_size, self.regex = xgr, vocab_size, regex  # the regex: what another engine compiles
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))
        self.compiled = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False).compile_regex(regex)

    def matchers(self, n: int) -> RowMatchers:
        """One matcher per sample of a batch."""
        return RowMatchers(self, n)


class RowMatchers:
    """The decoder's view of a grammar for one batch of samples: `mask` the running samples' scores,
    then `advance` them by the tokens they drew."""

    def __init__(self, grammar: Grammar, n: int):
        xgr = grammar.xgr
        self.xgr, self.vocab_size = xgr, grammar.vocab_size
        self.matchers = [xgr.GrammarMatcher(grammar.compiled) for _ in range(n)]
        self.bitmask = xgr.allocate_token_bitmask(n, grammar.vocab_size)

    def mask(self, scores: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """`scores` [running, V] with the tokens each running sample's grammar forbids at -inf."""
        for row, i in enumerate(samples.tolist()):
            self.matchers[i].fill_next_token_bitmask(self.bitmask, row)
        scores = scores.float().contiguous()
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask[: len(samples)].to(scores.device),
                                             vocab_size=self.vocab_size)
        return scores

    def advance(self, samples: torch.Tensor, tokens: torch.Tensor) -> None:
        for i, token in zip(samples.tolist(), tokens.tolist()):
            m = self.matchers[i]
            if not m.is_terminated():
                m.accept_token(token)
