"""`synthsteer eval`: compare one or several synthetic sets with real held-out data.

Every set is featurized once by the (cached) encoder; the real data is split into two disjoint
halves whose comparison ("real vs real") is the ceiling each synthetic set is measured against.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ._version import __version__
from .data import DataSpec, load_records, template_fields
from .errors import SynthsteerError
from .logs import console_settings, log, log_file
from .metrics import FIELD_METRICS, MIN_SAMPLES, Labelled, SetInputs, compute_metrics, label_classifier, label_values, record_label
from .options import FeaturizerOptions, LogOptions, TextOptions, option, require
from .report import EvalReport, Examples, Neighbour, SetInfo, SetMetrics, Timings, write_report
from .runs import checked_records, split_name
from .student.results import StudentResults

REAL_VS_REAL = "real vs real"


@dataclass(frozen=True)
class EvalConfig(TextOptions, FeaturizerOptions, LogOptions):
    """What `synthsteer eval` / `evaluate()` compares and how.

    real: held-out real data (any data source).
    synthetic: synthetic sets, each a run directory or a data source, optionally labelled
        `NAME=PATH`; the label is the set's name in the report.
    train: the data the generator learned from, for the memorization checks.
    label_field: a label column: adds train-on-synthetic/test-on-real classification.
    field, template (TextOptions): how the real, training and data-file rows become texts.
    encoder, device (FeaturizerOptions): the featurizer of every set.
    max_samples: use at most this many samples per set (seeded subsample); 0 = all.
    """

    real: str | None = option(None, "Real held-out data to compare with (any data source; required).", nonempty=True)
    synthetic: tuple[str, ...] = option((), "A synthetic set: a run directory or data source, optionally NAME=PATH "
                                            "(repeat for several).")
    out: str = option("runs/eval", "Output directory (report.json, report.html).")
    train: str | None = option(None, "The data the generator learned from (enables memorization checks).")
    label_field: str | None = option(None, "Label column: adds train-on-synthetic/test-on-real classification.")
    mauve_seeds: tuple[int, ...] = option((0, 1, 2), "k-means seeds for MAUVE (repeat; at least 3 recommended).")
    max_samples: int = option(0, "Use at most this many samples per set (seeded subsample; 0 = all).", ge=0)
    knn_k: int = option(3, "k of the k-NN precision/recall balls.", count=True)
    seed: int = option(0, "Seed of subsampling and the classifiers (0 .. 2**32-1: scikit-learn's bound).", ge=0,
                       le=2**32 - 1)
    student: str | None = option(None, "A `synthsteer student` output directory: its table (what a small LM "
                                       "trained on each set reaches on real held-out records) joins the report.",
                                 nonempty=True)

    def __post_init__(self):
        if isinstance(self.synthetic, str):  # one set given as a string, not a tuple of its characters
            object.__setattr__(self, "synthetic", (self.synthetic,))
        super().__post_init__()
        for s in self.mauve_seeds:
            if not 0 <= s < 2**32:  # k-means (scikit-learn) takes 32-bit seeds
                raise SynthsteerError(f"--mauve-seeds {s}: must be in [0, 2**32-1]")
        require(self, "real", "the real held-out data to compare with (a data file, datasets directory, hub "
                              "dataset or builtin:NAME/SPLIT)")


@dataclass(frozen=True)
class TextSet:
    """A set as it is scored (evaluation's own: the report keeps its `SetInfo`)."""

    name: str
    source: str
    texts: list[str]
    labels: list | None = None
    settings: dict = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)  # a run's generated fields; the real data's rows


def _with_recorded_text(config: EvalConfig) -> EvalConfig:
    """Without --field/--template, make the real texts the way the synthetic runs' training examples were
    made (a run records its data's field or template), when the real data has those fields."""
    if config.field or config.template:
        return config
    from .artifacts import read_json
    from .data import load_rows

    for item in config.synthetic:
        manifest = Path(split_name(item)[1]) / "manifest.json"
        try:
            settings = read_json(manifest).get("settings", {}) if manifest.is_file() else {}
        except (OSError, ValueError, AttributeError):
            continue  # a damaged manifest: load_set names what is wrong with it
        data = settings.get("data") if isinstance(settings, dict) else None
        if not isinstance(data, dict) or not (isinstance(data.get("field"), str) or isinstance(data.get("template"), str)):
            continue
        needed = template_fields(data["template"]) if data.get("template") else [data["field"]]
        row = load_rows(config.real, limit=1)[0]
        if all(f in row for f in needed):
            log.info(f"--real {config.real}: texts made like the training data of {manifest.parent} "
                     f"({'template ' + repr(data['template']) if data.get('template') else 'field ' + repr(data['field'])})")
            return replace(config, field=data.get("field") if not data.get("template") else None,
                           template=data.get("template"))
        return config
    return config


