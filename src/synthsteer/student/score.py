"""Scoring a student on real held-out records: what it is scored by (decided once per command), and
the per-record outputs the metric table (`metrics.STUDENT_METRICS`) reduces.

    loss        every held-out target's NLL, batched forward passes (`training.pair_nll`)
    accuracy    each closed-set value's NLL as the target, the same batches (the gold pair is shared)
    exact match the greedy answer, decoded through the engine in batches; GSM8K's final number
    pass@1      the greedy program run against the record's `test_list` (sandbox.py; --execute-code)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import SynthsteerError
from ..logs import Progress, log
from ..metrics import StudentOutputs, gsm8k_answer
from .config import StudentConfig
from .data import Example, StudentTask


@dataclass(frozen=True)
class Scoring:
    """What every student of a command is scored by: the metrics, and the closed set of the target's
    values (accuracy), decided once from the flags and the held-out records."""

    metrics: tuple[str, ...]
    choices: tuple[str, ...] | None = None

    def describe(self) -> dict:
        return {"metrics": list(self.metrics), "choices": list(self.choices) if self.choices else None}


def plan_scoring(config: StudentConfig, task: StudentTask, held_out: list[Example]) -> Scoring:
    """The metrics (--metrics, or auto: loss always; accuracy for a single closed-set target; exact
    match for GSM8K-style "#### N" answers; pass@1 for records with a `test_list`, with
    --execute-code) and the closed set (--field-values, else inferred from the held-out targets the
    way `generate` infers it from its training data: `generation.fields.closed_values`)."""
    from ..data import Record
    from ..generation.fields import closed_values

    closed = closed_values(task.format, task.inputs, config.field_values, [Record(e.id, "", e.fields) for e in held_out])
    choices = closed.get(task.target[0]) if len(task.target) == 1 else None
    last = task.target[-1]
    gsm8k = sum(gsm8k_answer(e.fields[last]) is not None for e in held_out) >= 0.9 * len(held_out)
    tested = all(isinstance(e.row.get("test_list"), list) for e in held_out)
    asked = tuple(m for m in config.metrics if m != "auto")
    if not asked:
        auto = ["loss"] + (["accuracy"] if choices else []) + (["exact_match"] if gsm8k and not choices else [])
        if tested and config.execute_code:
            auto.append("pass_at_1")
        elif tested:
            log.info("student: the held-out records have tests; pass --execute-code to score pass@1 (it runs the "
                     "students' code)")
        return Scoring(tuple(auto), choices)
    if "accuracy" in asked and not choices:
        raise SynthsteerError(f"--metrics accuracy: the target {','.join(task.target)} has no closed set of values; "
                              "give one with --field-values FIELD=A,B")
    if "exact_match" in asked and not gsm8k:
        raise SynthsteerError(f"--metrics exact_match: the held-out {last} values do not end in '#### N' answers "
                              "(GSM8K's form)")
    if "pass_at_1" in asked and not tested:
        raise SynthsteerError("--metrics pass_at_1: the held-out records have no test_list (MBPP's tests)")
    if "pass_at_1" in asked and not config.execute_code:
        raise SynthsteerError("--metrics pass_at_1 runs the students' code: pass --execute-code to allow it")
    return Scoring(tuple(dict.fromkeys(("loss", *asked))), choices if "accuracy" in asked else None)


def _nll_of(lm, pairs: list[tuple[list[int], list[int]]], batch_size: int, autocast, bar: Progress) -> list[float]:
    """Summed target NLL of each pair, in batches of similar length (less padding), in pair order."""
    from ..training import pair_nll

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    out = [0.0] * len(pairs)
    with torch.no_grad(), autocast:
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            for i, v in zip(idx, pair_nll(lm, [pairs[i] for i in idx]).tolist()):
                out[i] = v
            bar.update(len(idx))
    return out


def _greedy(lm, inputs: list[list[int]], config: StudentConfig) -> list[str]:
    """Each input's greedy continuation through the engine, in batches of similar length."""
    from ..decoder import Prefix
    from ..engine import Request, Step, TransformersEngine
    from ..options import SamplingConfig
    from ..prompts import stop_token_ids

    engine = TransformersEngine([lm.model])
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=config.max_new_tokens)
    stops = stop_token_ids(lm.tokenizer, lm.model)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    texts = [""] * len(inputs)
    bar = Progress(len(inputs), "student: greedy answers", "record")
    for start in range(0, len(order), config.eval_batch_size):
        idx = order[start: start + config.eval_batch_size]
        results = engine.run([Request({"main": Prefix(ids=inputs[i])}, i) for i in idx], Step(), sampling, stops)
        for i, r in zip(idx, results):
            texts[i] = lm.tokenizer.decode(r.tokens, skip_special_tokens=True)
        bar.update(len(idx))
    bar.close()
    return texts


