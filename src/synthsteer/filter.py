"""`synthsteer filter`: the clean-up users do before training on synthetic data.

Drops records that are too short, exact duplicates of an earlier record, or copies of a reference
set (decontamination against test data, or against the training data). Kept records are written
unchanged, provenance included, to a new run directory whose manifest says what was dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ._version import __version__
from .artifacts import read_json
from .data import DataSpec, load_records
from .errors import SynthsteerError
from .metrics import copy_scores
from .options import LogOptions, option
from .runs import RunDir, checked_records


@dataclass(frozen=True)
class FilterConfig(LogOptions):
    """run: the run directory to filter; out: the new run directory.
    dedup: drop records whose normalised text repeats an earlier record's.
    decontaminate: drop records that copy this data source (exact, near-duplicate at
        `near_threshold`, or sharing a `ngram`-word run).
    min_length: drop records with fewer words."""

    run: str = option("", "Run directory to filter.")
    out: str = option("runs/filtered", "Output directory (a new run).")
    dedup: bool = option(False, "Drop records whose normalised text repeats an earlier record.")
    decontaminate: str | None = option(None, "Drop records copying this data source (exact, near-duplicate or a "
                                             "13-word run).")
    field: str | None = option(None, "Row field holding the text of --decontaminate.")
    template: str | None = option(None, "Text template over the fields of --decontaminate (instead of --field).")
    min_length: int = option(0, "Drop records with fewer words.", ge=0)
    near_threshold: float = option(0.8, "Character-5-gram Jaccard at which a record counts as a near copy.", gt=0, le=1)
    ngram: int = option(13, "Length in words of a verbatim run that counts as a copy.", count=True)


def filter_run(config: FilterConfig) -> dict:
    """Write the kept records of `config.run` to `config.out`; returns counts of what was dropped."""
    if not config.run:
        raise SynthsteerError("filter needs the run directory to filter")
    if Path(config.out).resolve() == Path(config.run).resolve():
        raise SynthsteerError("--out must differ from the run being filtered")
    records = checked_records(config.run)
    dropped = {"too_short": 0, "duplicate": 0, "contaminated": 0}
    keep = []
    for r in records:
        if len(r["text"].split()) < config.min_length:
            dropped["too_short"] += 1
        else:
            keep.append(r)
    if config.dedup:
        seen, unique = set(), []
        for r in keep:
            key = " ".join(r["text"].lower().split())
            if key in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(key)
                unique.append(r)
        keep = unique
    if config.decontaminate:
        ref = [x.text for x in load_records(DataSpec(config.decontaminate, field=config.field,
                                                     template=config.template))]
        scores = copy_scores([r["text"] for r in keep], ref, near_threshold=config.near_threshold, ngram=config.ngram)
        clean = [r for r, c in zip(keep, scores)
                 if not (c["exact"] or c["jaccard"] >= config.near_threshold or c["verbatim"])]
        dropped["contaminated"] = len(keep) - len(clean)
        keep = clean
    source = read_json(Path(config.run) / "manifest.json")
    settings = {**source["settings"], "filter": asdict(config) | {"out": None}}
    run = RunDir(config.out, settings, info={"filtered_from": str(config.run), "synthsteer_version": __version__})
    run.append(keep)
    summary = {"input": len(records), "kept": len(keep), **dropped}
    run.finish(filter_summary=summary)
    run.close()
    return summary
