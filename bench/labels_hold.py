"""Do the labels of a synthetic Jigsaw set hold? Label agreement (the classifier of `filter
--label-consistent`: logistic regression on MiniLM embeddings of the real held-out comments) for
    (a) copied   a soft prompt fit on comments alone; each record copies the label of the example
                 whose context seeded it (--label-field label_name), as before records existed
    (b) given    a soft prompt fit on whole records "Label: ...\\nComment: ..."; the label is fed
                 (--given label_name) and the LM writes the comment after it
    (b') given, 3-shot   (b)'s records from a 3-shot hard prompt of whole records instead of a soft prompt
    (c) given + STEER   (b) through SoftSRV + STEER (contrastive guidance and negatives; top-k 10, the
                 decoding bench/study.py gives STEER: without it the score's boost of tokens the negative
                 branch finds unlikely samples from the vocabulary's tail)
beside real comments (a sample of the training split the classifier never saw).

Every step resumes (rerun the same command); the numbers land in OUT/labels.json and the eval report.

Usage: python bench/labels_hold.py [--model smollm2] [--n 256] [--steps 60] [--threads 1] [--out runs/labels]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

TEMPLATE = "Label: {label_name}\nComment: {comment_text}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=60)
    # all of them: the split lists every non-toxic comment first, so its first rows would seed one label only
    ap.add_argument("--limit", type=int, default=None, help="training comments used (default: all)")
    ap.add_argument("--new", type=int, default=64, help="max new tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/labels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from synthsteer import (EvalConfig, FitConfig, GenerateConfig, evaluate, fit_soft_prompt, generate, load_lm,
                            read_run)
    from synthsteer.data import load_records

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_lm(args.model, device="cpu")
    seconds = {}

    def timed(name, fn):
        t = time.time()
        result = fn()
        seconds[name] = round(time.time() - t, 1)
        print(f"{name}: {seconds[name]} s", flush=True)
        return result

    fit = dict(data="builtin:jigsaw/train", model=args.model, limit=args.limit, parameterization="mc",
               prompt_length=16, steps=args.steps, batch_size=8, max_length=96, lr=3e-3, save_every=20, seed=0,
               quiet=True)
    copied_prompt = timed("fit comments", lambda: fit_soft_prompt(
        FitConfig(**fit, field="comment_text", out=str(out / "prompt-comments")), resume=True, progress=False, lm=lm))
    record_prompt = timed("fit records", lambda: fit_soft_prompt(
        FitConfig(**fit, template=TEMPLATE, out=str(out / "prompt-records")), resume=True, progress=False, lm=lm))
    gen = dict(model=args.model, n=args.n, batch_size=32, max_new_tokens=args.new, seed=0, quiet=True)
    sets = {
        "copied": timed("generate copied", lambda: generate(GenerateConfig(
            **gen, method="softsrv", prompt=str(copied_prompt), label_field="label_name", out=str(out / "copied")),
            progress=False, lm=lm)),
        "given": timed("generate given", lambda: generate(GenerateConfig(
            **gen, method="softsrv", prompt=str(record_prompt), given=("label_name",), out=str(out / "given")),
            progress=False, lm=lm)),
        "given, 3-shot": timed("generate given, 3-shot", lambda: generate(GenerateConfig(
            **gen, method="hard", data="builtin:jigsaw/train", template=TEMPLATE, shots=3, given=("label_name",),
            out=str(out / "given-3shot")), progress=False, lm=lm)),
        "given + steer": timed("generate given + steer", lambda: generate(GenerateConfig(
            **gen, method="steer", prompt=str(record_prompt), given=("label_name",), negatives=4, top_k=10,
            out=str(out / "given-steer")), progress=False, lm=lm)),
    }
    # real comments the classifier never saw (it trains on the held-out split), rows as the records hold them
    rows = [{"comment_text": r.meta["comment_text"], "label_name": r.meta["label_name"]}
            for r in load_records("builtin:jigsaw/train", field="comment_text")]
    real = out / "real-sample.jsonl"
    real.write_text("".join(json.dumps(r) + "\n" for r in random.Random(0).sample(rows, args.n)))
    # the comment alone is what the classifier reads: the rendered record would hand it the label as text
    comments = {}
    for name, run in sets.items():
        path = out / f"{name.replace(' ', '')}-comments.jsonl"
        records = read_run(run)
        path.write_text("".join(json.dumps({"comment_text": r.get("comment_text", r["text"]), "label_name": r["label_name"]})
                                + "\n" for r in records))
        comments[name] = (path, len(records))
    report = timed("eval", lambda: evaluate(EvalConfig(
        real="builtin:jigsaw/heldout", field="comment_text", label_field="label_name", out=str(out / "eval"),
        synthetic=(f"real={real}", *(f"{k}={p}" for k, (p, _) in comments.items())), device="cpu", quiet=True),
        progress=False))
    result = {"model": args.model, "n": args.n, "fit_steps": args.steps, "seconds": seconds, "sets": {}}
    for name in ("real", *comments):
        values = report.metrics[name].values
        manifest = json.loads((Path(sets[name]) / "manifest.json").read_text()) if name in sets else {}
        result["sets"][name] = {"label_agreement": values.get("label_agreement"), "mauve": values["mauve"]["mean"],
                                "kept": comments[name][1] if name in comments else args.n,
                                "rejects": manifest.get("rejects", 0)}
        print(f"{name:>14}: labels hold {values.get('label_agreement'):.1%}, MAUVE {values['mauve']['mean']:.3f}",
              flush=True)
    (out / "labels.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
