"""The soft prompt P_theta(z): the SoftSRV paper's three parameterizations, registered by name.

    nsp: P(z) = theta                                   (no context)
    mp:  P(z) = sum_j softmax(W z + b)_j * B_j          (k basis prompts)
    mc:  P(z) = [MLP_1(z); ...; MLP_t(z)]               (t MLPs as batched tensors)
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..artifacts import sha256_file, write_json
from ..errors import SynthsteerError
from ..registry import registrar
from .config import SoftPromptConfig

PARAMETERIZATIONS: dict[str, type[SoftPrompt]] = {}


register = registrar(PARAMETERIZATIONS)  # @register("name"): available as `--parameterization name`


class SoftPrompt(nn.Module):
    """P: contexts [B, d_e] -> soft prompts [B, t, d]. `SoftPrompt(config)` builds the registered
    parameterization `config.parameterization`; a new one is one registered subclass with
    `forward` and `init_from_vocab`."""

    contextual = True

    def __new__(cls, config: SoftPromptConfig):
        if cls is SoftPrompt:
            if config.parameterization not in PARAMETERIZATIONS:
                raise SynthsteerError(f"--parameterization {config.parameterization}: use one of "
                                      f"{', '.join(PARAMETERIZATIONS)}")
            cls = PARAMETERIZATIONS[config.parameterization]
        return super().__new__(cls)

    def __init__(self, config: SoftPromptConfig):
        super().__init__()
        self.config = config

    @torch.no_grad()
    def init_from_vocab(self, embedding: torch.Tensor, seed: int = 0, mlp_out_scale: float = 0.1) -> None:
        """Start every soft token at the embedding of a random vocabulary token, so the prompt begins
        on the LM's own input scale."""
        g = torch.Generator().manual_seed(seed)
        emb = embedding.detach().float().cpu()

        def sample(*shape):
            return emb[torch.randint(0, emb.shape[0], shape, generator=g)]

        self._init(sample, g, emb.std().item(), mlp_out_scale)

    def _init(self, sample, g: torch.Generator, emb_std: float, mlp_out_scale: float) -> None:
        """Set the initial weights; `sample(*shape)` draws random vocabulary embeddings."""
        raise NotImplementedError

    # ------------------------------------------------------------ persistence

    def save(self, folder: Path, meta: dict) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = folder / "prompt.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"format": "synthsteer-softprompt"})
        tmp.replace(folder / "prompt.safetensors")
        # the weights' sha256, checked on every load: a torn or edited file is refused, not used
        write_json(folder / "config.json", {"softprompt": asdict(self.config), **meta,
                                            "weights_sha256": sha256_file(folder / "prompt.safetensors")})


@register("nsp")
class NoContext(SoftPrompt):
    """P(z) = theta: one shared t x d prompt."""

    contextual = False

    def __init__(self, config):
        super().__init__(config)
        self.theta = nn.Parameter(torch.zeros(config.length, config.hidden_size))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.theta.unsqueeze(0).expand(z.shape[0], -1, -1)

    def _init(self, sample, g, emb_std, mlp_out_scale):
        self.theta.copy_(sample(self.config.length))


@register("mp")
class MixtureOfPrompts(SoftPrompt):
    """P(z) = sum_j softmax(W z + b)_j * B_j: k basis prompts."""

    def __init__(self, config):
        super().__init__(config)
        self.bases = nn.Parameter(torch.zeros(config.num_bases, config.length, config.hidden_size))
        self.mix = nn.Linear(config.context_dim, config.num_bases)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.mix(z), dim=-1)  # [B, k]
        return torch.einsum("bk,ktd->btd", alpha, self.bases)

    def _init(self, sample, g, emb_std, mlp_out_scale):
        self.bases.copy_(sample(self.config.num_bases, self.config.length))
        self.mix.weight.normal_(0.0, 0.02, generator=g)
        self.mix.bias.zero_()


