"""`--method steer`: three named branches per sample, combined by the STEER score.

    expert    the expert on the generation prompt c
    base      the base LM on c
    negative  the expert on the negative prompt n (K examples from the pool, no instruction)

The prompt c is the hard instruction with `--expert` (a LoRA adapter: expert and base rows share one
peft forward; a full fine-tuned model: two forwards), or a soft prompt with `--prompt` (SoftSRV +
STEER: the soft-prompted LM is the expert, the LM from its BOS the base; no fine-tuning at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..baselines.config import HardView
from ..baselines.method import Hard
from ..decoder import Prefix
from ..encoders import encode_cached, load_encoder
from ..engine import Request, Step
from ..errors import SynthsteerError
from ..logs import log
from ..method import Method, Parts, Planned, view_of
from ..prompts import start_token
from ..randomness import shuffled_cycle
from ..softsrv.method import SoftPromptBranch
from .config import STEER, SteerView
from .negatives import NegativePool, negative_prompt
from .score import BRANCHES, steer_combine


def merge_expert(mode: str, lm) -> bool:
    """Whether a LoRA expert runs as a merged copy of the LM: always on CPU (memory is plentiful, the
    per-row adapter work is not), on a GPU when a second copy of the weights fits in what is free."""
    if mode != "auto":
        return mode == "always"
    if lm.device.type != "cuda":
        return True
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    free, _ = torch.cuda.mem_get_info(lm.device)
    return free > 1.5 * weights


@dataclass(frozen=True)
class Placement:
    """Where the rows of each role run, decided once: the engine's models, and per role the index of
    its model and its adapter (None: the model's own weights)."""

    models: list
    expert: tuple[int, str | None]
    base: tuple[int, str | None]
    merged: bool = False


def place_roles(lm, parts: Parts, merge_mode: str) -> Placement:
    """The four ways STEER's expert and base rows run:
        soft prompt    one LM; the soft-prompted rows are the expert, BOS rows the base
        LoRA, merged   a merged copy for expert rows, the LM without LoRA layers for base rows: two
                       plain forwards instead of one mixed-adapter forward (peft's per-row gather/scatter)
        LoRA, mixed    one peft forward; expert rows pick the adapter, base rows the base weights
        full expert    two models
    """
    expert = parts.expert
    if expert is None:
        return Placement([lm.model], (0, None), (0, None))
    if expert.kind == "full":
        return Placement([expert.model, lm.model], (0, None), (1, None))
    if merge_expert(merge_mode, lm):
        import copy

        merged = copy.deepcopy(expert.model).merge_and_unload().eval()
        expert.model.unload()  # takes the LoRA layers out of the base LM again
        return Placement([merged, lm.model], (0, None), (1, None), merged=True)
    return Placement([expert.model], (0, "default"), (0, None))


class Steer(Method):
    spec = STEER
    options: SteerView

    def __init__(self, options: SteerView, parts: Parts):
        super().__init__(options, parts)
        c = options
        self.soft = self.hard = None
        if c.expert:
            self.hard = Hard(view_of(HardView, c), parts)
            if not parts.records:
                raise SynthsteerError("--method steer needs the training examples for its negative pool: pass --data")
        else:
            self.soft = SoftPromptBranch(c, parts)
        self.placement = place_roles(self.lm, parts, c.merge_expert)
        records = parts.records
        embeddings, self.anchor = None, None
        if c.negative_draw == "nearest":
            self.encoder = self.soft.encoder if self.soft else load_encoder("minilm", device=self.lm.device)
            embeddings = encode_cached(self.encoder, [r.text for r in records])
            if not self.soft:  # a hard-prompted record has no example of its own: anchor it on one, in a seeded cycle
                self.anchor = shuffled_cycle(c.seed, len(records))
        self.negative_pool = NegativePool([r.id for r in records], [r.text for r in records], embeddings)
        if c.negatives > len(records):
            log.warning(f"--negatives {c.negatives} is more than the {len(records)} real examples: each "
                        "record takes the whole pool (real + written so far) until it holds that many")
        self.start = start_token(self.lm.tokenizer)
        # the negative branch holds BOS, the negative prompt and every generated token
        max_pos = getattr(self.lm.model.config, "max_position_embeddings", None) or 10**9
        context = max(1, max_pos - c.max_new_tokens - 1)
        self.neg_budget = min(c.negative_max_tokens or context, context)
        self.dropped: list[tuple[int, int]] | None = []  # examples the cap dropped per record, until the one warning

    @property
    def models(self):
        return self.placement.models

    def step(self):
        return Step(BRANCHES, steer_combine(self.options.gamma, self.options.eta))

    def settings(self):
        c = self.options
        positive = self.soft.settings() if self.soft else self.hard.settings()
        # the batch size sets when samples join the negative pool, so it shapes the records here
        return {**positive, "gamma": c.gamma, "eta": c.eta, "negatives": c.negatives, "separator": c.separator,
                "pool_block": c.batch_size, "pool_lag": c.pool_lag, "negative_draw": c.negative_draw,
                "negative_max_tokens": self.neg_budget, "negative_share": c.negative_share,
                "expert_merged": self.placement.merged,
                **({"anchor_order": "shuffled"} if self.anchor else {}),
                "data": self.parts.spec.as_dict()}

    def _prefix(self, role: str, **kw) -> Prefix:
        model, adapter = getattr(self.placement, role)
        return Prefix(model=model, adapter=adapter, **kw)

    def plan(self, indices, keys):
        planned, counts = self._plan(indices, keys)
        if self.dropped is not None:
            self.dropped += counts
        self._warn_dropped()
        return planned

    def probe(self, indices, keys):
        return self._plan(indices, keys)[0]  # not a record: the length cap's note must not count it

    @torch.no_grad()
    def _plan(self, indices, keys) -> tuple[list[Planned], list[tuple[int, int]]]:
        """The records planned, and per record (examples used, drawn ones the length cap dropped)."""
        c, pool = self.options, self.negative_pool
        z = None
        if self.soft:
            expert, seeded = self.soft.prefixes(indices)
            prov, z, copied, sources = seeded.provenance, seeded.z, seeded.copied, seeded.sources
            if not self.soft.prompt.contextual:
                prov, z = [{} for _ in indices], None
            base = [Prefix(ids=[self.start]) for _ in indices]
        else:
            ids, prov = self.hard.prompts(indices)
            copied, sources = [{} for _ in indices], [None for _ in indices]
            expert = [self._prefix("expert", ids=p) for p in ids]
            base = [self._prefix("base", ids=p) for p in ids]
        out, counts, shared = [], [], {}
        for n, (i, key) in enumerate(zip(indices, keys)):
            # with block sharing, every record of a block takes the draw of the block's first index
            at = i - i % c.batch_size if c.negative_share == "block" else i
            if at not in shared:
                context = None
                if c.negative_draw == "nearest":
                    context = z[n] if z is not None else pool.embeddings[self.anchor[i % len(self.anchor)]]
                drawn = pool.draw(c.negatives, c.seed, at, context)
                ids, used = negative_prompt(self.lm.tokenizer, [pool.texts[j] for j in drawn], c.separator,
                                            self.neg_budget)
                shared[at] = ([self.start] + ids, [pool.ids[j] for j in drawn[:used]], (used, len(drawn) - used))
            neg_ids, used_ids, count = shared[at]
            negative = self._prefix("expert", ids=neg_ids)
            prov[n].update(gamma=c.gamma, eta=c.eta, K=c.negatives, negative_ids=used_ids)
            out.append(Planned(Request({"expert": expert[n], "base": base[n], "negative": negative}, key), prov[n],
                               copied[n], sources[n]))
            counts.append(count)
        return out, counts

    def _warn_dropped(self) -> None:
        """One warning per run, at the first block where the length cap dropped drawn examples."""
        if self.dropped and any(d for _, d in self.dropped):
            used, dropped = (sum(x) / len(self.dropped) for x in zip(*self.dropped))
            log.warning(f"--negative-max-tokens {self.neg_budget}: the negative prompts hold {used:.1f} whole "
                        f"examples on average, {dropped:.1f} drawn ones did not fit (first block where that happened); "
                        "provenance lists the examples used")
            self.dropped = None
        elif self.dropped is not None:
            self.dropped = []

    def written(self, records):
        emb = None
        if self.negative_pool.embeddings is not None:
            emb = encode_cached(self.encoder, [r["text"] for r in records])
        self.negative_pool.add([r["id"] for r in records], [r["text"] for r in records], emb)
