"""`synthsteer generate`: sample a run of synthetic records through the shared decoder.

A method is just "which branches each sample decodes, and how their log-probs combine":
    plain    the LM from its BOS token alone (unsteered sampling, the contrast for the rest)
    hard     an instruction, optionally with k seeded training examples (zero-/few-shot); with
             --expert, sampling from the expert: the paper's baselines, one flag away
    softsrv  the frozen LM fed a trained soft prompt P(z) as inputs_embeds
    steer    three branches: expert on the prompt, base on the prompt, expert on K negatives,
             combined by the STEER score; the prompt is an instruction (with --expert) or a soft
             prompt (--prompt without --expert: SoftSRV + STEER, no fine-tuning at all)

Record i's context, negatives and sampling noise all derive from (seed, i), so reruns, resumes and
other batch sizes write the same records.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ._version import __version__
from .artifacts import sha256_file
from .data import DataSpec, Record, load_records
from .decoder import Prefix, SamplingConfig, decode
from .randomness import Stream, generator, sample_key, stream_key
from .encoders import encode_cached, load_encoder
from .errors import SynthsteerError, require_at_least_one
from .lm import LM, check_fingerprint, load_lm
from .prompts import (CHAT_TEMPLATE_MODES, chat_template_id, default_instruction, few_shot_prompt, prompt_ids,
                      stop_token_ids, uses_chat_template)
from .runs import RunDir, read_run

METHODS = ("softsrv", "plain", "hard", "steer")
DRAWS = ("uniform", "nearest")


@dataclass(frozen=True)
class GenerateConfig:
    """Everything `synthsteer generate` / `generate()` needs; the CLI flags map one to one.

    n: how many records the run should hold (a rerun with a larger n adds the rest).
    prompt: a soft-prompt directory (softsrv; steer without --expert).
    expert: a LoRA expert directory (`synthsteer expert`) or a full fine-tuned model id/path.
    model: the base LM; defaults to the prompt's or the expert's LM, else `tiny`.
    data: the training examples (contexts, few-shot examples, the negative pool); defaults to the
        prompt's or the expert's training data.
    context_noise: std of Gaussian noise added to each unit-norm context, relative to its norm.
    context_mix: up to this share of another random example's context is mixed in.
    label_field: copy this field of the example whose context seeded a sample into its record.
    instruction: the hard prompt (hard, steer with an expert); default: the task's instruction.
    shots: training examples put in the hard prompt (few-shot).
    chat_template: auto wraps hard prompts in the tokenizer's chat template (a user turn, the
        assistant's turn opened) when it has one; none never does.
    gamma, eta: STEER's contrastive and negative strengths; negatives: K per sample.
    separator: between negative examples; negative_draw: uniform or nearest;
    negative_max_tokens: the negative prompt's length limit.
    """

    out: str = "runs/generated"
    n: int = 100
    method: str = "softsrv"
    prompt: str | None = None
    expert: str | None = None
    model: str | None = None
    data: str | None = None
    field: str | None = None
    template: str | None = None
    split: str | None = None
    context_noise: float = 0.0
    context_mix: float = 0.0
    label_field: str | None = None
    instruction: str | None = None
    shots: int = 0
    chat_template: str = "auto"
    gamma: float = 0.2
    eta: float = 0.6
    negatives: int = 10
    separator: str = "\n\n"
    negative_draw: str = "uniform"
    negative_max_tokens: int = 512
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.max_new_tokens)

    def __post_init__(self):
        if self.method not in METHODS:
            raise SynthsteerError(f"--method {self.method}: use one of {', '.join(METHODS)}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise SynthsteerError(f"--chat-template {self.chat_template}: use one of {', '.join(CHAT_TEMPLATE_MODES)}")
        if self.negative_draw not in DRAWS:
            raise SynthsteerError(f"--negative-draw {self.negative_draw}: use one of {', '.join(DRAWS)}")
        require_at_least_one(self, ("n", "batch_size", "max_new_tokens", "negative_max_tokens"))
        for name in ("gamma", "eta", "shots", "negatives", "context_noise", "context_mix", "temperature"):
            if getattr(self, name) < 0:
                raise SynthsteerError(f"--{name.replace('_', '-')} must not be negative")


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


class Method:
    """Per-method state: the decoder's models, each sample's branches, and the combine rule."""

    models: list
    lm: LM
    combine = None

    def settings(self) -> dict:
        return {}

    def prefixes(self, indices: list[int]) -> tuple[list[list[Prefix]], list[dict]]:
        raise NotImplementedError

    def written(self, records: list[dict]) -> None:
        """Called after each batch is written (STEER's negative pool grows here)."""


class Plain(Method):
    def __init__(self, config: GenerateConfig, lm: LM | None):
        if config.label_field:
            raise SynthsteerError("--label-field needs a contextual method: unsteered samples have no source example")
        self.lm = lm or load_lm(config.model or "tiny", device=config.device, dtype=config.dtype,
                                trust_remote_code=config.trust_remote_code)
        self.models = [self.lm.model]
        tok = self.lm.tokenizer
        self.start = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]

    def prefixes(self, indices):
        return [[Prefix(ids=self.start)] for _ in indices], [{} for _ in indices]


