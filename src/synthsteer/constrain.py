"""Constrained decoding: only tokens that keep a record parsable may be sampled.

The record format (records.py) becomes one grammar per run, compiled once by xgrammar (measured
against outlines-core on the lockstep decoder: bench/bench_constrain.py): the template's regex, or
the JSON schema of a json record, with closed value sets where a field has them. Each sample gets
its own matcher, which first reads the forced prefix (the given fields, fed to the LM as tokens) as
text, then every token the sample draws; at each step its mask removes what the grammar forbids
before the sample is drawn. A mask depends on the sample's own tokens only, so a record is still a
function of (seed, index), whatever the batch.
"""

from __future__ import annotations

import torch

from .errors import SynthsteerError

INSTALL = "pip install 'synthsteer[constrain]' (xgrammar)"


def available() -> bool:
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        return False
    return True


class Grammar:
    """A record format compiled against an LM's vocabulary, once per run."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int], *, regex: str | None = None,
                 json_schema: dict | None = None):
        try:
            import xgrammar as xgr
        except ImportError:
            raise SynthsteerError(f"--constrain on needs xgrammar: {INSTALL}") from None
        self.xgr, self.vocab_size = xgr, vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))
        compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        if json_schema is not None:
            import json

            self.compiled = compiler.compile_json_schema(json.dumps(json_schema), any_whitespace=False)
        else:
            self.compiled = compiler.compile_regex(regex)

    def matchers(self, forced: list[str]) -> RowMatchers:
        """One matcher per sample, each having read its sample's forced prefix."""
        return RowMatchers(self, forced)


class RowMatchers:
    """The decoder's view of a grammar for one batch of samples: `mask` the running samples' scores,
    then `advance` them by the tokens they drew."""

    def __init__(self, grammar: Grammar, forced: list[str]):
        xgr = grammar.xgr
        self.xgr, self.vocab_size = xgr, grammar.vocab_size
        self.matchers = []
        for text in forced:
            m = xgr.GrammarMatcher(grammar.compiled)
            if text and not m.accept_string(text):
                raise SynthsteerError(f"the forced prefix {text!r} does not fit the record format's grammar")
            self.matchers.append(m)
        self.bitmask = xgr.allocate_token_bitmask(len(forced), grammar.vocab_size)

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
