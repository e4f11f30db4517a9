"""`synthsteer expert`: the domain expert of STEER as a LoRA adapter (peft) on the frozen base."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..artifacts import sha256_file, write_json
from ..errors import SynthsteerError, first_line
from ..lm import LM, check_fingerprint, check_fits_context
from ..logs import console_settings
from ..prompts import chat_template_id, default_instruction, prompt_ids, uses_chat_template
from ..training import Trainable, example_loss, run_training, tokenize_examples
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
    return run_training(config, partial(lora_expert, config), kind="expert", meta_file=META, meta_key="expert",
                        inputs=(config.data, config.model), resume=resume, overwrite=overwrite, progress=progress,
                        lm=lm)


def lora_expert(config: ExpertConfig, lm: LM, records: list, held_out: list) -> Trainable:
    """The LoRA adapter `expert` trains on the frozen `lm` (wrapped by peft in place) and its loss: the
    NLL of each example after the instruction."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    fingerprint = lm.fingerprint()  # the base's, before peft wraps it
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

    def loss(examples: list[list[int]]):
        def batch_loss(idx):
            prefix = expert.embed(prompt).unsqueeze(0).expand(len(idx), -1, -1)
            return example_loss(expert, prefix, [examples[i] for i in idx])
        return batch_loss

    def save(folder: Path, meta: dict) -> None:
        peft_model.save_pretrained(folder)
        write_json(folder / META, meta)

    def save_result(folder: Path, meta: dict) -> None:  # a checkpoint's files, with their sha256 in the meta
        peft_model.save_pretrained(folder)
        # both checked on every load: the adapter's config (alpha, DoRA) changes its outputs as much as its weights
        write_json(folder / META, {**meta, "weights_sha256": sha256_file(folder / "adapter_model.safetensors"),
                                   "adapter_config_sha256": sha256_file(folder / "adapter_config.json")})

    def load(folder: Path) -> None:
        set_peft_model_state_dict(peft_model, load_file(str(folder / "adapter_model.safetensors")))

    val_loss = loss(tokenize_examples(lm, [r.text for r in held_out], config.max_length)) if held_out else None
    return Trainable(params=[p for p in peft_model.parameters() if p.requires_grad], batch_loss=loss(examples),
                     lengths=[len(x) for x in examples], save=save, load=load,
                     meta={"lm": fingerprint, "instruction": instruction,
                           "chat_template": chat_template_id(lm.tokenizer, chat)},
                     desc="expert", prefix_tokens=len(prompt), val_loss=val_loss,
                     module=peft_model,  # LoRA dropout off while validating
                     save_result=save_result)


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
