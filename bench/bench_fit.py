"""fit throughput of the three parameterizations on `tiny` (GSM8K questions, CPU or GPU).

Prints training tokens/s (soft-prompt + example tokens through the frozen LM, forward + backward)
for nsp, mp and mc. Usage: python bench/bench_fit.py [--steps 40] [--prompt-length 16]
"""

import argparse
import json
import tempfile
import time

import torch

from synthsteer import FitConfig, fit_soft_prompt, load_lm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    lm = load_lm(args.model, device=args.device)
    print(f"model {args.model} on {lm.device}, torch threads {torch.get_num_threads()}, "
          f"t={args.prompt_length}, batch {args.batch_size}, {args.steps} steps")
    rows = {}
    for kind in ("nsp", "mp", "mc"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            out = fit_soft_prompt(FitConfig(data="builtin:gsm8k", field="question", limit=2000, out=f"{tmp}/p",
                                            parameterization=kind, prompt_length=args.prompt_length,
                                            batch_size=args.batch_size, steps=args.steps, save_every=10**9,
                                            device=args.device), lm=lm, progress=False)
            meta = json.loads((out / "config.json").read_text())
            rows[kind] = {"tokens_per_s": round(meta["train_tokens_per_s"]), "wall_s": round(time.time() - t0, 1),
                          "final_loss": meta["final_loss"]}
            print(f"{kind:4s} {rows[kind]['tokens_per_s']:>8,} tokens/s   loss {meta['final_loss']:.3f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
