"""GenerateConfig: what `synthsteer generate` / `generate()` takes; the CLI flags map one to one.

Its groups are the ones every run shares (where and how many records, the LM, the engine and its
workers, sampling, logging) and every group a declared method reads (`registry.method_groups`), so
a new method's options appear here without an edit. A method receives only its typed view
(`MethodSpec.view`); a flag of a group the chosen method does not read is reported in one warning line.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import SynthsteerError
from ..logs import log
from ..options import (ENGINE_SPECS, EngineOptions, FormatOptions, LMOptions, LogOptions, RunOptions, SamplingConfig,
                       WorkerOptions, check_record_format, flag, option)
from .registry import METHODS, method_groups


@dataclass(frozen=True)
class GenerateConfig(RunOptions, LogOptions, EngineOptions, WorkerOptions, LMOptions, SamplingConfig, FormatOptions,
                     *method_groups()):
    """Everything `synthsteer generate` / `generate()` needs.

    `model` defaults to the LM the prompt or expert was trained for (required without one); `data`
    (the contexts, few-shot examples and negative pool) to the prompt's or expert's data.
    """

    method: str = option("softsrv", "; ".join(f"{s.name}: {s.help}" for s in METHODS.values()) + ".",
                         choices=tuple(METHODS))

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.max_new_tokens)

    def __post_init__(self):
        if self.engine == "ray":  # the spelling before --ray: Ray is where the engine runs, not an engine
            log.warning("--engine ray is deprecated: use --ray (--engine names the decoding engine)")
            object.__setattr__(self, "engine", "transformers")
            object.__setattr__(self, "ray", True)
        super().__post_init__()
        check_record_format(self)
        if not self.ray:
            for name in ("ray_address", "workers", "gpus_per_worker"):
                if getattr(self, name) is not None:
                    raise SynthsteerError(f"{flag(name)} needs --ray")
        engine = ENGINE_SPECS[self.engine]
        if METHODS[self.method].lockstep and not engine.lockstep:
            lockstep = ", ".join(s.name for s in ENGINE_SPECS.values() if s.lockstep)
            serves = ", ".join(m.name for m in METHODS.values() if not m.lockstep)
            raise SynthsteerError(f"--engine {self.engine} cannot run --method {self.method}: each of its samples "
                                  "combines several branches' next-token distributions at every step (the expert's, "
                                  f"the base's, the negative prompt's), which needs the lockstep engine (--engine "
                                  f"{lockstep}); --engine {self.engine} serves {serves}")
        unused = ignored_settings(self)
        if unused:
            log.warning(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --method "
                        f"{self.method} (ignored)")


def ignored_settings(config: GenerateConfig) -> list[str]:
    """Flags set away from their defaults in groups the chosen method does not read."""
    if config.method not in METHODS:
        return []  # refused by validation already
    used = {f.name for f in fields(METHODS[config.method].view)}
    out = []
    for group in method_groups():
        for f in fields(group):
            if f.name not in used and getattr(config, f.name) != f.default:
                out.append(flag(f.name))
    return sorted(set(out))
