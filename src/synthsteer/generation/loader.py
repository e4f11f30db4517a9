"""Loading what a method is built from, once, whatever the method: the soft prompt, the base LM
(`--model`, else the one the prompt or expert was trained for), the expert and the training
examples (`--data`, else the prompt's or the expert's); then building the method on them."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import DataSpec, Record, is_plain_file, load_records
from ..errors import SynthsteerError
from ..lm import LM, check_fingerprint, load_lm_of
from ..method import Expert, Method, Parts
from ..options import ENGINE_SPECS
from .registry import method_spec

if TYPE_CHECKING:
    from .config import GenerateConfig


def build_method(config: GenerateConfig, lm: LM | None = None) -> Method:
    """Check the settings, load the parts once, build the method on its view of the settings."""
    spec = method_spec(config.method)
    if spec.check:
        spec.check(config)
    cls = spec.method_class()
    return cls(spec.view_of(config), resolve(config, lm, spec.data))


def resolve(config: GenerateConfig, lm: LM | None, data: str) -> Parts:
    """Load the soft prompt, the base LM (`--model`, else the one the prompt or expert was trained
    for; required otherwise), the expert and the training examples (`--data`, else the prompt's or the
    expert's)."""
    from ..softsrv.prompt import load_soft_prompt
    from ..steer.expert import META, read_expert_meta

    prompt, prompt_meta = load_soft_prompt(config.prompt) if config.prompt else (None, None)
    lora_meta = read_expert_meta(Path(config.expert), f"--expert {config.expert}") \
        if config.expert and (Path(config.expert) / META).exists() else None
    trained_for = (prompt_meta or lora_meta or {}).get("lm", {}).get("name")
    lm = lm or load_lm_of(config, config.model or trained_for, weights_elsewhere=ENGINE_SPECS[config.engine].loads_weights)
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
    from ..steer.expert import load_expert

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

    names = {f.name for f in fields(DataSpec)}
    if not isinstance(recorded, dict) or not isinstance(recorded.get("source"), str):
        raise SynthsteerError(f"{where}: its recorded data has no source")
    spec = {k: v for k, v in recorded.items() if k in names}
    for key, value in spec.items():
        if key == "fields" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            spec[key] = tuple(value)
        elif key == "rename" and isinstance(value, list) and all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v) for v in value):
            spec[key] = tuple(tuple(v) for v in value)
        elif value is not None and not isinstance(value, int if key == "limit" else str):
            raise SynthsteerError(f"{where}: its recorded data.{key} is a {type(value).__name__}")
    if spec.get("split") and is_plain_file(spec["source"]):
        spec["split"] = None
    return DataSpec(**spec)


def _training_records(config: GenerateConfig, recorded: dict | None) -> tuple[DataSpec, list[Record]]:
    where = f"--prompt {config.prompt}" if config.prompt else f"--expert {config.expert}"
    if config.data and recorded and config.data == recorded.get("source") and not (config.field or config.template
                                                                                   or config.fields or config.rename):
        # the examples the prompt/expert was trained on: their text is made the same way, without retyping --field
        base = recorded_spec(recorded, where)
        spec = replace(base, limit=None, split=config.split or base.split, subset=config.subset or base.subset)
    elif config.data:
        spec = DataSpec.of(config)
    elif recorded:
        spec = recorded_spec(recorded, where)
    else:
        raise SynthsteerError(f"--method {config.method} needs --data (the training examples)")
    return spec, load_records(spec)
