"""The baselines' algorithms (declared in baselines/config.py)."""

from __future__ import annotations

import torch

from ..decoder import Prefix
from ..engine import Request
from ..errors import SynthsteerError
from ..method import Method, Parts, Planned
from ..prompts import chat_template_id, default_instruction, few_shot_prompt, prompt_ids, start_token, uses_chat_template
from ..randomness import Stream, generator
from .config import HARD, PLAIN, HardView


class Plain(Method):
    spec = PLAIN

    def plan(self, indices, keys):
        start = [start_token(self.lm.tokenizer)]
        return [Planned(Request({"main": Prefix(ids=start)}, key), {}) for key in keys]


class Hard(Method):
    """Zero- or few-shot hard prompt, sampled from the base LM or from the expert."""

    spec = HARD
    options: HardView

    def __init__(self, options: HardView, parts: Parts):
        super().__init__(options, parts)
        expert = parts.expert
        meta = expert.meta if expert else {}
        self.adapter = "default" if expert and expert.kind == "lora" else None
        self.chat = uses_chat_template(self.lm.tokenizer, options.chat_template)
        if "chat_template" in meta and options.chat_template == "auto":
            self.chat = meta["chat_template"] is not None  # answer the turn the expert was trained on
        source = options.data or (meta["data"]["source"] if meta.get("data") else None)
        self.instruction = options.instruction or meta.get("instruction") or default_instruction(source, self.chat)
        if options.shots > len(parts.records):
            raise SynthsteerError(f"--shots {options.shots}: only {len(parts.records)} training examples to draw from")

    def settings(self):
        parts = self.parts
        return {"instruction": self.instruction, "shots": self.options.shots,
                "chat_template": chat_template_id(self.lm.tokenizer, self.chat),
                "data": parts.spec.as_dict() if parts.records else None,
                "expert": parts.expert.settings() if parts.expert else None}

    def prompts(self, indices: list[int]) -> tuple[list[list[int]], list[dict]]:
        """Each record's hard-prompt token ids, and the ids of its few-shot examples."""
        records, shots_k, out, prov = self.parts.records, self.options.shots, [], []
        for i in indices:
            shots = []
            if shots_k:
                g = generator(self.options.seed, Stream.SHOTS, i)
                shots = torch.randperm(len(records), generator=g)[:shots_k].tolist()
            text = few_shot_prompt(self.instruction, [records[j].text for j in shots], self.chat)
            out.append(prompt_ids(self.lm.tokenizer, text, self.chat))
            prov.append({"shot_ids": [records[j].id for j in shots]} if shots else {})
        return out, prov

    def plan(self, indices, keys):
        ids, prov = self.prompts(indices)
        return [Planned(Request({"main": Prefix(ids=p, adapter=self.adapter)}, key), pr)
                for p, key, pr in zip(ids, keys, prov)]
