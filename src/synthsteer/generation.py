"""`synthsteer generate`: sample a run of synthetic records through the shared decoder.

Methods (each is just "which prefix each sample's branch starts from"):
    softsrv  the frozen LM fed P(z) as inputs_embeds, z the context of a training example
    plain    the LM from its BOS token alone: unsteered sampling, the contrast for everything else

Record i's context, noise and sampling noise all derive from (seed, i), so reruns, resumes and
other batch sizes write the same records.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import __version__
from .artifacts import sha256_file
from .data import DataSpec, load_records
from .decoder import Prefix, SamplingConfig, decode, sample_key
from .encoders import encode_cached, load_encoder
from .errors import SynthsteerError
from .lm import LM, check_fingerprint, load_lm
from .runs import RunDir

METHODS = ("softsrv", "plain")


@dataclass(frozen=True)
class GenerateConfig:
    """Everything `synthsteer generate` / `generate()` needs; the CLI flags map one to one.

    n: how many records the run should hold (a rerun with a larger n adds the rest).
    prompt: a soft-prompt directory (method softsrv).
    model: the LM; defaults to the prompt's LM for softsrv.
    data: the examples whose contexts seed samples (default: the prompt's training data).
    context_noise: std of Gaussian noise added to each unit-norm context, relative to its norm.
    context_mix: up to this share of another random example's context is mixed in.
    label_field: copy this field of the example whose context seeded a sample into its record
        (labelled synthetic data for train-on-synthetic evaluation).
    """

    out: str = "runs/generated"
    n: int = 100
    method: str = "softsrv"
    prompt: str | None = None
    model: str | None = None
    data: str | None = None
    field: str | None = None
    template: str | None = None
    split: str | None = None
    context_noise: float = 0.0
    context_mix: float = 0.0
    label_field: str | None = None
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


class _SoftSRV:
    def __init__(self, config: GenerateConfig, lm: LM | None):
        from .softsrv.prompt import load_soft_prompt

        if not config.prompt:
            raise SynthsteerError("--method softsrv needs --prompt DIR (a directory written by `synthsteer fit`)")
        self.prompt, self.meta = load_soft_prompt(config.prompt)
        self.lm = lm or load_lm(config.model or self.meta["lm"]["name"], device=config.device, dtype=config.dtype,
                                trust_remote_code=config.trust_remote_code)
        check_fingerprint(self.meta["lm"], self.lm.fingerprint(), f"--prompt {config.prompt}")
        self.prompt.to(self.lm.device).eval()
        self.config = config
        data = self.meta["data"]
        if config.data:
            data = DataSpec(config.data, field=config.field, template=config.template, split=config.split)
        else:
            data = DataSpec(**data)
        self.data = data
        if self.prompt.contextual:
            self.records = load_records(data)
            if config.label_field and config.label_field not in self.records[0].meta:
                raise SynthsteerError(f"--label-field {config.label_field}: not a field of {data.source}; "
                                      f"fields: {', '.join(self.records[0].meta)}")
            encoder = load_encoder(self.meta["encoder"], lm=self.lm, device=self.lm.device)
            self.contexts = encode_cached(encoder, [r.text for r in self.records]).to(self.lm.device)
        else:
            self.records, self.contexts = [], None

    def settings(self) -> dict:
        if self.config.label_field and self.contexts is None:
            raise SynthsteerError("--label-field needs a contextual prompt (mp or mc): nsp samples have no source example")
        return {"prompt_sha256": sha256_file(Path(self.config.prompt) / "prompt.safetensors"),
                "parameterization": self.prompt.config.parameterization, "data": asdict(self.data),
                "context_noise": self.config.context_noise, "context_mix": self.config.context_mix}

    @torch.no_grad()
    def prefixes(self, indices: list[int]) -> tuple[list[list[Prefix]], list[dict]]:
        c = self.config
        if self.contexts is None:
            z = torch.zeros(len(indices), self.prompt.config.context_dim, device=self.lm.device)
            prov = [{} for _ in indices]
        else:
            rows, prov = [], []
            for i in indices:
                src = i % len(self.records)  # cycle so every training example seeds some samples
                zi, info = perturb_context(self.contexts[src], self.contexts, sample_key(c.seed + 1, i),
                                           c.context_noise, c.context_mix)
                if "mix_index" in info:
                    info["mix_id"] = self.records[info.pop("mix_index")].id
                rows.append(zi)
                prov.append({"source_id": self.records[src].id, **info})
                if c.label_field:
                    prov[-1]["label"] = self.records[src].meta[c.label_field]
            z = torch.stack(rows)
        soft = self.prompt(z)
        for p in prov:
            p["parameterization"] = self.prompt.config.parameterization
        return [[Prefix(embeds=e)] for e in soft], prov


class _Plain:
    def __init__(self, config: GenerateConfig, lm: LM | None):
        if config.label_field:
            raise SynthsteerError("--label-field needs a contextual method: unsteered samples have no source example")
        self.lm = lm or load_lm(config.model or "tiny", device=config.device, dtype=config.dtype,
                                trust_remote_code=config.trust_remote_code)
        tok = self.lm.tokenizer
        self.start = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]

    def settings(self) -> dict:
        return {}

    def prefixes(self, indices: list[int]):
        return [[Prefix(ids=self.start)] for _ in indices], [{} for _ in indices]


def generate(config: GenerateConfig, *, progress: bool = True, lm: LM | None = None) -> Path:
    """Write (or complete) the run directory `config.out` with `config.n` records."""
    from tqdm.auto import tqdm

    if config.method not in METHODS:
        raise SynthsteerError(f"--method {config.method}: use one of {', '.join(METHODS)}")
    if config.n < 1 or config.batch_size < 1 or config.max_new_tokens < 1:
        raise SynthsteerError("--n, --batch-size and --max-new-tokens must be at least 1")
    method = (_SoftSRV if config.method == "softsrv" else _Plain)(config, lm)
    lm = method.lm
    settings = {"method": config.method, "lm": lm.fingerprint(), "sampling": asdict(config.sampling),
                "label_field": config.label_field,
                "seed": config.seed, **method.settings()}
    run = RunDir(config.out, settings, info={"n_requested": config.n, "synthsteer_version": __version__,
                                             "config": asdict(config)})
    eos = {lm.eos_token_id}
    gen_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])

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
        outs = decode(lm.model, prefixes, keys, config.sampling, eos)
        texts = lm.tokenizer.batch_decode(outs, skip_special_tokens=True)
        records = [{
            "id": rid(i), "index": i, "text": text.strip(), "num_tokens": len(toks),
            "finish": "length" if len(toks) == config.max_new_tokens else "eos",
            **({config.label_field: p.pop("label")} if config.label_field else {}),
            "provenance": {"method": config.method, "seed": config.seed, "key": key,
                           "settings_hash": run.hash, **p},
        } for i, text, toks, key, p in zip(block, texts, outs, keys, prov)]
        run.append(records)
        new_tokens += sum(len(t) for t in outs)
        bar.update(len(block))
        bar.set_postfix(tok_s=f"{new_tokens / (time.time() - t0):.0f}")
    bar.close()
    run.finish(n_requested=config.n)
    return run.path
