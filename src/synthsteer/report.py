"""The evaluation report: `report.json` (every number), a self-contained `report.html` (tables and
plots embedded as PNG data URIs, no network needed to view it) and a table in the terminal.

`EvalReport` is what `evaluate()` returns and what `export.read_report` reads back; report.json is
its `to_json()`, with the key names of the first reports, so that reports written by any version
read back through `EvalReport.from_json`.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as metrics_table
from .artifacts import need, write_json
from .errors import SynthsteerError
from .metrics import Metric, n_words
from .student.results import StudentResults

DASH = "–"  # a cell with nothing to show: not computed, or not computable


@dataclass(frozen=True)
class SetInfo:
    """A scored set: where it came from, how many samples were scored, and (a synthetic set) the
    settings its run's manifest records (empty for a data file; None for the real data)."""

    source: str
    n: int
    settings: dict | None = None


@dataclass(frozen=True)
class Neighbour:
    """A synthetic sample and the real text closest to it (cosine of normalised embeddings)."""

    synthetic: str
    real: str
    cosine: float


@dataclass(frozen=True)
class Examples:
    """What a reader should look at before the numbers: random samples beside random real texts, and
    the closest real text to a few samples."""

    synthetic: tuple[str, ...]
    real: tuple[str, ...]
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True)
class SetMetrics:
    """One set's scores. `values` holds the metric table's entries by key (`metrics.METRICS`: the
    table decides what there is, so it is a mapping, not fields); the real-vs-real ceiling has no
    verdict and no examples."""

    values: dict[str, Any]
    verdict: str | None = None
    examples: Examples | None = None


@dataclass(frozen=True)
class Timings:
    featurize: float
    metrics: float
    total: float


@dataclass(frozen=True)
class EvalReport:
    """An evaluation: the real data, the synthetic sets, and per set (the ceiling "real vs real"
    first) its metrics. `config` is the EvalConfig as recorded (a mapping: a report written by
    another version may carry other settings); `varying_settings` the manifest settings in which the
    sets differ, one value per set; `plots` the names of the report's plots."""

    real: SetInfo
    sets: dict[str, SetInfo]
    metrics: dict[str, SetMetrics]
    fields: dict[str, dict[str, SetMetrics]] = field(default_factory=dict)  # per generated field, per set
    featurizer: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    varying_settings: dict[str, list] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    seconds: Timings | None = None
    plots: tuple[str, ...] = ()
    synthsteer_version: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    student: StudentResults | None = None  # `eval --student DIR`: what students trained on the sets reach

    def to_json(self) -> dict:
        """report.json: the keys of every report so far."""
        def set_info(s: SetInfo) -> dict:
            return {"source": s.source, "n": s.n, **({} if s.settings is None else {"settings": s.settings})}

        def set_metrics(m: SetMetrics) -> dict:
            out = dict(m.values)
            if m.verdict is not None:
                out["verdict"] = m.verdict
            if m.examples is not None:
                ex = m.examples
                out["examples"] = {"synthetic": list(ex.synthetic), "real": list(ex.real),
                                   "neighbours": [{"synthetic": n.synthetic, "real": n.real, "cosine": n.cosine}
                                                  for n in ex.neighbours]}
            return out

        seconds = self.seconds
        return {
            "synthsteer_version": self.synthsteer_version, "packages": self.packages, "config": self.config,
            "featurizer": self.featurizer, "real": set_info(self.real),
            "sets": {k: set_info(s) for k, s in self.sets.items()}, "varying_settings": self.varying_settings,
            "metrics": {k: set_metrics(m) for k, m in self.metrics.items()},
            **({"fields": {f: {k: set_metrics(m) for k, m in sets.items()} for f, sets in self.fields.items()}}
               if self.fields else {}),
            "warnings": list(self.warnings),
            "seconds": None if seconds is None else {"featurize": seconds.featurize, "metrics": seconds.metrics,
                                                     "total": seconds.total},
            "plots": list(self.plots),
            **({"student": self.student.to_dict()} if self.student is not None else {}),
        }

    @classmethod
    def from_json(cls, d: dict, where: str = "report.json") -> EvalReport:
        """A report.json read back, each field checked: damage is one line naming `where` and the
        field. Only the real data and the metrics are required (the first reports had little more)."""
        real = _set_info(need(d, "real", dict, where), where, "real.", settings=False)
        sets = {name: _set_info(_object(s, where, f"sets.{name}"), where, f"sets.{name}.")
                for name, s in (need(d, "sets", dict, where, optional=True) or {}).items()}
        metrics = {name: _set_metrics(_object(m, where, f"metrics of {name!r}", quoted=False), where, f"metrics.{name}.")
                   for name, m in need(d, "metrics", dict, where).items()}
        fields = {f: {name: _set_metrics(_object(m, where, f"fields.{f}.{name}"), where, f"fields.{f}.{name}.")
                      for name, m in _object(sets_of, where, f"fields.{f}").items()}
                  for f, sets_of in (need(d, "fields", dict, where, optional=True) or {}).items()}
        varying = need(d, "varying_settings", dict, where, optional=True) or {}
        for key in varying:
            need(varying, key, list, where, prefix="varying_settings.")
        seconds = need(d, "seconds", dict, where, optional=True)
        if seconds is not None:
            seconds = Timings(*(need(seconds, k, (int, float), where, prefix="seconds.")
                                for k in ("featurize", "metrics", "total")))
        packages = need(d, "packages", dict, where, optional=True) or {}
        for key in packages:
            need(packages, key, str, where, prefix="packages.")
        return cls(real=real, sets=sets, metrics=metrics, fields=fields, featurizer=need(d, "featurizer", str, where, optional=True),
                   config=need(d, "config", dict, where, optional=True) or {}, varying_settings=varying,
                   warnings=_strings(d, "warnings", where), seconds=seconds, plots=_strings(d, "plots", where),
                   synthsteer_version=need(d, "synthsteer_version", str, where, optional=True), packages=packages,
                   student=StudentResults.from_dict(need(d, "student", dict, where), f"{where}: student")
                   if d.get("student") is not None else None)


