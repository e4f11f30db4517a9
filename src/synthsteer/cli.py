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

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Steer a frozen LLM to generate synthetic data that looks like a target dataset.")
_state = {"debug": False}


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
        raise typer.BadParameter(f"{value}: no such file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{value}:{mark.line + 1}" if mark else str(value)
        raise typer.BadParameter(f"{where}: malformed YAML") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{value}: expected a mapping of flag names to values")
    known = {p.name for p in ctx.command.params}
    defaults = {}
    for key, v in data.items():
        name = str(key).replace("-", "_")
        if name not in known or name == "config":
            raise typer.BadParameter(f"{value}: unknown setting {key!r}")
        defaults[name] = ",".join(map(str, v)) if isinstance(v, list) else v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _config_command(config_cls, extra: list[inspect.Parameter] | None = None):
    """Turn `fn(config, **extra)` into a Typer command with one flag per config field."""

    def wrap(fn):
        hints = typing.get_type_hints(config_cls)
        params = [inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation=Annotated[Optional[Path], typer.Option(
                                        "--config", help="YAML file of flag values; flags given here win.",
                                        is_eager=True, callback=_load_yaml_defaults)])]
        tuples = set()
        for f in dataclasses.fields(config_cls):
            ann = hints[f.name]
            if typing.get_origin(ann) is tuple:  # tuples travel as comma-separated strings
                tuples.add(f.name)
                ann, default = str, ",".join(f.default)
            else:
                default = f.default
            opt = typer.Option(_flag(f.name)) if ann is not bool else \
                typer.Option(f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}")
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=Annotated[ann, opt]))
        params += extra or []

        def command(**kwargs):
            config_kwargs = {}
            for f in dataclasses.fields(config_cls):
                v = kwargs.pop(f.name)
                config_kwargs[f.name] = tuple(x.strip() for x in v.split(",") if x.strip()) if f.name in tuples else v
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


from .generate import GenerateConfig  # noqa: E402
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
    from .generate import generate as run_generate

    out = run_generate(config)
    typer.echo(f"run written to {out}")


@app.command()
@_config_command(PretrainConfig, [_bool_param("resume", "Continue from OUT.train_state.")])
def pretrain(config: PretrainConfig, resume: bool = False):
    """Pretrain the tiny LM from a corpus directory and the bundled datasets' training splits."""
    from .pretrain import pretrain as run_pretrain

    typer.echo(f"model written to {run_pretrain(config, resume=resume)}")


from .demo import DemoConfig  # noqa: E402


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
