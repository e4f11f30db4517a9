"""The baselines every method is compared with, through the same engine.

    plain  unsteered sampling from the LM's BOS token alone
    hard   an instruction (zero-shot) or an instruction with k seeded training examples (few-shot),
           from the base LM or, with --expert, from the expert: the papers' hard-prompt baselines
"""

from __future__ import annotations


import torch

from .decoder import Prefix
from .engine import Request
from .errors import SynthsteerError
from .methods import Method, register
from .prompts import chat_template_id, default_instruction, few_shot_prompt, prompt_ids, uses_chat_template
from .randomness import Stream, generator


def start_token(tokenizer) -> int:
    """Where a sample with no prompt starts: the BOS token, or EOS (the document separator)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


@register("plain")
class Plain(Method):
    @classmethod
    def check(cls, config):
        if config.label_field:
            raise SynthsteerError("--label-field needs a contextual method: unsteered samples have no source example")

    def requests(self, indices, keys):
        start = [start_token(self.lm.tokenizer)]
        return [Request({"main": Prefix(ids=start)}, key) for key in keys], [{} for _ in indices]


@register("hard")
class Hard(Method):
    """Zero- or few-shot hard prompt, sampled from the base LM or from the expert."""

    data = "optional"

    @classmethod
    def check(cls, config):
        if config.label_field:
            raise SynthsteerError("--label-field needs a contextual method (softsrv)")

    def __init__(self, config, parts):
        super().__init__(config, parts)
        expert = parts.expert
        meta = expert.meta if expert else {}
        self.adapter = "default" if expert and expert.kind == "lora" else None
        self.chat = uses_chat_template(self.lm.tokenizer, config.chat_template)
        if "chat_template" in meta and config.chat_template == "auto":
            self.chat = meta["chat_template"] is not None  # answer the turn the expert was trained on
        source = config.data or (meta["data"]["source"] if meta.get("data") else None)
        self.instruction = config.instruction or meta.get("instruction") or default_instruction(source, self.chat)
        if config.shots > len(parts.records):
            raise SynthsteerError(f"--shots {config.shots}: only {len(parts.records)} training examples to draw from")

    def settings(self):
        parts = self.parts
        return {"instruction": self.instruction, "shots": self.config.shots,
                "chat_template": chat_template_id(self.lm.tokenizer, self.chat),
                "data": parts.spec.as_dict() if parts.records else None,
                "expert": parts.expert.settings() if parts.expert else None}

    def prompts(self, indices: list[int]) -> tuple[list[list[int]], list[dict]]:
        """Each record's hard-prompt token ids, and the ids of its few-shot examples."""
        records, out, prov = self.parts.records, [], []
        for i in indices:
            shots = []
            if self.config.shots:
                g = generator(self.config.seed, Stream.SHOTS, i)
                shots = torch.randperm(len(records), generator=g)[: self.config.shots].tolist()
            text = few_shot_prompt(self.instruction, [records[j].text for j in shots], self.chat)
            out.append(prompt_ids(self.lm.tokenizer, text, self.chat))
            prov.append({"shot_ids": [records[j].id for j in shots]} if shots else {})
        return out, prov

    def requests(self, indices, keys):
        ids, prov = self.prompts(indices)
        return [Request({"main": Prefix(ids=p, adapter=self.adapter)}, key) for p, key in zip(ids, keys)], prov