@register("mc")
class PerTokenMLP(SoftPrompt):
    """P(z) = [MLP_1(z); ...; MLP_t(z)]: t MLPs as batched tensors."""

    def __init__(self, config):
        super().__init__(config)
        dims = [config.context_dim] + [config.mlp_hidden] * (config.mlp_layers - 1) + [config.hidden_size]
        t = config.length
        # one weight stack per layer, with a leading t axis: token i's MLP is weights[:][i]
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(t, a, b)) for a, b in zip(dims, dims[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(t, b)) for b in dims[1:]])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("be,teh->bth", z, self.weights[0]) + self.biases[0]
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = torch.einsum("bth,thg->btg", F.gelu(h), w) + b
        return h

    def _init(self, sample, g, emb_std, mlp_out_scale):
        """MLP weights start small around a random token embedding (the last layer's bias)."""
        for i, w in enumerate(self.weights):
            # contexts are unit-norm, so std 1 gives the first layer unit-scale activations
            std = 1.0 if i == 0 else 1.0 / math.sqrt(w.shape[1])
            if i == len(self.weights) - 1:  # last layer: a small perturbation of a token embedding
                std *= mlp_out_scale * emb_std
            w.normal_(0.0, std, generator=g)
        for b in self.biases[:-1]:
            b.zero_()
        self.biases[-1].copy_(sample(self.config.length))


SHAPE_LIMITS = {"length": 65_536, "hidden_size": 1 << 16, "context_dim": 1 << 16, "num_bases": 4096,
                "mlp_hidden": 1 << 16, "mlp_layers": 64}  # far above any real prompt, far below a MemoryError


def read_prompt_meta(folder: Path, where: str) -> tuple[SoftPromptConfig, dict]:
    """config.json of a soft-prompt directory, every field the loader reads checked for type and range."""
    from ..artifacts import need, read_meta

    meta = read_meta(folder / "config.json", where)
    where = f"{where}: config.json"
    shape = need(meta, "softprompt", dict, where)
    for key in ("lm", "data"):
        need(meta, key, dict, where)
    if not isinstance(need(meta, "encoder", str, where), str) or not meta["encoder"].strip():
        raise SynthsteerError(f"{where}: 'encoder' is empty")
    need(meta["data"], "source", str, where, prefix="data.")
    for key in ("name",):
        need(meta["lm"], key, str, where, prefix="lm.")
    need(meta["lm"], "hidden_size", int, where, prefix="lm.", ge=1)
    unknown = sorted(set(shape) - set(SoftPromptConfig.__dataclass_fields__))
    if unknown:
        raise SynthsteerError(f"{where}: softprompt has an unknown entry {unknown[0]!r}")
    from .config import PARAMETERIZATIONS as NAMES

    if shape.get("parameterization") not in NAMES:
        raise SynthsteerError(f"{where}: softprompt.parameterization must be one of {', '.join(NAMES)}")
    for key, limit in SHAPE_LIMITS.items():
        need(shape, key, int, where, prefix="softprompt.", ge=1, le=limit, optional=key not in ("length", "hidden_size",
                                                                                            "context_dim"))
    config = SoftPromptConfig(**shape)
    if config.hidden_size != meta["lm"]["hidden_size"]:
        raise SynthsteerError(f"{where}: softprompt.hidden_size ({config.hidden_size}) is not its LM's "
                              f"({meta['lm']['hidden_size']})")
    return config, meta


def load_soft_prompt(folder: str | Path) -> tuple[SoftPrompt, dict]:
    """A trained soft prompt and its metadata (LM fingerprint, encoder, data, training args); every
    way the directory can be damaged is a one-line error naming it, found before any tensor is
    allocated."""
    from ..artifacts import check_weights_sha, tensor_shapes

    folder = Path(folder)
    where = f"--prompt {folder}"
    weights = folder / "prompt.safetensors"
    if not weights.is_file() or not (folder / "config.json").is_file():
        raise SynthsteerError(f"{where}: not a soft-prompt directory (needs prompt.safetensors and config.json)")
    config, meta = read_prompt_meta(folder, where)
    check_weights_sha(folder, weights, meta.get("weights_sha256"), where)
    shapes = tensor_shapes(weights, where)
    with torch.device("meta"):  # the shapes config.json implies, without allocating them
        expected = {k: tuple(v.shape) for k, v in SoftPrompt(config).state_dict().items()}
    if shapes != expected:
        diff = sorted(k for k in set(shapes) | set(expected) if shapes.get(k) != expected.get(k))[0]
        raise SynthsteerError(f"{where}: prompt.safetensors does not fit the shape config.json records ({diff}: "
                              f"{shapes.get(diff)} in the file, {expected.get(diff)} expected)")
    tensors = load_file(str(weights))
    if not all(t.dtype.is_floating_point and torch.isfinite(t).all() for t in tensors.values()):
        raise SynthsteerError(f"{where}: prompt.safetensors holds values that are not finite numbers")
    prompt = SoftPrompt(config)
    prompt.load_state_dict(tensors)
    return prompt, meta
