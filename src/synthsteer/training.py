"""The training loop shared by `fit` (soft prompts) and `expert` (LoRA adapters).

AdamW on the trainable parameters only, linear warmup + cosine decay, gradient accumulation with
the loss averaged over every token of a step, gradient clipping, bf16 autocast on CUDA, a NaN/inf
guard, atomic checkpoints and exact resume: the example order is a seeded permutation per epoch
addressed by global sample position and the learning rate a pure function of the step, so a
resumed run replays exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .artifacts import atomic_dir, load_optimizer, lr_at, read_json, save_optimizer, write_json
from .errors import SynthsteerError, require_at_least_one


@dataclass(frozen=True)
class TrainConfig:
    """What every training command shares: the data, the frozen LM, and the loop's settings.
    `FitConfig` and `ExpertConfig` extend it (and override defaults)."""

    data: str = "builtin:gsm8k"
    out: str = "runs/out"
    field: str | None = None
    template: str | None = None
    split: str | None = None
    limit: int | None = None
    model: str = "tiny"
    max_length: int = 128
    steps: int = 300
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_every: int = 100
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self):
        import math

        require_at_least_one(self, ("max_length", "steps", "batch_size", "grad_accum", "save_every"))
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SynthsteerError(f"--lr must be a positive number, got {self.lr}")

    def loop_settings(self) -> "LoopSettings":
        return LoopSettings(self.steps, self.batch_size, self.grad_accum, self.lr, self.warmup, self.weight_decay,
                            self.max_grad_norm, self.save_every, self.seed)

    def data_spec(self):
        from .data import DataSpec

        return DataSpec(self.data, field=self.field, template=self.template, split=self.split, limit=self.limit)


@dataclass(frozen=True)
class LoopSettings:
    steps: int
    batch_size: int
    grad_accum: int
    lr: float
    warmup: int
    weight_decay: float
    max_grad_norm: float
    save_every: int
    seed: int


class ExampleOrder:
    """A fresh seeded permutation of the examples per epoch, addressed by global sample position."""

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


def prepare_out(out: Path, *, resume: bool, overwrite: bool, finished_marker: str) -> bool:
    """Check the output directory before training; True when a resumed run had already finished."""
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise SynthsteerError(f"--out {out}: already exists; pass --resume to continue it or --overwrite to replace it")
    if overwrite and not resume:
        shutil.rmtree(out, ignore_errors=True)
    return resume and (out / finished_marker).exists() and not (out / "train_state").exists()


def train_loop(*, params: list[torch.nn.Parameter], batch_loss: Callable[[list[int]], tuple[torch.Tensor, int]],
               lengths: list[int], settings: LoopSettings, state_dir: Path, save_weights: Callable[[Path], None],
               load_weights: Callable[[Path], None], resume: bool, device: torch.device, desc: str,
               progress: bool = True, prefix_tokens: int = 0) -> dict:
    """Optimize `params` to minimise `batch_loss`; returns the loss history and throughput.

    Args:
        params: the trainable parameters (the only ones with optimizer state).
        batch_loss: example indices -> (summed NLL, number of target tokens).
        lengths: target tokens per example (to average the loss over a whole step).
        settings: steps, batch size, accumulation, learning rate schedule, clipping, checkpoints.
        state_dir: where checkpoints go (removed once training finishes).
        save_weights, load_weights: write / read the trainable weights in a checkpoint directory.
        resume: continue from `state_dir` when it holds a checkpoint.
        prefix_tokens: extra tokens each example costs (a soft prompt), for tokens/s.
    """
    from tqdm.auto import tqdm

    s = settings
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    start, history = 0, []
    if resume and (state_dir / "state.json").exists():
        load_weights(state_dir)
        load_optimizer(opt, state_dir / "optimizer.safetensors")
        state = read_json(state_dir / "state.json")
        start, history = state["step"], state["history"]

    order = ExampleOrder(len(lengths), s.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(range(start, s.steps), initial=start, total=s.steps, desc=desc, disable=not progress)
    t0, tokens, loss_ema = time.time(), 0, None
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=s.lr, warmup=s.warmup, total=s.steps)
        micro = [order.batch((step * s.grad_accum + m) * s.batch_size, s.batch_size) for m in range(s.grad_accum)]
        n_tokens = sum(lengths[i] for idx in micro for i in idx)
        step_nll = 0.0
        for idx in micro:
            with autocast:
                nll, _ = batch_loss(idx)
            (nll / n_tokens).backward()  # mean over every token of the step, across micro-batches
            step_nll += nll.item()
        loss = step_nll / n_tokens
        if not torch.isfinite(torch.tensor(loss)):
            raise SynthsteerError(f"{desc}: the loss became {loss} at step {step}; lower --lr "
                                  f"(now {s.lr}) or --max-grad-norm (now {s.max_grad_norm})")
        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += n_tokens + len(micro) * s.batch_size * prefix_tokens
        loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
        history.append(round(loss, 5))
        bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
        if (step + 1) % s.save_every == 0 and step + 1 < s.steps:
            with atomic_dir(state_dir) as tmp:
                save_weights(tmp)
                save_optimizer(opt, tmp / "optimizer.safetensors")
                write_json(tmp / "state.json", {"step": step + 1, "history": history})
    return {"loss_history": history, "final_loss": history[-1] if history else None,
            "train_tokens_per_s": tokens / max(time.time() - t0, 1e-9)}
