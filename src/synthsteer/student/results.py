"""What `synthsteer student` found, typed: one score per trained student, their mean ± std over seeds
per training set and size, beside the untrained student. results.json is `StudentResults.to_dict()`;
`eval --student` and `export --report` read it back with `StudentResults.read` (torch-free)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import SynthsteerError
from ..metrics import STUDENT_METRICS

REAL = "real"  # the training set a synthetic one is compared with, when one is named so


@dataclass(frozen=True)
class StudentScore:
    """One student (or the untrained one: set "untrained", no size or seed) on the held-out records."""

    set: str
    size: int | None
    seed: int | None
    metrics: dict[str, float]
    eval_seconds: float
    train_seconds: float | None = None
    steps: int | None = None
    final_train_loss: float | None = None
    train_tokens_per_s: float | None = None
    loss_history: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float  # sample standard deviation over the seeds (0 for one seed)
    n: int

    @classmethod
    def of(cls, values: list[float]) -> MeanStd:
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return cls(mean, math.sqrt(var), len(values))

    def cell(self, fmt: str, signed: bool = False) -> str:
        mean = fmt.replace("{:", "{:+") if signed else fmt
        return f"{mean.format(self.mean)} ± {fmt.format(self.std)}"


@dataclass(frozen=True)
class StudentRow:
    """One training set at one size: each metric over the student seeds, and the loss gain over the
    untrained student (untrained loss minus this loss: positive when training on the set helped)."""

    set: str
    size: int
    source: str
    metrics: dict[str, MeanStd]
    gain: MeanStd | None
    train_seconds: float  # mean wall time of one student's training


@dataclass(frozen=True)
class StudentResults:
    student: str  # the student LM
    finetune: str
    eval: dict  # the held-out source and how many records
    task: dict  # record format and target
    metrics: tuple[str, ...]
    seeds: tuple[int, ...]
    untrained: StudentScore
    rows: tuple[StudentRow, ...]
    runs: tuple[StudentScore, ...]
    seconds: float

    @classmethod
    def build(cls, *, student: str, finetune: str, eval: dict, task: dict, metrics: tuple[str, ...],
              seeds: tuple[int, ...], untrained: StudentScore, runs: list[StudentScore], sources: dict[str, str],
              seconds: float) -> StudentResults:
        rows = []
        for name in dict.fromkeys(r.set for r in runs):
            for size in sorted({r.size for r in runs if r.set == name}):
                mine = [r for r in runs if r.set == name and r.size == size]
                agg = {k: MeanStd.of([r.metrics[k] for r in mine]) for k in metrics if all(k in r.metrics for r in mine)}
                gain = MeanStd.of([untrained.metrics["loss"] - r.metrics["loss"] for r in mine]) \
                    if "loss" in untrained.metrics and "loss" in agg else None
                rows.append(StudentRow(name, size, sources[name], agg, gain,
                                       sum(r.train_seconds or 0 for r in mine) / len(mine)))
        return cls(student, finetune, eval, task, tuple(metrics), tuple(seeds), untrained, tuple(rows), tuple(runs),
                   seconds)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> StudentResults:
        try:
            rows = tuple(StudentRow(r["set"], r["size"], r["source"], {k: MeanStd(**v) for k, v in r["metrics"].items()},
                                    MeanStd(**r["gain"]) if r.get("gain") else None, r["train_seconds"])
                         for r in d["rows"])
            return cls(d["student"], d["finetune"], d["eval"], d["task"], tuple(d["metrics"]), tuple(d["seeds"]),
                       StudentScore(**d["untrained"]), rows, tuple(StudentScore(**r) for r in d["runs"]), d["seconds"])
        except (KeyError, TypeError, AttributeError) as e:
            raise SynthsteerError(f"{where}: not the results.json of `synthsteer student` ({type(e).__name__}: "
                                  f"{e})") from None

    @classmethod
    def read(cls, path: str | Path) -> StudentResults:
        """The results of a student directory (or of its results.json)."""
        from ..artifacts import read_json

        p = Path(path)
        p = p / "results.json" if p.is_dir() else p
        try:
            return cls.from_dict(read_json(p), str(p))
        except FileNotFoundError:
            raise SynthsteerError(f"--student {path}: no results.json (run `synthsteer student --out {path}` "
                                  "first)") from None
        except ValueError:
            raise SynthsteerError(f"--student {p}: not readable JSON (torn or edited)") from None

    # ------------------------------------------------------------ how it reads

    def headline(self) -> str:
        """The metric a reader looks at first: the task's own, else the loss."""
        return next((m for m in ("accuracy", "exact_match", "pass_at_1") if m in self.metrics), "loss")

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and rows: the untrained student, then each set and size, metrics as mean ± std."""
        shown = [m for m in STUDENT_METRICS if m.key in self.metrics]
        headers = ["set", "records", *[f"{m.title} {m.better}".strip() for m in shown], "loss gain ↑", "train s"]
        rows = [["untrained", "0", *[m.show(self.untrained.metrics.get(m.key)) or "–" for m in shown], "–", "–"]]
        for r in self.rows:
            rows.append([r.set, str(r.size), *[r.metrics[m.key].cell(_fmt(m)) if m.key in r.metrics else "–"
                                                for m in shown],
                         r.gain.cell("{:.3f}", signed=True) if r.gain else "–", f"{r.train_seconds:.0f}"])
        return headers, rows

    def sentence(self, name: str) -> str | None:
        """The dataset card's sentence on training set `name`: what a student trained on it reaches,
        beside one trained on as many real records (a set named "real") and the untrained student."""
        metric = self.headline()
        fmt = _fmt(next(m for m in STUDENT_METRICS if m.key == metric))
        mine = [r for r in self.rows if r.set == name and metric in r.metrics]
        if not mine:
            return None
        row = max(mine, key=lambda r: r.size)
        what = {"accuracy": "accuracy", "exact_match": "exact match", "pass_at_1": "pass@1",
                "loss": "target loss (NLL per token)"}[metric]
        text = (f"A {self.student} student ({self.finetune}, {len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}) "
                f"trained on {row.size} of these records reaches {row.metrics[metric].cell(fmt)} {what} on "
                f"{self.eval.get('n')} real held-out records of {self.eval.get('source')}")
        real = next((r for r in self.rows if r.set == REAL and r.size == row.size and metric in r.metrics), None)
        if real is not None and name != REAL:
            text += f"; on {row.size} real records {real.metrics[metric].cell(fmt)}"
        untrained = self.untrained.metrics.get(metric)
        if untrained is not None:
            text += f"; untrained {fmt.format(untrained)}"
        return text + "."


    def rich_table(self):
        """The table for the terminal (`student` prints it, and `eval --student` under the report's)."""
        from rich.table import Table

        headers, body = self.table()
        table = Table(title=f"does the data teach? {self.student} students ({self.finetune}) on "
                            f"{self.eval.get('source')}")
        for h in headers:
            table.add_column(h, justify="left" if h == "set" else "right")
        for row in body:
            table.add_row(*row)
        return table

    def html(self) -> str:
        """The sentences and the table as an HTML fragment (results.html and report.html)."""
        import html

        esc = html.escape
        headers, body = self.table()
        said = "".join(f"<li>{esc(x)}</li>" for x in (self.sentence(n) for n in dict.fromkeys(r.set for r in self.rows))
                       if x)
        cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
        return (f'<ul>{said}</ul><table id="students"><tr>{"".join(f"<th>{esc(h)}</th>" for h in headers)}</tr>'
                f"{cells}</table>")


def _fmt(metric) -> str:
    return metric.fmt if isinstance(metric.fmt, str) else "{:.3f}"
