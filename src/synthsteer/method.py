"""What a generation method is: its declaration (torch-free) and the base class of its algorithm.

A method is "which named branches each sample decodes, and how their log-probs combine". It
declares itself once, beside its options, as a `MethodSpec` (name, help, the option groups it reads
as its typed `view`, the data it needs, the class that implements it); `generation/registry.py` lists
the declarations, and everything else (`--method` choices, the flags a method ignores, the loader)
is derived from them. The class is imported only when a run builds it, so `--help` never loads torch.

A `Method` is built from already-loaded `Parts` (the base LM, the expert, the soft prompt, the
training examples) and its view of the settings; it turns record indices into `Planned` records:
an engine `Request` each, with its provenance and the fields it copies into the record.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

    from .data import DataSpec, Record
    from .engine import Request, Step
    from .lm import LM

DATA_NEEDS = ("none", "optional", "required")


@dataclass(frozen=True)
class MethodSpec:
    """A method's declaration.

    name: `--method NAME`.
    help: one sentence for `--method`'s help.
    view: the frozen options dataclass the method receives, built from the option groups it reads
        (its bases); `generate` warns about a flag of any other method group that is set.
    data: whether it needs training examples ("required"), uses them when there are some
        ("optional") or never looks at them ("none").
    reads_written: whether written records feed later requests (STEER's negative pool); the run loop
        then hands out blocks in order, each once the blocks it reads are on disk.
    lockstep: whether a sample decodes several branches whose next-token distributions a combine rule
        merges at every step (STEER); only an engine that runs branches in lockstep
        (`options.EngineSpec.lockstep`) serves it.
    impl: "module:Class" of its `Method`, imported when a run builds it.
    check: refuses settings it cannot use (given the whole GenerateConfig), before anything is loaded.
    """

    name: str
    help: str
    view: type
    impl: str
    data: str = "none"
    reads_written: bool = False
    lockstep: bool = False
    check: Callable | None = None

    def __post_init__(self):
        if self.data not in DATA_NEEDS:
            raise ValueError(f"method {self.name}: data must be one of {DATA_NEEDS}, not {self.data!r}")

    @property
    def groups(self) -> tuple[type, ...]:
        """The option groups the method reads."""
        return self.view.__bases__

    def view_of(self, config):
        """The method's typed view of `config` (a GenerateConfig or a wider view)."""
        return view_of(self.view, config)

    def method_class(self) -> type[Method]:
        module, _, name = self.impl.partition(":")
        return getattr(importlib.import_module(module), name)


def view_of(view: type, config):
    """`view` (a frozen options dataclass) holding `config`'s values of its fields."""
    return view(**{f.name: getattr(config, f.name) for f in fields(view)})


@dataclass
class Expert:
    """STEER's expert: a LoRA adapter on the base LM (one peft model; rows pick the adapter) or a
    second, full fine-tuned LM."""

    model: torch.nn.Module
    kind: str  # "lora" or "full"
    meta: dict

    def settings(self) -> dict:
        return {"kind": self.kind, "sha256": self.meta.get("sha256"), "fingerprint": self.meta.get("fingerprint")}


@dataclass
class Parts:
    """Everything a method is built from, loaded once (`generation/loader.py`)."""

    lm: LM
    expert: Expert | None = None
    prompt: torch.nn.Module | None = None  # a softsrv.prompt.SoftPrompt (that package builds on this one)
    prompt_meta: dict | None = None
    spec: DataSpec | None = None
    records: list[Record] = field(default_factory=list)


@dataclass
class Planned:
    """One record before decoding: the engine request, its provenance, the fields the record copies
    from the example that seeded it (`--label-field`), and that example (None: no example seeds it;
    the generator then draws one for the given fields, `--given`)."""

    request: Request
    provenance: dict
    fields: dict = field(default_factory=dict)
    source: Record | None = None


class Method:
    """A generation method's algorithm; `spec` is its declaration (the class sets it)."""

    spec: ClassVar[MethodSpec]

    def __init__(self, options, parts: Parts):
        self.options, self.parts, self.lm = options, parts, parts.lm

    @property
    def models(self) -> list[torch.nn.Module]:
        """The engine's models: a `Prefix.model` indexes this list."""
        return [self.parts.expert.model if self.parts.expert else self.lm.model]

    def step(self) -> Step:
        from .engine import Step

        return Step()

    def settings(self) -> dict:
        return {}

    def plan(self, indices: list[int], keys: list[int]) -> list[Planned]:
        """The records `indices` (with their sampling keys), planned."""
        raise NotImplementedError

    def probe(self, indices: list[int], keys: list[int]) -> list[Planned]:
        """`plan` for a check before the run (its context length), leaving no trace in the method's state."""
        return self.plan(indices, keys)

    def written(self, records: list[dict]) -> None:
        """Called after each block of records is written (STEER's negative pool grows here)."""
