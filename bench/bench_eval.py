"""Eval time for 2,000 real vs 2,000 synthetic samples: featurization and metrics, first run (empty
embedding cache) and cached rerun. Uses GSM8K training questions 0-1999 as "real" and 2000-3999 as
"synthetic" so the work is that of a real evaluation. Usage: python bench/bench_eval.py [--n 2000]
"""

import argparse
import json
import os
import tempfile
from dataclasses import asdict

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SYNTHSTEER_CACHE"] = f"{tmp}/cache"  # a cold cache for the first run
        from synthsteer.data import load_records
        from synthsteer.evaluation import EvalConfig, evaluate

        recs = load_records("builtin:gsm8k/train", field="question", limit=2 * args.n)
        for name, part in (("real", recs[: args.n]), ("synthetic", recs[args.n:])):
            with open(f"{tmp}/{name}.jsonl", "w") as f:
                f.writelines(json.dumps({"text": r.text}) + "\n" for r in part)
        cfg = EvalConfig(real=f"{tmp}/real.jsonl", synthetic=(f"{tmp}/synthetic.jsonl",), train=f"{tmp}/real.jsonl",
                         field="text", out=f"{tmp}/out", device="cpu")
        print(f"{args.n} vs {args.n} samples, torch threads {torch.get_num_threads()}")
        results = {}
        for run in ("first run", "cached rerun"):
            s = asdict(evaluate(cfg, progress=False).seconds)
            results[run] = s
            print(f"{run:13s} featurize {s['featurize']:6.1f}s  metrics {s['metrics']:6.1f}s  total {s['total']:6.1f}s",
                  flush=True)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
