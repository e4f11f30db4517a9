"""fit throughput of the soft-prompt parameterizations (GSM8K questions, CPU or GPU).

Prints training tokens/s (soft-prompt + example tokens through the frozen LM, forward + backward)
and seconds per step for each parameterization, and for STEER's LoRA expert (kind `expert`: its
instruction prompt stands where the soft prompt would; it wraps the LM with peft, so it runs last).
Usage: python bench/bench_fit.py [--model tiny|smollm2] [--kinds nsp,mp,mc,expert] [--steps 40] [--prompt-length 16]
"""

import argparse
import json
import tempfile
import time

import torch

from synthsteer import FitConfig, fit_soft_prompt, load_lm
from synthsteer.steer import ExpertConfig, train_expert


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--kinds", default="nsp,mp,mc")
    ap.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (autocast)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    lm = load_lm(args.model, device=args.device)
    print(f"model {args.model} on {lm.device}, torch threads {torch.get_num_threads()}, "
          f"precision {args.precision}, t={args.prompt_length}, batch {args.batch_size}, max length {args.max_length}, {args.steps} steps")
    rows = {}
    kinds = sorted(args.kinds.split(","), key=lambda k: k == "expert")
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            common = dict(data="builtin:gsm8k", field="question", limit=2000, out=f"{tmp}/p", batch_size=args.batch_size,
                          steps=args.steps, save_every=10**9, max_length=args.max_length, warmup=1,
                          precision=args.precision, device=args.device)
            if kind == "expert":
                out = train_expert(ExpertConfig(**common), lm=lm, progress=False)
                meta = json.loads((out / "synthsteer_expert.json").read_text())
            else:
                out = fit_soft_prompt(FitConfig(**common, parameterization=kind, prompt_length=args.prompt_length),
                                      lm=lm, progress=False)
                meta = json.loads((out / "config.json").read_text())
            wall = time.time() - t0
            rows[kind] = {"tokens_per_s": round(meta["train_tokens_per_s"]), "wall_s": round(wall, 1),
                          "s_per_step": round(wall / args.steps, 3), "final_loss": meta["final_loss"]}
            print(f"{kind:6s} {rows[kind]['tokens_per_s']:>8,} tokens/s  {rows[kind]['s_per_step']:6.2f} s/step  "
                  f"loss {meta['final_loss']:.3f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
