"""What the baselines read and declare (torch-free: `--help` and the registry import this).

    plain  unsteered sampling from the LM's BOS token alone
    hard   an instruction (zero-shot) or an instruction with k seeded training examples (few-shot),
           from the base LM or, with --expert, from the expert: the papers' hard-prompt baselines
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SynthsteerError
from ..method import MethodSpec
from ..options import DataOptions, SeedOptions, TextOptions
from ..prompts import HardPromptOptions


@dataclass(frozen=True)
class PlainView(TextOptions, SeedOptions):
    """What `--method plain` reads: nothing of its own; a record format (--template, --format json) when
    its records have several fields (drawn --given-values, no training examples)."""


@dataclass(frozen=True)
class HardView(HardPromptOptions, DataOptions, SeedOptions):
    """What `--method hard` reads (and STEER's instruction-prompt branches)."""


def _no_label_field(config) -> None:
    if config.label_field:
        raise SynthsteerError(f"--label-field needs a contextual method (softsrv): --method {config.method} samples "
                              "have no source example")


PLAIN = MethodSpec("plain", "unsteered sampling from --model", PlainView, "synthsteer.baselines.method:Plain",
                   check=_no_label_field)
HARD = MethodSpec("hard", "an instruction, few-shot with --shots, from --model or --expert", HardView,
                  "synthsteer.baselines.method:Hard", data="optional", check=_no_label_field)
