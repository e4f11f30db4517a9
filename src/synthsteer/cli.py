"""The `synthsteer` command line.

Each command's flags are generated from the same frozen config dataclass the Python API takes
(`FitConfig`, `GenerateConfig`, ...), so the two never drift apart. `--config run.yaml` supplies
values for any flag; flags given on the command line win. User errors print one line and exit 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import SynthsteerError
from .options import flag

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Steer a frozen LLM to generate synthetic data that looks like a target dataset.")
_state = {"debug": False}




def _help(f: dataclasses.Field) -> str:
    """A field's help, from its option metadata, with its choices."""
    text = f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    return f"{text} One of: {', '.join(map(str, choices))}." if choices else text


def _default(f: dataclasses.Field):
    """A field's default for the flag; a field without one is a required flag (`...`)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...


def _load_yaml_defaults(ctx: typer.Context, param, value: Optional[Path]):
    """Eager --config: its keys become the defaults of the command's other flags.

    Each value is checked here, by the flag's own conversion: a bad one found later by click would be
    a usage box that does not name the file."""
    if value is None:
        return value
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        """Two values for one setting: YAML would keep the last without a word."""

    def mapping(loader, node):
        keys = [loader.construct_object(k) for k, _ in node.value]
        for i, k in enumerate(keys):
            if isinstance(k, str) and k in keys[:i]:
                raise SynthsteerError(f"--config {value}:{node.value[i][0].start_mark.line + 1}: {k!r} is set twice")
        return loader.construct_mapping(node)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        data = yaml.load(Path(value).read_text(encoding="utf-8"), Loader=UniqueKeys) or {}
    except FileNotFoundError:
        raise SynthsteerError(f"--config {value}: no such file") from None
    except IsADirectoryError:
        raise SynthsteerError(f"--config {value}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise SynthsteerError(f"--config {value}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                              f"{e.start})") from None
    except OSError as e:
        raise SynthsteerError(f"--config {value}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{value}:{mark.line + 1}" if mark else str(value)
        raise SynthsteerError(f"--config {where}: malformed YAML") from None
    if not isinstance(data, dict):
        raise SynthsteerError(f"--config {value}: expected a mapping of flag names to values")
    params = {p.name: p for p in ctx.command.params if p.name != "config_file"}
    defaults = {}
    for key, v in data.items():
        if not isinstance(key, str):  # `1: x`, `null: x`, and YAML 1.1's `on: x` (a bool)
            raise SynthsteerError(f"--config {value}: setting names are strings, not {key!r}")
        p = params.get(key.replace("-", "_"))
        if p is None:
            raise SynthsteerError(f"--config {value}: unknown setting {key!r}")
        many = getattr(p, "multiple", False) or p.nargs != 1
        if many and v is not None and not isinstance(v, (list, dict)):
            v = [v]  # `synthetic: run1` is one set, as `--synthetic run1` is
        inside = many and isinstance(v, list)
        if isinstance(v, bool) and not getattr(p, "is_bool_flag", True):  # `steps: true` is not 1
            raise SynthsteerError(f"--config {value}: {key}: expected a value, got {str(v).lower()}")
        for item in v if inside else [v]:
            if isinstance(item, (dict, list)):  # would reach the flag as the text "{'a': 1}"
                what = ("a mapping" if isinstance(item, dict) else "a list") + (" inside the list" if inside else "")
                raise SynthsteerError(f"--config {value}: {key}: expected {'values' if many else 'one value'}, "
                                      f"got {what}")
        runtime = getattr(p, "get_runtime_param", None)  # typer's conversion of the flag (absent in older typer)
        if runtime is not None and v is not None:
            try:
                runtime().coerce(v, param=p, ctx=ctx)
            except typer.BadParameter as e:
                raise SynthsteerError(f"--config {value}: {key}: {e.message}") from None
        defaults[p.name] = v
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
            default = _default(f)
            if typing.get_origin(ann) is tuple:  # repeatable flag; str and int items may also be comma-separated
                item = typing.get_args(ann)[0]
                tuples[f.name] = item
                ann, default = list[str] if item in (str, int) else list[item], list(map(str, default)) \
                    if item is int else list(default)
            names = [flag(f.name)] if ann is not bool else [f"{flag(f.name)}/--no-{f.name.replace('_', '-')}"]
            text = _help(f)
            opt = typer.Argument(help=text) if f.name in positional else typer.Option(*names, help=text)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=Annotated[ann, opt]))
        params += extra or []

        def command(**kwargs):
            config_kwargs = {}
            for f in dataclasses.fields(config_cls):
                v = kwargs.pop(f.name)
                if f.name in tuples:
                    split = tuples[f.name] in (str, int)
                    items = [x for part in v for x in (str(part).split(",") if split else [part])]
                    v = tuple(x.strip() if isinstance(x, str) else x for x in items if str(x).strip())
                    if tuples[f.name] is int:
                        v = tuple(_integer(flag(f.name), x) for x in v)
                config_kwargs[f.name] = v
            kwargs.pop("config_file", None)
            config = config_cls(**config_kwargs)
            if not hasattr(config, "quiet"):
                return fn(config, **kwargs)
            from .logs import console

            with console(config.quiet, config.log_level):  # the whole command, its closing lines included
                return fn(config, **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__doc__ = fn.__doc__
        command.__name__ = fn.__name__
        return command

    return wrap


def _integer(name: str, text) -> int:
    try:
        return int(text)
    except ValueError:
        raise SynthsteerError(f"{name} {text}: not an integer") from None


def _bool_param(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False,
                             annotation=Annotated[bool, typer.Option(flag(name), help=help)])


def _print_version(value: bool):
    if value:
        from ._version import __version__

        typer.echo(f"synthsteer {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
          version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                                callback=_print_version)] = False):
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


from .steer.config import ExpertConfig  # noqa: E402


@app.command()
@_config_command(ExpertConfig, [_bool_param("resume", "Continue an interrupted run from OUT/train_state."),
                                _bool_param("overwrite", "Replace an existing OUT.")])
def expert(config: ExpertConfig, resume: bool = False, overwrite: bool = False):
    """LoRA-fine-tune the base LM on the target data: STEER's domain expert."""
    from .steer.expert import train_expert

    typer.echo(f"expert written to {train_expert(config, resume=resume, overwrite=overwrite)}")