def score_student(lm, task: StudentTask, held_out: list[Example], scoring: Scoring, config: StudentConfig,
                  desc: str) -> tuple[StudentOutputs, float]:
    """What `lm` does on the held-out records (per record), and the seconds it took."""
    from ..training import autocast_dtype
    from .train import tokenize_pair

    t0 = time.time()
    amp = autocast_dtype(config.precision, lm.device)
    autocast = torch.autocast(lm.device.type, dtype=amp or torch.float32, enabled=amp is not None)
    gold = [tokenize_pair(lm, task, e.fields, config.max_length) for e in held_out]
    pairs, slots = list(gold), {}
    for i, p in enumerate(gold):
        slots[(tuple(p[0]), tuple(p[1]))] = i
    choice_slots = None
    if scoring.choices:
        name = task.target[0]
        choice_slots = []
        for e in held_out:
            row = []
            for v in scoring.choices:
                p = tokenize_pair(lm, task, {**e.fields, name: v}, config.max_length)
                key = (tuple(p[0]), tuple(p[1]))
                if key not in slots:  # a gold pair is scored once, for the loss and for its choice
                    slots[key] = len(pairs)
                    pairs.append(p)
                row.append(slots[key])
            choice_slots.append(row)
    bar = Progress(len(pairs), f"{desc}: log-likelihoods", "pair")
    nll = _nll_of(lm, pairs, config.eval_batch_size, autocast, bar)
    bar.close()
    outputs = dict(target_nll=nll[: len(gold)], target_tokens=[len(y) for _, y in gold])
    if choice_slots is not None:
        name = task.target[0]
        outputs.update(choice_nll=[[nll[k] for k in row] for row in choice_slots],
                       gold_choice=[scoring.choices.index(e.fields[name]) if e.fields[name] in scoring.choices
                                    else None for e in held_out])
    if "exact_match" in scoring.metrics or "pass_at_1" in scoring.metrics:
        written = _greedy(lm, [x for x, _ in gold], config)
        fields = [_written_fields(task, e, w) for e, w in zip(held_out, written)]
        last = task.target[-1]
        if "exact_match" in scoring.metrics:
            outputs.update(answers=[gsm8k_answer(f[last]) for f in fields],
                           gold_answers=[gsm8k_answer(e.fields[last]) for e in held_out])
        if "pass_at_1" in scoring.metrics:
            from ..sandbox import Limits, run_many

            programs = [(f[last], list(e.row["test_list"]), str(e.row.get("test_setup_code") or "")) for f, e in
                        zip(fields, held_out)]
            outcomes = run_many(programs, Limits(timeout_s=config.code_timeout))
            outputs.update(passed=[o.passed for o in outcomes])
    return StudentOutputs(**outputs), time.time() - t0


def _written_fields(task: StudentTask, example: Example, written: str) -> dict[str, str]:
    """The target fields of what a student wrote: the record it completes, parsed; when it does not
    parse, the whole continuation stands for the last field (an answer is still searched for in it)."""
    head, _ = task.split(example.fields)
    parsed = task.format.parse(head + written)
    if isinstance(parsed, dict):
        return parsed
    return {**{f: "" for f in task.target}, task.target[-1]: written}
