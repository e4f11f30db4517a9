"""The frozen LM: loading any Hugging Face causal LM (or the bundled `tiny`) and fingerprinting it.

A soft prompt or expert only makes sense for the exact LM it was trained against, so every
artifact stores `fingerprint(model)` and loading checks it field by field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import SynthsteerError

TINY_PATH = Path(__file__).parent / "models" / "tiny"


def resolve_model(name: str) -> str:
    """`tiny` means the bundled LM; anything else is a hub id or a local path."""
    return str(TINY_PATH) if name == "tiny" else name


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SynthsteerError(f"--device {device}: CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise SynthsteerError(f"--device {device}: use auto, cpu or cuda")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 only where it is fast and safe; CPU bf16 matmuls are slow on most CPUs
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise SynthsteerError(f"--dtype {dtype}: use auto, float32 or bfloat16")
    return table[dtype]


@dataclass
class LM:
    """A frozen causal LM with its tokenizer."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def embed(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def fingerprint(self) -> dict:
        return fingerprint(self.model, self.name)


def load_lm(name: str = "tiny", *, device: str = "auto", dtype: str = "auto", revision: str | None = None,
            trust_remote_code: bool = False) -> LM:
    """Load a causal LM and its tokenizer, frozen and in eval mode.

    Args:
        name: a hub id, a local directory, or `tiny` for the bundled LM.
        device: `auto` (CUDA when available), `cpu` or `cuda[:N]`.
        dtype: `auto` (bf16 on CUDA, float32 on CPU), `float32` or `bfloat16`.
        revision: a hub revision (branch, tag or commit).
        trust_remote_code: run code shipped with the model; off unless the user asks.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch_dtype,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        local = Path(path).exists()
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = "a local directory that does not hold a causal LM" if local else \
            "neither a local directory nor reachable on the hub"
        raise SynthsteerError(f"--model {name}: {where} ({first})") from None
    if tokenizer.eos_token_id is None:
        raise SynthsteerError(f"--model {name}: the tokenizer has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev).eval()
    model.requires_grad_(False)
    return LM(name=name, model=model, tokenizer=tokenizer, device=dev)


def fingerprint(model: torch.nn.Module, name: str) -> dict:
    """What identifies an LM for a soft prompt: its shape, and a hash of a slice of its input
    embeddings rounded to bf16 (so the same weights loaded in float32 or bf16 agree)."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    head = emb[: min(64, emb.shape[0])].detach().to("cpu", torch.bfloat16).view(torch.int16)
    return {
        "name": name,
        "model_type": getattr(cfg, "model_type", None),
        "hidden_size": int(emb.shape[1]),
        "vocab_size": int(emb.shape[0]),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "embedding_sha256": hashlib.sha256(head.numpy().tobytes()).hexdigest()[:16],
    }


def check_fingerprint(stored: dict, actual: dict, what: str) -> None:
    """Refuse an artifact trained against another LM, naming the first field that differs."""
    for key in ("model_type", "hidden_size", "vocab_size", "num_hidden_layers", "embedding_sha256"):
        if stored.get(key) != actual.get(key):
            raise SynthsteerError(
                f"{what} was trained for LM {stored.get('name')!r} but {actual.get('name')!r} differs in "
                f"{key} ({stored.get(key)} vs {actual.get(key)})"
            )
