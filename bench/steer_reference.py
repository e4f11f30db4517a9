"""The reference STEER algorithm as the authors' code runs it, kept for comparison: one sample at a
time, and at every step the expert and the base re-run over the whole sequence without a KV cache
(three full forwards per token). Used by bench/bench_steer.py and by the tests as ground truth."""

import torch

from synthsteer.decoder import SamplingConfig, sample_tokens


@torch.no_grad()
def last_logprobs(model, ids: list[int], adapter: str | None = None, peft: bool = False) -> torch.Tensor:
    kw = {"adapter_names": [adapter or "__base__"]} if peft else {}
    logits = model(input_ids=torch.tensor([ids]), **kw).logits[0, -1].float()
    return torch.log_softmax(logits, -1)


@torch.no_grad()
def steer_one(expert, base, prompt: list[int], negative: list[int], gamma: float, eta: float, key: int,
              sampling: SamplingConfig, eos: set[int], peft: bool = False) -> tuple[list[int], list[torch.Tensor]]:
    """One sample: its tokens and the renormalised STEER scores of every step. With `peft`, `expert`
    is a peft model and `base` is ignored (the base is the same model with adapters off)."""
    out, scores = [], []
    for step in range(sampling.max_new_tokens):
        e = last_logprobs(expert, prompt + out, "default", peft)
        b = last_logprobs(expert if peft else base, prompt + out, None, peft)
        n = last_logprobs(expert, negative + out, "default", peft)
        s = torch.log_softmax((1 + gamma) * e - gamma * b - eta * n, -1)
        scores.append(s)
        tok = int(sample_tokens(s[None], torch.tensor([key]), step, sampling)[0])
        if tok in eos:
            break
        out.append(tok)
    return out, scores
