"""`synthsteer generate`: the run loop every method goes through.

The method (methods.py: plain and hard in baselines.py, softsrv/method.py, steer/method.py) turns
a block of record indices into engine requests; the engine (engine.py) decodes them; the records
are appended to the run directory (runs.py). Record i's context, negatives, few-shot examples and
sampling noise all derive from (seed, i), so reruns, resumes and other batch sizes write the same
records.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__
from .options import DataOptions, LMOptions, RunOptions, SamplingConfig, flag, option
from .prompts import HardPromptOptions
from .softsrv.config import SoftSRVOptions
from .steer.config import SteerOptions

if TYPE_CHECKING:
    from .lm import LM

METHODS = ("softsrv", "plain", "hard", "steer")


@dataclass(frozen=True)
class GenerateConfig(RunOptions, LMOptions, DataOptions, SamplingConfig, HardPromptOptions, SoftSRVOptions,
                     SteerOptions):
    """Everything `synthsteer generate` / `generate()` needs; the CLI flags map one to one.

    Built from the shared groups (run, LM, data, sampling) and one group per method (hard prompt,
    SoftSRV, STEER). `model` defaults to the LM the prompt or expert was trained for, else `tiny`;
    `data` (the contexts, few-shot examples and negative pool) to the prompt's or expert's data.
    A setting of a group the method does not use is reported in one warning line.
    """

    method: str = option("softsrv", "softsrv (needs --prompt), steer (needs --expert or --prompt), hard (instruction, "
                                    "few-shot with --shots) or plain (unsteered sampling from --model).", choices=METHODS)

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.max_new_tokens)

    def __post_init__(self):
        super().__post_init__()
        unused = ignored_settings(self)
        if unused:
            print(f"warning: {', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --method "
                  f"{self.method} (ignored)", file=sys.stderr)


# the option groups each method reads (the rest of a GenerateConfig is shared by all)
METHOD_GROUPS = {
    "plain": (),
    "hard": (HardPromptOptions, DataOptions),
    "softsrv": (SoftSRVOptions, DataOptions),
    "steer": (HardPromptOptions, SoftSRVOptions, SteerOptions, DataOptions),
}


def ignored_settings(config: GenerateConfig) -> list[str]:
    """Flags set away from their defaults in groups the chosen method does not read."""
    used = {f.name for group in METHOD_GROUPS[config.method] for f in fields(group)}
    out = []
    for group in (HardPromptOptions, SoftSRVOptions, SteerOptions, DataOptions):
        for f in fields(group):
            if f.name not in used and getattr(config, f.name) != f.default:
                out.append(flag(f.name))
    return sorted(set(out))


def generate(config: GenerateConfig, *, progress: bool = True, lm: LM | None = None) -> Path:
    """Write (or complete) the run directory `config.out` with `config.n` records."""
    from tqdm.auto import tqdm

    from .artifacts import check_out
    from .engine import TransformersEngine
    from .methods import build_method
    from .prompts import stop_token_ids
    from .randomness import sample_key
    from .runs import RunDir, read_run

    check_out(config.out)
    method = build_method(config, lm)
    lm = method.lm
    engine = TransformersEngine(method.models)
    settings = {"method": config.method, "engine": {"name": engine.name, "version": engine.version},
                "lm": lm.fingerprint(), "sampling": asdict(config.sampling), "label_field": config.label_field,
                "seed": config.seed, **method.settings()}
    run = RunDir(config.out, settings, info={"n_requested": config.n, "synthsteer_version": __version__,
                                             "config": asdict(config)})
    try:
        # a resumed run: what is on disk, by index; each block joins STEER's negative pool only once
        # it is complete, with its records in index order, as in an uninterrupted run
        on_disk = {r["index"]: r for r in read_run(run.path)} if run.ids else {}
        eos = stop_token_ids(lm.tokenizer, lm.model)

        def rid(i: int) -> str:
            return f"{run.hash[:8]}-{i:07d}"

        todo = [i for i in range(config.n) if rid(i) not in run.ids]
        bar = tqdm(total=config.n, initial=config.n - len(todo), desc=f"generate {config.method}", unit="sample",
                   disable=not progress)
        t0, new_tokens = time.time(), 0
        # fixed index blocks: a resumed run decodes exactly the batches an uninterrupted one would
        for start in range(0, config.n, config.batch_size):
            indices = range(start, min(start + config.batch_size, config.n))
            done = [on_disk[i] for i in indices if i in on_disk and on_disk[i]["id"] == rid(i)]
            block = [i for i in indices if rid(i) not in run.ids]
            if not block:
                method.written(done)
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
            method.written(sorted(done + records, key=lambda r: r["index"]))
            new_tokens += sum(len(r.tokens) for r in results)
            bar.update(len(block))
            bar.set_postfix(tok_s=f"{new_tokens / (time.time() - t0):.0f}")
        bar.close()
        run.finish(n_requested=config.n)
    finally:
        run.close()
    return run.path
