"""`synthsteer generate`: the run loop every method goes through.

The method (methods.py: plain and hard in baselines.py, softsrv/method.py, steer/method.py) turns
a block of record indices into engine requests; the engine (engine.py) decodes them; the records
are appended to the run directory (runs.py). Record i's context, negatives, few-shot examples and
sampling noise all derive from (seed, i), so reruns, resumes and other batch sizes write the same
records.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path


from ._version import __version__
from .decoder import SamplingConfig
from .engine import TransformersEngine
from .errors import SynthsteerError, require_at_least_one
from .lm import LM
from .methods import build_method
from .prompts import CHAT_TEMPLATE_MODES, stop_token_ids
from .randomness import sample_key
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


def generate(config: GenerateConfig, *, progress: bool = True, lm: LM | None = None) -> Path:
    """Write (or complete) the run directory `config.out` with `config.n` records."""
    from tqdm.auto import tqdm

    method = build_method(config, lm)
    lm = method.lm
    engine = TransformersEngine(method.models)
    settings = {"method": config.method, "engine": {"name": engine.name, "version": engine.version},
                "lm": lm.fingerprint(), "sampling": asdict(config.sampling), "label_field": config.label_field,
                "seed": config.seed, **method.settings()}
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
        keys = [sample_key(config.seed, i) for i in block]
        requests, prov = method.requests(block, keys)
        results = engine.run(requests, method.step(), config.sampling, eos)
        texts = lm.tokenizer.batch_decode([r.tokens for r in results], skip_special_tokens=True)
        records = [{
            "id": rid(i), "index": i, "text": text.strip(), "num_tokens": len(res.tokens), "finish": res.finish,
            **({config.label_field: p.pop("label")} if config.label_field else {}),
            "provenance": {"method": config.method, "seed": config.seed, "key": key,
                           "settings_hash": run.hash, **p},
        } for i, text, res, key, p in zip(block, texts, results, keys, prov)]
        run.append(records)
        method.written(records)
        new_tokens += sum(len(r.tokens) for r in results)
        bar.update(len(block))
        bar.set_postfix(tok_s=f"{new_tokens / (time.time() - t0):.0f}")
    bar.close()
    run.finish(n_requested=config.n)
    return run.path
