"""`synthsteer student`: does the data teach? For every training set, size and seed, fine-tune the
student and score it on the real held-out records; score the untrained student once; write
results.json and results.html.

    OUT/students/NAME-SIZE-sSEED/   one student (its adapter or weights, synthsteer_student.json, scores.json)
    OUT/untrained.json              the untrained student's scores
    OUT/results.json, results.html  every score, and each set's mean ± std over the seeds

A rerun of the same command resumes: a finished student is kept, an interrupted one resumes from
its checkpoint, and scores are recomputed only when the held-out records or the scoring changed.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from ..artifacts import Claim, read_json, write_json
from ..errors import SynthsteerError
from ..lm import load_lm_of
from ..logs import console_settings, log, log_file
from ..metrics import student_metrics
from ..training import barrier, distributed
from .config import StudentConfig, StudentTrainConfig
from .data import StudentTask, TrainingSet, load_eval, load_set, parse_sets, student_task, subset
from .results import StudentResults, StudentScore
from .score import Scoring, plan_scoring, score_student


@console_settings
def run_students(config: StudentConfig, *, overwrite: bool = False, progress: bool = True) -> StudentResults | None:
    """Train and score every student of `config`; returns the results (also OUT/results.json and .html;
    None on the other ranks under torchrun, where rank 0 scores and writes).

    Args:
        config: the training sets, held-out records, student LM and settings (see `StudentConfig`).
        overwrite: retrain students whose directory holds a run with other settings (otherwise refused).
        progress: progress lines with loss and tokens/s.
    """
    t0 = time.time()
    parsed = parse_sets(config)
    task = student_task(config, parsed)
    sets = [load_set(name, parts, config, task) for name, parts in parsed]
    held_out = load_eval(config, task)
    sizes = tuple(config.sizes) or (min(len(s.examples) for s in sets),)
    for s in sets:
        if max(sizes) > len(s.examples):
            raise SynthsteerError(f"--sizes {max(sizes)}: --train {s.name} holds only {len(s.examples)} records")
    _warn_overlap(sets, held_out, task)
    scoring = plan_scoring(config, task, held_out)
    out = Path(config.out)
    inputs = [config.eval, config.model, *(p for _, parts in parsed for p in parts)]
    # under torchrun every rank trains each student (the runner splits its batches); rank 0 alone
    # claims the output, scores and writes
    rank0 = distributed()[0] == 0
    with Claim(out, "student", inputs=inputs, verb="resume") if rank0 else nullcontext(), log_file(out, enabled=rank0):
        log.info(f"student: {config.model} ({config.finetune}) on {len(sets)} sets x sizes {', '.join(map(str, sizes))} x "
                 f"{len(config.seeds)} seeds; scored on {len(held_out)} records of {config.eval} by "
                 f"{', '.join(scoring.metrics)}")
        eval_desc = {"source": config.eval, "n": len(held_out), "limit": config.eval_limit}
        key = _score_key(config, task, scoring, eval_desc)
        untrained = None
        if rank0:
            untrained = _cached(out / "untrained.json", key) or _score(
                lambda: load_lm_of(config), out / "untrained.json", key, task, held_out, scoring, config,
                StudentScore("untrained", None, None, {}, 0.0), "untrained")
        runs = []
        for seed in config.seeds:  # seed by seed: an interrupted command has every set at the seeds it finished
            for s in sets:
                for size in sizes:
                    runs.append(_student(config, s, size, seed, task, held_out, scoring, key, out, overwrite, progress))
        barrier()
        if not rank0:
            return None
        results = StudentResults.build(
            student=config.model, finetune=config.finetune, eval=eval_desc, task=task.describe(),
            metrics=scoring.metrics, seeds=tuple(config.seeds), untrained=untrained, runs=runs,
            sources={s.name: s.source for s in sets}, seconds=round(time.time() - t0, 1))
        write_json(out / "results.json", results.to_dict())
        from .report import write_html

        write_html(results, out / "results.html")
        log.info(f"student: results in {out / 'results.json'} and {out / 'results.html'}")
    return results


def _steps(config: StudentConfig, size: int) -> int:
    return config.steps or max(1, math.ceil(config.epochs * size / (config.batch_size * config.grad_accum)))


def train_config(config: StudentConfig, s: TrainingSet, size: int, seed: int, out: Path) -> StudentTrainConfig:
    """One student's training settings (what a resume is checked against)."""
    keep = {f: getattr(config, f) for f in ("model", "revision", "device", "dtype", "trust_remote_code", "template",
                                            "format", "fields", "rename", "quiet", "log_level", "max_length",
                                            "batch_size", "grad_accum", "lr", "warmup_ratio", "weight_decay",
                                            "max_grad_norm", "save_every", "precision", "finetune", "r", "alpha",
                                            "dropout", "target_modules")}
    return StudentTrainConfig(**keep, data=s.source, out=str(out / "students" / f"{s.name}-{size}-s{seed}"),
                              steps=_steps(config, size), seed=seed, size=size)