def load_set(item: str, config: EvalConfig, label_field: str | None) -> TextSet:
    """A synthetic set from a run directory (its manifest settings come along) or a data source."""
    name, src = split_name(item)
    path = Path(src)
    if (path / "manifest.json").exists():
        from .artifacts import read_json

        records = checked_records(path)
        if not records:
            raise SynthsteerError(f"--synthetic {src}: the run holds no records")
        labels = None
        if label_field:
            labels = [record_label(r, label_field) for r in records]
            if all(lab is None for lab in labels):
                labels = None  # an unlabelled baseline: scored like the rest, without TSTR
            elif any(lab is None for lab in labels):
                raise SynthsteerError(f"--synthetic {src}: some records carry no {label_field!r}")
            else:
                labels = label_values(labels, f"--synthetic {src}: --label-field {label_field!r}")
        settings = read_json(path / "manifest.json").get("settings", {})
        return TextSet(name, src, [r["text"] for r in records], labels, settings, generated_fields(records, settings))
    records = load_records(DataSpec.of(config, source=src))
    labels = None
    if label_field:
        missing = [r for r in records if label_field not in r.meta]
        if missing and len(missing) < len(records):
            raise SynthsteerError(f"--synthetic {src}: some records have no field {label_field!r}")
        labels = None if missing else label_values([r.meta[label_field] for r in records],
                                                   f"--synthetic {src}: --label-field {label_field!r}")
    return TextSet(name, src, [r.text for r in records], labels)


def _subsample(s: TextSet, n: int, seed: int) -> TextSet:
    if not n or len(s.texts) <= n:
        return s
    idx = np.sort(np.random.default_rng(seed).choice(len(s.texts), n, replace=False))
    return TextSet(s.name, s.source, [s.texts[i] for i in idx],
                   [s.labels[i] for i in idx] if s.labels is not None else None, s.settings,
                   {k: [v[i] for i in idx] for k, v in s.fields.items()})


def generated_fields(records: list[dict], settings: dict) -> dict[str, list[str]]:
    """The values of each field a run's records generated (not the given ones), by field."""
    recorded = settings.get("format") if isinstance(settings, dict) else None
    if not isinstance(recorded, dict):
        return {}
    from .records import RecordFormat

    given = set(settings.get("given") or ())
    fields = [f for f in RecordFormat.from_dict(recorded, "the run's manifest").fields if f not in given]
    return {f: [str(r.get(f, "")) for r in records] for f in fields}


def _label_checks(config: EvalConfig, real: TextSet, sets: list[TextSet]) -> None:
    """What the labels of the scored sets allow: one type across sets (refused otherwise: 1 and "1" are
    different classes to a classifier), and a warning for a single class or for labels the real
    data never has (the numbers are computed, but say little)."""
    field = config.label_field
    real_classes = set(real.labels)
    kind = type(real.labels[0]).__name__
    if len(real_classes) < 2:
        log.warning(f"--real {config.real}: --label-field {field!r} has a single class ({real.labels[0]!r}); "
                    "no label agreement, and TSTR can only count how often that class is predicted")
    for s in sets:
        if s.labels is None:
            continue
        if type(s.labels[0]).__name__ != kind:
            raise SynthsteerError(f"--synthetic {s.source}: --label-field {field!r}: its labels are "
                                  f"{type(s.labels[0]).__name__} ({s.labels[0]!r}) but the real data's are {kind} "
                                  f"({real.labels[0]!r}); write them the same way")
        classes = set(s.labels)
        if len(classes) < 2:
            log.warning(f"--synthetic {s.source}: --label-field {field!r} has a single class ({s.labels[0]!r}); "
                        "no TSTR for this set")
        unseen = sorted(classes - real_classes, key=repr)
        if unseen:
            log.warning(f"--synthetic {s.source}: labels {', '.join(map(repr, unseen[:5]))}"
                        f"{' ...' if len(unseen) > 5 else ''} never occur in the real data's {field!r}; "
                        "TSTR and label agreement count them as wrong")


def varying_settings(sets: list[TextSet]) -> dict[str, list]:
    """Flattened manifest settings that differ between synthetic sets (e.g. gamma, parameterization)."""

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    flats = [flat(s.settings) for s in sets]
    keys = sorted({k for f in flats for k in f})
    skip = ("hash", "sha256", "fingerprint", "key")
    return {k.split(".")[-1]: [f.get(k) for f in flats] for k in keys
            if len({repr(f.get(k)) for f in flats}) > 1 and not any(s in k for s in skip)}


