"""The one training runner of `fit` (soft prompts) and `expert` (LoRA adapters), its loop and its loss.

    loss = -(1/N) sum_i sum_j log p_LM( x_i[j] | prefix_i, x_i[<j] )

AdamW on the trainable parameters only, linear warmup + cosine decay, gradient accumulation with
the loss averaged over every token of a step, gradient clipping, bf16 autocast where the hardware has it, a NaN/inf
guard, atomic checkpoints and exact resume: the batches are a seeded function of the epoch and the
learning rate a pure function of the step, so a resumed run replays exactly the batches an
uninterrupted one would. Batches hold examples of similar length (little padding), and only
positions that predict an example token reach the LM head.

`run_training` is the skeleton every training command shares (output directory, data, checkpoint,
LM, ranks, result); a method supplies only its `Trainable`, built once the LM and the records are
loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ._version import __version__
from .artifacts import (COMMON, Claim, atomic_dir, check_swap_room, read_json, remove_ours, restore_interrupted,
                        scratch_dir, sha256_file, swap_in, swap_paths, write_json)
from .data import DataSpec, load_records, records_digest
from .errors import SynthsteerError, first_line
from .lm import LM, load_lm_of
from .logs import log_file
from .options import TrainConfig, flag  # noqa: F401  (TrainConfig: the shared training options, re-exported)
from .randomness import Stream, stream_key


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training's forward and backward, None for plain float32.

    `auto` takes bf16 where the hardware computes it natively: CUDA with bf16, and CPUs with
    AVX512-BF16 or AMX, where it halves a fit step of a 135M LM (bench/bench_fit.py). Elsewhere
    bf16 is emulated and slower, so auto stays float32. Trainable weights stay float32 either way."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return torch.bfloat16 if device.type == "cpu" and native else None


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
    precision: str = "auto"

    @classmethod
    def of(cls, config: TrainConfig) -> LoopSettings:
        return cls(config.steps, config.batch_size, config.grad_accum, config.lr, config.warmup_steps,
                   config.weight_decay, config.max_grad_norm, config.save_every, config.seed, config.precision)


class ExampleOrder:
    """Batches of examples of similar length, a seeded function of the epoch, addressed by global
    batch number.

    Each epoch shuffles the examples, sorts each window of `window` batches' worth by length, cuts
    it into batches and shuffles their order: every example once per epoch, batches in random
    order, and little padding (GSM8K training questions in SmolLM2 tokens, batch 8: 4% of
    positions are padding instead of 36% for plain shuffled batches)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 16):
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.per_epoch = -(-len(lengths) // batch_size)
        self.epochs: dict[int, list[list[int]]] = {}

    def _epoch(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed((self.seed * 7919 + epoch) % 2**64)  # any 63-bit seed fits
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        span, batches = self.batch_size * self.window, []
        for w in range(0, len(perm), span):
            chunk = sorted(perm[w: w + span], key=lambda i: self.lengths[i])
            cut = [chunk[b: b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
            batches += [cut[k] for k in torch.randperm(len(cut), generator=g).tolist()]
        return batches

    def batch(self, number: int) -> list[int]:
        epoch, k = divmod(number, self.per_epoch)
        if epoch not in self.epochs:
            self.epochs = {epoch: self._epoch(epoch)}  # one epoch at a time is all a run reads
        return self.epochs[epoch][k]


def tokenize_examples(lm, texts: list[str], max_length: int) -> list[list[int]]:
    """Each example's tokens, cut to `max_length - 1`, with EOS appended so the LM learns where an
    example ends. No BOS: the prompt (soft or hard) takes its place."""
    ids = lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [x[: max_length - 1] + [lm.eos_token_id] for x in ids]


def example_loss(lm, prefix: torch.Tensor | None, examples: list[list[int]]) -> tuple[torch.Tensor, int]:
    """Summed NLL of `examples` after `prefix` ([B, t, d] embeddings; None = a single EOS token, the
    unprompted baseline), and the number of tokens it covers.

    Examples are right-padded after the prefix. Position t-1+j predicts example token j, so only
    the last `width + 1` positions go through the LM head (`logits_to_keep`): on a 49k-token
    vocabulary the head costs as much as several layers, and prefix positions need none."""
    from .lm import keeps_logits

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
    keep = {"logits_to_keep": width + 1} if keeps_logits(lm.model) else {}
    logits = lm.model(inputs_embeds=embeds, attention_mask=attn, **keep).logits
    pred = logits[:, -(width + 1): -1]
    targets = mask.reshape(-1).bool()
    # the loss only on real tokens: cross-entropy over padding positions would be wasted work
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1])[targets].float(), ids.reshape(-1)[targets], reduction="sum")
    return nll, int(targets.sum())


def pair_nll(lm, pairs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Each pair's summed NLL of its target tokens given its input tokens ([B], float32). What a student
    learns (the input is read, the target learned) and how it is scored (a closed set's values by
    log-likelihood, as lm-evaluation-harness scores multiple choice).

    Pairs are left-padded, with positions counted from each pair's first token (so a padded pair
    computes what it would alone), which puts every target at the end of the batch: only the last
    `longest target + 1` positions go through the LM head, however much the inputs' lengths differ
    (right-padded, the head would run from the end of the shortest input on)."""
    from .lm import keeps_logits

    dev = lm.device
    width = max(len(x) + len(y) for x, y in pairs)
    span = max(len(y) for _, y in pairs)  # target positions at the end of the batch
    ids = torch.full((len(pairs), width), lm.tokenizer.pad_token_id or 0, dtype=torch.long, device=dev)
    attn = torch.zeros_like(ids)
    learn = torch.zeros((len(pairs), span), dtype=torch.bool, device=dev)
    for i, (x, y) in enumerate(pairs):
        if not x or not y:
            raise ValueError("pair_nll: every pair needs input tokens (a start token at least) and target tokens")
        ids[i, width - len(x) - len(y):] = torch.tensor(x + y, device=dev)
        attn[i, width - len(x) - len(y):] = 1
        learn[i, span - len(y):] = True
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": span + 1} if keeps_logits(lm.model) else {}
    logits = lm.model(input_ids=ids, attention_mask=attn, position_ids=positions, **keep).logits
    pred = logits[:, -(span + 1): -1]  # position p predicts token p + 1
    token_nll = F.cross_entropy(pred[learn].float(), ids[:, width - span:][learn], reduction="none")
    row = learn.nonzero()[:, 0]  # the pair each target position belongs to
    return torch.zeros(len(pairs), device=dev, dtype=token_nll.dtype).index_add(0, row, token_nll)


def target_loss(lm, pairs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, int]:
    """Summed NLL of each pair's target tokens given its input tokens, and the number of target
    tokens: the loss of a student fine-tuned on (input, target) records."""
    return pair_nll(lm, pairs).sum(), sum(len(y) for _, y in pairs)


# ---------------------------------------------------------------- data parallelism


def distributed() -> tuple[int, int]:
    """(rank, world size): under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) the process group is
    initialised once (NCCL on GPUs, gloo on CPUs); (0, 1) in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    if distributed()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum `tensors` over the ranks, in place, as one flat buffer (one collective per step)."""
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset: offset + t.numel()].view_as(t))
        offset += t.numel()


# ---------------------------------------------------------------- schedule and optimizer state


def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    """An optimizer's state as safetensors (tensors) + JSON (hyperparameters), instead of a pickle."""
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}.{key}"] = t.detach().cpu().contiguous()
    save_file(tensors, str(path))
    write_json(Path(str(path) + ".json"), {"param_groups": sd["param_groups"]})


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(str(path))
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    groups = read_json(Path(str(path) + ".json"))["param_groups"]
    opt.load_state_dict({"state": state, "param_groups": groups})