from .demo import DemoConfig  # noqa: E402
from .evaluation import EvalConfig  # noqa: E402
from .export import ExportConfig  # noqa: E402
from .filter import FilterConfig  # noqa: E402


@app.command("eval")
@_config_command(EvalConfig)
def eval_command(config: EvalConfig):
    """Score synthetic sets against real held-out data; write report.json and report.html."""
    from .evaluation import evaluate
    from .report import print_table

    report = evaluate(config)
    print_table(report)
    typer.echo(f"report written to {Path(config.out) / 'report.html'}")


@app.command("filter")
@_config_command(FilterConfig, positional=("run",))
def filter_command(config: FilterConfig):
    """Drop short, duplicate, contaminated and label-inconsistent records of a run into a new run directory."""
    from .filter import filter_run

    s = filter_run(config)
    typer.echo(f"kept {s['kept']} of {s['input']} records (too short {s['too_short']}, duplicates {s['duplicate']}, "
               f"contaminated {s['contaminated']}"
               + (f", label-inconsistent {s['label_inconsistent']}" if "label_inconsistent" in s else "")
               + f") in {config.out}")


@app.command("export")
@_config_command(ExportConfig, positional=("runs",))
def export_command(config: ExportConfig):
    """Export runs as one dataset: a Hub-layout folder with a dataset card, parquet, JSON lines, or hub:ORG/NAME."""
    from .export import export_runs

    where = export_runs(config)
    typer.echo(f"exported {', '.join(config.runs)} to {where}")


from .student.config import StudentConfig  # noqa: E402


@app.command()
@_config_command(StudentConfig, [_bool_param("overwrite", "Retrain students whose directory holds a run with other "
                                                          "settings.")])
def student(config: StudentConfig, overwrite: bool = False):
    """Does the data teach? Fine-tune a small LM on each training set; score it on real held-out records."""
    from .student.report import print_results
    from .student.run import run_students

    results = run_students(config, overwrite=overwrite)
    if results is not None:  # rank 0 under torchrun
        print_results(results)
        typer.echo(f"results written to {Path(config.out) / 'results.html'}")


from .stamp import StampConfig  # noqa: E402


@app.command()
@_config_command(StampConfig, positional=("path",))
def stamp(config: StampConfig):
    """Vouch for a prompt, expert or run written by an older synthsteer: add its marker and missing hashes."""
    from .stamp import stamp as run_stamp

    added = run_stamp(config)
    typer.echo(f"stamped {config.path}: added {', '.join(added)}" if added else f"{config.path}: nothing to stamp")


@app.command()
@_config_command(DemoConfig)
def demo(config: DemoConfig):
    """Fit an mc soft prompt on GSM8K questions with `tiny`, generate, and score against held-out data."""
    from .demo import run_demo

    run_demo(config)


DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
               errno.EROFS: "the file system is read-only"}


def disk_errno(e: BaseException) -> int | None:
    """The errno of a full or read-only disk behind `e`: an OSError's, or the "(os error 28)" that
    safetensors' own error type (used by every weight save, peft's too) carries in its message."""
    if isinstance(e, OSError):
        return e.errno if e.errno in DISK_ERRORS else None
    import re

    m = re.search(r"\(os error (\d+)\)", str(e))
    return int(m.group(1)) if m and int(m.group(1)) in DISK_ERRORS else None


def main(argv: list[str] | None = None) -> None:
    run(app, argv)


def run(typer_app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a command line built here (also tools/pretrain_tiny.py's): user errors are one line, exit 2."""
    try:  # recent typer vendors its own copy of click, with Abort (Ctrl-C) in typer.exceptions
        from typer._click import exceptions as cx
        from typer.exceptions import Abort
    except ImportError:
        from click import exceptions as cx
        from click.exceptions import Abort

    try:
        code = typer_app(args=argv, standalone_mode=False)
    except cx.NoArgsIsHelpError as e:
        print(e.ctx.get_help())
        sys.exit(0)
    except cx.UsageError as e:  # a flag click could not parse (`--n 1e3`, an unknown flag): one line too
        print(f"error: {e.format_message().strip().splitlines()[0]} (--help lists the flags)", file=sys.stderr)
        sys.exit(2)
    except cx.ClickException as e:
        print(f"error: {e.format_message().strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(e.exit_code or 2)
    except Abort:  # click's name for Ctrl-C
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except SynthsteerError as e:
        if _state["debug"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        code = disk_errno(e)
        if _state["debug"] or code is None:
            raise
        # atomic writes (a temporary file renamed into place) mean the previous state is still whole
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{DISK_ERRORS[code]}; nothing was half-written, the previous state is kept",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode did: callers see SystemExit


if __name__ == "__main__":
    main()
