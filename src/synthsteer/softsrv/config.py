"""Configs of SoftSRV: the soft prompt's shape and the `fit` run that trains it."""

from __future__ import annotations

from dataclasses import dataclass

from ..training import TrainConfig

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
class FitConfig(TrainConfig):
    """Everything `synthsteer fit` / `fit_soft_prompt` needs; the CLI flags map one to one."""

    out: str = "runs/prompt"
    encoder: str = "minilm"
    parameterization: str = "mc"
    prompt_length: int = 16
    num_bases: int = 2
    mlp_hidden: int = 128
    mlp_layers: int = 2

    def __post_init__(self):
        from ..errors import SynthsteerError, require_at_least_one

        if self.parameterization not in PARAMETERIZATIONS:
            raise SynthsteerError(f"--parameterization {self.parameterization}: use one of {', '.join(PARAMETERIZATIONS)}")
        super().__post_init__()
        require_at_least_one(self, ("prompt_length", "num_bases", "mlp_hidden", "mlp_layers"))
        if self.max_length < 2:
            raise SynthsteerError("--max-length must be at least 2 (one token and EOS)")
