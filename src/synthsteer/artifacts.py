"""Writing artifacts so that an interrupted run never leaves a half-written one behind.

Everything is safetensors + JSON: nothing here ever unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: readers see the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextmanager
def atomic_dir(path: Path):
    """Yield a scratch directory that replaces `path` only once the block finishes without error."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


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
    import math

    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