def _load_expert(config: GenerateConfig, lm: LM | None) -> tuple[LM, object, dict]:
    """The base LM, the expert model (a peft wrapper of the base, or a second full model) and the
    expert's metadata."""
    from .steer.expert import META, load_expert

    if (Path(config.expert) / META).exists():
        from .artifacts import read_json

        meta = read_json(Path(config.expert) / META)
        base = lm or load_lm(config.model or meta["lm"]["name"], device=config.device, dtype=config.dtype,
                             trust_remote_code=config.trust_remote_code)
        model, meta = load_expert(config.expert, base)
        meta["kind"], meta["sha256"] = "lora", sha256_file(Path(config.expert) / "adapter_model.safetensors")
        return base, model, meta
    base = lm or load_lm(config.model or "tiny", device=config.device, dtype=config.dtype,
                         trust_remote_code=config.trust_remote_code)
    full = load_lm(config.expert, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code)
    if full.embed.weight.shape[0] != base.embed.weight.shape[0]:
        raise SynthsteerError(f"--expert {config.expert}: its vocabulary ({full.embed.weight.shape[0]}) differs from "
                              f"the base LM's ({base.embed.weight.shape[0]})")
    return base, full.model, {"kind": "full", "fingerprint": full.fingerprint(), "data": None}


def _training_records(config: GenerateConfig, recorded: dict | None) -> tuple[DataSpec, list[Record]]:
    if config.data:
        spec = DataSpec(config.data, field=config.field, template=config.template, split=config.split)
    elif recorded:
        spec = DataSpec(**recorded)
    else:
        raise SynthsteerError(f"--method {config.method} needs --data (the training examples)")
    return spec, load_records(spec)