def _student(config, s: TrainingSet, size, seed, task, held_out, scoring, key, out, overwrite, progress) -> StudentScore:
    from .train import load_student, train_student

    tc = train_config(config, s, size, seed, out)
    folder = train_student(tc, task, subset(list(s.examples), size), within=out, overwrite=overwrite,
                           progress=progress)
    if distributed()[0] != 0:
        return None
    meta = read_json(folder / "synthsteer_student.json")
    trained = StudentScore(s.name, size, seed, {}, 0.0, train_seconds=meta.get("train_seconds"),
                           steps=meta.get("steps"), final_train_loss=meta.get("final_loss"),
                           train_tokens_per_s=meta.get("train_tokens_per_s"), loss_history=meta.get("loss_history", []))
    cached = _cached(folder / "scores.json", key)
    if cached is not None:
        return cached
    return _score(lambda: load_student(folder, tc), folder / "scores.json", key, task, held_out, scoring, config,
                  trained, f"{s.name}-{size}-s{seed}")


def _score_key(config: StudentConfig, task: StudentTask, scoring: Scoring, eval_desc: dict) -> dict:
    """What a student's scores depend on besides its weights: when any of it changes they are recomputed."""
    return {"eval": eval_desc, "task": task.describe(), "scoring": scoring.describe(),
            **{f: getattr(config, f) for f in ("max_length", "max_new_tokens", "precision", "code_timeout")}}


def _cached(path: Path, key: dict) -> StudentScore | None:
    if not path.exists():
        return None
    try:
        saved = read_json(path)
        return StudentScore(**saved["score"]) if saved.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # torn or from another version: scored again


def _score(load, path: Path, key: dict, task, held_out, scoring, config, score: StudentScore, desc: str) -> StudentScore:
    lm = load()
    outputs, seconds = score_student(lm, task, held_out, scoring, config, desc)
    metrics = student_metrics(outputs)
    done = StudentScore(**{**asdict(score), "metrics": metrics, "eval_seconds": round(seconds, 1)})
    write_json(path, {"key": key, "score": asdict(done), "outputs": asdict(outputs)})
    shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
    trained = f"trained {done.steps} steps in {done.train_seconds:.0f} s ({done.train_tokens_per_s:,.0f} tok/s); " \
        if done.train_seconds is not None and done.train_tokens_per_s else ""
    log.info(f"student {desc}: {trained}{shown} (scored in {seconds:.0f} s)")
    return done


def _warn_overlap(sets: list[TrainingSet], held_out, task: StudentTask) -> None:
    """A training record that is also a held-out one makes the score a memory test: say so."""
    seen = {task.format.render(e.fields) for e in held_out}
    for s in sets:
        n = sum(task.format.render(e.fields) in seen for e in s.examples)
        if n:
            log.warning(f"student: {n} records of --train {s.name} are held-out records too; its scores are not a "
                        "fair test")

