"""`synthsteer export`: runs out of the run format, into the ecosystem's.

One or more run directories become one `datasets.Dataset`: a row per record with its provenance
flattened into `provenance.*` columns (the same columns for every run, empty where a method has no
such field), the run's name, method, LM and settings hash, and the settings themselves as JSON. The
dataset is written as a Hub-layout folder (`data/SPLIT-00000-of-00001.parquet` + a README.md dataset
card), a single parquet or JSON-lines file, or pushed to the Hub (`hub:ORG/NAME`) with
`huggingface_hub`. The card is generated from the manifests and, when given, the eval report.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import check_out
from .errors import SynthsteerError, first_line
from .logs import console_settings
from .options import LogOptions, option
from .runs import split_name

if TYPE_CHECKING:
    from .report import EvalReport

FORMATS = ("dir", "parquet", "jsonl", "hub")


@dataclass(frozen=True)
class ExportConfig(LogOptions):
    """What `synthsteer export` / `export()` writes.

    runs: run directories, optionally NAME=PATH (the name fills the `run` column; default the
        directory's name).
    to: DIR (a Hub-layout folder with a dataset card), FILE.parquet, FILE.jsonl or hub:ORG/NAME.
    """

    runs: tuple[str, ...] = option((), "A run directory, optionally NAME=PATH (repeat for several).")
    to: str = option("", "Where: DIR (parquet + README.md card, the Hub's layout), FILE.parquet, FILE.jsonl, or "
                         "hub:ORG/NAME (pushed with huggingface_hub).", nonempty=True)
    split: str = option("train", "Split name of the exported records.", nonempty=True)
    report: str | None = option(None, "An eval output directory (report.json): its metrics go into the card.",
                                nonempty=True)
    private: bool = option(False, "hub: create the dataset repository private.")
    overwrite: bool = option(False, "Replace an existing DIR or FILE.")

    def __post_init__(self):
        if isinstance(self.runs, str):
            object.__setattr__(self, "runs", (self.runs,))
        super().__post_init__()
        if not self.runs:
            raise SynthsteerError("export: give at least one run directory (RUN or NAME=RUN)")
        if not self.to:
            raise SynthsteerError("--to: say where to export (DIR, FILE.parquet, FILE.jsonl or hub:ORG/NAME)")

    @property
    def format(self) -> str:
        if self.to.startswith("hub:"):
            return "hub"
        return {".parquet": "parquet", ".jsonl": "jsonl"}.get(Path(self.to).suffix, "dir")


def _named(spec: str) -> tuple[str, Path]:
    """A `NAME=RUN` or `RUN` item: eval's rule (`runs.split_name`), with the run as a path."""
    name, path = split_name(spec)
    return name, Path(path)


def flat_records(runs: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Rows of every run, with flattened provenance, and the runs' manifests (with their names)."""
    from .runs import checked_records, read_manifest

    rows, manifests = [], []
    for spec in runs:
        name, path = _named(spec)
        manifest = read_manifest(path)
        settings = manifest["settings"]
        manifests.append({"name": name, "path": str(path), **manifest})
        for r in checked_records(path):
            row = {k: v for k, v in r.items() if k != "provenance"}
            row.update(run=name, method=settings.get("method"), model=(settings.get("lm") or {}).get("name"),
                       settings_hash=manifest["settings_hash"], settings=json.dumps(settings, sort_keys=True))
            for k, v in r.get("provenance", {}).items():
                if k not in ("method", "settings_hash"):
                    row[f"provenance.{k}"] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
            rows.append(row)
    if len({m["name"] for m in manifests}) != len(manifests):
        raise SynthsteerError(f"export: two runs share a name ({', '.join(m['name'] for m in manifests)}); "
                              "label them NAME=PATH")
    columns = sorted({k for row in rows for k in row}, key=lambda k: (k.startswith("provenance."), k))
    return [{k: row.get(k) for k in columns} for row in rows], manifests


def to_dataset(runs: tuple[str, ...] | str):
    """The records of `runs` as a `datasets.Dataset` (one row per record, provenance flattened)."""
    from datasets import Dataset

    rows, _ = flat_records((runs,) if isinstance(runs, str) else tuple(runs))
    return Dataset.from_list(rows)


def cell(x) -> str:
    """A markdown table cell: a run or LM name with `|` or a newline would break the card's tables."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def record_format_lines(manifests: list[dict]) -> list[str]:
    """The card's lines on records of several fields: each run's format, which fields were given (fed to
    the LM from a training example) and which generated, and the samples that did not parse."""
    from .records import RecordFormat

    lines = []
    for m in manifests:
        recorded = m["settings"].get("format")
        if recorded is None:
            continue
        fmt = RecordFormat.from_dict(recorded, f"{m['path']}/manifest.json")
        given = set(m["settings"].get("given") or ())
        fields = ", ".join(f"`{f}` ({'given' if f in given else 'generated'})" for f in fmt.fields)
        shown = f"template `{cell(json.dumps(fmt.template_text, ensure_ascii=False))}`" if fmt.kind == "template" \
            else "one JSON object"
        rejects = m.get("rejects", 0)
        why = ", ".join(f"{n} {cell(reason)}" for reason, n in (m.get("reject_reasons") or {}).items())
        lines += ["", f"Run {cell(m['name'])} holds records of several fields, one column each: {fields}; the "
                  f"`text` column is the whole record ({shown}). "
                  + (f"{rejects} samples did not parse into that format and are not rows ({why})."
                     if rejects else "Every sample parsed.")]
    return lines


def student_lines(manifests: list[dict], student) -> list[str]:
    """The card's lines on what the data teaches (`eval --student`): per exported run, the sentence on
    the training set of the student command that is this run (by path, else by name)."""
    if student is None:
        return []
    by_source = {str(Path(r.source).resolve()): r.set for r in student.rows if "+" not in r.source}
    names = {r.set for r in student.rows}
    said = []
    for m in manifests:
        name = by_source.get(str(Path(m["path"]).resolve())) or (m["name"] if m["name"] in names else None)
        sentence = student.sentence(name) if name else None
        if sentence:
            said.append(f"- Run {cell(m['name'])}: {cell(sentence)}")
    if not said:
        return []
    return ["## Does it teach? (`synthsteer student`)", "", *said, ""]


def dataset_card(manifests: list[dict], n_rows: dict[str, int], split: str, report: EvalReport | None):
    """A `huggingface_hub.DatasetCard` from the runs' manifests (and an eval report)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from .data import BUILTIN

    licenses, sources = set(), set()
    for m in manifests:
        config = m.get("config") if isinstance(m.get("config"), dict) else {}
        data = m["settings"].get("data") or config.get("data")
        source = data.get("source") if isinstance(data, dict) else data
        if source:
            sources.add(source)
            builtin = BUILTIN.get(source.removeprefix("builtin:").split("/")[0]) if source.startswith("builtin:") \
                else None
            licenses.add(builtin.license if builtin else "unknown: see the source data")
    total = sum(n_rows.values())
    size = next(label for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                           (10**6, "100K<n<1M"), (float("inf"), "n>1M")) if total < bound)
    data = DatasetCardData(
        task_categories=["text-generation"], tags=["synthetic", "synthsteer"], size_categories=[size],
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}]}])
    lines = ["# Synthetic data made with synthsteer\n",
             f"{total} records from {len(manifests)} run(s), generated by a frozen LM steered to look like "
             f"{', '.join(sorted(sources)) or 'no named dataset'}. Every row carries its provenance "
             "(`provenance.*` columns) and the settings that produced it (`settings`, JSON).\n",
             "| run | method | model | records | seed | settings hash |", "|---|---|---|---|---|---|"]
    for m in manifests:
        s = m["settings"]
        lines.append(f"| {cell(m['name'])} | {cell(s.get('method'))} | {cell((s.get('lm') or {}).get('name'))} | "
                     f"{n_rows.get(m['name'], 0)} | "
                     f"{s.get('seed')} | `{m['settings_hash']}` |")
    lines += record_format_lines(manifests)
    lines += ["", f"Licence of the source data: {', '.join(sorted(licenses)) or 'unknown'}. Synthetic records "
              "derived from it may carry its terms.", ""]
    if report:
        lines += ["## Evaluation (`synthsteer eval`)", "", f"Against {report.real.source} "
                  f"({report.real.n} texts).", "", "| set | MAUVE | distinct-2 |", "|---|---|---|"]
        nan = float("nan")
        for name, metrics in report.metrics.items():
            mauve = metrics.values.get("mauve") or {}
            mean, std, distinct = mauve.get("mean"), mauve.get("std"), metrics.values.get("distinct_2")
            lines.append(f"| {cell(name)} | {nan if mean is None else mean:.3f} ± {0 if std is None else std:.3f} | "
                         f"{nan if distinct is None else distinct:.3f} |")
        lines.append("")
        lines += student_lines(manifests, report.student)
    lines += ["## Settings", ""]
    for m in manifests:
        lines += [f"### {m['name']}", "", "```json", json.dumps(m["settings"], indent=2, sort_keys=True), "```", ""]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _write_folder(folder: Path, dataset, card, split: str) -> None:
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    card.save(str(folder / "README.md"))


