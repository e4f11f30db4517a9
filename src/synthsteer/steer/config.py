"""Configs of STEER: its decoding knobs, `--method steer`'s declaration (torch-free: `--help` and the
method registry import this) and the LoRA expert's training run (the instructions live in
`synthsteer.prompts`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SynthsteerError
from ..method import MethodSpec
from ..options import DataOptions, Options, SeedOptions, SamplingConfig, TrainConfig, option
from ..prompts import CHAT_TEMPLATE_MODES, HardPromptOptions
from ..softsrv.config import SoftSRVOptions

DRAWS = ("uniform", "nearest")


@dataclass(frozen=True)
class SteerOptions(Options):
    """STEER's decoding knobs (`--method steer`)."""

    gamma: float = option(0.2, "Contrastive expert guidance strength (paper default 0.2).", ge=0)
    eta: float = option(0.6, "Negative prompting strength (paper default 0.6).", ge=0)
    negatives: int = option(10, "K negative examples per record, drawn from real + already generated records.", ge=0)
    separator: str = option("\n\n", "Text between negative examples.")
    negative_draw: str = option("uniform", "uniform (the paper) or nearest (the K closest to the record's context).",
                                choices=DRAWS)
    pool_lag: int = option(0, "Blocks a written block waits before it joins the negative pool: 0 is the paper's "
                              "'every sample generated so far'; L lets L+1 Ray workers decode at once. Part of the "
                              "settings: the records depend on it, not on the number of workers.", ge=0)
    negative_max_tokens: int | None = option(None, "Length limit of the negative prompt; it ends at the last whole "
                                                   "example that fits (default: what the LM's context leaves after "
                                                   "--max-new-tokens).", count=True)
    merge_expert: str = option("auto", "A LoRA expert as a merged copy of the LM (no per-row adapter work; twice the "
                                       "weights' memory): auto (on CPU, or when the GPU has room), always or never.",
                                choices=("auto", "always", "never"))
    negative_share: str = option("sample", "sample: each record draws its own K negatives (the paper); block: the "
                                           "records of a decoding block share one draw, prefilled once (faster, "
                                           "less diverse negatives).", choices=("sample", "block"))


@dataclass(frozen=True)
class SteerView(SteerOptions, HardPromptOptions, SoftSRVOptions, DataOptions, SeedOptions, SamplingConfig):
    """What `--method steer` reads: its knobs, the instruction prompt (with --expert) or the soft prompt
    (with --prompt), and --max-new-tokens (the negative branch's room in the LM's context)."""


def _check(config) -> None:
    if config.expert and config.prompt:
        raise SynthsteerError("--method steer takes --expert (instruction prompt) or --prompt (SoftSRV + STEER), "
                              "not both: the soft prompt was trained for the base LM")
    if not (config.expert or config.prompt):
        raise SynthsteerError("--method steer needs --expert DIR (a LoRA or full fine-tuned expert) "
                              "or --prompt DIR (a soft prompt: SoftSRV + STEER)")
    if config.label_field and not config.prompt:
        raise SynthsteerError("--label-field needs SoftSRV + STEER (--prompt): an instruction-prompted record has no "
                              "source example")
    if config.negative_share == "block" and config.negative_draw == "nearest":
        raise SynthsteerError("--negative-share block takes --negative-draw uniform: the nearest examples "
                              "differ per record, so a block has no one draw to share")


STEER = MethodSpec("steer", "STEER's contrastive and negative guidance (needs --expert or --prompt)", SteerView,
                   "synthsteer.steer.method:Steer", data="optional", reads_written=True, lockstep=True,
                   check=_check)


@dataclass(frozen=True)
class ExpertConfig(TrainConfig):
    """`synthsteer expert`: LoRA fine-tuning of the base LM on the target data, giving the expert.

    The expert learns `instruction + example + EOS` with the loss on the example and EOS, so that
    at generation time it answers the same instruction (as a chat user turn when the tokenizer has
    a chat template and `chat_template` is auto). Defaults suit `tiny`; for 7B-class models
    the paper used r 64, alpha 16, dropout 0.1, lr 2e-4, batch 16, 512 tokens, ~1000 steps.
    """

    out: str = option("runs/expert", "Output directory (the LoRA expert).", nonempty=True)
    steps: int = option(200, "Optimizer steps.", count=True)
    lr: float = option(1e-3, "Peak learning rate (AdamW).", gt=0)
    instruction: str | None = option(None, "The instruction the expert learns to answer; default: the task's.")
    r: int = option(16, "LoRA rank.", count=True)
    alpha: int = option(32, "LoRA alpha.", count=True)
    dropout: float = option(0.05, "LoRA dropout.", ge=0, lt=1)
    target_modules: str = option("all-linear", "Modules that get LoRA adapters (peft's target_modules).")
    chat_template: str = option("auto", "auto: the instruction as a chat user turn when the tokenizer has a chat "
                                        "template; none: never.", choices=CHAT_TEMPLATE_MODES)
