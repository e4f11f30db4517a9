"""What a student reads: training sets (runs, data sources, or both joined) and the held-out records,
as examples of the student's record format, split into the input it reads and the target it learns.

Subsets (--sizes, --eval-limit) are picked by a hash of each record's id, not by file order: a data
file may be sorted by label (Jigsaw's training split lists every non-toxic comment first), and a
hash keeps the smaller subset inside the larger one, the same for every student seed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import marker_kind
from ..data import DataSpec, load_records
from ..errors import SynthsteerError
from ..options import json_fields
from ..records import RecordFormat
from ..runs import checked_records, read_manifest, split_name
from .config import StudentConfig

SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Example:
    """One record as the student sees it: its fields (strings) and, for held-out records, the row they
    came from (MBPP's `test_list` lives there)."""

    id: str
    fields: dict[str, str]
    row: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class TrainingSet:
    name: str
    source: str  # as --train named it
    examples: tuple[Example, ...]


@dataclass(frozen=True)
class StudentTask:
    """The record format, which of its fields are the target, and the split of a record into input and target."""

    format: RecordFormat
    target: tuple[str, ...]

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.format.fields[: len(self.format.fields) - len(self.target)]

    def split(self, fields: dict[str, str]) -> tuple[str, str]:
        """(input text, target text) of a record: the input is the text before its first target field
        (trailing spaces go to the target, as BPE vocabularies attach them to the next word)."""
        text = self.format.render(fields)
        head = self.format.forced_prefix({f: fields[f] for f in self.inputs})
        return head, text[len(head):]

    def describe(self) -> dict:
        return {"format": self.format.as_dict(), "target": list(self.target)}


def _is_run(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and (marker_kind(p) == "run" or (p / "manifest.json").is_file())


def _run_format(path: str, where: str) -> tuple[RecordFormat | None, tuple[str, ...]]:
    settings = read_manifest(Path(path))["settings"]
    recorded = settings.get("format")
    if recorded is None:
        return None, ()
    fmt = RecordFormat.from_dict(recorded, f"{where}: {path}/manifest.json")
    return fmt, tuple(f for f in fmt.fields if f not in set(settings.get("given") or ()))


def parse_sets(config: StudentConfig) -> list[tuple[str, list[str]]]:
    """--train items as (name, parts), each part a run directory or a data source."""
    out, names = [], set()
    for item in config.train:
        if "=" not in item:
            raise SynthsteerError(f"--train {item}: expected NAME=SOURCE (e.g. real=builtin:boolq/train)")
        name, source = split_name(item)
        parts = [p.strip() for p in source.split("+")]
        if not name or name in names:
            raise SynthsteerError(f"--train {item}: {'the set has no name' if not name else f'{name!r} is named twice'}")
        if not SET_NAME.fullmatch(name):
            raise SynthsteerError(f"--train {item}: a set name is letters, digits, '_', '.' or '-' (it names the "
                                  "students' directories)")
        if any(not p for p in parts):
            raise SynthsteerError(f"--train {item}: an empty part in {source!r}")
        names.add(name)
        out.append((name, parts))
    return out


def student_task(config: StudentConfig, sets: list[tuple[str, list[str]]]) -> StudentTask:
    """The record format (--template / --format json, else the first run's) and its target fields
    (--target, else the fields the first run generated after its given ones, else the last field),
    checked against every run."""
    fields = json_fields(config)
    fmt = RecordFormat.json(fields) if fields else RecordFormat.template(config.template) if config.template else None
    generated: tuple[str, ...] = ()
    for name, parts in sets:
        for part in parts:
            if not _is_run(part):
                continue
            run_fmt, run_generated = _run_format(part, f"--train {name}")
            if run_fmt is None:
                raise SynthsteerError(f"--train {name}: {part} holds single texts, not records of several fields; "
                                      "generate it with --template (records) so the student has an input and a target")
            if fmt is None:
                fmt, generated = run_fmt, run_generated
            elif not generated and set(fmt.fields) <= set(run_fmt.fields):
                generated = tuple(f for f in run_generated if f in fmt.fields)
            missing = [f for f in fmt.fields if f not in run_fmt.fields]
            if missing:
                raise SynthsteerError(f"--train {name}: the records of {part} have no field {missing[0]!r} (they have "
                                      f"{', '.join(run_fmt.fields)})")
    if fmt is None:
        raise SynthsteerError("--template is required: the training sets are data sources, which do not say how a "
                              "record reads (e.g. --template 'Question: {question}\\nAnswer: {answer}')")
    # the generated fields are the default target when they end the student's record and leave it an
    # input: not for a run fed nothing, nor for one re-rendered with the fed field last (Jigsaw's label)
    ordered = tuple(f for f in fmt.fields if f in generated)
    if not (0 < len(ordered) < len(fmt.fields) and ordered == fmt.fields[len(fmt.fields) - len(ordered):]):
        generated = ()
    target = tuple(config.target) or generated or fmt.fields[-1:]
    for name in target:
        if name not in fmt.fields:
            raise SynthsteerError(f"--target {name}: not a field of the record format ({', '.join(fmt.fields)})")
    ordered = tuple(f for f in fmt.fields if f in target)
    if ordered != fmt.fields[len(fmt.fields) - len(ordered):]:
        raise SynthsteerError(f"--target {','.join(target)}: the target must be the record's last fields "
                              f"({', '.join(fmt.fields)}): the student reads what comes before it")
    if len(ordered) == len(fmt.fields):
        raise SynthsteerError(f"--target {','.join(target)}: every field is the target; leave the student an input")
    return StudentTask(fmt, ordered)


def _source_examples(source: str, config: StudentConfig, task: StudentTask, where: str) -> list[Example]:
    fmt = task.format
    spec = DataSpec.of(config, source=source)
    spec = DataSpec(spec.source, template=None if fmt.kind == "json" else fmt.template_text,
                    fields=fmt.fields if fmt.kind == "json" else None, rename=spec.rename)
    try:
        records = load_records(spec)
    except SynthsteerError as e:
        raise SynthsteerError(f"{where}: {e}") from None
    return [Example(r.id, {f: v if isinstance(v := r.meta[f], str) else str(v) for f in fmt.fields}, r.meta)
            for r in records]


def _run_examples(path: str, task: StudentTask) -> list[Example]:
    return [Example(str(r["id"]), {f: str(r[f]) for f in task.format.fields}) for r in checked_records(path)]


def load_set(name: str, parts: list[str], config: StudentConfig, task: StudentTask) -> TrainingSet:
    """Every example of one training set, its parts joined (ids prefixed by the part when there are several)."""
    examples: list[Example] = []
    for k, part in enumerate(parts):
        got = _run_examples(part, task) if _is_run(part) else _source_examples(part, config, task, f"--train {name}")
        if len(parts) > 1:
            got = [Example(f"{k}:{e.id}", e.fields, e.row) for e in got]
        examples += got
    if not examples:
        raise SynthsteerError(f"--train {name}: holds no records")
    return TrainingSet(name, "+".join(parts), tuple(examples))


def load_eval(config: StudentConfig, task: StudentTask) -> list[Example]:
    if _is_run(config.eval):
        raise SynthsteerError(f"--eval {config.eval}: a run directory; the students are scored on real records (a "
                              "data source such as builtin:boolq/heldout)")
    examples = _source_examples(config.eval, config, task, f"--eval {config.eval}")
    return subset(examples, config.eval_limit) if config.eval_limit else examples


def subset(examples, n: int) -> list:
    """The `n` examples whose ids hash lowest, in their original order: a fixed function of the ids,
    so the subset of a smaller n lies inside that of a larger one."""
    ranked = sorted(range(len(examples)), key=lambda i: hashlib.sha256(f"student/{examples[i].id}".encode()).digest())
    keep = set(ranked[:n])
    return [e for i, e in enumerate(examples) if i in keep]