SPLIT_NAME = re.compile(r"\w+(\.\w+)*")  # what `datasets` accepts as a split name: no path can hide in it
HUB_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")


def read_report(folder: str) -> EvalReport:
    """An eval output directory's report.json as the typed report, every field checked
    (`EvalReport.from_json`): damage is one line naming the file and the field."""
    from .artifacts import read_meta
    from .report import EvalReport

    where = f"--report {folder}"
    if not (Path(folder) / "report.json").is_file():
        raise SynthsteerError(f"{where}: no report.json (an output directory of synthsteer eval)")
    return EvalReport.from_json(read_meta(Path(folder) / "report.json", where), f"{where}: report.json")


def _check_target(config: ExportConfig) -> None:
    """Refuse, before anything is read or written, a split name that is not one or a hub name that is not one."""
    if not SPLIT_NAME.fullmatch(config.split):
        raise SynthsteerError(f"--split {config.split!r}: a split name is letters, digits and underscores (dots "
                              "between them), e.g. train; it becomes a file name under --to")
    if config.format == "hub":
        repo = config.to.removeprefix("hub:")
        parts = repo.split("/")
        if len(parts) != 2 or not all(HUB_NAME.fullmatch(p) for p in parts) or ".." in repo:
            raise SynthsteerError(f"--to {config.to}: use hub:ORG/NAME (letters, digits, '-', '_', '.'; at most 96 "
                                  "characters each)")


