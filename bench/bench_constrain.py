"""Constrained decoding of records: the share of samples that parse, without and with --constrain,
and what the grammar costs in tokens/s (same LM, same settings, same seeds; one thread).

    gsm8k  "Question: {question}\\nAnswer: {answer}"                  few-shot hard prompt (2 shots)
    boolq  "Passage: {passage}\\nQuestion: {question}\\nAnswer: {label}"  --given passage: a question and
           its yes/no answer about a real passage (the answer's closed set inferred from the data)
    mbpp   "Task: {task}\\nCode:\\n{code}" (--rename text=task)          few-shot hard prompt (2 shots)

Also the two grammar libraries side by side on the lockstep decoder's own loop (mask fill for 32
rows per step over the LM's vocabulary): xgrammar, which synthsteer uses, and outlines-core.

Usage: python bench/bench_constrain.py [--model smollm2] [--n 48] [--threads 1] [--out runs/constrain]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

TASKS = {
    "gsm8k": dict(method="hard", data="builtin:gsm8k/train", template="Question: {question}\nAnswer: {answer}", shots=2,
                  max_new_tokens=160),
    "mbpp": dict(method="hard", data="builtin:mbpp/train", template="Task: {task}\nCode:\n{code}", rename=("text=task",),
                 shots=2, max_new_tokens=160),
    "boolq": dict(method="hard", data="builtin:boolq/train",
                  template="Passage: {passage}\nQuestion: {question}\nAnswer: {label}", given=("passage",),
                  max_new_tokens=48),
}


def libraries(lm, rows: int = 32, steps: int = 48) -> dict:
    """Mask fill per step for `rows` samples walking the GSM8K regex, both libraries."""
    from synthsteer.records import RecordFormat

    regex = RecordFormat.template(TASKS["gsm8k"]["template"]).tail_regex()
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    out = {}
    import xgrammar as xgr

    t = time.time()
    info = xgr.TokenizerInfo.from_huggingface(lm.tokenizer, vocab_size=vocab)
    grammar = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False).compile_regex(regex)
    compile_s = time.time() - t
    matchers = [xgr.GrammarMatcher(grammar) for _ in range(rows)]
    bitmask = xgr.allocate_token_bitmask(rows, vocab)
    gen = torch.Generator().manual_seed(0)
    fill = apply = 0.0
    for _ in range(steps):
        t = time.time()
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(bitmask, i)
        fill += time.time() - t
        scores = torch.randn(rows, vocab, generator=gen)
        t = time.time()
        xgr.apply_token_bitmask_inplace(scores, bitmask)
        apply += time.time() - t
        for m, token in zip(matchers, scores.argmax(-1).tolist()):
            if not m.is_terminated():
                m.accept_token(token)
    out["xgrammar"] = {"compile_s": round(compile_s, 3), "fill_ms_per_step": round(1000 * fill / steps, 2),
                       "apply_ms_per_step": round(1000 * apply / steps, 2)}
    try:
        import outlines_core as oc
    except ImportError:
        return out
    tok = lm.tokenizer
    t = time.time()
    words: dict[str, list[int]] = {}
    for i in range(len(tok)):
        if i != tok.eos_token_id:
            words.setdefault(tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]), []).append(i)
    index = oc.Index(regex, oc.Vocabulary(tok.eos_token_id, words))
    compile_s = time.time() - t
    guides = [oc.Guide(index) for _ in range(rows)]
    mask = torch.zeros(rows, (vocab + 31) // 32, dtype=torch.int32)
    fill = 0.0
    for _ in range(steps):
        t = time.time()
        for i, g in enumerate(guides):
            g.write_mask_into(mask[i].data_ptr(), mask[i].numel(), 4)
        fill += time.time() - t
        for g in guides:
            if not g.is_finished():
                g.advance(g.get_tokens()[0])
    out["outlines-core"] = {"compile_s": round(compile_s, 3), "fill_ms_per_step": round(1000 * fill / steps, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", default="runs/constrain")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from synthsteer import GenerateConfig, generate, load_lm, read_run
    from synthsteer.runs import read_records

    lm = load_lm(args.model, device="cpu")
    result = {"model": args.model, "n": args.n, "threads": args.threads, "libraries": libraries(lm), "tasks": {}}
    print(json.dumps(result["libraries"]), flush=True)
    for task in args.tasks.split(","):
        result["tasks"][task] = {}
        for mode in ("off", "on"):
            out = Path(args.out) / f"{task}-{mode}"
            shutil.rmtree(out, ignore_errors=True)  # timed from scratch, never a resume
            t = time.time()
            generate(GenerateConfig(**TASKS[task], model=args.model, n=args.n, batch_size=16, seed=0, constrain=mode,
                                    out=str(out), quiet=True), progress=False, lm=lm)
            seconds = time.time() - t
            records, rejects = read_run(out), read_records(out, "rejects")
            tokens = sum(r["num_tokens"] for r in records + rejects)
            reasons: dict[str, int] = {}
            for r in rejects:
                reasons[r["reject"]] = reasons.get(r["reject"], 0) + 1
            row = {"parsable": round(len(records) / args.n, 3), "kept": len(records), "rejects": reasons,
                   "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 1),
                   "example": records[0]["text"][:300] if records else None}
            result["tasks"][task][mode] = row
            print(task, mode, json.dumps({k: v for k, v in row.items() if k != "example"}), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "constrain.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
