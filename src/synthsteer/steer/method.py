"""`--method steer`: three named branches per sample, combined by the STEER score.

    expert    the expert on the generation prompt c
    base      the base LM on c
    negative  the expert on the negative prompt n (K examples from the pool, no instruction)

The prompt c is the hard instruction with `--expert` (a LoRA adapter: expert and base rows share one
peft forward; a full fine-tuned model: two forwards), or a soft prompt with `--prompt` (SoftSRV +
STEER: the soft-prompted LM is the expert, the LM from its BOS the base; no fine-tuning at all).
"""

from __future__ import annotations


import torch

from ..baselines import Hard, start_token
from ..decoder import Prefix
from ..encoders import encode_cached, load_encoder
from ..engine import Request, Step
from ..errors import SynthsteerError
from ..logs import log
from ..methods import Method, register
from ..randomness import shuffled_cycle
from ..softsrv.method import SoftPromptBranch
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


@register("steer")
class Steer(Method):
    data = "optional"
    uses_pool = True

    @classmethod
    def check(cls, config):
        if config.expert and config.prompt:
            raise SynthsteerError("--method steer takes --expert (instruction prompt) or --prompt (SoftSRV + STEER), "
                                  "not both: the soft prompt was trained for the base LM")
        if not (config.expert or config.prompt):
            raise SynthsteerError("--method steer needs --expert DIR (a LoRA or full fine-tuned expert) "
                                  "or --prompt DIR (a soft prompt: SoftSRV + STEER)")
        if config.negative_share == "block" and config.negative_draw == "nearest":
            raise SynthsteerError("--negative-share block takes --negative-draw uniform: the nearest examples "
                                  "differ per record, so a block has no one draw to share")

    def __init__(self, config, parts):
        super().__init__(config, parts)
        self.soft = self.hard = self.merged = None
        self.roles = {"expert": (0, None), "base": (0, None)}  # (index into models, adapter) of each role
        if config.expert:
            self.hard = Hard(config, parts)
            if parts.expert.kind == "lora" and merge_expert(config.merge_expert, self.lm):
                # expert rows through a merged copy, base rows through the LM without LoRA layers: two
                # plain forwards instead of one mixed-adapter forward (peft's per-row gather/scatter)
                import copy

                self.merged = copy.deepcopy(parts.expert.model).merge_and_unload().eval()
                parts.expert.model.unload()  # takes the LoRA layers out of the base LM again
                self.roles = {"expert": (0, None), "base": (1, None)}
            elif parts.expert.kind == "lora":
                self.roles["expert"] = (0, "default")
            else:
                self.roles["base"] = (1, None)
            if not parts.records:
                raise SynthsteerError("--method steer needs the training examples for its negative pool: pass --data")
        else:
            self.soft = SoftPromptBranch(config, parts)
        records = parts.records
        embeddings, self.anchor = None, None
        if config.negative_draw == "nearest":
            self.encoder = self.soft.encoder if self.soft else load_encoder("minilm", device=self.lm.device)
            embeddings = encode_cached(self.encoder, [r.text for r in records])
            if not self.soft:  # a hard-prompted record has no example of its own: anchor it on one, in a seeded cycle
                self.anchor = shuffled_cycle(config.seed, len(records))
        self.pool = NegativePool([r.id for r in records], [r.text for r in records], embeddings)
        if config.negatives > len(records):
            log.warning(f"--negatives {config.negatives} is more than the {len(records)} real examples: each "
                        "record takes the whole pool (real + written so far) until it holds that many")
        self.start = start_token(self.lm.tokenizer)
        # the negative branch holds BOS, the negative prompt and every generated token
        max_pos = getattr(self.lm.model.config, "max_position_embeddings", None) or 10**9
        context = max(1, max_pos - config.max_new_tokens - 1)
        self.neg_budget = min(config.negative_max_tokens or context, context)
        self.dropped: list[tuple[int, int]] | None = []  # examples the cap dropped per record, until the one warning

    @property
    def models(self):
        expert = self.parts.expert
        if self.merged is not None:
            return [self.merged, self.lm.model]
        if expert is not None and expert.kind == "full":
            return [expert.model, self.lm.model]
        return super().models  # the peft model (adapter and base rows in one forward), or the base LM

    def step(self):
        return Step(BRANCHES, steer_combine(self.config.gamma, self.config.eta))

    def settings(self):
        c = self.config
        positive = self.soft.settings() if self.soft else self.hard.settings()
        # the batch size sets when samples join the negative pool, so it shapes the records here
        return {**positive, "gamma": c.gamma, "eta": c.eta, "negatives": c.negatives, "separator": c.separator,
                "pool_block": c.batch_size, "pool_lag": c.pool_lag, "negative_draw": c.negative_draw,
                "negative_max_tokens": self.neg_budget, "negative_share": c.negative_share,
                "expert_merged": self.merged is not None,
                **({"anchor_order": "shuffled"} if self.anchor else {}),
                "data": self.parts.spec.as_dict()}

    def _prefix(self, role: str, **kw) -> Prefix:
        model, adapter = self.roles[role]
        return Prefix(model=model, adapter=adapter, **kw)

    @torch.no_grad()
    def requests(self, indices, keys):
        c = self.config
        z = None
        if self.soft:
            expert, prov, z = self.soft.prefixes(indices)
            if not self.soft.prompt.contextual:
                prov, z = [{} for _ in indices], None
            base = [Prefix(ids=[self.start]) for _ in indices]
        else:
            ids, prov = self.hard.prompts(indices)
            expert = [self._prefix("expert", ids=p) for p in ids]
            base = [self._prefix("base", ids=p) for p in ids]
        out, shared = [], {}
        for n, (i, key) in enumerate(zip(indices, keys)):
            # with block sharing, every record of a block takes the draw of the block's first index
            at = i - i % c.batch_size if c.negative_share == "block" else i
            if at not in shared:
                context = None
                if c.negative_draw == "nearest":
                    context = z[n] if z is not None else self.pool.embeddings[self.anchor[i % len(self.anchor)]]
                drawn = self.pool.draw(c.negatives, c.seed, at, context)
                ids, used = negative_prompt(self.lm.tokenizer, [self.pool.texts[j] for j in drawn], c.separator,
                                            self.neg_budget)
                shared[at] = ([self.start] + ids, [self.pool.ids[j] for j in drawn[:used]], (used, len(drawn) - used))
            neg_ids, used_ids, counts = shared[at]
            negative = self._prefix("expert", ids=neg_ids)
            out.append(Request({"expert": expert[n], "base": base[n], "negative": negative}, key))
            prov[n].update(gamma=c.gamma, eta=c.eta, K=c.negatives, negative_ids=used_ids)
            if self.dropped is not None:
                self.dropped.append(counts)
        self._warn_dropped()
        return out, prov

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
        if self.pool.embeddings is not None:
            emb = encode_cached(self.encoder, [r["text"] for r in records])
        self.pool.add([r["id"] for r in records], [r["text"] for r in records], emb)