def _object(value, where: str, what: str, quoted: bool = True) -> dict:
    if not isinstance(value, dict):
        raise SynthsteerError(f"{where}: {repr(what) if quoted else what} must be an object")
    return value


def _strings(d: dict, key: str, where: str, prefix: str = "") -> tuple[str, ...]:
    items = need(d, key, list, where, optional=True, prefix=prefix) or []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise SynthsteerError(f"{where}: {prefix}{key}[{i}] must be a string, not {type(item).__name__}")
    return tuple(items)


def _set_info(d: dict, where: str, prefix: str, settings: bool = True) -> SetInfo:
    return SetInfo(need(d, "source", str, where, prefix=prefix), need(d, "n", int, where, prefix=prefix, ge=0),
                   (need(d, "settings", dict, where, prefix=prefix, optional=True) or {}) if settings else None)


# report.json keys an older synthsteer wrote for a metric now kept under another key
RENAMED = {"unique_3gram_ratio": "distinct_3"}  # one number that earlier reports wrote under both keys


def _set_metrics(d: dict, where: str, prefix: str) -> SetMetrics:
    mauve = need(d, "mauve", dict, where, prefix=prefix, optional=True) or {}
    for key in ("mean", "std"):
        need(mauve, key, (int, float), where, prefix=prefix + "mauve.", optional=True)
    need(d, "distinct_2", (int, float), where, prefix=prefix, optional=True)
    verdict = need(d, "verdict", str, where, prefix=prefix, optional=True)
    ex = need(d, "examples", dict, where, prefix=prefix, optional=True)
    examples = None
    if ex is not None:
        at = prefix + "examples."
        neighbours = []
        for i, n in enumerate(need(ex, "neighbours", list, where, prefix=at, optional=True) or []):
            n = _object(n, where, f"{at}neighbours[{i}]")
            neighbours.append(Neighbour(need(n, "synthetic", str, where, prefix=f"{at}neighbours[{i}]."),
                                        need(n, "real", str, where, prefix=f"{at}neighbours[{i}]."),
                                        need(n, "cosine", (int, float), where, prefix=f"{at}neighbours[{i}].")))
        examples = Examples(_strings(ex, "synthetic", where, at), _strings(ex, "real", where, at), tuple(neighbours))
    values = {k: v for k, v in d.items() if k not in ("verdict", "examples")}
    for old, new in RENAMED.items():
        if old in values:
            value = values.pop(old)
            values.setdefault(new, value)
    return SetMetrics(values, verdict, examples)


def columns() -> list[Metric]:
    """The table's columns: the metric table's entries that have a title."""
    return [m for m in metrics_table.METRICS if m.title]


def cell(values: dict, column: Metric) -> str:
    """One set's value of one column, as the tables show it."""
    text = column.show(values.get(column.key))
    return DASH if text is None else text


def rows(report: EvalReport) -> list[tuple[str, list[str]]]:
    return [(name, [cell(m.values, c) for c in columns()]) for name, m in report.metrics.items()]


