"""STEER decoding speed against plain sampling and against this CPU's compute bound.

For each LM (`--models`, default tiny and smollm2), a LoRA expert is trained here for
--expert-steps steps on GSM8K questions; then three cases decode the same --n samples of --new
tokens (EOS disabled, so every case does the same number of steps), interleaved round after round,
median of --repeats rounds:

    plain           the expert on the zero-shot instruction (one branch: `--method hard`)
    steer sample    STEER, each sample its own K negatives (the paper's draw)
    steer block     STEER, the block's samples sharing one draw (`--negative-share block`)

The compute bound of a case is what it would run at if every token it must process (the prefill
tokens of each distinct prefix, plus one token per row per step) went through the LM at the rate
of this machine's best forward: a big prefill batch without a cache (--peak-batch x --peak-len
tokens). On a CPU a decode step (a few hundred rows) runs its matmuls well below that rate, so this
bound is optimistic for decoding; the second, practical bound prices the prefill tokens at the
peak rate and each row-step of decoding at what one row-step costs in the plain case.
Usage: python bench/bench_steer.py [--models tiny,smollm2] [--n 64] [--new 48] [--k 10] [--repeats 3]
"""

import argparse
import json
import statistics
import tempfile
import time

import torch

from synthsteer.decoder import SamplingConfig, prefix_key, prefix_length, sample_key
from synthsteer.engine import TransformersEngine
from synthsteer.generation import GenerateConfig
from synthsteer.lm import load_lm
from synthsteer.generation import build_method
from synthsteer.steer import ExpertConfig, train_expert


def peak_rate(model, vocab: int, batch: int, length: int) -> float:
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)  # warm-up
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return batch * length / (time.perf_counter() - t0)


def counted_tokens(requests, step, new: int) -> tuple[int, int]:
    """Prefill tokens of the distinct prefixes (per model), and row-steps (one token per row per step)."""
    distinct = {}
    for r in requests:
        for name in step.branches:
            p = r.branches[name]
            distinct[(p.model, prefix_key(p, p.adapter))] = prefix_length(p)
    return sum(distinct.values()), len(requests) * len(step.branches) * new


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--expert-steps", type=int, default=30)
    ap.add_argument("--peak-batch", type=int, default=16)
    ap.add_argument("--peak-len", type=int, default=256)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    sampling = SamplingConfig(temperature=1.0, top_k=10, max_new_tokens=args.new)  # the paper's decoding
    no_eos = {-1}
    keys = [sample_key(0, i) for i in range(args.n)]
    report = {}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            lm = load_lm(name, device="cpu")
            expert = train_expert(ExpertConfig(data="builtin:gsm8k", field="question", out=f"{tmp}/expert",
                                               model=name, steps=args.expert_steps, batch_size=8, max_length=64,
                                               device="cpu"), lm=lm, progress=False)
            common = dict(expert=str(expert), data="builtin:gsm8k", field="question", n=args.n, batch_size=args.n,
                          max_new_tokens=args.new, negatives=args.k, top_k=10, device="cpu", out=f"{tmp}/unused")
            cases = {}
            for case, config in (("plain", GenerateConfig(method="hard", **common)),
                                 ("steer sample", GenerateConfig(method="steer", **common)),
                                 ("steer block", GenerateConfig(method="steer", negative_share="block", **common))):
                method = build_method(config, load_lm(name, device="cpu"))  # each its own base to wrap
                requests = [p.request for p in method.plan(list(range(args.n)), keys)]
                cases[case] = (TransformersEngine(method.models), requests, method.step(),
                               counted_tokens(requests, method.step(), args.new))
            negative = sum(len(r.branches["negative"].ids) for r in cases["steer sample"][1]) / args.n
            peak = peak_rate(lm.model, lm.embed.weight.shape[0], args.peak_batch, args.peak_len)
            print(f"{name} on cpu, {torch.get_num_threads()} threads: {args.n} samples x {args.new} tokens, K={args.k} "
                  f"(negative prompt {negative:.0f} tokens on average); peak forward {peak:,.0f} tok/s", flush=True)
            times = {case: [] for case in cases}
            for _ in range(args.repeats + 1):  # the first round warms up
                for case, (engine, requests, step, _) in cases.items():
                    t0 = time.perf_counter()
                    engine.run(requests, step, sampling, no_eos)
                    times[case].append(time.perf_counter() - t0)
            rows = {}
            generated = args.n * args.new
            t_plain = statistics.median(times["plain"][1:])
            prefill_plain, steps_plain = cases["plain"][3]
            row_step = max(t_plain - prefill_plain / peak, 1e-9) / steps_plain  # seconds per decoded row-step
            for case, (_, _, _, (prefill, row_steps)) in cases.items():
                tps = generated / statistics.median(times[case][1:])
                bound = generated / ((prefill + row_steps) / peak)
                practical = generated / (prefill / peak + row_steps * row_step)
                rows[case] = {"tokens_per_s": round(tps), "prefill_tokens": prefill, "row_steps": row_steps,
                              "bound_tokens_per_s": round(bound), "of_bound": round(tps / bound, 3),
                              "practical_bound_tokens_per_s": round(practical), "of_practical": round(tps / practical, 3),
                              "vs_plain": round(tps * t_plain / generated, 3)}
                print(f"  {case:13s} {tps:8,.0f} tok/s  prefill {prefill:7,} + {row_steps:6,} row-steps  "
                      f"bound {bound:7,.0f} ({tps / bound:4.0%})  practical {practical:7,.0f} ({tps / practical:4.0%})  "
                      f"{tps * t_plain / generated:5.2f}x plain", flush=True)
            report[name] = {"negative_prompt_tokens": round(negative), "peak_forward_tokens_per_s": round(peak),
                            "cases": rows}
    print(json.dumps(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": report}, f, indent=2)


if __name__ == "__main__":
    main()
