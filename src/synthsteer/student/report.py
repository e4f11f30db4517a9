"""results.html: the student table, a bar chart of each metric per training set (mean ± std over the
seeds, the untrained student as a dashed line) and, when several sizes were trained, a learning curve.
Self-contained: plots are embedded PNGs."""

from __future__ import annotations

import html
from pathlib import Path

from ..metrics import STUDENT_METRICS
from ..report import _png
from .results import StudentResults


def plots(results: StudentResults) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    images = {}
    names = list(dict.fromkeys(r.set for r in results.rows))
    sizes = sorted({r.size for r in results.rows})
    for m in STUDENT_METRICS:
        if m.key not in results.metrics:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names) * len(sizes)), 3.6))
        width = 0.8 / len(sizes)
        for k, size in enumerate(sizes):
            rows = {r.set: r for r in results.rows if r.size == size and m.key in r.metrics}
            xs = [i + k * width for i, n in enumerate(names) if n in rows]
            ax.bar(xs, [rows[n].metrics[m.key].mean for n in names if n in rows], width,
                   yerr=[rows[n].metrics[m.key].std for n in names if n in rows], capsize=4, label=f"{size} records")
        base = results.untrained.metrics.get(m.key)
        if base is not None:
            ax.axhline(base, color="k", linestyle="--", linewidth=1, label="untrained")
        ax.set_xticks(np.arange(len(names)) + width * (len(sizes) - 1) / 2, names)
        ax.set_ylabel(f"{m.title} {m.better}")
        ax.set_title(f"{m.title} of a {results.student} student per training set (mean ± std, "
                     f"{len(results.seeds)} seeds)", fontsize=9)
        ax.legend(fontsize=8)
        images[f"bars-{m.key}"] = _png(fig)
        if len(sizes) > 1:
            fig, ax = plt.subplots(figsize=(5, 3.6))
            for n in names:
                rows = sorted((r for r in results.rows if r.set == n and m.key in r.metrics), key=lambda r: r.size)
                ax.errorbar([r.size for r in rows], [r.metrics[m.key].mean for r in rows],
                            yerr=[r.metrics[m.key].std for r in rows], marker="o", capsize=3, label=n)
            if base is not None:
                ax.axhline(base, color="k", linestyle="--", linewidth=1, label="untrained")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("training records")
            ax.set_ylabel(f"{m.title} {m.better}")
            ax.set_title(f"learning curve: {m.title}", fontsize=9)
            ax.legend(fontsize=8)
            images[f"curve-{m.key}"] = _png(fig)
    return images


def render_html(results: StudentResults, images: dict[str, str]) -> str:
    esc = html.escape
    imgs = "".join(f'<figure><img id="plot-{k}" alt="{k}" src="{v}"><figcaption>{k}</figcaption></figure>'
                   for k, v in images.items())
    sets = "".join(f"<li><b>{esc(r.set)}</b>: {esc(r.source)}</li>" for r in results.rows if r.size == max(
        x.size for x in results.rows if x.set == r.set))
    fmt = results.task.get("format", {})
    shown = fmt.get("template") if fmt.get("kind") == "template" else f"JSON of {', '.join(fmt.get('fields', []))}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>synthsteer students</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:700px}}</style></head>
<body><h1>Does the data teach?</h1>
<p>Student {esc(results.student)} ({esc(results.finetune)} fine-tuning), seeds {esc(', '.join(map(str, results.seeds)))},
scored on {results.eval.get('n')} real held-out records of {esc(str(results.eval.get('source')))}.
Record format <code>{esc(repr(shown))}</code>; the student reads the fields before
<b>{esc(', '.join(results.task.get('target', [])))}</b> and learns to write those.</p>
{results.html()}
<p>Each cell is the mean ± sample std over the student seeds. Target loss is the mean NLL per target token on the
held-out records; its gain is the untrained student's loss minus the trained one's. Accuracy scores each allowed
value by log-likelihood (as lm-evaluation-harness does for multiple choice).</p>
<p>Training sets:</p><ul>{sets}</ul>
<h2>Plots</h2>{imgs}
<p>synthsteer student, {results.seconds:.0f} s in all.</p>
</body></html>
"""


def write_html(results: StudentResults, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(results, plots(results)), encoding="utf-8")
    tmp.replace(path)


def print_results(results: StudentResults) -> None:
    from rich.console import Console

    Console().print(results.rich_table())