class Hard(Method):
    """Zero- or few-shot hard prompt, sampled from the base LM or from the expert."""

    def __init__(self, config: GenerateConfig, lm: LM | None):
        if config.label_field:
            raise SynthsteerError("--label-field needs a contextual method (softsrv)")
        self.config = config
        meta = None
        if config.expert:
            self.lm, expert, meta = _load_expert(config, lm)
            self.models = [expert]
        else:
            self.lm = lm or load_lm(config.model or "tiny", device=config.device, dtype=config.dtype,
                                    trust_remote_code=config.trust_remote_code)
            self.models = [self.lm.model]
        self.adapter = "default" if meta and meta["kind"] == "lora" else None
        self.expert_meta = meta
        self.records: list[Record] = []
        if config.shots or config.data or (meta and meta.get("data")):
            self.spec, self.records = _training_records(config, meta.get("data") if meta else None)
        self.chat = uses_chat_template(self.lm.tokenizer, config.chat_template)
        if meta and "chat_template" in meta and config.chat_template == "auto":
            self.chat = meta["chat_template"] is not None  # answer the turn the expert was trained on
        source = config.data or (meta["data"]["source"] if meta and meta.get("data") else None)
        self.instruction = config.instruction or (meta or {}).get("instruction") or default_instruction(source, self.chat)

    def settings(self):
        return {"instruction": self.instruction, "shots": self.config.shots,
                "chat_template": chat_template_id(self.lm.tokenizer, self.chat),
                "data": asdict(self.spec) if self.records else None,
                "expert": None if not self.expert_meta else {"kind": self.expert_meta["kind"],
                                                             "sha256": self.expert_meta.get("sha256"),
                                                             "fingerprint": self.expert_meta.get("fingerprint")}}

    def prefixes(self, indices):
        out, prov = [], []
        for i in indices:
            shots = []
            if self.config.shots:
                g = generator(self.config.seed, Stream.SHOTS, i)
                shots = torch.randperm(len(self.records), generator=g)[: self.config.shots].tolist()
            text = few_shot_prompt(self.instruction, [self.records[j].text for j in shots], self.chat)
            out.append([Prefix(ids=prompt_ids(self.lm.tokenizer, text, self.chat), adapter=self.adapter)])
            prov.append({"shot_ids": [self.records[j].id for j in shots]} if shots else {})
        return out, prov


class SoftSRV(Method):
    def __init__(self, config: GenerateConfig, lm: LM | None):
        from .softsrv.prompt import load_soft_prompt

        if not config.prompt:
            raise SynthsteerError(f"--method {config.method} needs --prompt DIR (a directory written by `synthsteer fit`)")
        self.prompt, self.meta = load_soft_prompt(config.prompt)
        self.lm = lm or load_lm(config.model or self.meta["lm"]["name"], device=config.device, dtype=config.dtype,
                                trust_remote_code=config.trust_remote_code)
        check_fingerprint(self.meta["lm"], self.lm.fingerprint(), f"--prompt {config.prompt}")
        self.models = [self.lm.model]
        self.prompt.to(self.lm.device).eval()
        self.config = config
        self.data, self.records = _training_records(config, self.meta["data"])
        if config.label_field and config.label_field not in self.records[0].meta:
            raise SynthsteerError(f"--label-field {config.label_field}: not a field of {self.data.source}; "
                                  f"fields: {', '.join(self.records[0].meta)}")
        if config.label_field and not self.prompt.contextual:
            raise SynthsteerError("--label-field needs a contextual prompt (mp or mc): nsp samples have no source example")
        self.encoder = load_encoder(self.meta["encoder"], lm=self.lm, device=self.lm.device)
        self.contexts = encode_cached(self.encoder, [r.text for r in self.records]).to(self.lm.device)

    def settings(self) -> dict:
        return {"prompt_sha256": sha256_file(Path(self.config.prompt) / "prompt.safetensors"),
                "parameterization": self.prompt.config.parameterization, "data": asdict(self.data),
                "context_noise": self.config.context_noise, "context_mix": self.config.context_mix}

    def contexts_for(self, indices: list[int]) -> tuple[torch.Tensor, list[dict]]:
        """Sample i's context: training example i mod n (so every example seeds samples), perturbed."""
        c = self.config
        rows, prov = [], []
        for i in indices:
            src = i % len(self.records)
            zi, info = perturb_context(self.contexts[src], self.contexts, stream_key(c.seed, Stream.CONTEXT, i),
                                       c.context_noise, c.context_mix)
            if "mix_index" in info:
                info["mix_id"] = self.records[info.pop("mix_index")].id
            rows.append(zi)
            prov.append({"source_id": self.records[src].id, "parameterization": self.prompt.config.parameterization,
                         **info})
            if c.label_field:
                prov[-1]["label"] = self.records[src].meta[c.label_field]
        return torch.stack(rows), prov

    @torch.no_grad()
    def prefixes(self, indices):
        if not self.prompt.contextual:
            z = torch.zeros(len(indices), self.prompt.config.context_dim, device=self.lm.device)
            prov = [{"parameterization": "nsp"} for _ in indices]
        else:
            z, prov = self.contexts_for(indices)
        return [[Prefix(embeds=e)] for e in self.prompt(z)], prov


