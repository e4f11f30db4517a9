"""Configs of STEER: the LoRA expert's training run, and the instructions of the bundled tasks."""

from __future__ import annotations

from dataclasses import dataclass

from ..training import TrainConfig

# The paper's prompt template ("### Instruction: ...\n ### Comment:"), one per bundled task.
INSTRUCTIONS = {
    "gsm8k": "### Instruction: Generate a grade-school math word problem.\n ### Problem:",
    "mbpp": "### Instruction: Generate a short Python programming task.\n ### Task:",
    "boolq": "### Instruction: Generate a yes/no question about a Wikipedia topic.\n ### Question:",
    "commonsenseqa": "### Instruction: Generate a multiple-choice commonsense question.\n ### Question:",
    "jigsaw": "### Instruction: Generate a social media comment.\n ### Comment:",
}
GENERIC_INSTRUCTION = "### Instruction: Generate an example like those of the dataset.\n ### Example:"


def default_instruction(source: str | None) -> str:
    if source and source.startswith("builtin:"):
        return INSTRUCTIONS.get(source[len("builtin:"):].split("/")[0], GENERIC_INSTRUCTION)
    return GENERIC_INSTRUCTION


@dataclass(frozen=True)
class ExpertConfig(TrainConfig):
    """`synthsteer expert`: LoRA fine-tuning of the base LM on the target data, giving the expert.

    The expert learns `instruction + example + EOS` with the loss on the example and EOS, so that
    at generation time it answers the same instruction. Defaults suit `tiny`; for 7B-class models
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

    def __post_init__(self):
        from ..errors import SynthsteerError, require_at_least_one

        super().__post_init__()
        require_at_least_one(self, ("r", "alpha"))
        if not 0 <= self.dropout < 1:
            raise SynthsteerError(f"--dropout must be in [0, 1), got {self.dropout}")
