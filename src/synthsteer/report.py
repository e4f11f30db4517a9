"""The evaluation report: `report.json` (every number), a self-contained `report.html` (tables and
plots embedded as PNG data URIs, no network needed to view it) and a table in the terminal."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from . import metrics as metrics_table
from .artifacts import write_json
from .metrics import Metric


def columns() -> list[Metric]:
    """The table's columns: the metric table's entries that have a title."""
    return [m for m in metrics_table.METRICS if m.title]


def cell(metrics: dict, column: Metric) -> str:
    v = metrics.get(column.key)
    if v is None:
        return "–"
    return f"{v['mean']:.3f} ± {v['std']:.3f}" if column.fmt is None else column.fmt.format(v)


def rows(report: dict) -> list[tuple[str, list[str]]]:
    out = []
    for name, m in report["metrics"].items():
        cells = [cell(m, c) for c in columns()]
        mem = m.get("memorization")
        cells.append(f"{mem['exact_rate']:.1%} / {mem['near_rate']:.1%} / {mem['verbatim_rate']:.1%}" if mem else "–")
        t = m.get("tstr")
        cells.append(f"{t['accuracy']:.3f} / {t['macro_f1']:.3f}" if t and t.get("accuracy") is not None else "–")
        agree = m.get("label_agreement")
        cells.append(f"{agree:.1%}" if agree is not None else "–")
        out.append((name, cells))
    return out


def headers() -> list[str]:
    return [f"{c.title} {c.better}".strip() for c in columns()] + ["copied exact / near / 13-gram", "TSTR acc / F1",
                                                                     "labels hold ↑"]


def label(report: dict, name: str) -> str:
    """A set's column title: its name and the settings in which the sets differ."""
    sets = list(report["sets"])
    if name not in sets:
        return name
    varying = report.get("varying_settings") or {}
    shown = [f"{k}={v[sets.index(name)]}" for k, v in varying.items() if k != "out"]
    return f"{name} ({', '.join(shown[:4])})" if shown else name


def transposed(report: dict) -> tuple[list[str], list[list[str]]]:
    """Metrics as rows and sets as columns: many metrics, few sets, so it fits a terminal."""
    table = rows(report)
    names = [label(report, name) for name, _ in table]
    return names, [[h, *(cells[i] for _, cells in table)] for i, h in enumerate(headers())]


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    names, body = transposed(report)
    table = Table(title=f"synthetic vs {report['real']['source']} (n={report['real']['n']})")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    for row in body:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for name, m in report["metrics"].items():
        if m.get("verdict"):
            console.print(f"{name}: {m['verdict']}", markup=False, highlight=False)
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plots(report: dict, real, sets, real_feats: np.ndarray, feats: dict[str, np.ndarray]) -> dict[str, str]:
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
    lengths = {"real": [len(t.split()) for t in real.texts], **{s.name: [len(t.split()) for t in s.texts] for s in sets}}
    top = max(max(v) for v in lengths.values()) + 1
    bins = np.linspace(0, top, min(40, top) + 1)
    for name, v in lengths.items():
        ax.hist(v, bins=bins, histtype="step", density=True, label=name, linewidth=1.5)
    ax.set_xlabel("words per sample")
    ax.set_title("length distribution")
    ax.legend(fontsize=8)
    out["lengths"] = _png(fig)

    varying = report["varying_settings"]
    names = [s.name for s in sets]
    numeric = {k: v for k, v in varying.items() if all(isinstance(x, (int, float)) and x is not None for x in v)}
    metrics = report["metrics"]
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


def render_html(report: dict, images: dict[str, str]) -> str:
    esc = html.escape
    names, table = transposed(report)
    head = "".join(f"<th>{esc(h)}</th>" for h in ["metric", *names])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table)
    imgs = "".join(f'<figure><img id="plot-{k}" alt="{k}" src="{v}"><figcaption>{k}</figcaption></figure>'
                   for k, v in images.items())
    offenders = ""
    for name, m in report["metrics"].items():
        worst = (m.get("memorization") or {}).get("worst") or []
        if worst:
            items = "".join(f"<li><b>{esc(w['synthetic'][:300])}</b><br>train: {esc((w['train'] or '')[:300])} "
                            f"(Jaccard {w['jaccard']}, exact {w['exact']}, verbatim {w['verbatim_ngram']})</li>"
                            for w in worst)
            offenders += f"<h3>{esc(name)}</h3><ol>{items}</ol>"
    looks = ""
    for name, m in report["metrics"].items():
        ex = m.get("examples")
        if not ex:
            continue
        pairs = "".join(f"<tr><td>{esc(a[:400])}</td><td>{esc(b[:400])}</td></tr>"
                        for a, b in zip(ex["synthetic"], ex["real"]))
        near = "".join(f"<li>{esc(n['synthetic'][:300])}<br><i>closest real (cosine {n['cosine']}):</i> "
                       f"{esc(n['real'][:300])}</li>" for n in ex["neighbours"])
        looks += (f'<h3>{esc(label(report, name))}</h3><p class="verdict"><b>{esc(m["verdict"])}</b></p>'
                  f'<table class="samples"><tr><th>synthetic (10 at random)</th><th>real (10 at random)</th></tr>'
                  f"{pairs}</table><p>Closest real text to a few samples:</p><ol>{near}</ol>")
    warn = "".join(f"<li>{esc(w)}</li>" for w in report["warnings"])
    sets = "".join(f"<li><b>{esc(n)}</b>: {esc(s['source'])} (n={s['n']})</li>" for n, s in report["sets"].items())
    mauve_note = (f"MAUVE: mean ± std over k-means seeds {report['config']['mauve_seeds']}, featurizer "
                  f"{esc(report['featurizer'])}, scaling factor 5.")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>synthsteer report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
table.samples td{{text-align:left;vertical-align:top;width:50%}}
figure{{display:inline-block;margin:1em}}img{{max-width:600px}}</style></head>
<body><h1>synthsteer evaluation</h1>
<p>Real data: {esc(report['real']['source'])} (n={report['real']['n']}). Synthetic sets:</p><ul>{sets}</ul>
<h2>Verdicts and samples</h2>{looks}
<h2>Metrics</h2><table id="metrics"><tr>{head}</tr>{body}</table>
<p>{mauve_note} Arrows say which way is better; "real vs real" compares two disjoint halves of the real
data and is the ceiling. AUROC is a 5-fold real-vs-synthetic classifier: 0.5 means indistinguishable.</p>
<ul>{warn}</ul>
<h2>Plots</h2>{imgs}
<h2>Closest copies of the training data</h2>{offenders or ('<p>none flagged</p>' if report['config'].get('train')
                                                   else '<p>not checked: pass --train with the training data</p>')}
<p>synthsteer {esc(report['synthsteer_version'])}; featurize {report['seconds']['featurize']}s, metrics
{report['seconds']['metrics']}s.</p>
<script>
// self-check for headless browsers and curious readers: how many plots decoded and rendered
window.addEventListener("load", () => {{
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-plots-loaded", String(ok));
}});
</script></body></html>
"""


def write_report(report: dict, out: Path, real, sets, real_feats, feats) -> None:
    out.mkdir(parents=True, exist_ok=True)
    images = plots(report, real, sets, real_feats, feats)
    report["plots"] = sorted(images)
    write_json(out / "report.json", report)
    tmp = out / "report.html.tmp"
    tmp.write_text(render_html(report, images), encoding="utf-8")
    tmp.replace(out / "report.html")
