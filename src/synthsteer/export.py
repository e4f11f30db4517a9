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
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .artifacts import check_out, read_json
from .errors import SynthsteerError
from .logs import console_settings
from .options import LogOptions, option

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
    name, sep, path = spec.partition("=")
    return (name, Path(path)) if sep and name and "/" not in name else (Path(spec).name, Path(spec))


def flat_records(runs: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Rows of every run, with flattened provenance, and the runs' manifests (with their names)."""
    from .runs import checked_records

    rows, manifests = [], []
    for spec in runs:
        name, path = _named(spec)
        if not (path / "manifest.json").exists():
            raise SynthsteerError(f"{spec}: not a synthsteer run directory (no manifest.json)")
        manifest = read_json(path / "manifest.json")
        settings = manifest["settings"]
        manifests.append({"name": name, "path": str(path), **manifest})
        for r in checked_records(path):
            row = {k: v for k, v in r.items() if k != "provenance"}
            row.update(run=name, method=settings["method"], model=settings["lm"].get("name"),
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


def dataset_card(manifests: list[dict], n_rows: dict[str, int], split: str, report: dict | None):
    """A `huggingface_hub.DatasetCard` from the runs' manifests (and an eval report)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from .data import BUILTIN

    licenses, sources = set(), set()
    for m in manifests:
        data = m["settings"].get("data") or (m.get("config") or {}).get("data")
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
        lines.append(f"| {m['name']} | {s['method']} | {s['lm'].get('name')} | {n_rows.get(m['name'], 0)} | "
                     f"{s.get('seed')} | `{m['settings_hash']}` |")
    lines += ["", f"Licence of the source data: {', '.join(sorted(licenses)) or 'unknown'}. Synthetic records "
              "derived from it may carry its terms.", ""]
    if report:
        lines += ["## Evaluation (`synthsteer eval`)", "", f"Against {report['real']['source']} "
                  f"({report['real']['n']} texts).", "", "| set | MAUVE | distinct-2 |", "|---|---|---|"]
        for name, metrics in report["metrics"].items():
            mauve = metrics.get("mauve", {})
            lines.append(f"| {name} | {mauve.get('mean', float('nan')):.3f} ± {mauve.get('std', 0):.3f} | "
                         f"{metrics.get('distinct_2', float('nan')):.3f} |")
        lines.append("")
    lines += ["## Settings", ""]
    for m in manifests:
        lines += [f"### {m['name']}", "", "```json", json.dumps(m["settings"], indent=2, sort_keys=True), "```", ""]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _write_folder(folder: Path, dataset, card, split: str) -> None:
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    card.save(str(folder / "README.md"))


@console_settings
def export_runs(config: ExportConfig) -> str:
    """Write the runs' records where `config.to` says; returns where they went."""
    from datasets import Dataset

    rows, manifests = flat_records(config.runs)
    report = None
    if config.report:
        path = Path(config.report) / "report.json"
        if not path.exists():
            raise SynthsteerError(f"--report {config.report}: no report.json (an output directory of synthsteer eval)")
        report = read_json(path)
    n_rows = {m["name"]: sum(r["run"] == m["name"] for r in rows) for m in manifests}
    dataset = Dataset.from_list(rows)
    card = dataset_card(manifests, n_rows, config.split, report)
    if config.format == "hub":
        repo = config.to.removeprefix("hub:")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise SynthsteerError(f"--to {config.to}: use hub:ORG/NAME")
        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as tmp:
            _write_folder(Path(tmp) / "ds", dataset, card, config.split)
            api = HfApi()
            api.create_repo(repo, repo_type="dataset", private=config.private, exist_ok=True)
            api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(Path(tmp) / "ds"),
                              commit_message=f"synthsteer export of {', '.join(m['name'] for m in manifests)}")
        return f"https://huggingface.co/datasets/{repo}"
    target = Path(config.to)
    if config.format == "dir":
        check_out(target, "--to")
    elif target.is_dir():
        raise SynthsteerError(f"--to {target}: is a directory; a .{config.format} file goes there")
    else:
        check_out(target.parent, "--to")
        target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not config.overwrite:
        raise SynthsteerError(f"--to {target}: already exists; pass --overwrite to replace it")
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    if config.format == "dir":
        _write_folder(tmp, dataset, card, config.split)
        if target.exists():
            shutil.rmtree(target)
    elif config.format == "parquet":
        dataset.to_parquet(str(tmp))
    else:
        dataset.to_json(str(tmp), lines=True, force_ascii=False)
    os.replace(tmp, target)  # readers see the old export or the new one, never half of one
    return str(target)
