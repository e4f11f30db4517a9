"""Held-out perplexity of the offline LMs on each bundled task.

The documents are those `tiny`'s pretraining held out (tools/pretrain_tiny.py DOMAINS: each task's held-out split
as a pretraining-style document), the first --limit of each, cut to --seq-len tokens, each preceded
and followed by EOS. Per-token perplexity depends on the tokenizer (tiny: 8,192 tokens, SmolLM2:
49,152), so bits per UTF-8 byte are printed too: that one compares across LMs.
Usage: python bench/bench_perplexity.py [--models tiny,smollm2] [--limit 200]
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from synthsteer.data import load_records
from synthsteer.lm import load_lm
sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
from pretrain_tiny import DOMAINS  # noqa: E402


@torch.no_grad()
def score(lm, docs: list[str], seq_len: int, batch_size: int = 8) -> dict:
    tok, eos = lm.tokenizer, lm.eos_token_id
    nll = tokens = 0.0
    n_bytes = 0
    for b in range(0, len(docs), batch_size):
        batch = docs[b: b + batch_size]
        rows = [[eos] + tok.encode(d, add_special_tokens=False)[: seq_len - 1] + [eos] for d in batch]
        n_bytes += sum(len(tok.decode(r[1:-1]).encode("utf-8")) + 1 for r in rows)  # the bytes scored, EOS as 1
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), eos, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        logits = lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target, keep = ids[:, 1:], mask[:, 1:].bool()
        loss = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
        nll += loss.item()
        tokens += int(keep.sum())
    return {"perplexity": round(math.exp(nll / tokens), 1), "bits_per_byte": round(nll / math.log(2) / n_bytes, 3),
            "tokens": int(tokens)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()
    results = {}
    for name in args.models.split(","):
        lm = load_lm(name, device="cpu")
        results[name] = {}
        for domain, (template, _, heldout) in DOMAINS.items():
            docs = [r.text for r in load_records(f"builtin:{domain}/{heldout}", template=template, limit=args.limit)]
            results[name][f"{domain} ({heldout})"] = r = score(lm, docs, args.seq_len)
            print(f"{name:8s} {domain:14s} {heldout:8s} perplexity {r['perplexity']:8.1f}  "
                  f"bits/byte {r['bits_per_byte']:.3f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
