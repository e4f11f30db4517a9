"""`synthsteer fit`: train a soft prompt against a frozen LM.

    min_theta  (1/n) sum_i  -sum_j log p_LM( x_i[j] | P_theta(E(x_i)), x_i[<j] )

The LM sees only the soft prompt followed by the example (teacher forcing); the loss covers the
example's tokens and its EOS, never the prompt. Only theta has gradients and optimizer state.
"""

from __future__ import annotations

import shutil
from functools import partial
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from .._version import __version__
from ..data import DataSpec, load_records, records_digest
from ..encoders import encode_cached, load_encoder
from ..logs import console_settings, log_file
from ..lm import LM, check_fits_context, check_fits_memory, load_lm_of
from ..training import (LoopSettings, barrier, distributed, example_loss, held_out_loss, prepare_out,
                        read_checkpoint, split_validation, tokenize_examples, train_loop)
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
    target = prepare_out(Path(config.out), config, kind="prompt", resume=resume, overwrite=overwrite,
                         meta_file="config.json", meta_key="fit", inputs=(config.data, config.model, config.encoder))
    if target.finished:
        return target.final  # finished earlier: nothing left to do
    out = target.work

    spec = DataSpec.of(config, limit=config.limit)
    all_records = load_records(spec)
    guards = {"data_sha256": records_digest(all_records)}
    checkpoint = read_checkpoint(out / "train_state", steps=config.steps, guards=guards) if resume else None
    records, held_out = split_validation(all_records, config.val_fraction, config.seed)
    lm = lm or load_lm_of(config)
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
    meta = {
        "lm": lm.fingerprint(), "encoder": config.encoder, "encoder_fingerprint": encoder.fingerprint,
        "data": spec.as_dict(), "fit": asdict(config), "synthsteer_version": __version__, **guards,
    }

    def load_weights(folder: Path) -> None:
        prompt.load_state_dict(load_file(str(folder / "prompt.safetensors"), device=str(lm.device)))

    validate = None
    if held_out:
        val_contexts = encode_cached(encoder, [r.text for r in held_out], progress=False).to(lm.device)
        val_examples = tokenize_examples(lm, [r.text for r in held_out], config.max_length)
        validate = partial(held_out_loss, lambda idx: example_loss(lm, prompt(val_contexts[idx]),
                                                                   [val_examples[i] for i in idx]),
                           len(held_out), config.batch_size)

    # OUT/log.txt: what this run said, with the progress lines (rank 0's)
    with target, log_file(out, enabled=distributed()[0] == 0):
        result = train_loop(
            params=list(prompt.parameters()),
            batch_loss=lambda idx: example_loss(lm, prompt(contexts[idx]), [examples[i] for i in idx]),
            lengths=[len(x) for x in examples],
            settings=LoopSettings.of(config),
            state_dir=out / "train_state", save_weights=lambda folder: prompt.save(folder, meta),
            load_weights=load_weights, checkpoint=checkpoint, device=lm.device, desc=f"fit {config.parameterization}",
            progress=progress, prefix_tokens=config.prompt_length, validate=validate, guards=guards)
        if distributed()[0] == 0:  # under torchrun, rank 0 writes the result
            prompt.save(out, {**meta, **result, "steps": config.steps})
            shutil.rmtree(out / "train_state", ignore_errors=True)
            target.commit()
    barrier()
    return target.final