def lr_at(step: int, *, lr: float, warmup: int, total: int, final_ratio: float = 0.1) -> float:
    """Linear warmup, then cosine decay to `final_ratio * lr` at `total` steps."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Output:
    """Where a training run writes (`work`) and where its result ends up (`final`). They differ only
    with --overwrite: the new result is built beside the old one and swapped in once complete, so a
    failed or interrupted run never costs the old result. Used as a context manager: on entry rank 0
    creates, marks and locks `final` (artifacts.Claim); on exit the lock is released, and a run that
    failed before writing anything leaves nothing behind."""

    def __init__(self, claim, work: Path, *, finished: bool = False):
        self.claim, self.final, self.work = claim, claim.path, work
        self.finished = finished  # a resumed run that had already finished: nothing to do

    def __enter__(self) -> Output:
        if distributed()[0] == 0:
            self.claim.__enter__()
            if self.work != self.final:
                scratch_dir(self.final, self.claim.kind)
        return self

    def __exit__(self, kind, value, tb) -> None:
        if distributed()[0] != 0:
            return
        if kind is not None and self.work != self.final:  # the old result stays; the half-built one goes
            remove_ours(self.work, self.claim.kind, "new")
        self.claim.__exit__(kind, value, tb)

    def commit(self) -> None:
        if self.work != self.final:
            swap_in(self.final, self.work, self.claim.kind)


def prepare_out(out: Path, config, *, kind: str, resume: bool, overwrite: bool, meta_file: str, meta_key: str,
                inputs=(), within: Path | None = None) -> Output:
    """Check the output directory before any work (nothing is written until the Output is entered).

    `meta_file` is the JSON a finished result (and every checkpoint) holds, `meta_key` the entry of
    it that records the run's config: a resume with other settings is refused, naming the first one
    that differs. --resume and --overwrite accept only a directory synthsteer's marker names as a
    `kind` (artifacts.Claim); --overwrite never one written before markers existed. `inputs`: what the
    command reads, which the output may not be, contain or sit inside; `within`: the command's own
    output that holds this one (a student's models)."""
    def claimed() -> Claim:  # the path checked (artifacts.check_out), then whose directory it is
        return Claim(out, kind, inputs=inputs, verb="resume" if resume else "replace", legacy_ok=not overwrite,
                     within=within)

    claim = claimed()
    if claim.state == "absent":
        restore_interrupted(out, meta_file, kind)  # a kill between the two renames of --overwrite's swap
        if out.exists():
            claim = claimed()  # the old result is back: judged as it is now
    state = out / "train_state"
    # a directory holding only synthsteer's marker, lock and log: killed before any work, so it starts afresh
    started = claim.state in ("ours", "legacy") and any(p.name not in COMMON for p in out.iterdir())
    if started and not (resume or overwrite):
        raise SynthsteerError(f"--out {out}: already exists; pass --resume to continue it or --overwrite to "
                              "replace it")
    if started:
        restore_interrupted(state, "state.json")  # a kill between the two renames of a checkpoint's swap
        claim.changed_by_us()
    if resume and started and ((out / meta_file).exists() or (state / meta_file).exists()):
        source = state / meta_file if (state / meta_file).exists() else out / meta_file
        try:
            recorded = read_json(source).get(meta_key, {})
        except (OSError, ValueError, AttributeError, RecursionError):
            recorded = None
        if not isinstance(recorded, dict):
            raise SynthsteerError(f"--resume: {source} does not record this run's settings (torn or edited); pass "
                                  "--overwrite to start afresh")
        now = json.loads(json.dumps(asdict(config)))  # as the file holds it: a tuple is a list there
        for name, value in now.items():
            if name not in RESUMABLE and name in recorded and recorded[name] != value:
                raise SynthsteerError(f"--resume: {out} was trained with {flag(name)} {recorded[name]}, not {value}; "
                                      "resume with the same settings, or pass --overwrite")
        return Output(claim, out, finished=(out / meta_file).exists() and not state.exists())
    if overwrite and started:
        check_swap_room(out, kind, "--out")
        return Output(claim, swap_paths(out)[0])
    return Output(claim, out)


def split_validation(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training, held-out) records: the held-out share is picked by a hash of the seed and each record's
    id, so it stays the same on a resume, under --limit changes and on any number of ranks."""
    if not fraction:
        return records, []
    k = max(1, round(fraction * len(records)))
    if k >= len(records):
        raise SynthsteerError(f"--val-fraction {fraction}: leaves no training records ({len(records)} in all)")
    ranked = sorted(range(len(records)), key=lambda i: hashlib.sha256(f"{seed}/{records[i].id}".encode()).digest())
    held = set(ranked[:k])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def held_out_loss(batch_loss: Callable[[list[int]], tuple[torch.Tensor, int]], count: int, batch_size: int,
                  module: torch.nn.Module | None = None) -> float:
    """Mean per-token loss over `count` held-out examples, without gradients (and without dropout:
    `module` is put in eval mode for the pass and back into training mode after)."""
    if module is not None:
        module.eval()
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, count, batch_size):
                nll, k = batch_loss(list(range(start, min(start + batch_size, count))))
                total, n = total + float(nll), n + k
    finally:
        if module is not None:
            module.train()
    return total / max(n, 1)


@dataclass(frozen=True)
class Checkpoint:
    """Where an interrupted run resumes: its step and loss curves, read from a verified state.json."""

    step: int
    history: list
    val_history: list


def checkpoint_files(folder: Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint but state.json (which records them)."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != "state.json"}


def read_checkpoint(state_dir: Path, *, steps: int, guards: dict) -> Checkpoint | None:
    """The checkpoint in `state_dir` (None when there is none), verified before anything is loaded:
    state.json well formed, every file matching the sha256 it records, and the `guards` (the data's
    hash) those of this run; any damage is one line naming the checkpoint's step."""
    path = Path(state_dir) / "state.json"
    if not path.exists():
        return None
    where = f"--resume: checkpoint {state_dir}"
    try:
        state = read_json(path)
    except (OSError, ValueError):
        raise SynthsteerError(f"{where}: state.json is not readable JSON (torn or edited); pass --overwrite to "
                              "start afresh") from None
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or not 0 < step < steps:
        raise SynthsteerError(f"{where}: state.json's step {step!r} is not a step of this run (1..{steps - 1}); "
                              "pass --overwrite to start afresh")
    history, val_history = state.get("history"), state.get("val_history", [])

    def loss(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not isinstance(history, list) or len(history) != step or not all(map(loss, history)) or not (
            isinstance(val_history, list) and all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], int)
                                                  and loss(v[1]) for v in val_history)):
        raise SynthsteerError(f"{where}: state.json of step {step} has a malformed loss history; pass --overwrite")
    if not isinstance(state.get("guards", {}), dict):
        raise SynthsteerError(f"{where}: state.json of step {step} has malformed guards; pass --overwrite")
    files = state.get("files")
    if not isinstance(files, dict):
        raise SynthsteerError(f"{where}: the checkpoint of step {step} records no sha256 of its files (written by an "
                              "older synthsteer), so it cannot be verified; pass --overwrite to start afresh")
    actual = checkpoint_files(state_dir)
    for name in sorted(set(files) | set(actual)):
        if files.get(name) != actual.get(name):
            what = "is missing" if name not in actual else "was not written by it" if name not in files else \
                "does not match the sha256 it records (torn or edited)"
            raise SynthsteerError(f"{where}: {name} of step {step} {what}; pass --overwrite to start afresh")
    for key, value in guards.items():
        if state.get("guards", {}).get(key) != value:
            raise SynthsteerError(f"{where}: the checkpoint of step {step} was trained on other data ({key} differs: "
                                  "the data changed since it began); restore the data, or pass --overwrite")
    return Checkpoint(step, history, val_history)