def verdict(metrics: dict, ceiling: dict) -> str:
    """One line on how far a set is from the real data, against the real-vs-real ceiling (both the
    metric table's values of a set)."""
    m, c = metrics["mauve"]["mean"], ceiling["mauve"]["mean"]
    auroc = metrics.get("auroc")
    share = m / c if c > 0 else 0.0
    where = ("close to the real data" if share >= 0.8 else "partly like the real data" if share >= 0.4
             else "far from the real data")
    line = f"{where}: MAUVE {m:.2f} vs ceiling {c:.2f}"
    if auroc is not None:
        how = ("perfectly" if auroc >= 0.98 else "easily" if auroc >= 0.85 else "often" if auroc >= 0.7
               else "barely")
        line += f"; a classifier tells them apart {how} (AUROC {auroc:.2f})"
    return line


def examples(texts: list[str], feats: np.ndarray, real_texts: list[str], real_feats: np.ndarray, *, k: int = 10,
             neighbours: int = 3, seed: int = 0) -> Examples:
    """k random samples beside k random real texts, and the closest real text to a few samples (cosine
    of the featurizer's normalised embeddings): what a reader should look at before the numbers."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(texts), size=min(k, len(texts)), replace=False)
    real_pick = rng.choice(len(real_texts), size=min(k, len(real_texts)), replace=False)
    sims = feats[pick[:neighbours]] @ real_feats.T
    closest = sims.argmax(1)
    return Examples(tuple(texts[i] for i in pick), tuple(real_texts[i] for i in real_pick),
                    tuple(Neighbour(texts[i], real_texts[j], round(float(sims[n, j]), 3))
                          for n, (i, j) in enumerate(zip(pick[:neighbours], closest))))


@console_settings
def evaluate(config: EvalConfig, *, progress: bool = True) -> EvalReport:
    """Score every synthetic set of `config` against the real data; write report.json and
    report.html to `config.out` and return the report."""
    if not config.synthetic:
        raise SynthsteerError("--synthetic: give at least one synthetic set (a run directory or a data file)")
    if len(config.mauve_seeds) < 1:
        raise SynthsteerError("--mauve-seeds: give at least one seed")
    if 0 < config.max_samples < 2 * MIN_SAMPLES:
        raise SynthsteerError(f"--max-samples {config.max_samples}: at least {2 * MIN_SAMPLES} samples per set are "
                              f"needed (the real data is split in two halves for the real-vs-real ceiling, and the "
                              f"authenticity classifier's {MIN_SAMPLES}-fold cross-validation needs {MIN_SAMPLES} "
                              "per side)")
    from .artifacts import Claim
    from .lm import encoder_device

    encoder_device(config.device)  # --device cuda on a machine without one: refused before any work
    student = StudentResults.read(config.student) if config.student else None
    # the report goes into a directory of its own: never into a run, a prompt or the data it reads
    claim = Claim(config.out, "eval", inputs=(config.real, config.train, config.student,
                                                *(split_name(s)[1] for s in config.synthetic)),
                  verb="write a report into")
    t0 = time.time()
    config = _with_recorded_text(config)
    real_recs = load_records(DataSpec.of(config, source=config.real))
    if config.label_field and any(config.label_field not in r.meta for r in real_recs):
        raise SynthsteerError(f"--real {config.real}: no field {config.label_field!r}; "
                              f"fields: {', '.join(real_recs[0].meta)}")
    real = TextSet("real", config.real, [r.text for r in real_recs],
                   label_values([r.meta[config.label_field] for r in real_recs],
                                f"--real {config.real}: --label-field {config.label_field!r}")
                   if config.label_field else None,
                   fields={k: [str(r.meta[k]) for r in real_recs] for k in real_recs[0].meta
                           if all(isinstance(r.meta.get(k), str) for r in real_recs)})
    real = _subsample(real, config.max_samples, config.seed)
    sets = [_subsample(load_set(s, config, config.label_field), config.max_samples, config.seed)
            for s in config.synthetic]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise SynthsteerError(f"--synthetic: two sets share a name ({', '.join(names)}); label them NAME=PATH")
    # sets too small by themselves (a 2-record run, 3 real rows); --max-samples was checked above
    if len(real.texts) < 2 * MIN_SAMPLES:
        raise SynthsteerError(f"--real {config.real}: {len(real.texts)} sample(s); at least {2 * MIN_SAMPLES} are "
                              f"needed (two halves of {MIN_SAMPLES} for the real-vs-real ceiling)")
    for s in sets:
        if len(s.texts) < MIN_SAMPLES:
            raise SynthsteerError(f"--synthetic {s.source}: {len(s.texts)} sample(s); at least {MIN_SAMPLES} are "
                                  f"needed (the authenticity classifier's {MIN_SAMPLES}-fold cross-validation)")
    if config.label_field:
        _label_checks(config, real, sets)
    with claim, log_file(config.out):
        log.debug(f"eval: {len(sets)} synthetic set(s) against {config.real} ({len(real.texts)} texts)")
        return _score(config, real, sets, progress, t0, student)


def _score(config: EvalConfig, real: TextSet, sets: list[TextSet], progress: bool, t0: float,
           student: StudentResults | None = None) -> EvalReport:
    """The metrics of every set against `real`, written as report.json and report.html."""
    train_texts = [r.text for r in load_records(DataSpec.of(config, source=config.train))] if config.train else None

    from .encoders import encode_cached, load_encoder  # torch: only when evaluating, not for --help
    from .lm import encoder_device

    encoder = load_encoder(config.encoder, device=encoder_device(config.device))
    t_feat = time.time()
    real_feats = encode_cached(encoder, real.texts, progress=progress).numpy()
    feats = {s.name: encode_cached(encoder, s.texts, progress=progress).numpy() for s in sets}
    t_feat = time.time() - t_feat

    warnings_out = []
    for s in [real, *sets]:
        if len(s.texts) < 1000:
            warnings_out.append(f"{s.name}: {len(s.texts)} samples; MAUVE is biased below about 1,000 per side")
    # the ceiling: two disjoint halves of the real data compared like any synthetic set
    perm = np.random.default_rng(config.seed).permutation(len(real.texts))
    half_a, half_b = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])
    t_metrics = time.time()
    common = dict(seed=config.seed, mauve_seeds=config.mauve_seeds, knn_k=config.knn_k)
    test = train_on_real = judge = None
    if config.label_field:
        # every classifier is tested on the real half that train-on-real (the ceiling's TSTR) does not train on
        test = Labelled(real_feats[half_b], [real.labels[i] for i in half_b])
        train_on_real = Labelled(real_feats[half_a], [real.labels[i] for i in half_a])
        judge = label_classifier(real_feats, real.labels, seed=config.seed)
    inputs = {REAL_VS_REAL: SetInputs([real.texts[i] for i in half_b], real_feats[half_b],
                                      [real.texts[i] for i in half_a], real_feats[half_a],
                                      tstr_train=train_on_real, tstr_test=test, **common)}
    for s in sets:
        own = Labelled(feats[s.name], s.labels) if s.labels is not None else None  # an unlabelled set: no TSTR
        inputs[s.name] = SetInputs(s.texts, feats[s.name], real.texts, real_feats, train_texts=train_texts,
                                   labels=s.labels, tstr_train=own, tstr_test=test, judge=judge, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        values = {name: compute_metrics(x) for name, x in inputs.items()}
    t_metrics = time.time() - t_metrics
    ceiling = values[REAL_VS_REAL]
    results = {REAL_VS_REAL: SetMetrics(ceiling)}
    for s in sets:
        results[s.name] = SetMetrics(values[s.name], verdict(values[s.name], ceiling),
                                     examples(s.texts, feats[s.name], real.texts, real_feats, seed=config.seed))

    per_field = field_metrics(real, sets, encoder, common, progress)

    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("torch", "transformers", "sentence-transformers", "scikit-learn",
                                           "mauve-text", "numpy") if _installed(p)}
    report = EvalReport(
        real=SetInfo(config.real, len(real.texts)),
        sets={s.name: SetInfo(s.source, len(s.texts), s.settings) for s in sets},
        metrics=results, fields=per_field, featurizer=encoder.fingerprint, config=asdict(config),
        varying_settings=varying_settings(sets) if len(sets) > 1 else {}, warnings=tuple(warnings_out),
        seconds=Timings(round(t_feat, 2), round(t_metrics, 2), round(time.time() - t0, 2)),
        synthsteer_version=__version__, packages=versions, student=student)
    return write_report(report, Path(config.out), real, sets, real_feats, feats)


def field_metrics(real: TextSet, sets: list[TextSet], encoder, common: dict, progress: bool) -> dict:
    """Per generated field of records (a run with a record format), each set that generated it against
    the real data's same field: closeness, diversity and length (`FIELD_METRICS`), field by field."""
    from .encoders import encode_cached

    out: dict[str, dict[str, SetMetrics]] = {}
    for name in sorted({f for s in sets for f in s.fields}):
        if name not in real.fields:
            log.warning(f"--real {real.source}: has no text field {name!r}; the runs' {name!r} is not scored alone")
            continue
        real_texts = real.fields[name]
        real_feats = encode_cached(encoder, real_texts, progress=progress).numpy()
        out[name] = {}
        for s in sets:
            if name in s.fields:
                texts = s.fields[name]
                feats = encode_cached(encoder, texts, progress=progress).numpy()
                out[name][s.name] = SetMetrics(compute_metrics(SetInputs(texts, feats, real_texts, real_feats, **common),
                                                               FIELD_METRICS))
    return out


def _installed(pkg: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(pkg)
        return True
    except md.PackageNotFoundError:
        return False
