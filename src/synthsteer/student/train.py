"""One student: the small LM fine-tuned on one training set, with a LoRA adapter (peft) or every
weight, its loss on the target tokens only,

    loss = -(1/N) sum_i sum_j log p( y_i[j] | x_i, y_i[<j] )      x: the record's input, y: its target

through the training runner every training command shares (`training.run_training`: resume,
kill -9 safety, DDP, progress lines); and the trained student loaded back for scoring.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..artifacts import sha256_file, write_json
from ..data import Record
from ..errors import SynthsteerError, first_line
from ..lm import LM, check_fingerprint, load_lm_of
from ..prompts import start_token
from ..training import Trainable, run_training, target_loss
from .config import StudentTrainConfig
from .data import Example, StudentTask

META = "synthsteer_student.json"


def tokenize_pair(lm: LM, task: StudentTask, fields: dict[str, str], max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, target ids) of a record: the start token and the input, then the target and EOS (so
    the student learns where its answer ends), at most `max_length` tokens in all. An input too long
    loses its beginning, since its end (the question) is what the target answers."""
    head, tail = task.split(fields)
    tok = lm.tokenizer
    x = [start_token(tok), *tok(head, add_special_tokens=False)["input_ids"]] if head else [start_token(tok)]
    y = [*tok(tail, add_special_tokens=False)["input_ids"], lm.eos_token_id][: max_length - 1]
    room = max_length - len(y)
    if len(x) > room:
        x = x[:1] + x[len(x) - (room - 1):] if room > 1 else x[:1]
    return x, y


def student_records(task: StudentTask, examples: list[Example]) -> list[Record]:
    """The examples as the runner's records: id and whole text (what the data hash covers), fields as meta."""
    return [Record(e.id, task.format.render(e.fields), e.fields) for e in examples]


def student_build(config: StudentTrainConfig, task: StudentTask, lm: LM, records: list, held_out: list) -> Trainable:
    """What one student trains on the freshly loaded `lm`: a LoRA adapter (peft, wrapping it in place) or
    every weight, and the target-token loss of its records."""
    fingerprint = lm.fingerprint()  # the student's own, before peft wraps it
    pairs = [tokenize_pair(lm, task, r.meta, config.max_length) for r in records]
    torch.manual_seed(config.seed)
    if config.finetune == "lora":
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file

        width = lm.embed.weight.shape[1]
        if config.r > width:
            raise SynthsteerError(f"--r {config.r}: a LoRA rank above the student's width ({width}) adds nothing a "
                                  "full update would not; use at most that, or --finetune full")
        try:
            model = get_peft_model(lm.model, LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                                        target_modules=config.target_modules, task_type="CAUSAL_LM"))
        except ValueError as e:
            raise SynthsteerError(f"--target-modules {config.target_modules}: {str(e).splitlines()[0]}") from None

        def save(folder: Path, meta: dict) -> None:
            model.save_pretrained(folder)
            write_json(folder / META, {**meta, "weights_sha256": sha256_file(folder / "adapter_model.safetensors")})

        def load(folder: Path) -> None:
            set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    else:
        from safetensors.torch import load_model, save_model

        model = lm.model
        model.requires_grad_(True)

        def save(folder: Path, meta: dict) -> None:
            save_model(model, str(folder / "model.safetensors"))  # tied embeddings saved once
            write_json(folder / META, {**meta, "weights_sha256": sha256_file(folder / "model.safetensors")})

        def load(folder: Path) -> None:
            load_model(model, str(folder / "model.safetensors"))
    model.train()  # dropout on (LoRA's, and the LM's own under full fine-tuning)
    student = LM(lm.name, model, lm.tokenizer, lm.device)

    def loss(pairs: list[tuple[list[int], list[int]]]):
        return lambda idx: target_loss(student, [pairs[i] for i in idx])

    held = [tokenize_pair(lm, task, r.meta, config.max_length) for r in held_out]
    return Trainable(params=[p for p in model.parameters() if p.requires_grad], batch_loss=loss(pairs),
                     lengths=[len(y) for _, y in pairs], order_lengths=[len(x) + len(y) for x, y in pairs],
                     save=save, load=load, desc=f"student {Path(config.out).name}",
                     meta={"lm": fingerprint, "finetune": config.finetune, "task": task.describe()},
                     prefix_tokens=0, val_loss=loss(held) if held else None, module=model)


def train_student(config: StudentTrainConfig, task: StudentTask, examples: list[Example], *, within: Path,
                  overwrite: bool = False, progress: bool = True) -> Path:
    """Train one student into `config.out` (resuming an interrupted run; a finished one is kept)."""
    records = student_records(task, examples)
    described = {"source": config.data, "size": len(records), **task.describe()}
    return run_training(config, partial(student_build, config, task), kind="student-model", meta_file=META,
                        meta_key="student", resume=not overwrite, overwrite=overwrite, progress=progress,
                        lm=lambda: load_lm_of(config), data=lambda: (records, described), within=within)


def load_student(folder: Path, config) -> LM:
    """A trained student, ready to score: the student LM with its weights (a LoRA adapter merged in),
    in eval mode. Its fingerprint and weights are checked against what its training recorded."""
    from ..artifacts import check_weights_sha, read_meta

    where = f"student {folder}"
    meta = read_meta(folder / META, where)
    lm = load_lm_of(config)
    check_fingerprint(meta["lm"], lm.fingerprint(), where)
    try:
        if meta.get("finetune") == "full":
            from safetensors.torch import load_model

            check_weights_sha(folder, folder / "model.safetensors", meta.get("weights_sha256"), where)
            load_model(lm.model, str(folder / "model.safetensors"))
        else:
            from peft import PeftModel

            check_weights_sha(folder, folder / "adapter_model.safetensors", meta.get("weights_sha256"), where)
            lm.model = PeftModel.from_pretrained(lm.model, str(folder)).merge_and_unload()
    except SynthsteerError:
        raise
    except Exception as e:  # peft and safetensors raise several types for weights that do not fit
        raise SynthsteerError(f"{where}: its weights do not fit {lm.name} ({first_line(e)})") from None
    lm.model.eval()
    lm.model.requires_grad_(False)
    return lm