RESUMABLE = ("device", "save_every", "out", "quiet", "log_level")  # settings a resume may change: they do not change the result


def resume(checkpoint: Checkpoint | None, state_dir: Path, opt: torch.optim.Optimizer,
           load_weights: Callable[[Path], None]) -> tuple[int, list, list]:
    """The step to start at and the loss histories so far; a checkpoint's weights and optimizer state
    loaded back into place."""
    if checkpoint is None:
        return 0, [], []
    try:
        load_weights(state_dir)
        load_optimizer(opt, state_dir / "optimizer.safetensors")
    except Exception as e:  # verified files that still do not fit (safetensors has its own error type)
        raise SynthsteerError(f"--resume: checkpoint {state_dir} of step {checkpoint.step} does not fit this "
                              f"run ({first_line(e)}); pass --overwrite") from None
    return checkpoint.step, list(checkpoint.history), list(checkpoint.val_history)


def accumulate_gradients(params: list[torch.nn.Parameter], batch_loss: Callable[[list[int]], tuple[torch.Tensor, int]],
                         micro: list[list[int]], n_tokens: int, autocast, device: torch.device) -> float:
    """One step's gradients, summed over its micro-batches (this rank's share of each) and over the
    ranks; returns the step's mean loss per target token."""
    rank, world = distributed()
    step_nll = torch.zeros((), dtype=torch.float64, device=device)
    for idx in micro:
        mine = idx[rank::world]
        if not mine:
            continue
        with autocast:
            nll, _ = batch_loss(mine)
        (nll / n_tokens).backward()  # mean over every token of the step, across micro-batches and ranks
        step_nll += nll.detach().double()
    if world > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        all_reduce_sum([p.grad for p in params])
        all_reduce_sum([step_nll])
    return step_nll.item() / n_tokens


