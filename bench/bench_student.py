"""Speed of `synthsteer student`: a student's training step against `synthsteer expert`'s on the same
BoolQ records (tokens/s counts every token the LM runs on: the expert's instruction and record, the
student's input and target), then one whole 256-record LoRA student (the default 2 epochs) with its scoring.

    expert   LoRA r 16 on "Passage: ...\\nQuestion: ...\\nAnswer: ..." after its instruction (loss on every record token)
    student  LoRA r 16 on the same records, reading passage + question, learning the answer

Usage: python bench/bench_student.py [--model smollm2] [--steps 8] [--threads 2] [--whole] [--out runs/bench-student]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

TEMPLATE = "Passage: {passage}\nQuestion: {question}\nAnswer: {label}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--whole", action="store_true", help="also time a whole 256-record student with its scoring")
    ap.add_argument("--out", default="runs/bench-student")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from synthsteer.steer import ExpertConfig, train_expert
    from synthsteer.student.config import StudentConfig
    from synthsteer.student.run import run_students

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    common = dict(model=args.model, device="cpu", steps=args.steps, batch_size=args.batch_size, quiet=True,
                  save_every=10**6, r=16, alpha=32)
    figures: dict[str, list[float]] = {"expert": [], "student": []}
    for rep in range(2):  # interleaved, so that a machine's load shifts both alike
        t = time.time()
        expert = train_expert(ExpertConfig(data="builtin:boolq/train", template=TEMPLATE, limit=64, max_length=512,
                                           out=str(out / f"expert-{rep}"), **common), progress=False)
        meta = json.loads((expert / "synthsteer_expert.json").read_text())
        figures["expert"].append(meta["train_tokens_per_s"])
        print(f"expert: {meta['train_tokens_per_s']:.0f} tok/s ({time.time() - t:.0f} s with loading)", flush=True)
        t = time.time()
        run_students(StudentConfig(train=("real=builtin:boolq/train",), eval="builtin:boolq/heldout", eval_limit=8,
                                   template=TEMPLATE, target=("label",), sizes=(64,), out=str(out / f"student-{rep}"),
                                   **common), progress=False)
        meta = json.loads(next((out / f"student-{rep}" / "students").glob("*/synthsteer_student.json")).read_text())
        figures["student"].append(meta["train_tokens_per_s"])
        print(f"student: {meta['train_tokens_per_s']:.0f} tok/s ({time.time() - t:.0f} s with loading and scoring)",
              flush=True)
    result = {k: round(sum(v) / len(v), 1) for k, v in figures.items()}
    result["student / expert"] = round(result["student"] / result["expert"], 2)
    if args.whole:
        t = time.time()
        res = run_students(StudentConfig(
            train=("real=builtin:boolq/train",), eval="builtin:boolq/heldout", eval_limit=200, template=TEMPLATE,
            target=("label",), sizes=(256,), model=args.model, device="cpu", quiet=True, out=str(out / "whole")),
            progress=False)
        run = res.runs[0]
        result["whole_256"] = {"seconds": round(time.time() - t, 1), "train_seconds": run.train_seconds,
                               "steps": run.steps, "eval_seconds": run.eval_seconds,
                               "untrained_eval_seconds": res.untrained.eval_seconds, **run.metrics}
    print(json.dumps(result, indent=2))
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