class Steer(Method):
    """Branches per sample: (expert on the prompt, base on the prompt, expert on K negatives)."""

    def __init__(self, config: GenerateConfig, lm: LM | None):
        from .steer import NegativePool, steer_combine

        self.config = config
        self.soft = None
        if config.expert and config.prompt:
            raise SynthsteerError("--method steer takes --expert (instruction prompt) or --prompt (SoftSRV + STEER), "
                                  "not both: the soft prompt was trained for the base LM")
        if config.expert:
            self.hard = Hard(config, lm)
            self.lm, self.expert_meta = self.hard.lm, self.hard.expert_meta
            if self.expert_meta["kind"] == "lora":
                self.models = self.hard.models  # one peft forward: adapter rows and base rows
                self.roles = {"expert": (0, "default"), "base": (0, None)}
            else:
                self.models = [self.hard.models[0], self.lm.model]
                self.roles = {"expert": (0, None), "base": (1, None)}
            if not self.hard.records:
                raise SynthsteerError("--method steer needs the training examples for its negative pool: pass --data")
            self.spec, self.records = self.hard.spec, self.hard.records
        elif config.prompt:
            self.soft = SoftSRV(config, lm)
            self.lm, self.models = self.soft.lm, self.soft.models
            self.roles = {"expert": (0, None), "base": (0, None)}
            self.spec, self.records = self.soft.data, self.soft.records
        else:
            raise SynthsteerError("--method steer needs --expert DIR (a LoRA or full fine-tuned expert) "
                                  "or --prompt DIR (a soft prompt: SoftSRV + STEER)")
        embeddings = None
        if config.negative_draw == "nearest":
            self.encoder = self.soft.encoder if self.soft else load_encoder("minilm", device=self.lm.device)
            embeddings = encode_cached(self.encoder, [r.text for r in self.records])
        self.pool = NegativePool([r.id for r in self.records], [r.text for r in self.records], embeddings)
        self.combine = steer_combine(config.gamma, config.eta)
        tok = self.lm.tokenizer
        self.start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        max_pos = getattr(self.lm.model.config, "max_position_embeddings", None) or 10**9
        self.neg_budget = max(1, min(config.negative_max_tokens, max_pos - config.max_new_tokens - 2))

    def settings(self):
        c = self.config
        positive = self.soft.settings() if self.soft else self.hard.settings()
        # the batch size sets when samples join the negative pool, so it shapes the records here
        return {**positive, "gamma": c.gamma, "eta": c.eta, "negatives": c.negatives, "separator": c.separator,
                "pool_block": c.batch_size,
                "negative_draw": c.negative_draw, "negative_max_tokens": self.neg_budget, "data": asdict(self.spec)}

    @torch.no_grad()
    def prefixes(self, indices):
        from .steer import negative_prompt

        c = self.config
        if self.soft:
            z, prov = self.soft.contexts_for(indices) if self.soft.prompt.contextual else (
                torch.zeros(len(indices), self.soft.prompt.config.context_dim, device=self.lm.device),
                [{} for _ in indices])
            positive = [Prefix(embeds=e) for e in self.soft.prompt(z)]
            base = [Prefix(ids=[self.start]) for _ in indices]
        else:
            hard, prov = self.hard.prefixes(indices)
            positive = [Prefix(ids=h[0].ids, model=self.roles["expert"][0], adapter=self.roles["expert"][1])
                        for h in hard]
            base = [Prefix(ids=h[0].ids, model=self.roles["base"][0], adapter=self.roles["base"][1]) for h in hard]
        out = []
        for n, i in enumerate(indices):
            context = None
            if c.negative_draw == "nearest":
                context = z[n] if self.soft and self.soft.prompt.contextual else \
                    self.pool.embeddings[i % len(self.records)]
            drawn = self.pool.draw(c.negatives, c.seed, i, context)
            neg_ids = [self.start] + negative_prompt(self.lm.tokenizer, [self.pool.texts[j] for j in drawn],
                                                     c.separator, self.neg_budget)
            negative = Prefix(ids=neg_ids, model=self.roles["expert"][0], adapter=self.roles["expert"][1])
            out.append([positive[n], base[n], negative])
            prov[n].update(gamma=c.gamma, eta=c.eta, K=c.negatives, negative_ids=[self.pool.ids[j] for j in drawn])
        return out, prov

    def written(self, records):
        emb = None
        if self.pool.embeddings is not None:
            emb = encode_cached(self.encoder, [r["text"] for r in records])
        self.pool.add([r["id"] for r in records], [r["text"] for r in records], emb)


