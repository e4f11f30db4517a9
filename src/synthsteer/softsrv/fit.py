"""`synthsteer fit`: train a soft prompt against a frozen LM.

    min_theta  (1/n) sum_i  -sum_j log p_LM( x_i[j] | P_theta(E(x_i)), x_i[<j] )

The LM sees only the soft prompt followed by the example (teacher forcing); the loss covers the
example's tokens and its EOS, never the prompt. Only theta has gradients and optimizer state.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import __version__
from ..artifacts import atomic_dir, load_optimizer, lr_at, read_json, save_optimizer, write_json
from ..data import DataSpec, load_records
from ..encoders import encode_cached, load_encoder
from ..errors import SynthsteerError
from ..lm import LM, load_lm
from .config import FitConfig, SoftPromptConfig
from .prompt import SoftPrompt


def tokenize_examples(lm: LM, texts: list[str], max_length: int) -> list[list[int]]:
    """Each example's tokens, cut to `max_length - 1`, with EOS appended so the LM learns where an
    example ends. No BOS: the soft prompt takes its place."""
    ids = lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [x[: max_length - 1] + [lm.eos_token_id] for x in ids]


def example_loss(lm: LM, prefix: torch.Tensor | None, examples: list[list[int]]) -> tuple[torch.Tensor, int]:
    """Summed NLL of `examples` after `prefix` ([B, t, d] soft prompts; None = a single EOS token, the
    unprompted baseline), and the number of tokens it covers."""
    dev = lm.device
    batch = len(examples)
    width = max(len(x) for x in examples)
    ids = torch.full((batch, width), lm.tokenizer.pad_token_id, dtype=torch.long, device=dev)
    mask = torch.zeros((batch, width), dtype=torch.long, device=dev)
    for i, x in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x, device=dev)
        mask[i, : len(x)] = 1
    tok_emb = lm.embed(ids)
    if prefix is None:
        prefix = lm.embed(torch.full((batch, 1), lm.eos_token_id, device=dev))
    prefix = prefix.to(tok_emb.dtype)
    t = prefix.shape[1]
    embeds = torch.cat([prefix, tok_emb], dim=1)
    attn = torch.cat([torch.ones((batch, t), dtype=torch.long, device=dev), mask], dim=1)
    logits = lm.model(inputs_embeds=embeds, attention_mask=attn).logits
    # position t-1+j predicts example token j: the first token is predicted from the prompt alone
    pred = logits[:, t - 1: -1].float()
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), ids.reshape(-1), reduction="none")
    return (nll * mask.reshape(-1)).sum(), int(mask.sum())


class _Order:
    """Example order: a fresh seeded permutation per epoch, addressed by global sample position, so
    resuming at any step replays exactly the same batches."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.perms = n, seed, {}

    def batch(self, position: int, size: int) -> list[int]:
        out = []
        for q in range(position, position + size):
            epoch = q // self.n
            if epoch not in self.perms:
                g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
                self.perms[epoch] = torch.randperm(self.n, generator=g).tolist()
            out.append(self.perms[epoch][q % self.n])
        return out


def fit_soft_prompt(config: FitConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
                    lm: LM | None = None) -> Path:
    """Train a soft prompt on `config.data` against the frozen `config.model`; returns the prompt dir.

    Args:
        config: what to train and how (see `FitConfig`).
        resume: continue from `out/train_state` when an earlier run was interrupted.
        overwrite: replace an existing prompt directory instead of refusing.
        progress: show a progress bar with loss and tokens/s.
        lm: an already loaded LM to use instead of loading `config.model`.
    """
    from tqdm.auto import tqdm

    out = Path(config.out)
    state_dir = out / "train_state"
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise SynthsteerError(f"--out {out}: already exists; pass --resume to continue it or --overwrite to replace it")
    if overwrite and not resume:
        shutil.rmtree(out, ignore_errors=True)
    if resume and (out / "prompt.safetensors").exists() and not state_dir.exists():
        return out  # finished earlier: nothing left to do

    spec = DataSpec(config.data, field=config.field, template=config.template, split=config.split, limit=config.limit)
    records = load_records(spec)
    lm = lm or load_lm(config.model, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code)
    encoder = load_encoder(config.encoder, lm=lm, device=lm.device)
    contexts = encode_cached(encoder, [r.text for r in records], progress=progress).to(lm.device)
    examples = tokenize_examples(lm, [r.text for r in records], config.max_length)

    torch.manual_seed(config.seed)
    pconf = SoftPromptConfig(parameterization=config.parameterization, length=config.prompt_length,
                             hidden_size=lm.embed.weight.shape[1], context_dim=contexts.shape[1],
                             num_bases=config.num_bases, mlp_hidden=config.mlp_hidden, mlp_layers=config.mlp_layers)
    prompt = SoftPrompt(pconf)
    prompt.init_from_vocab(lm.embed.weight, seed=config.seed)
    prompt.to(lm.device)
    opt = torch.optim.AdamW(prompt.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start, history = 0, []
    if resume and (state_dir / "state.json").exists():
        from safetensors.torch import load_file

        prompt.load_state_dict(load_file(str(state_dir / "prompt.safetensors"), device=str(lm.device)))
        load_optimizer(opt, state_dir / "optimizer.safetensors")
        state = read_json(state_dir / "state.json")
        start, history = state["step"], state["history"]

    order = _Order(len(records), config.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=lm.device.type == "cuda")
    meta = {
        "lm": lm.fingerprint(), "encoder": config.encoder, "encoder_fingerprint": encoder.fingerprint,
        "data": asdict(spec), "fit": asdict(config), "synthsteer_version": __version__,
    }

    def save_state(step: int) -> None:
        with atomic_dir(state_dir) as tmp:
            prompt.save(tmp, meta)
            save_optimizer(opt, tmp / "optimizer.safetensors")
            write_json(tmp / "state.json", {"step": step, "history": history})

    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=f"fit {config.parameterization}",
               disable=not progress)
    t0, tokens, loss_ema = time.time(), 0, None
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=config.lr, warmup=config.warmup, total=config.steps)
        step_nll, step_tokens = 0.0, 0
        micro = [order.batch((step * config.grad_accum + m) * config.batch_size, config.batch_size)
                 for m in range(config.grad_accum)]
        n_tokens = sum(len(examples[i]) for idx in micro for i in idx)
        for idx in micro:
            with autocast:
                nll, n = example_loss(lm, prompt(contexts[idx]), [examples[i] for i in idx])
            (nll / n_tokens).backward()  # mean over every token of the step, across micro-batches
            step_nll += nll.item()
            step_tokens += n
        loss = step_nll / n_tokens
        if not torch.isfinite(torch.tensor(loss)):
            raise SynthsteerError(f"fit: the loss became {loss} at step {step}; lower --lr "
                                  f"(now {config.lr}) or --max-grad-norm (now {config.max_grad_norm})")
        torch.nn.utils.clip_grad_norm_(prompt.parameters(), config.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += step_tokens + len(micro) * config.batch_size * config.prompt_length
        loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
        history.append(round(loss, 5))
        bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
        if (step + 1) % config.save_every == 0 and step + 1 < config.steps:
            save_state(step + 1)

    meta.update(final_loss=history[-1] if history else None, loss_history=history, steps=config.steps,
                train_tokens_per_s=tokens / max(time.time() - t0, 1e-9))
    prompt.save(out, meta)
    shutil.rmtree(state_dir, ignore_errors=True)
    return out
