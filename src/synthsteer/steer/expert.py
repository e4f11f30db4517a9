"""`synthsteer expert`: the domain expert of STEER as a LoRA adapter (peft) on the frozen base."""

from __future__ import annotations

import shutil
from functools import partial
from dataclasses import asdict
from pathlib import Path

import torch

from .._version import __version__
from ..artifacts import read_json, sha256_file, write_json
from ..data import load_records
from ..errors import SynthsteerError
from ..lm import LM, check_fingerprint
from ..logs import console_settings, log_file
from ..prompts import chat_template_id, default_instruction, prompt_ids, uses_chat_template
from ..training import (barrier, distributed, example_loss, held_out_loss, prepare_out, split_validation,
                        tokenize_examples, train_loop)
from .config import ExpertConfig

META = "synthsteer_expert.json"


@console_settings
def train_expert(config: ExpertConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
                 lm: LM | None = None) -> Path:
    """LoRA-fine-tune `config.model` on `config.data`; returns the adapter directory.

    Args:
        config: data, LoRA shape and training settings (see `ExpertConfig`).
        resume: continue from `out/train_state` when an earlier run was interrupted.
        overwrite: replace an existing expert directory instead of refusing.
        progress: show a progress bar with loss and tokens/s.
        lm: an already loaded base LM; it is wrapped by peft in place.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    target = prepare_out(Path(config.out), config, resume=resume, overwrite=overwrite, meta_file=META,
                         meta_key="expert")
    if target.finished:
        return target.final
    out = target.work
    spec = config.data_spec()
    records, held_out = split_validation(load_records(spec), config.val_fraction, config.seed)
    lm = lm or config.load_lm()
    fingerprint = lm.fingerprint()
    chat = uses_chat_template(lm.tokenizer, config.chat_template)
    instruction = config.instruction if config.instruction is not None else default_instruction(config.data, chat)
    examples = tokenize_examples(lm, [r.text for r in records], config.max_length)
    torch.manual_seed(config.seed)
    try:
        peft_model = get_peft_model(lm.model, LoraConfig(r=config.r, lora_alpha=config.alpha,
                                                         lora_dropout=config.dropout,
                                                         target_modules=config.target_modules, task_type="CAUSAL_LM"))
    except ValueError as e:
        raise SynthsteerError(f"--target-modules {config.target_modules}: {str(e).splitlines()[0]}") from None
    peft_model.train()  # LoRA dropout on; the base weights stay frozen
    expert = LM(lm.name, peft_model, lm.tokenizer, lm.device)
    prompt = torch.tensor(prompt_ids(lm.tokenizer, instruction, chat), device=lm.device)
    meta = {"lm": fingerprint, "instruction": instruction, "chat_template": chat_template_id(lm.tokenizer, chat),
            "data": spec.as_dict(), "expert": asdict(config), "synthsteer_version": __version__}

    def batch_loss(idx, examples=examples):
        prefix = expert.embed(prompt).unsqueeze(0).expand(len(idx), -1, -1)
        return example_loss(expert, prefix, [examples[i] for i in idx])

    validate = None
    if held_out:
        val_examples = tokenize_examples(lm, [r.text for r in held_out], config.max_length)
        validate = partial(held_out_loss, partial(batch_loss, examples=val_examples), len(held_out),
                           config.batch_size, peft_model)  # LoRA dropout off while validating

    def save_weights(folder: Path) -> None:
        peft_model.save_pretrained(folder)
        write_json(folder / META, meta)

    def load_weights(folder: Path) -> None:
        set_peft_model_state_dict(peft_model, load_file(str(folder / "adapter_model.safetensors")))

    params = [p for p in peft_model.parameters() if p.requires_grad]
    # OUT/log.txt: what this run said, with the progress lines (rank 0's)
    with log_file(out, enabled=distributed()[0] == 0):
        result = train_loop(
            params=params, batch_loss=batch_loss, lengths=[len(x) for x in examples],
            settings=config.loop_settings(),
            state_dir=out / "train_state", save_weights=save_weights, load_weights=load_weights, resume=resume,
            device=lm.device, desc="expert", progress=progress, prefix_tokens=len(prompt), validate=validate)
        peft_model.eval()
        meta.update(result, steps=config.steps)
        if distributed()[0] == 0:  # under torchrun, rank 0 writes the result
            peft_model.save_pretrained(out)
            meta["weights_sha256"] = sha256_file(out / "adapter_model.safetensors")  # checked on every load
            write_json(out / META, meta)  # written last: its presence marks a finished expert
            shutil.rmtree(out / "train_state", ignore_errors=True)
            target.commit()
    barrier()
    return target.final


def load_expert(path: str, base: LM):
    """Wrap `base` with the LoRA expert at `path` (rows pick it with adapter "default"); returns the
    peft model and the expert's metadata."""
    from peft import PeftModel

    folder = Path(path)
    if not (folder / META).exists() or not (folder / "adapter_config.json").exists():
        raise SynthsteerError(f"--expert {path}: not an expert directory written by `synthsteer expert`")
    meta = read_json(folder / META)
    check_fingerprint(meta["lm"], base.fingerprint(), f"--expert {path}")
    meta["sha256"] = sha256_file(folder / "adapter_model.safetensors")
    if meta.get("weights_sha256") and meta["sha256"] != meta["weights_sha256"]:
        raise SynthsteerError(f"--expert {path}: adapter_model.safetensors does not match the sha256 {META} "
                              "records (torn or edited)")
    model = PeftModel.from_pretrained(base.model, str(folder))
    model.eval()
    model.requires_grad_(False)
    return model, meta