def write_checkpoint(state_dir: Path, step: int, save_weights: Callable[[Path], None], opt: torch.optim.Optimizer,
                     history: list, val_history: list, guards: dict) -> None:
    """The weights, the optimizer state and state.json (each file's sha256, the guards), atomically."""
    with atomic_dir(state_dir) as tmp:
        save_weights(tmp)
        save_optimizer(opt, tmp / "optimizer.safetensors")
        write_json(tmp / "state.json", {"step": step, "history": history, "val_history": val_history,
                                        "files": checkpoint_files(tmp), "guards": guards})


def train_loop(*, params: list[torch.nn.Parameter], batch_loss: Callable[[list[int]], tuple[torch.Tensor, int]],
               lengths: list[int], settings: LoopSettings, state_dir: Path, save_weights: Callable[[Path], None],
               load_weights: Callable[[Path], None], checkpoint: Checkpoint | None, device: torch.device,
               desc: str, progress: bool = True, prefix_tokens: int = 0,
               validate: Callable[[], float] | None = None, guards: dict | None = None,
               order_lengths: list[int] | None = None) -> dict:
    """Optimize `params` to minimise `batch_loss`; returns the loss history and throughput.

    Args:
        params: the trainable parameters (the only ones with optimizer state).
        batch_loss: example indices -> (summed NLL, number of target tokens).
        lengths: target tokens per example (to average the loss over a whole step).
        settings: steps, batch size, accumulation, learning rate schedule, clipping, checkpoints.
        state_dir: where checkpoints go (removed once training finishes).
        save_weights, load_weights: write / read the trainable weights in a checkpoint directory.
        checkpoint: where to resume (`read_checkpoint`, verified), or None to start at step 0.
        prefix_tokens: extra tokens each example costs (a soft prompt), for tokens/s.
        validate: the held-out loss (`held_out_loss`), logged at every checkpoint and at the end.
        guards: recorded in every checkpoint, and compared by `read_checkpoint` before a resume.
        order_lengths: what batches are grouped by, when it is not `lengths` (a student's whole
            input + target, whose padding costs though only the target is learned).

    Under torchrun / accelerate launch, every rank takes its share of each micro-batch and the
    trainable parameters' gradients are summed over the ranks before the step: the same update as
    one process with the same global batch. Rank 0 alone writes checkpoints.
    """
    from .logs import Progress, log

    rank, world = distributed()
    barrier()  # every rank has prepared its output before rank 0 writes anything
    s = settings
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    start, history, val_history = resume(checkpoint, state_dir, opt, load_weights)

    seen = order_lengths or lengths
    order = ExampleOrder(seen, s.batch_size, s.seed)
    amp = autocast_dtype(s.precision, device)
    autocast = torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    bar = Progress(s.steps, desc, "step", initial=start, enabled=progress and rank == 0)
    t0, tokens, loss_ema = time.time(), 0, None
    for step in range(start, s.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=s.lr, warmup=s.warmup, total=s.steps)
        torch.manual_seed(stream_key(s.seed, Stream.TRAINING, step * world + rank))  # dropout: same on resume
        micro = [order.batch(step * s.grad_accum + m) for m in range(s.grad_accum)]
        n_tokens = sum(lengths[i] for idx in micro for i in idx)
        loss = accumulate_gradients(params, batch_loss, micro, n_tokens, autocast, device)
        if not torch.isfinite(torch.tensor(loss)):
            raise SynthsteerError(f"{desc}: the loss became {loss} at step {step}; lower --lr "
                                  f"(now {s.lr}) or --max-grad-norm (now {s.max_grad_norm})")
        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        # tokens the LM actually ran on (not --batch-size): a student's input too, and a prompt's
        tokens += sum(seen[i] for idx in micro for i in idx) + sum(len(idx) for idx in micro) * prefix_tokens
        loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
        history.append(round(loss, 5))
        # the step's own loss (what config.json's history and final_loss record) and a smoothed one
        bar.update(1, loss=loss, loss_ema=loss_ema, tok_s=tokens / (time.time() - t0))
        checkpoint = (step + 1) % s.save_every == 0 and step + 1 < s.steps
        if validate is not None and (checkpoint or step + 1 == s.steps):
            with autocast:
                val_history.append([step + 1, round(validate(), 5)])
            if rank == 0:
                log.info(f"{desc}: step {step + 1}: validation loss {val_history[-1][1]:.4f} "
                         f"(training loss {loss_ema:.4f}, smoothed)")
        if checkpoint and rank == 0:
            write_checkpoint(state_dir, step + 1, save_weights, opt, history, val_history, guards or {})
    bar.close()
    result = {"loss_history": history, "final_loss": history[-1] if history else None,
              "train_tokens_per_s": tokens / max(time.time() - t0, 1e-9), "train_seconds": round(time.time() - t0, 1)}
    if validate is not None:
        result.update(val_history=val_history, final_val_loss=val_history[-1][1] if val_history else None)
    return result


