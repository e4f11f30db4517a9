"""`synthsteer demo`: SoftSRV against the hard-prompt baselines on a real instruction-tuned LM, on a CPU.

On SmolLM2-135M-Instruct (default) it fits an `mc` soft prompt on GSM8K training questions, then
generates the same number of questions four ways with the same sampling settings: from the soft
prompt, from the zero-shot and the few-shot hard prompt (chat template on), and unsteered. Each set
is scored by `synthsteer eval` against held-out GSM8K test questions, next to real training
questions, the ceiling; the table printed shows MAUVE (mean ± std over k-means seeds), distinct-2
and length, and OUT/eval/report.html has every metric. The verdict printed at the end is computed
from the table, whichever way it goes. Rerunning reuses what is done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .artifacts import write_json
from .logs import console_settings
from .options import LogOptions, option

CEILING = "real (train questions)"


@dataclass(frozen=True)
class DemoConfig(LogOptions):
    out: str = option("runs/demo", "Output directory (prompt, runs, demo.json).")
    model: str = option("smollm2", "The frozen LM (smollm2: SmolLM2-135M-Instruct; tiny for a quick check).")
    n: int = option(200, "Samples per method.", count=True)
    steps: int = option(100, "Soft-prompt fit steps.", count=True)
    prompt_length: int = option(16, "Soft tokens.", count=True)
    batch_size: int = option(8, "Questions per fit step.", count=True)
    generate_batch_size: int = option(64, "Samples decoded together.", count=True)
    lr: float = option(3e-3, "Fit learning rate.", gt=0)
    max_length: int = option(96, "Question tokens kept for the fit.", count=True)
    shots: int = option(3, "Examples in the few-shot hard prompt.", ge=0)
    max_new_tokens: int = option(96, "Tokens per sample at most.", count=True)
    temperature: float = option(1.0, "Sampling temperature, the same for every method.", ge=0)
    top_p: float = option(0.95, "Nucleus mass, the same for every method.", gt=0, le=1)
    heldout: int = option(400, "Held-out GSM8K test questions to score against.", count=True)
    train_limit: int | None = option(2000, "Training questions the soft prompt sees (and embeds).", count=True)
    seed: int = option(0, "Seed of everything.")
    device: str = option("auto", "auto (CUDA when available), cpu or cuda[:N].")


def _questions(path: Path, split: str, limit: int) -> str:
    """The first `limit` GSM8K questions of `split` as a data file for eval (which takes data sources
    and subsamples at random, where the demo scores against the first questions), rewritten whole."""
    from .data import DataSpec, load_records

    rows = [json.dumps({"text": r.text}, ensure_ascii=False) + "\n"
            for r in load_records(DataSpec("builtin:gsm8k", field="question", split=split, limit=limit))]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(rows), encoding="utf-8")
    tmp.replace(path)
    return str(path)


@console_settings
def run_demo(config: DemoConfig) -> dict:
    """Fit, generate four ways, evaluate; returns (and writes to OUT/demo.json) the table's numbers
    and the verdict."""
    from rich.console import Console

    from .evaluation import EvalConfig, evaluate
    from .generation import GenerateConfig, generate
    from .lm import load_lm
    from .softsrv.config import FitConfig
    from .softsrv.fit import fit_soft_prompt

    console = Console()
    out = Path(config.out)
    methods = {
        "softsrv mc": dict(method="softsrv", prompt=str(out / "prompt")),
        "zero-shot": dict(method="hard", data="builtin:gsm8k", field="question"),
        f"few-shot ({config.shots})": dict(method="hard", data="builtin:gsm8k", field="question", shots=config.shots),
        "unsteered": dict(method="plain"),
    }
    paths = {name: out / name.split(" ")[0] for name in methods}
    # built first: a setting eval refuses (a seed beyond 2**32-1) is refused before the fit, not after
    eval_config = EvalConfig(real=str(out / "heldout.jsonl"), field="text", out=str(out / "eval"),
                             synthetic=(*(f"{name}={path}" for name, path in paths.items()),
                                        f"{CEILING}={out / 'train-questions.jsonl'}"),
                             device=config.device, seed=config.seed, quiet=config.quiet, log_level=config.log_level)
    t0 = time.time()
    lm = load_lm(config.model, device=config.device)
    t_fit, steps = time.time(), 6
    console.rule(f"[bold]1/{steps} fit an mc soft prompt on GSM8K training questions against {config.model}")
    fit_soft_prompt(FitConfig(data="builtin:gsm8k", split="train", field="question", limit=config.train_limit,
                              out=str(out / "prompt"),
                              model=config.model, parameterization="mc", prompt_length=config.prompt_length,
                              steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                              warmup=max(1, config.steps // 10), max_length=config.max_length, seed=config.seed),
                    resume=True, lm=lm)
    fit_minutes = (time.time() - t_fit) / 60
    common = dict(n=config.n, batch_size=config.generate_batch_size, max_new_tokens=config.max_new_tokens,
                  temperature=config.temperature, top_p=config.top_p, seed=config.seed, model=config.model)
    for k, (name, kw) in enumerate(methods.items()):
        console.rule(f"[bold]{k + 2}/{steps} generate {config.n} questions: {name}")
        generate(GenerateConfig(out=str(paths[name]), **common, **kw), lm=lm)
    console.rule(f"[bold]{steps}/{steps} score against held-out GSM8K test questions")
    _questions(out / "heldout.jsonl", "test", config.heldout)
    _questions(out / "train-questions.jsonl", "train", config.n)
    report = evaluate(eval_config, progress=True)
    results = {"model": config.model, "fit_steps": config.steps, "fit_batch_size": config.batch_size,
               "fit_minutes": round(fit_minutes, 1), "report": str(out / "eval" / "report.json"),
               "methods": show_report(console, config, report, len(eval_config.mauve_seeds), list(methods))}
    console.print(f"soft prompt: mc, {config.prompt_length} tokens, fit for {config.steps} steps of {config.batch_size} "
                  f"questions in {fit_minutes:.1f} min")
    results["verdict"] = verdict({k: v["mauve"] for k, v in results["methods"].items() if k in methods}, "softsrv mc")
    console.print(f"[bold]verdict:[/bold] {results['verdict']}")
    console.print(f"every metric: {out / 'eval' / 'report.html'}")
    results["seconds"] = round(time.time() - t0, 1)
    write_json(out / "demo.json", results)
    console.print(f"demo finished in {results['seconds']:.0f}s; numbers in {out / 'demo.json'}")
    return results


def show_report(console, config: DemoConfig, report, seeds: int, methods: list[str]) -> dict[str, dict]:
    """The demo's table (MAUVE, distinct-2, mean words per set) and a few samples of each method;
    returns those numbers and samples by set."""
    from rich.table import Table

    table = Table(title=f"{config.model}: {config.n} samples per method vs {report.real.n} held-out GSM8K questions "
                        f"(temperature {config.temperature}, top-p {config.top_p})")
    for col in ("method", f"MAUVE (mean ± std, {seeds} k-means seeds)", "distinct-2", "mean words"):
        table.add_column(col)
    rows = {}
    for name in report.sets:
        scored = report.metrics[name]
        m = scored.values["mauve"]
        rows[name] = row = {"mauve": m, "distinct_2": scored.values["distinct_2"],
                            "mean_words": scored.values["mean_words"],
                            "samples": list(scored.examples.synthetic[:4])}  # drawn at random by eval
        table.add_row(name, f"{m['mean']:.3f} ± {m['std']:.3f}", f"{row['distinct_2']:.3f}", f"{row['mean_words']:.1f}")
    console.print(table)
    for name in methods:
        console.print(f"[bold]{name}[/bold] samples:")
        for sample in rows[name]["samples"][:3]:
            console.print(f"  • {sample[:220]!r}")
    return rows


def verdict(mauve: dict[str, dict], ours: str) -> str:
    """One sentence on whether `ours` beats every other method on MAUVE, by more than the seeds' spread."""
    others = {k: v for k, v in mauve.items() if k != ours}
    best = max(others, key=lambda k: others[k]["mean"])
    m, o = mauve[ours], others[best]
    margin = m["mean"] - o["mean"]
    spread = max(m["std"], o["std"])
    if margin > spread:
        return f"{ours} beats every baseline on MAUVE ({m['mean']:.3f} vs {o['mean']:.3f} for {best}, the best baseline)."
    if margin < -spread:
        return (f"{ours} does NOT beat the baselines at this budget: {best} scores {o['mean']:.3f} MAUVE against "
                f"{m['mean']:.3f}.")
    return (f"{ours} and {best} are within the seeds' spread on MAUVE ({m['mean']:.3f} vs {o['mean']:.3f}): "
            "no clear winner at this budget.")