def field_tables(report: EvalReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per generated field: (field, set names, rows of metric title and one cell per set)."""
    cols = [c for c in columns() if c.key in metrics_table.FIELD_METRICS]
    out = []
    for name, sets in report.fields.items():
        body = [[f"{c.title} {c.better}".strip(), *(cell(m.values, c) for m in sets.values())] for c in cols]
        out.append((name, list(sets), body))
    return out


def headers() -> list[str]:
    return [f"{c.title} {c.better}".strip() for c in columns()]


def label(report: EvalReport, name: str) -> str:
    """A set's column title: its name and the settings in which the sets differ."""
    sets = list(report.sets)
    if name not in sets:
        return name
    shown = [f"{k}={v[sets.index(name)]}" for k, v in report.varying_settings.items() if k != "out"]
    return f"{name} ({', '.join(shown[:4])})" if shown else name


def transposed(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """Metrics as rows and sets as columns: many metrics, few sets, so it fits a terminal."""
    table = rows(report)
    names = [label(report, name) for name, _ in table]
    return names, [[h, *(cells[i] for _, cells in table)] for i, h in enumerate(headers())]


def print_table(report: EvalReport) -> None:
    from rich.console import Console
    from rich.table import Table

    names, body = transposed(report)
    table = Table(title=f"synthetic vs {report.real.source} (n={report.real.n})")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    for row in body:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for field_name, names, body in field_tables(report):
        part = Table(title=f"field {field_name!r} alone, vs the real data's")
        part.add_column("metric")
        for name in names:
            part.add_column(name, justify="right")
        for row in body:
            part.add_row(*row)
        console.print(part)
    for name, m in report.metrics.items():
        if m.verdict:
            console.print(f"{name}: {m.verdict}", markup=False, highlight=False)
    if report.student is not None:
        console.print(report.student.rich_table())
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plots(report: EvalReport, real, sets, real_feats: np.ndarray, feats: dict[str, np.ndarray]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    out = {}
    # 2-D projection: PCA fitted on the real data, every set projected into it
    pca = PCA(n_components=2, random_state=0).fit(real_feats)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.scatter(*pca.transform(real_feats).T, s=6, alpha=0.4, label="real", color="black")
    for s in sets:
        ax.scatter(*pca.transform(feats[s.name]).T, s=6, alpha=0.5, label=s.name)
    ax.set_title("embeddings, PCA of the real data")
    ax.legend(markerscale=3, fontsize=8)
    out["projection"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    lengths = {"real": [n_words(t) for t in real.texts], **{s.name: [n_words(t) for t in s.texts] for s in sets}}
    top = max(max(v) for v in lengths.values()) + 1
    bins = np.linspace(0, top, min(40, top) + 1)
    for name, v in lengths.items():
        ax.hist(v, bins=bins, histtype="step", density=True, label=name, linewidth=1.5)
    ax.set_xlabel("words per sample")
    ax.set_title("length distribution")
    ax.legend(fontsize=8)
    out["lengths"] = _png(fig)

    varying = report.varying_settings
    names = [s.name for s in sets]
    numeric = {k: v for k, v in varying.items() if all(isinstance(x, (int, float)) and x is not None for x in v)}
    metrics = {name: m.values for name, m in report.metrics.items()}
    if len(varying) == 1 or (len(numeric) == 1 and len(varying) <= 2):
        key = next(iter(numeric or varying))
        xs = varying[key]
        order = sorted(range(len(names)), key=lambda i: (str(type(xs[i])), xs[i]))
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for mkey, label in (("mauve", "MAUVE"), ("distinct_2", "distinct-2"), ("auroc", "AUROC"),
                            ("steer_diversity", "diversity")):
            ys = [metrics[names[i]][mkey]["mean"] if mkey == "mauve" else metrics[names[i]][mkey] for i in order]
            ax.plot([str(xs[i]) for i in order], ys, marker="o", label=label)
        ax.set_xlabel(key)
        ax.set_title(f"metrics over {key}")
        ax.legend(fontsize=8)
        out["sweep"] = _png(fig)
    elif len(numeric) == 2:
        (ka, va), (kb, vb) = numeric.items()
        xa, xb = sorted(set(va)), sorted(set(vb))
        grid = np.full((len(xb), len(xa)), np.nan)
        for i, n in enumerate(names):
            grid[xb.index(vb[i]), xa.index(va[i])] = metrics[n]["mauve"]["mean"]
        fig, ax = plt.subplots(figsize=(6.5, 5))
        im = ax.imshow(grid, origin="lower", cmap="viridis")
        ax.set_xticks(range(len(xa)), [str(x) for x in xa])
        ax.set_yticks(range(len(xb)), [str(x) for x in xb])
        ax.set_xlabel(ka)
        ax.set_ylabel(kb)
        for (r, c), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="white", fontsize=8)
        fig.colorbar(im, label="MAUVE")
        ax.set_title(f"MAUVE over {ka} x {kb}")
        out["sweep"] = _png(fig)
    return out


def render_html(report: EvalReport, images: dict[str, str]) -> str:
    esc = html.escape
    names, table = transposed(report)
    head = "".join(f"<th>{esc(h)}</th>" for h in ["metric", *names])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table)
    imgs = "".join(f'<figure><img id="plot-{k}" alt="{k}" src="{v}"><figcaption>{k}</figcaption></figure>'
                   for k, v in images.items())
    offenders = ""
    for name, m in report.metrics.items():
        worst = (m.values.get("memorization") or {}).get("worst") or []
        if worst:
            items = "".join(f"<li><b>{esc(w['synthetic'][:300])}</b><br>train: {esc((w['train'] or '')[:300])} "
                            f"(Jaccard {w['jaccard']}, exact {w['exact']}, verbatim {w['verbatim_ngram']})</li>"
                            for w in worst)
            offenders += f"<h3>{esc(name)}</h3><ol>{items}</ol>"
    looks = ""
    for name, m in report.metrics.items():
        ex = m.examples
        if not ex:
            continue
        pairs = "".join(f"<tr><td>{esc(a[:400])}</td><td>{esc(b[:400])}</td></tr>"
                        for a, b in zip(ex.synthetic, ex.real))
        near = "".join(f"<li>{esc(n.synthetic[:300])}<br><i>closest real (cosine {n.cosine}):</i> "
                       f"{esc(n.real[:300])}</li>" for n in ex.neighbours)
        looks += (f'<h3>{esc(label(report, name))}</h3><p class="verdict"><b>{esc(m.verdict or "")}</b></p>'
                  f'<table class="samples"><tr><th>synthetic (10 at random)</th><th>real (10 at random)</th></tr>'
                  f"{pairs}</table><p>Closest real text to a few samples:</p><ol>{near}</ol>")
    per_field = ""
    for field_name, set_names, field_body in field_tables(report):
        cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in field_body)
        heads = "".join(f"<th>{esc(h)}</th>" for h in ["metric", *set_names])
        per_field += (f'<h3>Field {esc(field_name)} alone</h3><table class="field" data-field="{esc(field_name)}">'
                      f"<tr>{heads}</tr>{cells}</table>")
    warn = "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
    students = ""
    if report.student is not None:
        st = report.student
        students = (f'<h2>Does the data teach?</h2><p>A {esc(st.student)} student ({esc(st.finetune)}) fine-tuned on '
                    f"each training set, scored on {st.eval.get('n')} real held-out records of "
                    f"{esc(str(st.eval.get('source')))} (mean ± std over seeds {esc(', '.join(map(str, st.seeds)))}).</p>"
                    + st.html())
    sets = "".join(f"<li><b>{esc(n)}</b>: {esc(s.source)} (n={s.n})</li>" for n, s in report.sets.items())
    mauve_note = (f"MAUVE: mean ± std over k-means seeds {report.config.get('mauve_seeds')}, featurizer "
                  f"{esc(str(report.featurizer))}, scaling factor 5.")
    seconds = report.seconds or Timings(float("nan"), float("nan"), float("nan"))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>synthsteer report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
table.samples td{{text-align:left;vertical-align:top;width:50%}}
figure{{display:inline-block;margin:1em}}img{{max-width:600px}}</style></head>
<body><h1>synthsteer evaluation</h1>
<p>Real data: {esc(report.real.source)} (n={report.real.n}). Synthetic sets:</p><ul>{sets}</ul>
<h2>Verdicts and samples</h2>{looks}
<h2>Metrics</h2><table id="metrics"><tr>{head}</tr>{body}</table>{per_field}{students}
<p>{mauve_note} Arrows say which way is better; "real vs real" compares two disjoint halves of the real
data and is the ceiling. AUROC is a 5-fold real-vs-synthetic classifier: 0.5 means indistinguishable.</p>
<ul>{warn}</ul>
<h2>Plots</h2>{imgs}
<h2>Closest copies of the training data</h2>{offenders or ('<p>none flagged</p>' if report.config.get('train')
                                                   else '<p>not checked: pass --train with the training data</p>')}
<p>synthsteer {esc(str(report.synthsteer_version))}; featurize {seconds.featurize}s, metrics
{seconds.metrics}s.</p>
<script>
// self-check for headless browsers and curious readers: how many plots decoded and rendered
window.addEventListener("load", () => {{
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-plots-loaded", String(ok));
}});
</script></body></html>
"""


def write_report(report: EvalReport, out: Path, real, sets, real_feats, feats) -> EvalReport:
    """Write report.json and report.html to `out`; returns the report with the names of its plots."""
    out.mkdir(parents=True, exist_ok=True)
    images = plots(report, real, sets, real_feats, feats)
    report = replace(report, plots=tuple(sorted(images)))
    write_json(out / "report.json", report.to_json())
    tmp = out / "report.html.tmp"
    tmp.write_text(render_html(report, images), encoding="utf-8")
    tmp.replace(out / "report.html")
    return report
