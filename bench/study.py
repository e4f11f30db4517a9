"""The evidence study: both papers' comparisons on one LM, with error bars (docs/results.md).

One command per experiment; every cell (a fit, an expert, a generated set, a report) lives in its
own directory under --out and a rerun skips what is finished, so an interrupted study resumes.

  softsrv  the SoftSRV table: zero-/few-shot hard prompts against nsp / mp (k=2) / mc soft prompts on
           GSM8K questions, MBPP problems and BoolQ questions; 3 generation seeds per method.
  tstr     train-on-synthetic/test-on-real on BoolQ (yes/no) and Jigsaw (toxic/non-toxic) at two
           synthetic sizes, as generated and after `filter --label-consistent`, against
           train-on-real of the same sizes.
  steer    on CommonsenseQA questions and Jigsaw comments per label: sampling baselines from the
           LoRA expert (temperature 0.7, top-k 10, nucleus 0.92, plain), a few-shot hard prompt, STEER
           at the paper's defaults and a gamma x eta grid.
  beyond   ours, on CommonsenseQA: SoftSRV + STEER (the soft prompt as the expert, no fine-tuning),
           context noise and mixing, nearest-neighbour negatives; on the STEER frontier.
  report   tables (results.json) and plots (PNG) from what the experiments wrote.

Usage: python bench/study.py EXPERIMENT... [--quick] [--model smollm2] [--out runs/study] [--threads 2]
`--quick` is the whole pipeline at toy sizes (one task each, one seed, a 2 x 2 grid): minutes, not hours.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

GRID = (0.0, 0.2, 0.6, 1.0)  # includes the paper's defaults gamma 0.2, eta 0.6


@dataclass(frozen=True)
class Scale:
    n: int  # samples per generated set
    seeds: tuple[int, ...]  # generation seeds of the SoftSRV table
    fit_steps: int
    expert_steps: int
    real_n: int  # held-out real texts per report
    grid: tuple[float, ...]
    tstr_sizes: tuple[int, ...]
    softsrv_tasks: tuple[str, ...]
    steer_tasks: tuple[str, ...]
    grid_tasks: tuple[str, ...]
    tstr_tasks: tuple[str, ...]


FULL = Scale(n=64, seeds=(0, 1, 2), fit_steps=60, expert_steps=40, real_n=400, grid=GRID, tstr_sizes=(64, 256),
             softsrv_tasks=("gsm8k", "boolq", "mbpp"), steer_tasks=("commonsenseqa", "jigsaw-toxic", "jigsaw-nontoxic"),
             grid_tasks=("commonsenseqa", "jigsaw-toxic"), tstr_tasks=("boolq", "jigsaw"))
QUICK = Scale(n=24, seeds=(0,), fit_steps=12, expert_steps=8, real_n=100, grid=(0.0, 0.6), tstr_sizes=(16, 48),
              softsrv_tasks=("gsm8k",), steer_tasks=("commonsenseqa",), grid_tasks=("commonsenseqa",),
              tstr_tasks=("boolq",))


@dataclass(frozen=True)
class Task:
    name: str
    data: str  # training examples (and STEER's real negatives)
    real: str  # held-out examples every set is scored against
    field: str
    max_new: int
    label_field: str | None = None
    instruction: str | None = None  # None: the bundled task's own
    only: tuple[str, str] | None = None  # (field, value): keep the rows of one label


TASKS = {t.name: t for t in (
    Task("gsm8k", "builtin:gsm8k/train", "builtin:gsm8k/test", "question", 80),
    Task("mbpp", "builtin:mbpp/train", "builtin:mbpp/test", "text", 48),
    Task("boolq", "builtin:boolq/train", "builtin:boolq/heldout", "question", 32, label_field="label"),
    Task("commonsenseqa", "builtin:commonsenseqa/train", "builtin:commonsenseqa/dev", "question", 48),
    Task("jigsaw", "builtin:jigsaw/train", "builtin:jigsaw/heldout", "comment_text", 48, label_field="label_name"),
    # per label, as the STEER paper generates
    Task("jigsaw-toxic", "builtin:jigsaw/train", "builtin:jigsaw/heldout", "comment_text", 48,
         instruction="Write a toxic social media comment. Reply with the comment only.", only=("label_name", "toxic")),
    Task("jigsaw-nontoxic", "builtin:jigsaw/train", "builtin:jigsaw/heldout", "comment_text", 48,
         instruction="Write a social media comment. Reply with the comment only.", only=("label_name", "non-toxic")),
)}


class Study:
    def __init__(self, args, scale: Scale):
        import torch

        from synthsteer.lm import load_lm

        torch.set_num_threads(args.threads)
        self.out, self.model, self.scale = Path(args.out), args.model, scale
        self.lm = load_lm(args.model)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "study.log", "a")

    def say(self, msg: str):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    # ------------------------------------------------------------ cells

    def task(self, name: str) -> Task:
        t = TASKS[name]
        if t.only:  # one label's rows as data files, written once
            from synthsteer.data import load_rows

            (self.out / "data").mkdir(exist_ok=True)
            key, value = t.only
            for attr in ("data", "real"):
                path = self.out / "data" / f"{name}-{attr}.jsonl"
                if not path.exists():
                    write_jsonl(path, [r for r in load_rows(getattr(t, attr)) if r[key] == value])
                t = replace(t, **{attr: str(path)})
        return t

    def timed(self, what: str, done: bool, fn):
        """Run `fn` unless the cell is `done`; the seconds it took go into OUT/times/ (one file per cell,
        so that experiments can run side by side), added to those of earlier calls (a cell that grew)."""
        if done:
            return
        entry = self.out / "times" / (what.replace("/", "__").replace(" ", "_") + ".json")
        before = json.loads(entry.read_text())["seconds"] if entry.exists() else 0.0
        self.say(f"start {what}")
        t0 = time.time()
        fn()
        entry.parent.mkdir(exist_ok=True)
        write_jsonl(entry, [{"what": what, "seconds": round(before + time.time() - t0, 1)}])
        self.say(f"done  {what} in {time.time() - t0:.0f} s")

    def real_sample(self, task: Task, seed: int, n: int | None = None) -> Path:
        """n real training examples (seeded): the ceiling at the synthetic sets' own size, since MAUVE
        depends on the number of samples and the report's real-vs-real halves are larger."""
        from synthsteer.data import load_rows

        path = self.out / "data" / f"{task.name}-real-{n or self.scale.n}-s{seed}.jsonl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = load_rows(task.data)
            write_jsonl(path, random.Random(seed).sample(rows, n or self.scale.n))
        return path

    def fit(self, task: Task, parameterization: str, out: Path) -> Path:
        from synthsteer import FitConfig, fit_soft_prompt

        s = self.scale
        cfg = FitConfig(data=task.data, field=task.field, model=self.model, out=str(out), parameterization=parameterization,
                        num_bases=2, prompt_length=16, steps=s.fit_steps, batch_size=8, max_length=64, lr=3e-3,
                        save_every=20, seed=0, quiet=True)  # every record: their contexts are embedded once
        self.timed(f"fit {out.relative_to(self.out)}", (out / "config.json").exists(),
                   lambda: fit_soft_prompt(cfg, resume=True, progress=False, lm=self.lm))
        return out

    def expert(self, task: Task, out: Path) -> Path:
        from synthsteer import ExpertConfig, train_expert

        cfg = ExpertConfig(data=task.data, field=task.field, model=self.model, out=str(out), instruction=task.instruction,
                           steps=self.scale.expert_steps, batch_size=8, max_length=64, limit=2000, lr=1e-3,
                           save_every=20, seed=0, quiet=True)
        self.timed(f"expert {out.relative_to(self.out)}", (out / "synthsteer_expert.json").exists(),
                   lambda: train_expert(cfg, resume=True, progress=False, lm=self.lm))
        return out

    def generate(self, out: Path, **kw) -> Path:
        from synthsteer import GenerateConfig, generate

        cfg = GenerateConfig(model=self.model, out=str(out), batch_size=64, quiet=True, **kw)
        manifest = out / "manifest.json"
        done = manifest.exists() and json.loads(manifest.read_text())["records"] >= cfg.n  # a larger n resumes the run
        self.timed(f"generate {out.relative_to(self.out)}", done, lambda: generate(cfg, progress=False, lm=self.lm))
        return out

    def keep_consistent_labels(self, task: Task, run: Path, out: Path) -> Path:
        """The records of `run` whose label a classifier trained on the real training data agrees with."""
        import shutil

        from synthsteer import FilterConfig, filter_run

        cfg = FilterConfig(run=str(run), out=str(out), label_consistent=task.data, label_field=task.label_field,
                           field=task.field, device="cpu", quiet=True)
        done = (out / "manifest.json").exists() and \
            (out / "manifest.json").stat().st_mtime > (run / "manifest.json").stat().st_mtime
        if not done:
            shutil.rmtree(out, ignore_errors=True)
        self.timed(f"filter {out.relative_to(self.out)}", done, lambda: filter_run(cfg))
        return out

    def evaluate(self, task: Task, sets: dict[str, Path], out: Path, label: bool = False) -> dict:
        """One report over `sets`; redone when the list of sets changed (an experiment grew) or a set was
        written after the report (a cell rerun)."""
        from synthsteer import EvalConfig, evaluate

        names = {k: str(v) for k, v in sets.items()}
        report_path = out / "report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            written = max((p / "manifest.json" if p.is_dir() else p).stat().st_mtime for p in map(Path, names.values()))
            if {k: v["source"] for k, v in report["sets"].items()} == names and written < report_path.stat().st_mtime:
                return report
        cfg = EvalConfig(real=task.real, field=task.field, synthetic=tuple(f"{k}={v}" for k, v in names.items()),
                         out=str(out), train=task.data, label_field=task.label_field if label else None,
                         max_samples=self.scale.real_n, device="cpu", quiet=True)
        self.say(f"start eval {out.relative_to(self.out)} ({len(sets)} sets)")
        t0 = time.time()
        report = evaluate(cfg, progress=False).to_json()
        self.say(f"done  eval {out.relative_to(self.out)} in {time.time() - t0:.0f} s")
        return report

    # ------------------------------------------------------------ experiments

    def softsrv(self):
        s = self.scale
        for name in s.softsrv_tasks:
            task, root = self.task(name), self.out / "softsrv" / name
            prompts = {p: self.fit(task, p, root / f"prompt-{p}") for p in ("nsp", "mp", "mc")}
            data = dict(data=task.data, field=task.field)
            methods = {"zero-shot": dict(method="hard", **data), "few-shot": dict(method="hard", shots=3, **data),
                       **{p: dict(method="softsrv", prompt=str(path), **data) for p, path in prompts.items()}}
            sets = {f"real train s{seed}": self.real_sample(task, seed) for seed in s.seeds}
            for method, kw in methods.items():
                for seed in s.seeds:
                    sets[f"{method} s{seed}"] = self.generate(
                        root / f"{method}-s{seed}", n=s.n, seed=seed, max_new_tokens=task.max_new, temperature=1.0,
                        top_p=0.95, **kw)
            self.evaluate(task, sets, root / "eval")

    def tstr(self):
        s = self.scale
        for name in s.tstr_tasks:
            task, root = self.task(name), self.out / "tstr" / name
            prompt = self.fit(task, "mc", root / "prompt-mc")
            # twice the largest size: `filter --label-consistent` keeps about two thirds
            run = self.generate(root / "softsrv-mc", prompt=str(prompt), data=task.data, field=task.field,
                                label_field=task.label_field, n=2 * max(s.tstr_sizes) + 16, seed=0,
                                max_new_tokens=task.max_new, temperature=1.0, top_p=0.95)
            kept = self.keep_consistent_labels(task, run, root / "softsrv-mc-labels-kept")
            from synthsteer import read_run
            from synthsteer.data import load_rows

            def rows(run_dir: Path) -> list[dict]:  # an immediate EOS leaves an empty text
                return [{task.field: r["text"], task.label_field: r[task.label_field]}
                        for r in read_run(run_dir) if r["text"].strip()]

            generated, filtered = rows(run), rows(kept)
            train = load_rows(task.data)
            random.Random(0).shuffle(train)
            sets = {}
            for size in s.tstr_sizes:  # the first records of a run, and a seeded sample of the real training data
                sets[f"softsrv {size}"] = write_jsonl(root / f"softsrv-{size}.jsonl", generated[:size])
                sets[f"softsrv {size} labels kept"] = write_jsonl(root / f"softsrv-{size}-kept.jsonl", filtered[:size])
                sets[f"real {size}"] = write_jsonl(root / f"real-{size}.jsonl", train[:size])
            self.evaluate(task, sets, root / "eval", label=True)

    def steer_sets(self, task: Task, root: Path) -> dict[str, Path]:
        """The baselines and STEER at the paper's defaults with every generation seed (error bars; seed s > 0
        is the set "NAME s<s>"), and the gamma x eta grid with seed 0."""
        expert = self.expert(task, root / "expert")
        common = dict(data=task.data, field=task.field, n=self.scale.n, max_new_tokens=task.max_new)
        with_expert = dict(common, expert=str(expert), method="hard")
        steer = dict(common, expert=str(expert), method="steer", top_k=10, negative_share="block")
        named = {
            "temperature 0.7": ("temp-0.7", dict(with_expert, temperature=0.7)),
            "top-k 10": ("top-k-10", dict(with_expert, top_k=10)),
            "nucleus 0.92": ("nucleus-0.92", dict(with_expert, top_p=0.92)),
            "expert alone": ("expert-alone", with_expert),
            "few-shot": ("few-shot", dict(common, method="hard", shots=3, top_k=10, instruction=task.instruction)),
            "STEER (paper defaults)": ("steer-g0.2-e0.6", dict(steer, gamma=0.2, eta=0.6)),
        }
        sets = {}
        for seed in self.scale.seeds:
            sets["real train" + (f" s{seed}" if seed else "")] = self.real_sample(task, seed)
            for name, (folder, kw) in named.items():
                suffix = f" s{seed}" if seed else ""
                sets[name + suffix] = self.generate(root / (folder + suffix.replace(" ", "-")), **kw, seed=seed)
        grid = self.scale.grid if task.name in self.scale.grid_tasks else ()
        for g, e in sorted({(g, e) for g in grid for e in grid} - {(0.2, 0.6)}):
            sets[f"STEER g{g} e{e}"] = self.generate(root / f"steer-g{g}-e{e}", **steer, gamma=g, eta=e, seed=0)
        return sets

    def steer(self):
        for name in self.scale.steer_tasks:
            task, root = self.task(name), self.out / "steer" / name
            self.evaluate(task, self.steer_sets(task, root), root / "eval")

    def beyond(self):
        if "commonsenseqa" not in self.scale.steer_tasks:
            return
        task, root = self.task("commonsenseqa"), self.out / "beyond" / "commonsenseqa"
        prompt = self.fit(task, "mc", root / "prompt-mc")
        common = dict(data=task.data, field=task.field, n=self.scale.n, max_new_tokens=task.max_new, top_k=10)
        soft = dict(common, prompt=str(prompt))
        expert = str(self.out / "steer" / task.name / "expert")
        ours = {
            "softsrv mc": ("softsrv-mc", dict(soft, method="softsrv")),
            "softsrv noise 0.3": ("softsrv-noise", dict(soft, method="softsrv", context_noise=0.3)),
            "softsrv mix 0.5": ("softsrv-mix", dict(soft, method="softsrv", context_mix=0.5)),
            "softsrv + STEER": ("softsrv-steer", dict(soft, method="steer", negative_share="block")),
            "STEER nearest negatives": ("steer-nearest", dict(common, expert=expert, method="steer",
                                                              negative_draw="nearest")),
        }
        sets = self.steer_sets(task, self.out / "steer" / task.name)  # the same frontier: finished cells are reused
        for seed in self.scale.seeds:
            for name, (folder, kw) in ours.items():
                suffix = f" s{seed}" if seed else ""
                sets[name + suffix] = self.generate(root / (folder + suffix.replace(" ", "-")), **kw, seed=seed)
        self.evaluate(task, sets, root / "eval")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Atomically; a file that already holds these rows is left alone (its age tells a report it is current)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.exists() and path.read_text() == text:
        return path
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", choices=("softsrv", "tstr", "steer", "beyond", "report", "all"))
    ap.add_argument("--model", default="smollm2", help="any HF causal LM id or path; a GPU run of the same tables")
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--quick", action="store_true", help="toy sizes: the whole pipeline in minutes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="comma-separated task names: run the experiments on these tasks only "
                                   "(e.g. to run two experiments side by side, one thread each)")
    args = ap.parse_args()
    scale = QUICK if args.quick else FULL
    if args.only:
        only = set(args.only.split(","))
        if only - set(TASKS):
            ap.error(f"--only: unknown task(s) {', '.join(sorted(only - set(TASKS)))}; tasks: {', '.join(TASKS)}")
        scale = replace(scale, **{k: tuple(t for t in getattr(scale, k) if t in only)
                                  for k in ("softsrv_tasks", "steer_tasks", "grid_tasks", "tstr_tasks")})
    todo = ("softsrv", "tstr", "steer", "beyond", "report") if "all" in args.experiments else args.experiments
    study = Study(args, scale) if set(todo) - {"report"} else None
    t0 = time.time()
    for name in todo:
        if name == "report":
            from study_report import write_results

            write_results(Path(args.out), scale)
        else:
            getattr(study, name)()
    if study:
        study.say(f"{' '.join(todo)}: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
