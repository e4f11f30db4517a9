"""Config of STEER's LoRA expert training run (the instructions live in `synthsteer.prompts`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..prompts import CHAT_TEMPLATE_MODES
from ..training import TrainConfig

@dataclass(frozen=True)
class ExpertConfig(TrainConfig):
    """`synthsteer expert`: LoRA fine-tuning of the base LM on the target data, giving the expert.

    The expert learns `instruction + example + EOS` with the loss on the example and EOS, so that
    at generation time it answers the same instruction (as a chat user turn when the tokenizer has
    a chat template and `chat_template` is auto). Defaults suit `tiny`; for 7B-class models
    the paper used r 64, alpha 16, dropout 0.1, lr 2e-4, batch 16, 512 tokens, ~1000 steps.
    """

    out: str = "runs/expert"
    steps: int = 200
    lr: float = 1e-3
    warmup: int = 20
    instruction: str | None = None
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = "all-linear"
    chat_template: str = "auto"

    def __post_init__(self):
        from ..errors import SynthsteerError, require_at_least_one

        super().__post_init__()
        require_at_least_one(self, ("r", "alpha"))
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise SynthsteerError(f"--chat-template {self.chat_template}: use one of {', '.join(CHAT_TEMPLATE_MODES)}")
        if not 0 <= self.dropout < 1:
            raise SynthsteerError(f"--dropout must be in [0, 1), got {self.dropout}")
