"""`synthsteer filter`: the clean-up users do before training on synthetic data.

Drops records that are too short, exact duplicates of an earlier record, copies of a reference
set (decontamination against test data, or against the training data), or, for labelled data,
records whose label a classifier trained on real labelled data does not predict. Kept records are written
unchanged, provenance included, to a new run directory whose manifest says what was dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ._version import __version__
from .artifacts import Claim
from .data import DataSpec, load_records
from .errors import SynthsteerError
from .logs import console_settings
from .metrics import copy_scores, n_words, normalize_text, record_label
from .options import FeaturizerOptions, LogOptions, TextOptions, option
from .runs import RunDir, checked_records, read_manifest


@dataclass(frozen=True)
class FilterConfig(TextOptions, FeaturizerOptions, LogOptions):
    """run: the run directory to filter (the command's positional argument: every field has a
        default, so it may follow the groups' fields); out: the new run directory.
    dedup: drop records whose normalised text repeats an earlier record's.
    decontaminate: drop records that copy this data source (exact, near-duplicate at
        `near_threshold`, or sharing a `ngram`-word run).
    min_length: drop records with fewer words.
    field, template (TextOptions): the text of --decontaminate's and --label-consistent's rows.
    encoder, device (FeaturizerOptions): the featurizer of --label-consistent."""

    run: str = option("", "Run directory to filter.")
    out: str = option("runs/filtered", "Output directory (a new run).")
    dedup: bool = option(False, "Drop records whose normalised text repeats an earlier record.")
    dedup_on: str | None = option(None, "With --dedup: compare this field of the records (e.g. question, of records "
                                        "with several fields) instead of the whole text.", nonempty=True)
    decontaminate: str | None = option(None, "Drop records copying this data source (exact, near-duplicate or a "
                                             "13-word run).")
    min_length: int = option(0, "Drop records with fewer words.", ge=0)
    near_threshold: float = option(0.8, "Character-5-gram Jaccard at which a record counts as a near copy.", gt=0, le=1)
    ngram: int = option(13, "Length in words of a verbatim run that counts as a copy.", count=True)
    label_consistent: str | None = option(None, "Drop records whose --label-field a classifier trained on this "
                                                "labelled real data (text by --field/--template) does not predict.",
                                          nonempty=True)
    label_field: str | None = option(None, "The label of the records and of --label-consistent's rows.")

    def __post_init__(self):
        super().__post_init__()
        if self.dedup_on and not self.dedup:
            raise SynthsteerError("--dedup-on needs --dedup")
        if self.label_consistent and not self.label_field:
            raise SynthsteerError("--label-consistent needs --label-field (the label of the records and real rows)")


@console_settings
def filter_run(config: FilterConfig) -> dict:
    """Write the kept records of `config.run` to `config.out`; returns counts of what was dropped."""
    if not config.run:
        raise SynthsteerError("filter needs the run directory to filter")
    if config.label_consistent:
        from .lm import encoder_device

        encoder_device(config.device)  # --device cuda on a machine without one: refused before any work
    inputs = (config.run, config.decontaminate, config.label_consistent)
    Claim(config.out, "run", inputs=inputs, verb="add records to")  # refused now, not after the work
    records = checked_records(config.run)
    dropped = {"too_short": 0, "duplicate": 0, "contaminated": 0}
    keep = []
    for r in records:
        if n_words(r["text"]) < config.min_length:
            dropped["too_short"] += 1
        else:
            keep.append(r)
    if config.dedup:
        seen, unique = set(), []
        for r in keep:
            value = r["text"] if config.dedup_on is None else r.get(config.dedup_on)
            if not isinstance(value, str):
                raise SynthsteerError(f"--dedup-on {config.dedup_on}: record {r['id']} has no such text field; its "
                                      f"fields: {', '.join(k for k in r if k != 'provenance')}")
            key = normalize_text(value)
            if key in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(key)
                unique.append(r)
        keep = unique
    if config.decontaminate:
        ref = [x.text for x in load_records(DataSpec.of(config, source=config.decontaminate))]
        scores = copy_scores([r["text"] for r in keep], ref, near_threshold=config.near_threshold, ngram=config.ngram)
        clean = [r for r, c in zip(keep, scores)
                 if not (c["exact"] or c["jaccard"] >= config.near_threshold or c["verbatim"])]
        dropped["contaminated"] = len(keep) - len(clean)
        keep = clean
    if config.label_consistent:
        keep, dropped["label_inconsistent"] = _label_consistent(keep, config)
    source = read_manifest(Path(config.run))
    settings = {**source["settings"], "filter": asdict(config) | {"out": None}}
    run = RunDir(config.out, settings, info={"filtered_from": str(config.run), "synthsteer_version": __version__},
                 inputs=inputs)
    run.append(keep)
    summary = {"input": len(records), "kept": len(keep), **dropped}
    run.finish(filter_summary=summary)
    run.close()
    return summary


def _label_consistent(records: list[dict], config: FilterConfig) -> tuple[list[dict], int]:
    """The records whose label the judge (trained on the labelled real data) agrees with."""
    from .encoders import encode_cached, load_encoder
    from .lm import encoder_device
    from .metrics import label_classifier

    field = config.label_field
    real = load_records(DataSpec.of(config, source=config.label_consistent))
    if any(field not in r.meta for r in real):
        raise SynthsteerError(f"--label-consistent {config.label_consistent}: rows have no field {field!r}")
    labels = [record_label(r, field) for r in records]
    if any(lab is None for lab in labels):
        raise SynthsteerError(f"{config.run}: records carry no {field!r} (generate with --label-field {field})")
    encoder = load_encoder(config.encoder, device=encoder_device(config.device))
    judge = label_classifier(encode_cached(encoder, [r.text for r in real]).numpy(), [r.meta[field] for r in real])
    if judge is None:
        raise SynthsteerError(f"--label-consistent {config.label_consistent}: the real rows have one label only")
    pred = judge.predict(encode_cached(encoder, [r["text"] for r in records]).numpy()) if records else []
    keep = [r for r, p, lab in zip(records, pred, labels) if str(p) == str(lab)]
    return keep, len(records) - len(keep)
