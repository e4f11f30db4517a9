"""The engine seam: what every generation method asks of a decoding backend, and the one we ship.

A method turns record indices into typed `Request`s (named branches per sample, a random key);
an engine turns requests into `Result`s (tokens, finish reason, log-probability). The generator
(`generation/generator.py`) only ever talks to an `Engine`, built by `build_engine` from the
declaration `--engine` names (`options.ENGINE_SPECS`), so a backend plugs in without touching a
method; Ray workers run whichever engine is chosen. The engine's name and version are part of a
run's settings: records made by another engine are another run.

Two engines ship: `TransformersEngine` here, and `vllm_engine.VLLMEngine` (single-branch methods
through vLLM). `TransformersEngine` is the lockstep decoder of `decoder.py` over Hugging Face
models: every branch of every sample is a row of one batch with its own KV cache; the branches'
next-token log-probs are combined (STEER's score, or the single branch as it is) and one token is
sampled per sample.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from .decoder import Combine, Prefix, SamplingConfig, decode_full
from .options import ENGINE_SPECS

if TYPE_CHECKING:
    from .method import Method


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
    """What the generator asks of a backend, built by its class's `build(method, options)`."""

    name: str
    version: str

    def run(self, requests: list[Request], step: Step, sampling: SamplingConfig, stop_ids: set[int],
            grammar=None) -> list[Result]:
        """Decode every request; results in request order, independent of how they are batched. With a
        `grammar` (constrain.Grammar), each continuation is one the grammar allows."""

    def close(self) -> None:
        """Release what the engine holds beyond this process's memory (vLLM's engine process)."""


@dataclass
class TransformersEngine:
    """The lockstep decoder over one or more Hugging Face models (a branch's `Prefix.model`
    indexes `models`; with a peft model, `Prefix.adapter` picks the adapter per row)."""

    models: list[torch.nn.Module] = field(default_factory=list)
    name: str = "transformers"
    version: str = "1"

    @classmethod
    def build(cls, method: Method, options) -> TransformersEngine:
        return cls(method.models)

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

    def close(self) -> None:
        """Nothing beyond this process's memory."""


def engine_class(name: str) -> type:
    """The class `--engine NAME` declares (`options.ENGINE_SPECS`), imported now."""
    module, _, cls = ENGINE_SPECS[name].impl.partition(":")
    return getattr(importlib.import_module(module), cls)


def build_engine(name: str, method: Method, options) -> Engine:
    """The engine `--engine NAME` runs `method`'s requests on; `options` holds its settings (an
    `options.EngineOptions`, or a config holding its fields)."""
    return engine_class(name).build(method, options)