def _looks_exported(path: Path, fmt: str) -> bool:
    """Whether an existing file is a synthsteer export (a `settings_hash` column), which --overwrite may
    replace; any other file is the user's."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return "settings_hash" in pq.read_schema(path).names
        with open(path, "rb") as f:
            first = json.loads(f.readline() or b"{}")
        return isinstance(first, dict) and "settings_hash" in first
    except Exception:  # unreadable as an export: not one
        return False


def _hub_push(config: ExportConfig, dataset, card, manifests) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    repo = config.to.removeprefix("hub:")
    with tempfile.TemporaryDirectory() as tmp:
        _write_folder(Path(tmp) / "ds", dataset, card, config.split)
        api = HfApi()
        try:
            api.create_repo(repo, repo_type="dataset", private=config.private, exist_ok=True)
            api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(Path(tmp) / "ds"),
                              commit_message=f"synthsteer export of {', '.join(m['name'] for m in manifests)}")
        except (OfflineModeIsEnabled, HfHubHTTPError, OSError, ValueError) as e:
            first = first_line(e)
            raise SynthsteerError(f"--to {config.to}: the push failed ({first})") from None
    return f"https://huggingface.co/datasets/{repo}"


@console_settings
def export_runs(config: ExportConfig) -> str:
    """Write the runs' records where `config.to` says; returns where they went. A folder is a marked
    synthsteer directory (only such a one is ever replaced); a file is replaced only when it is an
    export itself; neither may be, contain or sit inside a run or report being exported."""
    from datasets import Dataset

    from .artifacts import Claim, check_disjoint, check_not_inside_ours, check_swap_room, remove_ours, scratch_dir, swap_in
    from .runs import read_manifest

    _check_target(config)
    paths = [_named(spec)[1] for spec in config.runs]
    for path in paths:
        read_manifest(path)  # a run, before anything else is looked at
    inputs = [*map(str, paths), config.report]
    target = Path(config.to)
    claim = None
    if config.format == "dir":
        claim = Claim(target, "export", flag="--to", inputs=inputs, verb="replace", legacy_ok=False)
        if claim.state == "ours" and not config.overwrite:
            raise SynthsteerError(f"--to {target}: already exists; pass --overwrite to replace it")
        check_swap_room(target, "export", "--to")
    elif config.format != "hub":
        if target.is_dir():
            raise SynthsteerError(f"--to {target}: is a directory; a .{config.format} file goes there")
        check_out(target.parent, "--to")
        check_disjoint(target, inputs, "--to")
        check_not_inside_ours(target, "--to")
        if target.exists() and not config.overwrite:
            raise SynthsteerError(f"--to {target}: already exists; pass --overwrite to replace it")
        if target.exists() and not _looks_exported(target, config.format):
            raise SynthsteerError(f"--to {target}: not an export synthsteer wrote (no settings_hash column); "
                                  "refusing to replace it")
    rows, manifests = flat_records(config.runs)
    report = read_report(config.report) if config.report else None
    n_rows = {m["name"]: sum(r["run"] == m["name"] for r in rows) for m in manifests}
    dataset = Dataset.from_list(rows)
    card = dataset_card(manifests, n_rows, config.split, report)
    if config.format == "hub":
        return _hub_push(config, dataset, card, manifests)
    if config.format == "dir":
        with claim:  # --to locked from here: a second export to it is refused, not swapped over this one
            tmp = scratch_dir(target, "export", "--to")
            try:
                _write_folder(tmp, dataset, card, config.split)
                swap_in(target, tmp, "export")
            except BaseException:
                remove_ours(tmp, "export", "new")
                raise
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")  # per process: two exports never share one
    try:
        if config.format == "parquet":
            dataset.to_parquet(str(tmp))
        else:
            dataset.to_json(str(tmp), lines=True, force_ascii=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)
