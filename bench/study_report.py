"""Tables and plots of the evidence study (bench/study.py) from the reports its experiments wrote.

Writes OUT/results.json (every figure), OUT/results.md (the tables) and OUT/plots/*.png
(gamma x eta heatmaps, the diversity-vs-fidelity frontier). Only what exists is reported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from synthsteer.evaluation import REAL_VS_REAL as REAL  # the ceiling's name in a report


def _value(x):
    return x.get("mean") if isinstance(x, dict) else x


def _row(m: dict) -> dict:
    """The figures the tables show, from one set's metrics."""
    mem = m.get("memorization") or {}
    return {"mauve": _value(m["mauve"]), "mauve_kmeans_std": m["mauve"].get("std") if isinstance(m["mauve"], dict) else None,
            "distinct_2": m.get("distinct_2"), "diversity": m.get("steer_diversity"), "auroc": _value(m.get("auroc")),
            "near_copy": mem.get("near_rate"), "words": m.get("mean_words"),
            "tstr_acc": (m.get("tstr") or {}).get("accuracy"), "tstr_f1": (m.get("tstr") or {}).get("macro_f1"),
            "label_agreement": m.get("label_agreement")}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _fmt(x, spec="{:.3f}"):
    return "–" if x is None else spec.format(x)


def softsrv_table(root: Path, times: dict) -> tuple[dict, str]:
    out, md = {}, []
    for task_dir in sorted(p for p in (root / "softsrv").glob("*") if (p / "eval" / "report.json").exists()):
        report = json.loads((task_dir / "eval" / "report.json").read_text())
        by_method: dict[str, list[dict]] = {}
        for name, m in report["metrics"].items():
            method = REAL if name == REAL else re.sub(r" s\d+$", "", name)
            by_method.setdefault(method, []).append(_row(m))
        order = ["zero-shot", "few-shot", "nsp", "mp", "mc", "real train", REAL]
        rows = {}
        for method, runs in sorted(by_method.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
            mauve = _mean_std([r["mauve"] for r in runs])
            rows[method] = {"mauve_mean": mauve[0], "mauve_std": mauve[1], "seeds": len(runs),
                            **{k: float(np.mean([r[k] for r in runs])) for k in ("distinct_2", "diversity", "auroc",
                                                                               "near_copy", "words") if runs[0][k] is not None}}
        fits = {}
        for p in ("nsp", "mp", "mc"):
            cfg_path = task_dir / f"prompt-{p}" / "config.json"
            if cfg_path.exists():
                cfg = json.loads(cfg_path.read_text())
                fits[p] = {"minutes": round(times.get(f"fit softsrv/{task_dir.name}/prompt-{p}", 0) / 60, 1),
                           **{k: cfg.get(k) for k in ("final_loss", "tokens_seen", "steps") if k in cfg}}
        out[task_dir.name] = {"methods": rows, "fits": fits, "n_real": report["real"]["n"]}
        md += [f"\n### {task_dir.name} ({next(iter(report['sets'].values()))['n']} samples per set and seed, "
               f"{report['real']['n']} held-out real)\n",
               "| method | MAUVE ↑ (mean ± std, seeds) | distinct-2 | diversity | AUROC (→0.5) | near-copies | words |",
               "|---|---|---|---|---|---|---|"]
        for method, r in rows.items():
            md.append(f"| {method} | {r['mauve_mean']:.3f} ± {r['mauve_std']:.3f} ({r['seeds']}) | "
                      f"{_fmt(r.get('distinct_2'))} | {_fmt(r.get('diversity'))} | {_fmt(r.get('auroc'))} | "
                      f"{_fmt(r.get('near_copy'), '{:.1%}')} | {_fmt(r.get('words'), '{:.1f}')} |")
        if fits:
            md.append("\nFits: " + "; ".join(f"{p} {f['minutes']} min, final loss {_fmt(f.get('final_loss'))}"
                                             for p, f in fits.items()))
    return out, "\n".join(md)


def tstr_table(root: Path) -> tuple[dict, str]:
    out, md = {}, []
    for task_dir in sorted(p for p in (root / "tstr").glob("*") if (p / "eval" / "report.json").exists()):
        report = json.loads((task_dir / "eval" / "report.json").read_text())
        rows = {name: _row(m) for name, m in report["metrics"].items()}
        out[task_dir.name] = rows
        md += [f"\n### {task_dir.name} (trained on each set, tested on half of the held-out real set)\n",
               "| training set | examples | TSTR accuracy | macro-F1 | label agreement | MAUVE |",
               "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            n = report["sets"].get(name, {}).get("n", "–")  # "real vs real" is no set of its own
            md.append(f"| {name} | {n} | {_fmt(r['tstr_acc'])} | {_fmt(r['tstr_f1'])} | {_fmt(r['label_agreement'])} | "
                      f"{_fmt(r['mauve'])} |")
    return out, "\n".join(md)


GRID_NAME = re.compile(r"STEER g([\d.]+) e([\d.]+)$")


def _grid_value(name: str) -> tuple[float, float] | None:
    if name == "STEER (paper defaults)":
        return 0.2, 0.6
    m = GRID_NAME.match(name)
    return (float(m.group(1)), float(m.group(2))) if m else None


def _aggregate(rows: dict[str, dict]) -> dict[str, dict]:
    """Sets that differ only by generation seed ("NAME", "NAME s1", "NAME s2") as one row: the mean of
    every figure, and the spread of MAUVE and diversity over the seeds."""
    groups: dict[str, list[dict]] = {}
    for name, r in rows.items():
        groups.setdefault(re.sub(r" s\d+$", "", name), []).append(r)
    out = {}
    for name, runs in groups.items():
        row = {k: (float(np.mean([r[k] for r in runs])) if runs[0][k] is not None else None) for k in runs[0]}
        for k in ("mauve", "diversity"):
            row[f"{k}_std"] = _mean_std([r[k] for r in runs])[1] if runs[0][k] is not None else None
        row["seeds"] = len(runs)
        out[name] = row
    return out


def steer_tables(root: Path, plots: Path) -> tuple[dict, str]:
    out, md = {}, []
    for task_dir in sorted(p for p in (root / "steer").glob("*") if (p / "eval" / "report.json").exists()):
        report = json.loads((task_dir / "eval" / "report.json").read_text())
        raw = {name: _row(m) for name, m in report["metrics"].items()}
        beyond = root / "beyond" / task_dir.name / "eval" / "report.json"
        if beyond.exists():  # the same real set and sampling: one frontier
            raw.update({name: _row(m) for name, m in json.loads(beyond.read_text())["metrics"].items()
                        if name not in raw})
        rows = _aggregate(raw)
        first = ["temperature 0.7", "top-k 10", "nucleus 0.92", "few-shot", "expert alone", "STEER (paper defaults)"]
        rows = dict(sorted(rows.items(), key=lambda kv: (first.index(kv[0]) if kv[0] in first else
                                                         len(first) + (kv[0] == "real train") + 2 * (kv[0] == REAL))))
        out[task_dir.name] = rows
        md += [f"\n### {task_dir.name} ({next(iter(report['sets'].values()))['n']} samples per set, "
               f"{report['real']['n']} held-out real; ± over generation seeds)\n",
               "| set | MAUVE ↑ | diversity ↑ | distinct-2 | AUROC (→0.5) | near-copies | words |",
               "|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            if GRID_NAME.match(name):
                continue
            spread = (lambda k: f" ± {r[k + '_std']:.3f}" if r["seeds"] > 1 else "")
            md.append(f"| {name} | {_fmt(r['mauve'])}{spread('mauve')} | {_fmt(r['diversity'])}{spread('diversity')} | "
                      f"{_fmt(r['distinct_2'])} | {_fmt(r['auroc'])} | {_fmt(r['near_copy'], '{:.1%}')} | "
                      f"{_fmt(r['words'], '{:.1f}')} |")
        # the grid is seed 0 throughout, the paper's default cell included
        grid = {_grid_value(n): r for n, r in raw.items() if _grid_value(n)}
        gammas, etas = sorted({g for g, _ in grid}), sorted({e for _, e in grid})
        if len(gammas) > 1 and len(etas) > 1:
            md.append(f"\ngamma x eta grid ({len(gammas)} x {len(etas)}, seed 0): MAUVE / diversity / AUROC; rows "
                      "gamma, columns eta\n")
            md.append("| gamma \\ eta | " + " | ".join(f"{e:g}" for e in etas) + " |")
            md.append("|---" * (len(etas) + 1) + "|")
            for g in gammas:
                cells = [grid.get((g, e)) for e in etas]
                md.append(f"| {g:g} | " + " | ".join(
                    "–" if c is None else f"{c['mauve']:.2f} / {c['diversity']:.2f} / {c['auroc']:.2f}" for c in cells) + " |")
            heatmaps(task_dir.name, grid, gammas, etas, plots)
            md.append(f"\n![heatmaps](results/study-{task_dir.name}-grid.png)")
        frontier(task_dir.name, rows, plots)
        md.append(f"\n![frontier](results/study-{task_dir.name}-frontier.png)")
    return out, "\n".join(md)


def heatmaps(task: str, grid: dict, gammas: list, etas: list, plots: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, title) in zip(axes, (("mauve", "MAUVE ↑"), ("diversity", "diversity ↑"),
                                       ("auroc", "authenticity AUROC (0.5 = indistinguishable)"))):
        z = np.array([[grid[(g, e)][key] if (g, e) in grid else np.nan for e in etas] for g in gammas])
        im = ax.imshow(z, origin="lower", cmap="viridis")
        ax.set_xticks(range(len(etas)), [f"{e:g}" for e in etas])
        ax.set_yticks(range(len(gammas)), [f"{g:g}" for g in gammas])
        ax.set_xlabel("eta (negative strength)")
        ax.set_ylabel("gamma (contrastive strength)")
        ax.set_title(title, fontsize=10)
        for i in range(len(gammas)):
            for j in range(len(etas)):
                if not np.isnan(z[i, j]):
                    ax.text(j, i, f"{z[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"STEER on {task}: gamma x eta")
    fig.tight_layout()
    fig.savefig(plots / f"study-{task}-grid.png", dpi=110)
    plt.close(fig)


def _place_labels(ax, labels: list[tuple[str, tuple[float, float]]], fontsize: int = 7):
    """Annotate points, each label at the first of a few offsets where it overlaps no label placed
    before it (points crowd near the real data's corner, where the interesting sets are)."""
    ax.figure.canvas.draw()  # fixes the axis limits, so data -> pixel transforms are final
    char_w, line_h = fontsize * 0.6, fontsize * 1.3  # in points, the offsets' unit; close enough to separate boxes
    offsets = [(dx, dy) for dy in (3, -10, 12, -19, 21, -28) for dx in (3, -3)]
    placed = []

    def overlap(box):  # area shared with the labels placed so far
        return sum(max(0, min(box[2], b[2]) - max(box[0], b[0])) * max(0, min(box[3], b[3]) - max(box[1], b[1]))
                   for b in placed)

    for text, xy in labels:
        x, y = ax.transData.transform(xy) * 72 / ax.figure.dpi
        w = len(text) * char_w
        candidates = []
        for dx, dy in offsets:
            x0 = x + dx if dx > 0 else x + dx - w
            candidates.append((x0, y + dy, x0 + w, y + dy + line_h))
        # the first free spot, else the least crowded one
        i = next((i for i, box in enumerate(candidates) if not overlap(box)),
                 min(range(len(candidates)), key=lambda i: overlap(candidates[i])))
        (dx, dy), box = offsets[i], candidates[i]
        placed.append(box)
        ax.annotate(text, xy, fontsize=fontsize, xytext=(dx, dy), textcoords="offset points",
                    ha="left" if dx > 0 else "right")


def frontier(task: str, rows: dict, plots: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    labels = []
    for name, r in rows.items():
        if r["mauve"] is None or r["diversity"] is None:
            continue
        grid = _grid_value(name)
        style = (dict(marker="o", color="tab:blue", alpha=0.5) if grid and name != "STEER (paper defaults)" else
                 dict(marker="*", color="tab:blue", s=160) if grid else
                 dict(marker="s", color="tab:green", s=60) if name.startswith("softsrv") or "nearest" in name else
                 dict(marker="^", color="black", s=60) if name in (REAL, "real train") else dict(marker="D", color="tab:red", s=50))
        ax.scatter(r["diversity"], r["mauve"], zorder=3, **style)
        if r.get("seeds", 1) > 1:
            ax.errorbar(r["diversity"], r["mauve"], xerr=r["diversity_std"], yerr=r["mauve_std"], fmt="none",
                        ecolor=style["color"], alpha=0.6, capsize=2)
        labels.append((f"g{grid[0]:g} e{grid[1]:g}" if grid and name != "STEER (paper defaults)" else name,
                       (r["diversity"], r["mauve"])))
    _place_labels(ax, labels)
    ax.set_xlabel("diversity (distinct-n product, ↑)")
    ax.set_ylabel("MAUVE vs held-out real (fidelity, ↑)")
    ax.set_title(f"{task}: diversity vs fidelity (blue STEER grid, red baselines, green ours, black real)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plots / f"study-{task}-frontier.png", dpi=110)
    plt.close(fig)


def write_results(root: Path, scale) -> dict:
    plots = root / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    times = {}
    for entry in sorted((root / "times").glob("*.json")):
        cell = json.loads(entry.read_text())
        times[cell["what"]] = cell["seconds"]
    softsrv, md_softsrv = softsrv_table(root, times)
    tstr, md_tstr = tstr_table(root)
    steer, md_steer = steer_tables(root, plots)
    results = {"scale": scale.__dict__, "softsrv": softsrv, "tstr": tstr, "steer": steer, "seconds": times,
               "total_minutes": round(sum(times.values()) / 60, 1)}
    (root / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = ["## SoftSRV table", md_softsrv, "\n## Train on synthetic, test on real", md_tstr, "\n## STEER", md_steer,
          f"\nCompute: {results['total_minutes']} min of fits, experts, generation and evaluation."]
    (root / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return results
