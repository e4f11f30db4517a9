"""`--method softsrv`: sample from the frozen LM fed a trained soft prompt P(z) as inputs_embeds.

Record i's context z is training example order[i mod n]'s, `order` a seeded shuffle (so every
example seeds samples, and a run shorter than the data still samples all of it), optionally
made more novel (mixed with another example's, jittered by noise) with randomness from
(seed, CONTEXT stream, i) alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import sha256_file
from ..data import Record
from ..decoder import Prefix
from ..encoders import encode_cached, load_encoder
from ..engine import Request
from ..errors import SynthsteerError
from ..method import Method, Parts, Planned
from ..randomness import Stream, shuffled_cycle, stream_key
from .config import SOFTSRV, SoftSRVView


def perturb_context(z: torch.Tensor, contexts: torch.Tensor, key: int, noise: float, mix: float) -> tuple[torch.Tensor, dict]:
    """A context made more novel: mixed with a random other example's (share up to `mix`) and
    jittered by Gaussian noise (std `noise` times its norm), then renormalised."""
    g = torch.Generator().manual_seed(key)
    info = {}
    if mix > 0:
        j = int(torch.randint(0, len(contexts), (1,), generator=g))
        lam = float(torch.rand(1, generator=g)) * mix
        z = (1 - lam) * z + lam * contexts[j]
        info.update(mix_index=j, mix_weight=round(lam, 4))
    if noise > 0:
        eps = torch.randn(z.shape, generator=g).to(z.device, z.dtype)
        z = z + noise * z.norm() * eps / z.shape[-1] ** 0.5
    return torch.nn.functional.normalize(z, dim=-1), info


class SoftPromptBranch:
    """Soft-prompt prefixes for records: what `softsrv` samples from, and what SoftSRV + STEER
    uses as its expert branch. `options`: a `SoftSRVView` (or a view holding its fields)."""

    def __init__(self, options: SoftSRVView, parts: Parts):
        self.options, self.prompt, self.records = options, parts.prompt, parts.records
        self.device = parts.lm.device
        if options.label_field and options.label_field not in self.records[0].meta:
            raise SynthsteerError(f"--label-field {options.label_field}: not a field of {parts.spec.source}; "
                                  f"fields: {', '.join(self.records[0].meta)}")
        if options.label_field and not self.prompt.contextual:
            raise SynthsteerError("--label-field needs a contextual prompt (mp or mc): nsp samples have no source example")
        name = parts.prompt_meta["encoder"]
        try:
            self.encoder = load_encoder(name, lm=parts.lm, device=self.device)
        except SynthsteerError as e:
            raise SynthsteerError(f"--prompt {options.prompt}: its encoder {name!r} does not load "
                                  f"({str(e).splitlines()[0]})") from None
        if self.encoder.dim != self.prompt.config.context_dim:
            raise SynthsteerError(f"--prompt {options.prompt}: its encoder {name!r} gives {self.encoder.dim}-wide "
                                  f"contexts, but the prompt was trained on {self.prompt.config.context_dim}-wide ones")
        self.contexts = encode_cached(self.encoder, [r.text for r in self.records]).to(self.device)
        self.order = shuffled_cycle(options.seed, len(self.records))

    def settings(self) -> dict:
        c = self.options
        return {"prompt_sha256": sha256_file(Path(c.prompt) / "prompt.safetensors"),
                "parameterization": self.prompt.config.parameterization, "context_noise": c.context_noise,
                "context_mix": c.context_mix, "context_order": "shuffled"}

    def contexts_for(self, indices: list[int]) -> Seeded:
        """Record i's context: training example order[i mod n]'s, perturbed (zeros for an nsp prompt,
        which no example seeds)."""
        c, p = self.options, self.prompt.config.parameterization
        n = len(indices)
        if not self.prompt.contextual:
            return Seeded(torch.zeros(n, self.prompt.config.context_dim, device=self.device),
                          [{"parameterization": p} for _ in indices], [{} for _ in indices], [None] * n)
        seeded = Seeded(None, [], [], [])
        rows = []
        for i in indices:
            j = self.order[i % len(self.records)]
            src = self.records[j]
            zi, info = perturb_context(self.contexts[j], self.contexts, stream_key(c.seed, Stream.CONTEXT, i),
                                       c.context_noise, c.context_mix)
            if "mix_index" in info:
                info["mix_id"] = self.records[info.pop("mix_index")].id
            rows.append(zi)
            seeded.provenance.append({"source_id": src.id, "parameterization": p, **info})
            seeded.copied.append({c.label_field: src.meta[c.label_field]} if c.label_field else {})
            seeded.sources.append(src)
        seeded.z = torch.stack(rows)
        return seeded

    @torch.no_grad()
    def prefixes(self, indices: list[int]) -> tuple[list[Prefix], Seeded]:
        """Each record's soft-prompt prefix, and what seeded it."""
        seeded = self.contexts_for(indices)
        return [Prefix(embeds=e) for e in self.prompt(seeded.z)], seeded


@dataclass
class Seeded:
    """Per record of a block: its context z (rows of a tensor), its provenance, the fields it copies
    (--label-field), and the training example whose context it is (None: an nsp prompt's)."""

    z: torch.Tensor | None
    provenance: list[dict]
    copied: list[dict]
    sources: list[Record | None]


class SoftSRV(Method):
    spec = SOFTSRV

    def __init__(self, options: SoftSRVView, parts: Parts):
        super().__init__(options, parts)
        self.soft = SoftPromptBranch(options, parts)

    def settings(self):
        return {**self.soft.settings(), "data": self.parts.spec.as_dict()}

    def plan(self, indices, keys):
        prefixes, seeded = self.soft.prefixes(indices)
        return [Planned(Request({"main": p}, key), pr, f, src)
                for p, key, pr, f, src in zip(prefixes, keys, seeded.provenance, seeded.copied, seeded.sources)]
