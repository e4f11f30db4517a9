"""`synthsteer fit`: train a soft prompt against a frozen LM.

    min_theta  (1/n) sum_i  -sum_j log p_LM( x_i[j] | P_theta(E(x_i)), x_i[<j] )

The LM sees only the soft prompt followed by the example (teacher forcing); the loss covers the
example's tokens and its EOS, never the prompt. Only theta has gradients and optimizer state.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..encoders import encode_cached, load_encoder
from ..logs import console_settings
from ..lm import LM, check_fits_context, check_fits_memory
from ..training import Trainable, example_loss, run_training, tokenize_examples
from .config import FitConfig, SoftPromptConfig
from .prompt import SoftPrompt


@console_settings
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
    return run_training(config, partial(soft_prompt, config, progress=progress), kind="prompt",
                        meta_file="config.json", meta_key="fit", inputs=(config.data, config.model, config.encoder),
                        resume=resume, overwrite=overwrite, progress=progress, lm=lm)


def soft_prompt(config: FitConfig, lm: LM, records: list, held_out: list, *, progress: bool = True) -> Trainable:
    """The soft prompt `fit` trains (initialised from vocabulary embeddings) and its loss: the NLL of each
    example after the prompt its context makes."""
    check_fits_context(lm, config.prompt_length + config.max_length, "--prompt-length + --max-length")
    encoder = load_encoder(config.encoder, lm=lm, device=lm.device)
    contexts = encode_cached(encoder, [r.text for r in records], progress=progress).to(lm.device)
    examples = tokenize_examples(lm, [r.text for r in records], config.max_length)

    torch.manual_seed(config.seed)
    pconf = SoftPromptConfig(parameterization=config.parameterization, length=config.prompt_length,
                             hidden_size=lm.embed.weight.shape[1], context_dim=contexts.shape[1],
                             num_bases=config.num_bases, mlp_hidden=config.mlp_hidden, mlp_layers=config.mlp_layers)
    with torch.device("meta"):  # its size first: weights, gradients and AdamW's two moments, in float32
        n_params = sum(p.numel() for p in SoftPrompt(pconf).parameters())
    check_fits_memory(16 * n_params, f"a soft prompt of {n_params:,} parameters (--prompt-length, --mlp-hidden, "
                                     "--num-bases)")
    prompt = SoftPrompt(pconf)
    prompt.init_from_vocab(lm.embed.weight, seed=config.seed)
    prompt.to(lm.device)
    meta = {"lm": lm.fingerprint(), "encoder": config.encoder, "encoder_fingerprint": encoder.fingerprint}

    def loss(contexts: torch.Tensor, examples: list[list[int]]):
        return lambda idx: example_loss(lm, prompt(contexts[idx]), [examples[i] for i in idx])

    def load(folder: Path) -> None:
        prompt.load_state_dict(load_file(str(folder / "prompt.safetensors"), device=str(lm.device)))

    val_loss = None
    if held_out:
        val_contexts = encode_cached(encoder, [r.text for r in held_out], progress=False).to(lm.device)
        val_loss = loss(val_contexts, tokenize_examples(lm, [r.text for r in held_out], config.max_length))
    return Trainable(params=list(prompt.parameters()), batch_loss=loss(contexts, examples),
                     lengths=[len(x) for x in examples], save=prompt.save, load=load, meta=meta,
                     desc=f"fit {config.parameterization}", prefix_tokens=config.prompt_length, val_loss=val_loss)