# ---------------------------------------------------------------- the runner


@dataclass
class Trainable:
    """What a method trains, built by its `build(lm, records, held_out)` once `run_training` has loaded
    the LM and the data: all that differs between `fit`, `expert` and their kin."""

    params: list[torch.nn.Parameter]  # the only parameters with gradients and optimizer state
    batch_loss: Callable[[list[int]], tuple[torch.Tensor, int]]  # training example indices -> (summed NLL, tokens)
    lengths: list[int]  # target tokens per training example
    save: Callable[[Path, dict], None]  # the weights, then `meta` (the meta file), into a checkpoint or the result
    load: Callable[[Path], None]  # a checkpoint's weights back
    meta: dict  # what the result records first (the LM's fingerprint...); the runner adds data, config, version
    desc: str  # the run's name in the progress bar, the log and errors
    prefix_tokens: int = 0  # tokens each example costs beyond its own (a prompt), for tokens/s
    val_loss: Callable[[list[int]], tuple[torch.Tensor, int]] | None = None  # batch_loss of the held-out examples
    module: torch.nn.Module | None = None  # in eval mode while validating (dropout off) and once trained
    save_result: Callable[[Path, dict], None] | None = None  # the finished result, where it differs from `save`
    order_lengths: list[int] | None = None  # tokens per example that batching groups by (default: `lengths`)


