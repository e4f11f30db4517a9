"""Configs of `synthsteer student` (torch-free: `--help` imports this): which training sets, which
held-out records, which student LM and how it is fine-tuned, and what it is scored by."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SynthsteerError
from ..options import LMOptions, LogOptions, Options, TextOptions, TrainConfig, check_record_format, option, require

FINETUNES = ("lora", "full")
TASK_METRICS = ("loss", "accuracy", "exact_match", "pass_at_1")  # metrics.STUDENT_METRICS computes them


@dataclass(frozen=True)
class LoraOptions(Options):
    """The student's fine-tuning: a LoRA adapter (peft) on the frozen student, or every weight."""

    finetune: str = option("lora", "lora: a LoRA adapter on the frozen student (peft); full: every weight.",
                           choices=FINETUNES)
    r: int = option(16, "LoRA rank.", count=True)
    alpha: int = option(32, "LoRA alpha.", count=True)
    dropout: float = option(0.05, "LoRA dropout.", ge=0, lt=1)
    target_modules: str = option("all-linear", "Modules that get LoRA adapters (peft's target_modules).")


@dataclass(frozen=True)
class StudentConfig(LoraOptions, LMOptions, TextOptions, LogOptions):
    """`synthsteer student`: fine-tune a small LM on each training set and score it on real held-out
    records, beside the untrained student.

    A record is split into the student's input and its target by the record format (--template, or
    --format json --fields; default: the first run's): the target is the record's last fields
    (--target; default: the fields a run generated after its given ones, else the last one), the input
    everything before them. The student learns the target given the input, and is scored on the
    held-out records by the loss on their target tokens, and by accuracy, exact match or pass@1
    where the task has one.
    """

    train: tuple[str, ...] = option((), "A training set, NAME=SOURCE (repeat): a run directory, a data source "
                                        "(builtin:boolq/train, a file, a datasets directory), or several joined "
                                        "with '+' (mix=RUN+builtin:boolq/train).")
    eval: str | None = option(None, "The real held-out records the students are scored on (a data source, e.g. "
                                    "builtin:boolq/heldout).", nonempty=True)
    eval_limit: int | None = option(None, "Score on N held-out records (a subset picked by record id; default: all).",
                                    count=True)
    target: tuple[str, ...] = option((), "The fields the student learns to write (the record's last fields); "
                                         "default: the fields the runs generated after their --given ones, else "
                                         "the last field.")
    sizes: tuple[int, ...] = option((), "Train on N records of each set (a subset picked by record id, the smaller "
                                        "inside the larger; repeat for a learning curve); default: the smallest "
                                        "set's size, so every set teaches from as many records.")
    seeds: tuple[int, ...] = option((0,), "Student seeds (LoRA initialisation, example order, dropout); every metric "
                                          "is the mean and std over them.")
    epochs: int = option(2, "Passes over each training set (unless --steps is given).", count=True)
    steps: int | None = option(None, "Optimizer steps per student (instead of --epochs).", count=True)
    batch_size: int = option(8, "Records per micro-batch.", count=True)
    grad_accum: int = option(1, "Micro-batches per optimizer step.", count=True)
    lr: float = option(1e-3, "Peak learning rate (AdamW; full fine-tuning wants about 1e-5).", gt=0)
    warmup_ratio: float = option(0.1, "Linear warmup over this share of the steps.", ge=0, le=1)
    weight_decay: float = option(0.0, "AdamW weight decay.", ge=0)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", gt=0)
    max_length: int = option(512, "Tokens of input + target kept; a longer input loses its beginning.", count=True)
    precision: str = option("auto", "Training math: auto (bf16 autocast where the hardware has it), fp32 or bf16.",
                            choices=("auto", "fp32", "bf16"))
    save_every: int = option(100, "Steps between checkpoints (a rerun resumes from the last).", count=True)
    field_values: tuple[str, ...] = option((), "The closed set of the target's values that accuracy chooses from, "
                                               "e.g. --field-values label=yes,no (default: inferred when the held-out "
                                               "target has few distinct values, as generate infers it).")
    metrics: tuple[str, ...] = option(("auto",), "What the students are scored by: auto (loss, and whichever of "
                                                 "accuracy, exact_match, pass_at_1 the task has) or a list of "
                                                 f"{', '.join(TASK_METRICS)}.")
    execute_code: bool = option(False, "Run the students' code against the held-out tests for pass@1. This executes "
                                       "model-written code (in a guarded subprocess: docs/student.md); off unless "
                                       "given.")
    code_timeout: float = option(10.0, "Seconds each program may run (pass@1).", gt=0)
    max_new_tokens: int = option(256, "Tokens a student may write when it is scored by what it writes (exact match, "
                                      "pass@1).", count=True)
    eval_batch_size: int = option(16, "Held-out records scored together.", count=True)
    out: str = option("runs/student", "Output directory (results.json, results.html, one directory per student; "
                                      "rerun the same command to resume).", nonempty=True)

    def __post_init__(self):
        super().__post_init__()
        if not self.train:
            raise SynthsteerError("--train is required: NAME=SOURCE, e.g. --train real=builtin:boolq/train "
                                  "--train softsrv=runs/boolq-softsrv")
        require(self, "eval", "the real held-out records to score on, e.g. builtin:boolq/heldout")
        require(self, "model", "the student: a hub id or local path, a .gguf file, smollm2, or tiny")
        check_record_format(self)
        asked = [m for m in self.metrics if m != "auto"]
        for m in asked:
            if m not in TASK_METRICS:
                raise SynthsteerError(f"--metrics {m}: use auto or some of {', '.join(TASK_METRICS)}")
        if asked and len(asked) != len(self.metrics):
            raise SynthsteerError("--metrics: auto or a list of metrics, not both")
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise SynthsteerError(f"--seeds {','.join(map(str, self.seeds))}: distinct seeds >= 0")
        if any(n < 1 for n in self.sizes) or len(set(self.sizes)) != len(self.sizes):
            raise SynthsteerError(f"--sizes {','.join(map(str, self.sizes))}: distinct sizes >= 1")


@dataclass(frozen=True)
class StudentTrainConfig(LoraOptions, TrainConfig):
    """One student's training run (what `run_training` checks a resume against): its set's source,
    size and seed, and the fine-tuning settings of the `StudentConfig` it comes from."""

    size: int = option(1, "Training records.", count=True)
