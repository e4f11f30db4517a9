"""Generation speed: synthsteer's lockstep decoder against Hugging Face `generate`.

Same model (`--model`, default `tiny`; `smollm2` for a real 135M LM), same batch of samples, same prompt length (a soft prompt of t embeddings for
synthsteer, a hard prompt of t token ids for HF), the same number of new tokens for every sample
(EOS disabled so both do identical work), multinomial sampling at temperature 1.
The cases run interleaved, round after round (the machine's speed drifts), and each reports the
median of --repeats rounds. Prints samples/s and new tokens/s.
Usage: python bench/bench_generate.py [--model tiny|smollm2] [--dtype auto|bfloat16] [--n 64] [--new 48] [--t 16]
"""

import argparse
import json
import statistics
import time

import torch

from synthsteer import Prefix, SamplingConfig, decode, load_lm
from synthsteer.decoder import sample_key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--t", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    lm = load_lm(args.model, device=args.device, dtype=args.dtype)
    model, dev = lm.model, lm.device
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, lm.embed.weight.shape[0], (args.n, args.t), generator=g).to(dev)
    soft = lm.embed(ids).detach()  # soft prompts of the same length and scale
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.new)
    keys = [sample_key(0, i) for i in range(args.n)]
    no_eos = {-1}

    results = {}

    def ours_soft():
        out = decode(model, [[Prefix(embeds=e)] for e in soft], keys, sampling, no_eos)
        assert all(len(o) == args.new for o in out)

    def ours_hard():
        decode(model, [[Prefix(ids=r.tolist())] for r in ids], keys, sampling, no_eos)

    def hf(**inputs):
        def run():
            out = model.generate(**inputs, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=args.new, min_new_tokens=args.new,
                                 pad_token_id=lm.tokenizer.pad_token_id)
            assert out.shape[1] >= args.new
        return run

    mask = torch.ones_like(ids)
    cases = {
        "synthsteer decode, soft prompt": ours_soft,
        "synthsteer decode, hard prompt": ours_hard,
        "HF generate, hard prompt": hf(input_ids=ids, attention_mask=mask),
        "HF generate, inputs_embeds": hf(inputs_embeds=soft, attention_mask=mask),
    }
    print(f"model {args.model} ({lm.model.dtype}) on {dev}, torch threads {torch.get_num_threads()}: {args.n} samples x "
          f"{args.new} new tokens after a {args.t}-token prompt, median of {args.repeats} interleaved rounds")
    times = {name: [] for name in cases}
    with torch.no_grad():
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        s = statistics.median(ts)
        results[name] = {"seconds": round(s, 3), "samples_per_s": round(args.n / s, 1),
                         "tokens_per_s": round(args.n * args.new / s)}
        print(f"{name:34s} {s:7.3f}s  {args.n / s:8.1f} samples/s  {args.n * args.new / s:9,.0f} tokens/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