def run_training(config: TrainConfig, build: Callable[[LM, list, list], Trainable], *, kind: str, meta_file: str,
                 meta_key: str, inputs=(), resume: bool = False, overwrite: bool = False, progress: bool = True,
                 lm: LM | Callable[[], LM] | None = None, data: Callable[[], tuple[list, dict]] | None = None,
                 within: Path | None = None) -> Path:
    """Train what `build(lm, records, held_out)` returns on `config.data` into `config.out`, against
    the frozen `config.model` (or `lm`); returns the result directory.

    Every training command is this one skeleton: the output checked and claimed (`prepare_out`; a
    finished run is not redone), the records loaded and hashed, the checkpoint verified against that
    hash before the LM is loaded, the held-out share split off, `train_loop`, then rank 0 writes the
    result (its `meta_file`, written last, records the config as `meta_key`), drops the checkpoint and
    swaps the result in. `kind`, `meta_file`, `meta_key`, `inputs`, `within`: as `prepare_out` takes
    them; `lm`: the LM, or a function loading it (called only when there is training to do); `data`:
    a function giving the records and their description for the result, when they are not
    `config.data` read as a `DataSpec` (the student's training sets). Any method that trains weights
    against an LM is one more `build`.
    """
    target = prepare_out(Path(config.out), config, kind=kind, resume=resume, overwrite=overwrite,
                         meta_file=meta_file, meta_key=meta_key, inputs=inputs, within=within)
    if target.finished:
        return target.final  # finished earlier: nothing left to do
    out, state_dir = target.work, target.work / "train_state"

    if data is None:
        spec = DataSpec.of(config, limit=config.limit)
        all_records, described = load_records(spec), spec.as_dict()
    else:
        all_records, described = data()
    guards = {"data_sha256": records_digest(all_records)}
    checkpoint = read_checkpoint(state_dir, steps=config.steps, guards=guards) if resume else None
    records, held_out = split_validation(all_records, config.val_fraction, config.seed)
    lm = lm() if callable(lm) else lm or load_lm_of(config)
    job = build(lm, records, held_out)
    meta = {**job.meta, "data": described, meta_key: asdict(config), "synthsteer_version": __version__,
            **guards}
    validate = None
    if held_out:  # the held-out loss, at every checkpoint and at the end
        validate = partial(held_out_loss, job.val_loss, len(held_out), config.batch_size, job.module)

    rank0 = distributed()[0] == 0
    with target, log_file(out, enabled=rank0):  # OUT/log.txt: what this run said, with the progress lines (rank 0's)
        result = train_loop(
            params=job.params, batch_loss=job.batch_loss, lengths=job.lengths, settings=LoopSettings.of(config),
            state_dir=state_dir, save_weights=lambda folder: job.save(folder, meta), load_weights=job.load,
            checkpoint=checkpoint, device=lm.device, desc=job.desc, progress=progress,
            prefix_tokens=job.prefix_tokens, validate=validate, guards=guards, order_lengths=job.order_lengths)
        if job.module is not None:
            job.module.eval()
        if rank0:  # under torchrun, rank 0 writes the result
            (job.save_result or job.save)(out, {**meta, **result, "steps": config.steps})
            shutil.rmtree(state_dir, ignore_errors=True)
            target.commit()
    barrier()
    return target.final
