"""What `--negative-share block` costs in quality against the paper's per-sample draw, on SmolLM2.

One LoRA expert on GSM8K training questions; then the same STEER run (gamma 0.2, eta 0.6, K 10,
top-k 10, the same seed, so the same sampling noise per record) with each sharing mode, and
`synthsteer eval` of both against held-out GSM8K test questions (MAUVE over 3 k-means seeds,
distinct-n, self-BLEU, ...), with the expert alone (`--method hard`) as the reference point.
Resumable: every step writes into --out and a rerun skips what is finished.
Usage: python bench/steer_share_quality.py [--model smollm2] [--n 128] [--expert-steps 60] [--out runs/share]
"""

import argparse
import json
import time
from pathlib import Path

from synthsteer import EvalConfig, GenerateConfig, evaluate, generate
from synthsteer.steer import ExpertConfig, train_expert


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--expert-steps", type=int, default=60)
    ap.add_argument("--out", default="runs/share")
    args = ap.parse_args()
    out = Path(args.out)
    data = dict(data="builtin:gsm8k/train", field="question")
    t0 = time.time()
    expert = out / "expert"
    if not (expert / "synthsteer_expert.json").exists():
        train_expert(ExpertConfig(**data, model=args.model, out=str(expert), steps=args.expert_steps, batch_size=8,
                                  max_length=64, limit=2000, lr=1e-3, warmup=6), resume=True, progress=False)
    print(f"expert: {time.time() - t0:.0f} s", flush=True)
    common = dict(**data, model=args.model, expert=str(expert), n=args.n, batch_size=args.batch_size,
                  max_new_tokens=args.new, top_k=10, seed=0)
    sets, times = {}, {}
    for name, extra in (("expert alone", {"method": "hard"}), ("steer sample", {"method": "steer"}),
                        ("steer block", {"method": "steer", "negative_share": "block"})):
        t = time.time()
        path = generate(GenerateConfig(**common, **extra, out=str(out / name.replace(" ", "-"))), progress=False)
        times[name] = round(time.time() - t, 1)
        sets[name] = path
        print(f"{name}: {times[name]} s", flush=True)
    report = evaluate(EvalConfig(real="builtin:gsm8k/test", field="question", synthetic=tuple(
        f"{k}={v}" for k, v in sets.items()), out=str(out / "eval"), max_samples=400, device="cpu"), progress=False)
    rows = {}
    for name, metrics in report.metrics.items():
        m = metrics.values
        rows[name] = {"mauve": round(m["mauve"]["mean"], 3), "mauve_std": round(m["mauve"]["std"], 3),
                      **{k: round(m[k], 3) for k in ("distinct_2", "self_bleu", "mean_words") if k in m},
                      "generate_s": times.get(name)}
    print(json.dumps(rows, indent=2))
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
