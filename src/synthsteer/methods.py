"""Generation methods: the registry, the parts they are built from, and the one step that loads them.

A method is "which named branches each sample decodes, and how their log-probs combine". It is
built from already-loaded `Parts` (the base LM, the expert, the soft prompt, the training
examples), which `resolve` loads once, whatever the method; it turns record indices into engine
`Request`s and provenance. Methods register by name next to their algorithm:
    plain, hard   baselines.py
    softsrv       softsrv/method.py
    steer         steer/method.py
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from .data import DataSpec, Record, load_records
from .engine import Request, Step
from .errors import SynthsteerError
from .lm import LM, check_fingerprint, load_lm_of
from .registry import registrar

if TYPE_CHECKING:
    from .generation import GenerateConfig
    from .softsrv.prompt import SoftPrompt

METHODS: dict[str, type[Method]] = {}
_MODULES = ("synthsteer.baselines", "synthsteer.softsrv.method", "synthsteer.steer.method")


register = registrar(METHODS)  # @register("name"): available as `--method name`


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
    """Everything a method is built from, loaded once by `resolve`."""

    lm: LM
    expert: Expert | None = None
    prompt: SoftPrompt | None = None
    prompt_meta: dict | None = None
    spec: DataSpec | None = None
    records: list[Record] = field(default_factory=list)


class Method:
    """A generation method. `data` says whether it needs training examples ("required"), uses
    them when there are some ("optional") or never looks at them ("none"); `uses_pool` whether
    written records feed later requests (STEER's negatives), which orders the blocks."""

    name: ClassVar[str]
    data: ClassVar[str] = "none"
    uses_pool: ClassVar[bool] = False

    @classmethod
    def check(cls, config: GenerateConfig) -> None:
        """Refuse settings the method cannot use, before anything is loaded."""

    def __init__(self, config: GenerateConfig, parts: Parts):
        self.config, self.parts, self.lm = config, parts, parts.lm

    @property
    def models(self) -> list[torch.nn.Module]:
        """The engine's models: a `Prefix.model` indexes this list."""
        return [self.parts.expert.model if self.parts.expert else self.lm.model]

    def step(self) -> Step:
        return Step()

    def settings(self) -> dict:
        return {}

    def requests(self, indices: list[int], keys: list[int]) -> tuple[list[Request], list[dict]]:
        """Requests and provenance of the records `indices` (with their sampling keys)."""
        raise NotImplementedError

    def written(self, records: list[dict]) -> None:
        """Called after each block of records is written (STEER's negative pool grows here)."""


def method_class(name: str) -> type[Method]:
    for module in _MODULES:
        importlib.import_module(module)
    if name not in METHODS:
        raise SynthsteerError(f"--method {name}: use one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(config: GenerateConfig, lm: LM | None = None) -> Method:
    """Check the settings, load the parts once, build the method."""
    cls = method_class(config.method)
    cls.check(config)
    return cls(config, resolve(config, lm, cls.data))


# ---------------------------------------------------------------- loading the parts, once


def resolve(config: GenerateConfig, lm: LM | None, data: str) -> Parts:
    """Load the soft prompt, the base LM (`--model`, else the one the prompt or expert was trained
    for; required otherwise), the expert and the training examples (`--data`, else the prompt's or the
    expert's)."""
    from .softsrv.prompt import load_soft_prompt
    from .steer.expert import META, read_expert_meta

    prompt, prompt_meta = load_soft_prompt(config.prompt) if config.prompt else (None, None)
    lora_meta = read_expert_meta(Path(config.expert), f"--expert {config.expert}") \
        if config.expert and (Path(config.expert) / META).exists() else None
    trained_for = (prompt_meta or lora_meta or {}).get("lm", {}).get("name")
    lm = lm or load_lm_of(config, config.model or trained_for)
    if prompt is not None:
        check_fingerprint(prompt_meta["lm"], lm.fingerprint(), f"--prompt {config.prompt}")
        prompt.to(lm.device).eval()
    expert = _load_expert(config, lm, lora_meta) if config.expert else None
    parts = Parts(lm=lm, expert=expert, prompt=prompt, prompt_meta=prompt_meta)
    recorded = prompt_meta["data"] if prompt_meta else (expert.meta.get("data") if expert else None)
    if data == "required" or (data == "optional" and (config.shots or config.data or recorded)):
        parts.spec, parts.records = _training_records(config, recorded)
    return parts


def _load_expert(config: GenerateConfig, base: LM, lora_meta: dict | None) -> Expert:
    from .steer.expert import load_expert

    if lora_meta is not None:
        model, meta = load_expert(config.expert, base, lora_meta)  # meta["sha256"]: the adapter's, verified
        return Expert(model, "lora", meta)
    full = load_lm_of(config, config.expert)
    if full.embed.weight.shape[0] != base.embed.weight.shape[0]:
        raise SynthsteerError(f"--expert {config.expert}: its vocabulary ({full.embed.weight.shape[0]}) differs from "
                              f"the base LM's ({base.embed.weight.shape[0]})")
    return Expert(full.model, "full", {"fingerprint": full.fingerprint(), "data": None})


def recorded_spec(recorded: dict, where: str) -> DataSpec:
    """The DataSpec an artifact recorded, checked (its entries are strings, or an integer limit). A
    split recorded for a plain file was ignored when the artifact was made (older synthsteer took it
    silently), so it is dropped here to read the same records."""
    from dataclasses import fields

    from .data import is_plain_file

    names = {f.name for f in fields(DataSpec)}
    if not isinstance(recorded, dict) or not isinstance(recorded.get("source"), str):
        raise SynthsteerError(f"{where}: its recorded data has no source")
    spec = {k: v for k, v in recorded.items() if k in names}
    for key, value in spec.items():
        if value is not None and not isinstance(value, int if key == "limit" else str):
            raise SynthsteerError(f"{where}: its recorded data.{key} is a {type(value).__name__}")
    if spec.get("split") and is_plain_file(spec["source"]):
        spec["split"] = None
    return DataSpec(**spec)


def _training_records(config: GenerateConfig, recorded: dict | None) -> tuple[DataSpec, list[Record]]:
    where = f"--prompt {config.prompt}" if config.prompt else f"--expert {config.expert}"
    if config.data and recorded and config.data == recorded.get("source") and not (config.field or config.template):
        # the examples the prompt/expert was trained on: their text is made the same way, without retyping --field
        base = recorded_spec(recorded, where)
        spec = replace(base, limit=None, split=config.split or base.split, subset=config.subset or base.subset)
    elif config.data:
        spec = DataSpec(config.data, field=config.field, template=config.template, split=config.split,
                        subset=config.subset)
    elif recorded:
        spec = recorded_spec(recorded, where)
    else:
        raise SynthsteerError(f"--method {config.method} needs --data (the training examples)")
    return spec, load_records(spec)
