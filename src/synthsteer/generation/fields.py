"""A run's records of several fields: their format, the fields fed rather than generated, and the
grammar that keeps every sample parsable (records.py is the format itself; constrain.py the grammar)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from ..engine import Request
from ..errors import SynthsteerError
from ..logs import log
from ..records import RecordFormat

if TYPE_CHECKING:
    from .config import GenerateConfig


def record_format(config: GenerateConfig, parts) -> tuple[RecordFormat | None, tuple[str, ...]]:
    """The run's record format (the template of its training examples: --template, or the one the
    prompt or expert was trained on) and its given fields, checked before anything is decoded."""
    spec = parts.spec
    if spec is None or (spec.template is None and spec.fields is None):
        if config.given:
            raise SynthsteerError("--given needs a record format: pass --template over the data's fields or "
                                  "--format json --fields (or use a prompt or expert trained with one)")
        return None, ()
    fmt = RecordFormat.json(spec.fields) if spec.fields else RecordFormat.template(spec.template)
    fmt.check_record_keys()
    fmt.check_given(config.given)
    return fmt, config.given


def force(request: Request, ids: list[int]) -> Request:
    """`request` with `ids` fed after every branch's prefix (STEER's negatives included): the leading
    literal and the given fields, which the LM continues from rather than writes."""
    if not ids:
        return request
    return Request({name: replace(p, ids=[*(p.ids or []), *ids]) for name, p in request.branches.items()},
                   request.key)


def constrained(mode: str) -> bool:
    """Whether a run with a record format decodes under its grammar (--constrain)."""
    from ..constrain import INSTALL, available

    if mode == "off":
        return False
    if available():
        return True
    if mode == "on":
        raise SynthsteerError(f"--constrain on needs xgrammar: {INSTALL}")
    log.warning(f"records are decoded unconstrained: xgrammar is not installed ({INSTALL})")
    return False


CLOSED_AT_MOST = 16  # distinct values of a field, each seen at least 4 times, that make it a closed set


def closed_values(fmt: RecordFormat, given: tuple[str, ...], declared: tuple[str, ...], records) -> dict:
    """The value sets of generated fields: --field-values (`label=yes,no`; the CLI may split it at the
    commas, so an item without `=` continues the field before it), else a field of the training data
    with at most CLOSED_AT_MOST distinct values, each seen at least 4 times (BoolQ's answer, a label)."""
    values: dict[str, list[str]] = {}
    current = None
    for item in (part.strip() for entry in declared for part in entry.split(",")):
        if "=" in item:
            current, _, first = item.partition("=")
            current = current.strip()
            if current not in fmt.fields or current in given:
                raise SynthsteerError(f"--field-values {current}: not a generated field of the record format "
                                      f"({', '.join(f for f in fmt.fields if f not in given)})")
            values[current] = [first] if first else []
        elif current is None:
            raise SynthsteerError(f"--field-values {item}: expected FIELD=VALUE,VALUE...")
        elif item:
            values[current].append(item)
    for name, vals in values.items():
        if not vals or any(not v for v in vals):
            raise SynthsteerError(f"--field-values {name}: give its values, e.g. {name}=yes,no")
    if not declared and records:
        for name in fmt.fields:
            if name in given or not all(name in r.meta for r in records):
                continue
            counts = Counter(str(r.meta[name]) for r in records)
            if len(counts) <= CLOSED_AT_MOST and min(counts.values()) >= 4:
                values[name] = sorted(counts)
    return {k: tuple(v) for k, v in values.items()}


def longest_fields(fmt: RecordFormat, records) -> dict[str, int]:
    """How long (in characters) each field before the last (a json record's last too: its string must
    close) may grow under the grammar: a quarter more than the training data's longest, so that its
    closing literal comes before --max-new-tokens."""
    out = {}
    for name in fmt.fields if fmt.kind == "json" else fmt.fields[:-1]:
        lengths = [len(str(r.meta[name])) for r in records if name in r.meta]
        if lengths:
            out[name] = max(lengths) * 5 // 4 + 8
    return out