def build_method(config: GenerateConfig, lm: LM | None) -> Method:
    return {"plain": Plain, "hard": Hard, "softsrv": SoftSRV, "steer": Steer}[config.method](config, lm)


def generate(config: GenerateConfig, *, progress: bool = True, lm: LM | None = None) -> Path:
    """Write (or complete) the run directory `config.out` with `config.n` records."""
    from tqdm.auto import tqdm

    method = build_method(config, lm)
    lm = method.lm
    settings = {"method": config.method, "lm": lm.fingerprint(), "sampling": asdict(config.sampling),
                "label_field": config.label_field, "seed": config.seed, **method.settings()}
    run = RunDir(config.out, settings, info={"n_requested": config.n, "synthsteer_version": __version__,
                                             "config": asdict(config)})
    if run.ids:  # a resumed run: what was written before joins the negative pool, in index order
        method.written(read_run(run.path))
    eos = stop_token_ids(lm.tokenizer, lm.model)

    def rid(i: int) -> str:
        return f"{run.hash[:8]}-{i:07d}"

    todo = [i for i in range(config.n) if rid(i) not in run.ids]
    bar = tqdm(total=config.n, initial=config.n - len(todo), desc=f"generate {config.method}", unit="sample",
               disable=not progress)
    t0, new_tokens = time.time(), 0
    # fixed index blocks: a resumed run decodes exactly the batches an uninterrupted one would
    for start in range(0, config.n, config.batch_size):
        block = [i for i in range(start, min(start + config.batch_size, config.n)) if rid(i) not in run.ids]
        if not block:
            continue
        prefixes, prov = method.prefixes(block)
        keys = [sample_key(config.seed, i) for i in block]
        outs = decode(method.models, prefixes, keys, config.sampling, eos, combine=method.combine)
        texts = lm.tokenizer.batch_decode(outs, skip_special_tokens=True)
        records = [{
            "id": rid(i), "index": i, "text": text.strip(), "num_tokens": len(toks),
            "finish": "length" if len(toks) == config.max_new_tokens else "eos",
            **({config.label_field: p.pop("label")} if config.label_field else {}),
            "provenance": {"method": config.method, "seed": config.seed, "key": key,
                           "settings_hash": run.hash, **p},
        } for i, text, toks, key, p in zip(block, texts, outs, keys, prov)]
        run.append(records)
        method.written(records)
        new_tokens += sum(len(t) for t in outs)
        bar.update(len(block))
        bar.set_postfix(tok_s=f"{new_tokens / (time.time() - t0):.0f}")
    bar.close()
    run.finish(n_requested=config.n)
    return run.path
