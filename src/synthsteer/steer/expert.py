"""`synthsteer expert`: the domain expert of STEER as a LoRA adapter (peft) on the frozen base."""

from __future__ import annotations

import shutil
from functools import partial
from dataclasses import asdict
from pathlib import Path

import torch

from .._version import __version__
from ..artifacts import sha256_file, write_json
from ..data import DataSpec, load_records, records_digest
from ..errors import SynthsteerError, first_line
from ..lm import LM, check_fingerprint, check_fits_context, load_lm_of
from ..logs import console_settings, log_file
from ..prompts import chat_template_id, default_instruction, prompt_ids, uses_chat_template
from ..training import (LoopSettings, barrier, distributed, example_loss, held_out_loss, prepare_out,
                        read_checkpoint, split_validation, tokenize_examples, train_loop)
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

    target = prepare_out(Path(config.out), config, kind="expert", resume=resume, overwrite=overwrite, meta_file=META,
                         meta_key="expert", inputs=(config.data, config.model))
    if target.finished:
        return target.final
    out = target.work
    spec = DataSpec.of(config, limit=config.limit)
    all_records = load_records(spec)
    guards = {"data_sha256": records_digest(all_records)}
    checkpoint = read_checkpoint(out / "train_state", steps=config.steps, guards=guards) if resume else None
    records, held_out = split_validation(all_records, config.val_fraction, config.seed)
    lm = lm or load_lm_of(config)
    fingerprint = lm.fingerprint()
    width = lm.embed.weight.shape[1]
    if config.r > width:
        raise SynthsteerError(f"--r {config.r}: a LoRA rank above the LM's width ({width}) adds nothing a full "
                              "update would not; use at most that")
    chat = uses_chat_template(lm.tokenizer, config.chat_template)
    instruction = config.instruction if config.instruction is not None else default_instruction(config.data, chat)
    instruction_ids = prompt_ids(lm.tokenizer, instruction, chat)
    check_fits_context(lm, len(instruction_ids) + config.max_length, "the instruction + --max-length")
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
    prompt = torch.tensor(instruction_ids, device=lm.device)
    meta = {"lm": fingerprint, "instruction": instruction, "chat_template": chat_template_id(lm.tokenizer, chat),
            "data": spec.as_dict(), "expert": asdict(config), "synthsteer_version": __version__, **guards}

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
    with target, log_file(out, enabled=distributed()[0] == 0):
        result = train_loop(
            params=params, batch_loss=batch_loss, lengths=[len(x) for x in examples],
            settings=LoopSettings.of(config),
            state_dir=out / "train_state", save_weights=save_weights, load_weights=load_weights,
            checkpoint=checkpoint, device=lm.device, desc="expert", progress=progress, prefix_tokens=len(prompt),
            validate=validate, guards=guards)
        peft_model.eval()
        meta.update(result, steps=config.steps)
        if distributed()[0] == 0:  # under torchrun, rank 0 writes the result
            peft_model.save_pretrained(out)
            # both checked on every load: the adapter's config (alpha, DoRA) changes its outputs as much as its weights
            meta["weights_sha256"] = sha256_file(out / "adapter_model.safetensors")
            meta["adapter_config_sha256"] = sha256_file(out / "adapter_config.json")
            write_json(out / META, meta)  # written last: its presence marks a finished expert
            shutil.rmtree(out / "train_state", ignore_errors=True)
            target.commit()
    barrier()
    return target.final


def read_expert_meta(folder: Path, where: str) -> dict:
    """synthsteer_expert.json and adapter_config.json of an expert directory, checked for what the
    loader reads; the adapter's config rides along as meta["adapter"]."""
    from ..artifacts import need, read_meta

    if not (folder / META).exists() or not (folder / "adapter_config.json").exists():
        raise SynthsteerError(f"{where}: not an expert directory written by `synthsteer expert` (needs {META} and "
                              "adapter_config.json)")
    meta = read_meta(folder / META, where)
    at = f"{where}: {META}"
    lm = need(meta, "lm", dict, at)
    need(lm, "name", str, at, prefix="lm.")
    need(meta, "data", dict, at, optional=True)
    if meta.get("data") is not None:
        need(meta["data"], "source", str, at, prefix="data.")
    need(meta, "instruction", str, at)
    need(meta, "chat_template", str, at, optional=True)
    adapter = read_meta(folder / "adapter_config.json", where)
    at = f"{where}: adapter_config.json"
    if adapter.get("peft_type") != "LORA":
        raise SynthsteerError(f"{at}: peft_type is {adapter.get('peft_type')!r}; synthsteer experts are LoRA adapters "
                              "('LORA')")
    need(adapter, "r", int, at, ge=1, le=1 << 16)
    need(adapter, "lora_alpha", (int, float), at, optional=True)
    if adapter.get("rank_pattern") or adapter.get("alpha_pattern"):
        raise SynthsteerError(f"{at}: has per-module ranks, which synthsteer does not write")
    return {**meta, "adapter": adapter}


def load_expert(path: str, base: LM, meta: dict | None = None):
    """Wrap `base` with the LoRA expert at `path` (rows pick it with adapter "default"); returns the
    peft model and the expert's metadata (`meta`: what `read_expert_meta` already read of it). Every
    damage is refused in one line before peft reads a byte."""
    from peft import PeftModel

    from ..artifacts import check_weights_sha, tensor_shapes

    folder = Path(path)
    where = f"--expert {path}"
    meta = dict(meta) if meta is not None else read_expert_meta(folder, where)
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        pickled = [p.name for p in folder.glob("adapter_model.*") if p.suffix != ".safetensors"]
        raise SynthsteerError(f"{where}: no adapter_model.safetensors" + (
            f"; {pickled[0]} is a pickle, which synthsteer never loads (it can run code)" if pickled else ""))
    check_fingerprint(meta["lm"], base.fingerprint(), where)
    meta["sha256"] = check_weights_sha(folder, weights, meta.get("weights_sha256"), where)
    check_weights_sha(folder, folder / "adapter_config.json", meta.get("adapter_config_sha256"), where)
    r = meta["adapter"]["r"]
    for name, shape in tensor_shapes(weights, where).items():
        rank = shape[0] if "lora_A" in name else shape[-1] if "lora_B" in name else None
        if rank is not None and (len(shape) != 2 or rank != r):
            raise SynthsteerError(f"{where}: {name} has shape {list(shape)}, not rank r={r} as adapter_config.json "
                                  "says")
    try:
        model = PeftModel.from_pretrained(base.model, str(folder))
    except Exception as e:  # peft raises ValueError, KeyError, RuntimeError for adapters that do not fit
        raise SynthsteerError(f"{where}: the adapter does not fit {base.name} "
                              f"({first_line(e)})") from None
    model.eval()
    model.requires_grad_(False)
    return model, meta
