"""The engine seam: what every generation method asks of a decoding backend, and the one we ship.

A method turns record indices into typed `Request`s (named branches per sample, a random key);
an engine turns requests into `Result`s (tokens, finish reason, log-probability). The generator
(`generation/generator.py`) only ever talks to an `Engine`, picked by `--engine` from `ENGINES`, so
another backend (vLLM) plugs in here without touching a method; Ray workers run whichever engine
is chosen. The engine's name and version are part of a run's settings: records made by another
engine are another run.

`TransformersEngine` is the lockstep decoder of `decoder.py` over Hugging Face models: every branch
of every sample is a row of one batch with its own KV cache; the branches' next-token log-probs
are combined (STEER's score, or the single branch as it is) and one token is sampled per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .decoder import Combine, Prefix, SamplingConfig, decode_full


@dataclass(frozen=True)
class Request:
    """One sample to decode: its branches by name (one for plain, hard and SoftSRV sampling;
    expert, base and negative for STEER) and its random key (`randomness.sample_key`)."""

    branches: dict[str, Prefix]
    key: int


@dataclass(frozen=True)
class Result:
    tokens: list[int]
    finish: str  # "eos" (a stop token) or "length" (max_new_tokens)
    logprob: float  # summed log-prob of `tokens` under the combined, renormalised scores


@dataclass(frozen=True)
class Step:
    """How a method's branches become one next-token distribution: the branch names in the order
    the combine rule reads them, and the rule (None: the single branch as it is)."""

    branches: tuple[str, ...] = ("main",)
    combine: Combine | None = None


class Engine(Protocol):
    """What the generator asks of a backend, built from the method's models."""

    name: str
    version: str

    def run(self, requests: list[Request], step: Step, sampling: SamplingConfig, stop_ids: set[int],
            grammar=None) -> list[Result]:
        """Decode every request; results in request order, independent of how they are batched. With a
        `grammar` (constrain.Grammar), each continuation is one the grammar allows."""


@dataclass
class TransformersEngine:
    """The lockstep decoder over one or more Hugging Face models (a branch's `Prefix.model`
    indexes `models`; with a peft model, `Prefix.adapter` picks the adapter per row)."""

    models: list[torch.nn.Module] = field(default_factory=list)
    name: str = "transformers"
    version: str = "1"

    def run(self, requests: list[Request], step: Step, sampling: SamplingConfig, stop_ids: set[int],
            grammar=None) -> list[Result]:
        for r in requests:
            if set(r.branches) != set(step.branches):
                raise ValueError(f"request branches {sorted(r.branches)} are not the method's {list(step.branches)}")
        prefixes = [[r.branches[b] for b in step.branches] for r in requests]
        constraint = grammar.matchers(len(requests)) if grammar is not None else None
        decoded = decode_full(self.models, prefixes, [r.key for r in requests], sampling, stop_ids, combine=step.combine,
                              constraint=constraint)
        return [Result(d.tokens, d.finish, d.logprob) for d in decoded]


# --engine NAME -> its class, called with the method's models (options.ENGINES lists the names for --help)
ENGINES: dict[str, Callable[[list[torch.nn.Module]], Engine]] = {"transformers": TransformersEngine}
