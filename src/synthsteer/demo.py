"""`synthsteer demo`: SoftSRV end to end on the bundled data and LM, on a laptop CPU.

Fits an `mc` soft prompt on GSM8K training questions against `tiny`, generates questions from it,
generates the same number unsteered from `tiny` as the contrast, and scores both against held-out
GSM8K test questions (MAUVE over 3 k-means seeds, distinct-2). Rerunning reuses what is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .artifacts import write_json


@dataclass(frozen=True)
class DemoConfig:
    out: str = "runs/demo"
    n: int = 400
    steps: int = 300
    prompt_length: int = 16
    max_new_tokens: int = 96
    heldout: int = 400
    seed: int = 0
    device: str = "auto"


def run_demo(config: DemoConfig) -> dict:
    from rich.console import Console
    from rich.table import Table

    from .data import DataSpec, load_records
    from .encoders import encode_cached, load_encoder
    from .generation import GenerateConfig, generate
    from .lm import load_lm
    from .metrics import distinct_n, mauve_score
    from .runs import read_run
    from .softsrv.config import FitConfig
    from .softsrv.fit import fit_soft_prompt

    console = Console()
    out = Path(config.out)
    t0 = time.time()
    lm = load_lm("tiny", device=config.device)
    console.rule("[bold]1/4 fit an mc soft prompt on GSM8K training questions")
    fit_soft_prompt(FitConfig(data="builtin:gsm8k", split="train", field="question", out=str(out / "prompt"),
                              parameterization="mc", prompt_length=config.prompt_length, steps=config.steps,
                              seed=config.seed), resume=True, lm=lm)
    console.rule("[bold]2/4 generate from the soft prompt")
    runs = {}
    runs["softsrv mc"] = generate(GenerateConfig(out=str(out / "softsrv"), prompt=str(out / "prompt"), n=config.n,
                                                 max_new_tokens=config.max_new_tokens, seed=config.seed), lm=lm)
    console.rule("[bold]3/4 generate unsteered from tiny (the contrast)")
    runs["unsteered"] = generate(GenerateConfig(out=str(out / "plain"), method="plain", model="tiny", n=config.n,
                                                max_new_tokens=config.max_new_tokens, seed=config.seed), lm=lm)
    console.rule("[bold]4/4 score against held-out GSM8K test questions")
    real = [r.text for r in load_records(DataSpec("builtin:gsm8k", field="question", split="test",
                                                  limit=config.heldout))]
    encoder = load_encoder("minilm")
    real_feats = encode_cached(encoder, real, progress=True).numpy()
    table = Table(title=f"SoftSRV demo: {config.n} samples per method vs {len(real)} held-out GSM8K questions")
    for col in ("method", "MAUVE (mean ± std, 3 seeds)", "distinct-2", "mean words"):
        table.add_column(col)
    results = {}
    texts = {name: [r["text"] for r in read_run(path)] for name, path in runs.items()}
    texts["real (train questions)"] = [r.text for r in load_records(DataSpec("builtin:gsm8k", field="question",
                                                                             limit=config.n))]
    for name, samples in texts.items():
        feats = encode_cached(encoder, samples, progress=True).numpy()
        m = mauve_score(real_feats, feats)
        results[name] = {"mauve": m, "distinct_2": distinct_n(samples, 2),
                         "mean_words": sum(len(s.split()) for s in samples) / len(samples)}
        table.add_row(name, f"{m['mean']:.3f} ± {m['std']:.3f}", f"{results[name]['distinct_2']:.3f}",
                      f"{results[name]['mean_words']:.1f}")
    console.print(table)
    for name in runs:
        console.print(f"[bold]{name}[/bold] samples:")
        for s in texts[name][:4]:
            console.print(f"  • {s[:220]!r}")
    results["seconds"] = round(time.time() - t0, 1)
    write_json(out / "demo.json", results)
    console.print(f"demo finished in {results['seconds']:.0f}s; numbers in {out / 'demo.json'}")
    return results
