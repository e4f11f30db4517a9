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

Threads: the transformers engine runs on torch's threads in this process (all cores); vLLM's CPU
worker binds its OpenMP threads to the same cores (VLLM_CPU_OMP_THREADS_BIND=auto). Only one engine
works at a time.

Usage: python bench/bench_vllm.py [--model smollm2] [--n 64] [--new 48] [--repeats 3] [--prompt DIR]
       [--methods plain,hard,softsrv]
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
                       prompt_length=16, out=out, device="cpu")
    return str(fit_soft_prompt(config, progress=False, lm=lm))


def configs(args, prompt: str | None) -> dict[str, GenerateConfig]:
    common = dict(model=args.model, engine="vllm", n=args.n * (args.repeats + 1), batch_size=args.n,
                  max_new_tokens=args.new, max_model_len=args.max_model_len)
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
    ap.add_argument("--prompt", help="a soft prompt for --model (default: fit one here, 10 steps)")
    ap.add_argument("--methods", default="plain,hard,softsrv")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    methods = args.methods.split(",")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    lm = load_lm(args.model, device="cpu")
    print(f"model {args.model}, batch {args.n}, {args.new} new tokens, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; median of {args.repeats} interleaved rounds")
    tmp = tempfile.mkdtemp(prefix="bench-vllm-")
    prompt = args.prompt
    if "softsrv" in methods and not prompt:
        (prompt, fit_s) = timed(lambda: fit_prompt(args.model, lm, os.path.join(tmp, "prompt")))
        print(f"fitted a 16-token mc soft prompt in {fit_s:.0f} s")
    gens = {m: BlockGenerator(c, lm) for m, c in configs(args, prompt).items() if m in methods}
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.new)
    no_stop: set[int] = set()  # every sample runs --new tokens on both engines
    engines = {}
    for m, gen in gens.items():
        engines[(m, "transformers")] = TransformersEngine.build(gen.method, gen.config)
        engines[(m, "vllm")] = gen.engine
        if m in ("hard", "softsrv"):
            engines[(m, "vllm, no prefix caching")] = VLLMEngine(lm, replace(gen.engine.settings, prefix_caching=False))

    figures: dict = {"tok_s": {}, "plan_ms_per_request": {}, "prompt_ms_per_request": {}, "start_s": {}}
    rates: dict = {k: [] for k in engines}
    for rnd in range(args.repeats + 1):  # round 0 starts the vLLM engines and warms up; not counted
        for m, gen in gens.items():
            indices = list(range(rnd * args.n, (rnd + 1) * args.n))
            planned, plan_s = timed(lambda: gen.method.plan(indices, [sample_key(0, i) for i in indices]))
            requests = [p.request for p in planned]
            if rnd:
                figures["plan_ms_per_request"].setdefault(m, []).append(1000 * plan_s / len(requests))
                _, prompt_s = timed(lambda: [vllm_prompt(r.branches["main"], lm.embed) for r in requests])
                figures["prompt_ms_per_request"].setdefault(m, []).append(1000 * prompt_s / len(requests))
            for (mm, name), engine in engines.items():
                if mm != m:
                    continue
                if rnd == 0 and hasattr(engine, "llm"):
                    _, start_s = timed(lambda: engine.llm(embeds=m == "softsrv"))
                    figures["start_s"][f"{m}, {name}"] = round(start_s, 1)
                results, secs = timed(lambda: engine.run(requests, gen.method.step(), sampling, no_stop))
                assert all(len(r.tokens) == args.new for r in results)
                if rnd:
                    rates[(m, name)].append(len(requests) * args.new / secs)
        if rnd:
            print(f"round {rnd}: " + ", ".join(f"{m}/{n} {rates[(m, n)][-1]:.0f}" for m, n in rates))
    print()
    for m in gens:
        base = statistics.median(rates[(m, "transformers")])
        for (mm, name), r in rates.items():
            if mm == m:
                med = statistics.median(r)
                figures["tok_s"][f"{m}, {name}"] = round(med, 1)
                print(f"{m:8s} {name:26s} {med:7.1f} tok/s  {med / base:4.2f}x  (rounds: "
                      f"{', '.join(f'{x:.0f}' for x in r)})")
    print()
    for m in gens:
        plan = statistics.median(figures["plan_ms_per_request"][m])
        conv = statistics.median(figures["prompt_ms_per_request"][m])
        figures["plan_ms_per_request"][m], figures["prompt_ms_per_request"][m] = round(plan, 2), round(conv, 3)
        print(f"{m:8s} planning {plan:6.2f} ms/request (contexts, P(z), few-shot draws), vLLM prompts "
              f"{conv:6.3f} ms/request")
    for (m, name), engine in engines.items():
        if hasattr(engine, "_llm") and engine._llm is not None:
            cache = engine._llm.llm_engine.vllm_config.cache_config
            print(f"{m:8s} {name:26s} prefix caching {'on' if cache.enable_prefix_caching else 'off'}, "
                  f"started in {figures['start_s'].get(f'{m}, {name}', '?')} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
