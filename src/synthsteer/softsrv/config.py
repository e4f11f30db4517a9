"""Configs of SoftSRV: the soft prompt's shape, the `fit` run that trains it, and `--method softsrv`'s
declaration (torch-free: `--help` and the method registry import this)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SynthsteerError
from ..method import MethodSpec
from ..options import DataOptions, Options, SeedOptions, TrainConfig, option

PARAMETERIZATIONS = ("nsp", "mp", "mc")


@dataclass(frozen=True)
class SoftPromptConfig:
    """The shape of P: R^{d_e} -> R^{t x d}.

    parameterization: `nsp` (one shared t x d matrix), `mp` (softmax mixture of `num_bases` basis
        prompts), `mc` (one small MLP per soft token).
    length: t, the number of soft tokens (128 for real LMs as in the paper; 16 suits `tiny`).
    hidden_size: d, the LM's input-embedding width (set from the LM).
    context_dim: d_e, the encoder's output width (set from the encoder).
    num_bases: k for `mp`.
    mlp_hidden, mlp_layers: width and depth of each per-token MLP for `mc`.
    """

    parameterization: str = "mc"
    length: int = 16
    hidden_size: int = 0
    context_dim: int = 0
    num_bases: int = 2
    mlp_hidden: int = 128
    mlp_layers: int = 2


@dataclass(frozen=True)
class SoftSRVOptions(Options):
    """Sampling from a trained soft prompt (`--method softsrv`, and SoftSRV + STEER)."""

    prompt: str | None = option(None, "Soft-prompt directory written by `synthsteer fit`.", nonempty=True)
    context_noise: float = option(0.0, "Gaussian noise on each context, relative to its norm (more novelty).", ge=0)
    context_mix: float = option(0.0, "Mix in up to this share of another example's context (more novelty).", ge=0, le=1)
    label_field: str | None = option(None, "Copy this field of the example whose context seeded a record into the "
                                           "record (for train-on-synthetic evaluation).")


@dataclass(frozen=True)
class SoftSRVView(SoftSRVOptions, DataOptions, SeedOptions):
    """What `--method softsrv` reads."""


def _needs_prompt(config) -> None:
    if not config.prompt:
        raise SynthsteerError(f"--method {config.method} needs --prompt DIR (a directory written by `synthsteer fit`)")


SOFTSRV = MethodSpec("softsrv", "a soft prompt from `synthsteer fit` (needs --prompt)", SoftSRVView,
                     "synthsteer.softsrv.method:SoftSRV", data="required", check=_needs_prompt)


@dataclass(frozen=True)
class FitConfig(TrainConfig):
    """Everything `synthsteer fit` / `fit_soft_prompt` needs; the CLI flags map one to one."""

    out: str = option("runs/prompt", "Output directory (the soft prompt).", nonempty=True)
    encoder: str = option("minilm", "Context encoder: minilm (bundled), lm-mean, or a sentence-transformers id/path.")
    parameterization: str = option("mc", "Soft prompt: nsp (shared), mp (mixture of bases), mc (per-token MLPs).",
                                   choices=PARAMETERIZATIONS)
    # the bounds are those a prompt directory may record (softsrv/prompt.py SHAPE_LIMITS)
    prompt_length: int = option(16, "Soft tokens t (128 for real LMs as in the paper; 16 suits tiny and smollm2 on "
                                    "a CPU).", count=True, le=65_536)
    num_bases: int = option(2, "Basis prompts k for mp.", count=True, le=4096)
    mlp_hidden: int = option(128, "Hidden width of each per-token MLP (mc).", count=True, le=1 << 16)
    mlp_layers: int = option(2, "Layers of each per-token MLP (mc).", count=True, le=64)

    def __post_init__(self):
        super().__post_init__()
        if self.max_length < 2:
            raise SynthsteerError("--max-length must be at least 2 (one token and EOS)")
