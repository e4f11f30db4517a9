"""STEER decoding speed on `tiny`: synthsteer's batched lockstep decoder against (a) plain sampling
of the same samples from the expert and (b) the reference algorithm (bench/steer_reference.py: one
sample at a time, expert and base recomputed over the whole sequence at every step, no KV cache).

K = 10 uniform negatives from GSM8K training questions, 64 samples, 48 new tokens each (EOS
disabled so every method does the same work), LoRA expert trained here for --expert-steps steps.
The reference is timed on --naive-samples samples; tokens/s is a rate, so it compares directly.
Usage: python bench/bench_steer.py [--n 64] [--new 48] [--naive-samples 4]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from steer_reference import steer_one  # noqa: E402

from synthsteer.decoder import SamplingConfig, sample_key  # noqa: E402
from synthsteer.engine import TransformersEngine  # noqa: E402
from synthsteer.generation import GenerateConfig  # noqa: E402
from synthsteer.methods import build_method  # noqa: E402
from synthsteer.lm import load_lm  # noqa: E402
from synthsteer.steer import ExpertConfig, train_expert  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--naive-samples", type=int, default=4)
    ap.add_argument("--expert-steps", type=int, default=30)
    args = ap.parse_args()
    sampling = SamplingConfig(temperature=1.0, top_k=10, max_new_tokens=args.new)  # the paper's decoding
    no_eos = {-1}
    keys = [sample_key(0, i) for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        lm = load_lm("tiny", device="cpu")
        expert_dir = train_expert(ExpertConfig(data="builtin:gsm8k", field="question", out=f"{tmp}/expert",
                                               steps=args.expert_steps, device="cpu"), lm=lm, progress=False)
        lm = load_lm("tiny", device="cpu")  # a fresh base for the expert to wrap
        common = dict(expert=str(expert_dir), data="builtin:gsm8k", field="question", n=args.n,
                      max_new_tokens=args.new, negatives=args.k, top_k=10, device="cpu", out=f"{tmp}/unused")
        steer = build_method(GenerateConfig(method="steer", **common), lm)
        hard = build_method(GenerateConfig(method="hard", **common), lm)
        steer_requests, _ = steer.requests(list(range(args.n)), keys)
        hard_requests, _ = hard.requests(list(range(args.n)), keys)
        neg_len = sum(len(r.branches["negative"].ids) for r in steer_requests) / args.n
        print(f"tiny on cpu, torch threads {torch.get_num_threads()}: {args.n} samples x {args.new} tokens, K={args.k} "
              f"(negative prompt {neg_len:.0f} tokens on average), prompt {len(hard_requests[0].branches['main'].ids)} "
              "tokens")

        def timed(fn):
            fn()  # warm-up
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        results = {}
        t = timed(lambda: TransformersEngine(hard.models).run(hard_requests, hard.step(), sampling, no_eos))
        results["plain sampling (expert, batched)"] = args.n * args.new / t
        t = timed(lambda: TransformersEngine(steer.models).run(steer_requests, steer.step(), sampling, no_eos))
        results["STEER, synthsteer (batched, cached)"] = args.n * args.new / t
        m = args.naive_samples
        t = timed(lambda: [steer_one(steer.models[0], None, r.branches["expert"].ids, r.branches["negative"].ids, 0.2,
                                     0.6, r.key, sampling, no_eos, peft=True) for r in steer_requests[:m]])
        results["STEER, reference (one at a time, no cache)"] = m * args.new / t
        for name, tps in results.items():
            print(f"{name:44s} {tps:9,.0f} tokens/s", flush=True)
        ours = results["STEER, synthsteer (batched, cached)"]
        print(f"STEER vs reference: {ours / results['STEER, reference (one at a time, no cache)']:.1f}x; "
              f"vs plain sampling: {ours / results['plain sampling (expert, batched)']:.2f}x")
        print(json.dumps({k: round(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
