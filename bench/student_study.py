"""Does the data teach? SmolLM2 students fine-tuned (LoRA) on real, SoftSRV and hard-prompt records, scored
on real held-out records, for two tasks:

    boolq   "Passage: {passage}\\nQuestion: {question}\\nAnswer: {label}"; the generator is fed a real
            passage (--given passage) and writes a question and its yes/no answer; the student reads
            passage + question and learns the answer (accuracy by log-likelihood of yes / no)
    jigsaw  "Label: {label_name}\\nComment: {comment_text}"; the generator is fed a label (--given label_name)
            and writes a comment; the student reads the comment and learns the label (the same fields,
            re-rendered "Comment: ...\\nLabel: ...")

Training sets per task: real (builtin:TASK/train), SoftSRV mc (a 16-token prompt, 60 steps, on whole
records), few-shot hard prompt, zero-shot hard prompt (both of whole records); 256 records each, with
students at 64 and 256 of them (the smaller inside the larger), 3 seeds, a fixed budget of --steps
optimizer steps of 8 records (the same for every set: 1 epoch at 256, 4 at 64), beside the untrained
student. Every step resumes: rerun the same command after an interruption.

Usage: python bench/student_study.py [--tasks jigsaw,boolq] [--model smollm2] [--steps 32] [--seeds 0,1,2]
                                     [--eval-limit 200] [--out runs/student-study]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

TASKS = {
    "boolq": dict(
        data="builtin:boolq/train", eval="builtin:boolq/heldout", given=("passage",), shots=2, new=48,
        template="Passage: {passage}\nQuestion: {question}\nAnswer: {label}", fit_length=256,
        student_template="Passage: {passage}\nQuestion: {question}\nAnswer: {label}", target=("label",),
        max_length=320),
    "jigsaw": dict(
        data="builtin:jigsaw/train", eval="builtin:jigsaw/heldout", given=("label_name",), shots=3, new=64,
        template="Label: {label_name}\nComment: {comment_text}", fit_length=96,
        student_template="Comment: {comment_text}\nLabel: {label_name}", target=("label_name",), max_length=128),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="jigsaw,boolq")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=256, help="records generated per method")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=32, help="optimizer steps per student")
    ap.add_argument("--fit-steps", type=int, default=60)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/student-study")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from synthsteer import FitConfig, GenerateConfig, fit_soft_prompt, generate, load_lm, read_run
    from synthsteer.student.config import StudentConfig
    from synthsteer.student.run import run_students

    root = Path(args.out)
    summary_path = root / "study.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for task in args.tasks.split(","):
        spec, out = TASKS[task], root / task
        out.mkdir(parents=True, exist_ok=True)
        seconds = summary.get(task, {}).get("seconds", {})

        def timed(name, fn):
            t = time.time()
            result = fn()
            seconds.setdefault(name, round(time.time() - t, 1))  # a resumed step keeps its first timing
            print(f"{task} {name}: {round(time.time() - t, 1)} s", flush=True)
            return result

        lm = load_lm(args.model, device="cpu")
        prompt = timed("fit softsrv mc", lambda: fit_soft_prompt(FitConfig(
            data=spec["data"], template=spec["template"], model=args.model, parameterization="mc", prompt_length=16,
            steps=args.fit_steps, batch_size=8, max_length=spec["fit_length"], lr=3e-3, save_every=20, seed=0,
            quiet=True, out=str(out / "prompt")), resume=True, progress=False, lm=lm))
        gen = dict(model=args.model, n=args.n, batch_size=32, max_new_tokens=spec["new"], seed=0, quiet=True,
                   given=spec["given"])
        runs = {
            "softsrv": (dict(method="softsrv", prompt=str(prompt)), "generate softsrv mc"),
            "few-shot": (dict(method="hard", data=spec["data"], template=spec["template"], shots=spec["shots"]),
                         f"generate hard {spec['shots']}-shot"),
            "zero-shot": (dict(method="hard", data=spec["data"], template=spec["template"], shots=0),
                          "generate hard zero-shot"),
        }
        paths = {}
        for name, (extra, what) in runs.items():
            paths[name] = timed(what, lambda: generate(GenerateConfig(**gen, **extra, out=str(out / name)),
                                                       progress=False, lm=lm))
        lm = None  # the students load their own copies
        # a sample that did not parse is a reject, not a record: a set may hold a few fewer than --n
        smallest = min(len(read_run(p)) for p in paths.values())
        sizes = sorted({min(int(x), smallest) for x in args.sizes.split(",")})
        results = timed("students", lambda: run_students(StudentConfig(
            train=(f"real={spec['data']}", *(f"{k}={v}" for k, v in paths.items())), eval=spec["eval"],
            eval_limit=args.eval_limit, template=spec["student_template"], target=spec["target"],
            sizes=tuple(sizes), seeds=tuple(int(s) for s in args.seeds.split(",")),
            steps=args.steps, max_length=spec["max_length"], model=args.model, device="cpu", quiet=True,
            out=str(out / "students")), progress=False))
        headers, rows = results.table()
        summary[task] = {"seconds": seconds, "table": {"headers": headers, "rows": rows},
                         "rejects": {k: json.loads((Path(p) / "manifest.json").read_text()).get("rejects", 0)
                                     for k, p in paths.items()}}
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(" | ".join(headers))
        for row in rows:
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
