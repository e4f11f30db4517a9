"""Generation speed: the vLLM engine against the lockstep transformers engine, on the same requests.

For each method (plain; hard: 3-shot GSM8K questions in SmolLM2's chat template, the instruction and
template shared by every record; softsrv: an mc soft prompt, fitted here for a few steps unless
--prompt names one), the method plans --n records and both engines decode exactly those requests:
same batch, same sampling (temperature 1), every sample --new tokens long (no stop ids, so both do
identical work). Rounds interleave the engines and take fresh record indices each round, so vLLM's
prefix cache never sees a whole prompt twice; each figure is the median over --repeats rounds.

Also measured, for SoftSRV (issue 23, item 5): what planning a block costs (the contexts and P(z),
computed in this process) next to plain's, what turning the requests into vLLM prompts costs, and
the vLLM engine with prefix caching off for hard and SoftSRV (vLLM 0.32 keeps it on with prompt
embeddings: the config read back from each engine is printed).

Threads: the transformers engine runs on torch's threads in this process (all cores); the vLLM
engine binds its CPU worker's OpenMP threads to the same cores (vllm_engine.py sets
VLLM_CPU_OMP_THREADS_BIND unless the environment does: VLLM_CPU_OMP_THREADS_BIND=auto measures
vLLM's own binding, which keeps one core for its scheduler). Only one engine works at a time, and
only one vLLM engine is alive at a time (an idle one polls, taking CPU from the working one).

Usage: python bench/bench_vllm.py [--model smollm2] [--n 64] [--new 48] [--repeats 3] [--prompt DIR]
       [--methods plain,hard,softsrv] [--device cpu|auto] [--gpu-memory-utilization 0.4] [--json FILE]
On a GPU: python bench/bench_vllm.py --model Qwen/Qwen2.5-1.5B-Instruct --device auto --n 256 --new 256
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from synthsteer.engine import TransformersEngine
from synthsteer.generation import GenerateConfig
from synthsteer.generation.generator import BlockGenerator
from synthsteer.lm import load_lm
from synthsteer.options import SamplingConfig
from synthsteer.randomness import sample_key
from synthsteer.vllm_engine import VLLMEngine, vllm_prompt


def fit_prompt(model: str, lm, out: str) -> str:
    from synthsteer.softsrv.config import FitConfig
    from synthsteer.softsrv.fit import fit_soft_prompt

    config = FitConfig(model=model, data="builtin:gsm8k", limit=64, steps=10, batch_size=8, max_length=64,
                       prompt_length=16, out=out, device=str(lm.device))
    return str(fit_soft_prompt(config, progress=False, lm=lm))


def configs(args, prompt: str | None) -> dict[str, GenerateConfig]:
    common = dict(model=args.model, engine="vllm", n=args.n * (args.repeats + 1), batch_size=args.n,
                  max_new_tokens=args.new, max_model_len=args.max_model_len,
                  gpu_memory_utilization=args.gpu_memory_utilization)
    out = {"plain": GenerateConfig(method="plain", **common),
           "hard": GenerateConfig(method="hard", data="builtin:gsm8k", shots=3, **common)}
    if prompt:
        out["softsrv"] = GenerateConfig(method="softsrv", prompt=prompt, **common)
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=64, help="requests per batch")
    ap.add_argument("--new", type=int, default=48, help="new tokens per sample")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--device", default="cpu", help="where the transformers engine runs (auto: CUDA when there is one)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.4,
                    help="vLLM's share of a GPU (the transformers engine's copy of the LM needs the rest)")
    ap.add_argument("--prompt", help="a soft prompt for --model (default: fit one here, 10 steps)")
    ap.add_argument("--methods", default="plain,hard,softsrv")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    methods = args.methods.split(",")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    lm = load_lm(args.model, device=args.device)
    print(f"model {args.model}, batch {args.n}, {args.new} new tokens, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; median of {args.repeats} interleaved rounds")
    tmp = tempfile.mkdtemp(prefix="bench-vllm-")
    prompt = args.prompt
    if "softsrv" in methods and not prompt:
        (prompt, fit_s) = timed(lambda: fit_prompt(args.model, lm, os.path.join(tmp, "prompt")))
        print(f"fitted a 16-token mc soft prompt in {fit_s:.0f} s")
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.new)
    no_stop: set[int] = set()  # every sample runs --new tokens on both engines
    figures: dict = {"tok_s": {}, "plan_ms_per_request": {}, "prompt_ms_per_request": {}, "start_s": {}}
    rates: dict = {}

    def rounds(m, gen, engines: dict) -> None:
        """Round 0 warms up; rounds 1..repeats are timed, the engines interleaved within each."""
        for rnd in range(args.repeats + 1):
            indices = list(range(rnd * args.n, (rnd + 1) * args.n))
            planned, plan_s = timed(lambda: gen.method.plan(indices, [sample_key(0, i) for i in indices]))
            requests = [p.request for p in planned]
            if rnd:
                figures["plan_ms_per_request"].setdefault(m, []).append(1000 * plan_s / len(requests))
                _, prompt_s = timed(lambda: [vllm_prompt(r.branches["main"], lm.embed) for r in requests])
                figures["prompt_ms_per_request"].setdefault(m, []).append(1000 * prompt_s / len(requests))
            for name, engine in engines.items():
                results, secs = timed(lambda: engine.run(requests, gen.method.step(), sampling, no_stop))
                assert all(len(r.tokens) == args.new for r in results)
                if rnd:
                    rates.setdefault((m, name), []).append(len(requests) * args.new / secs)
            if rnd:
                print(f"{m} round {rnd}: " + ", ".join(f"{n} {rates[(m, n)][-1]:.0f}" for n in engines), flush=True)

    # idle vLLM engines poll and take CPU from the working one, so one vLLM engine lives at a time
    for m, config in configs(args, prompt).items():
        if m not in methods:
            continue
        gen = BlockGenerator(config, lm)
        variants = {"vllm": gen.engine}
        if m != "plain":
            variants["vllm, no prefix caching"] = VLLMEngine(lm, replace(gen.engine.settings, prefix_caching=False))
        for name, engine in variants.items():
            _, start_s = timed(lambda: engine.llm(embeds=m == "softsrv"))
            cache = engine._llm.llm_engine.vllm_config.cache_config
            figures["start_s"][f"{m}, {name}"] = round(start_s, 1)
            print(f"{m}: {name} started in {start_s:.0f} s, prefix caching "
                  f"{'on' if cache.enable_prefix_caching else 'off'}", flush=True)
            # the lockstep engine beside the default vLLM engine; the variant against the same rounds alone
            engines = {"transformers": TransformersEngine.build(gen.method, gen.config), name: engine} \
                if name == "vllm" else {name: engine}
            rounds(m, gen, engines)
            engine.close()
    print()
    for m in [m for m in configs(args, prompt) if m in methods]:
        base = statistics.median(rates[(m, "transformers")])
        for (mm, name), r in rates.items():
            if mm == m:
                med = statistics.median(r)
                figures["tok_s"][f"{m}, {name}"] = round(med, 1)
                print(f"{m:8s} {name:26s} {med:7.1f} tok/s  {med / base:4.2f}x  (rounds: "
                      f"{', '.join(f'{x:.0f}' for x in r)})")
        plan = statistics.median(figures["plan_ms_per_request"][m])
        conv = statistics.median(figures["prompt_ms_per_request"][m])
        figures["plan_ms_per_request"][m], figures["prompt_ms_per_request"][m] = round(plan, 2), round(conv, 3)
        print(f"{m:8s} planning {plan:6.2f} ms/request (contexts, P(z), few-shot draws), vLLM prompts "
              f"{conv:6.3f} ms/request")
    print(f"vLLM OpenMP threads bound to CPUs {os.environ.get('VLLM_CPU_OMP_THREADS_BIND')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
