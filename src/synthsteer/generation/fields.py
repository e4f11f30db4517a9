"""A run's records of several fields: their format, the fields fed rather than generated, and the
grammar that keeps every sample parsable (records.py is the format itself; constrain.py the grammar)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from ..engine import Request
from ..errors import SynthsteerError
from ..records import RecordFormat

if TYPE_CHECKING:
    from .config import GenerateConfig


def record_format(config: GenerateConfig, parts) -> tuple[RecordFormat | None, tuple[str, ...]]:
    """The run's record format (the one of its training examples: --template or --format json, or the one
    the prompt or expert was trained on; without examples, plain's --template) and its given fields
    (--given, and the fields --given-values draws), in record order, checked before anything is decoded."""
    spec = parts.spec
    if spec is not None:
        template, fields = spec.template, spec.fields
    else:
        template, fields = config.template, (tuple(config.fields) if config.format == "json" else None)
    drawn = drawn_values(config.given_values)
    asked = (*config.given, *(f for f in drawn if f not in config.given))
    if template is None and fields is None:
        if asked:
            raise SynthsteerError("--given needs a record format: pass --template over the data's fields or "
                                  "--format json --fields (or use a prompt or expert trained with one)")
        return None, ()
    fmt = RecordFormat.json(fields) if fields else RecordFormat.template(template)
    fmt.check_record_keys()
    fmt.check_given(asked, "--given" if config.given else "--given-values")
    return fmt, tuple(f for f in fmt.fields if f in asked)


def field_lists(declared: tuple[str, ...], flag: str) -> dict[str, list[str]]:
    """`FIELD=A,B,...` items (the CLI splits at commas, so an item without `=` continues the field before
    it) as lists by field."""
    out: dict[str, list[str]] = {}
    current = None
    for item in (part.strip() for entry in declared for part in entry.split(",")):
        if "=" in item:
            current, _, first = item.partition("=")
            current = current.strip()
            if not current or current in out:
                raise SynthsteerError(f"{flag} {item}: {'a field is named twice' if current else 'expected FIELD=...'}")
            out[current] = [first] if first else []
        elif current is None:
            raise SynthsteerError(f"{flag} {item}: expected FIELD=VALUE,VALUE...")
        elif item:
            out[current].append(item)
    for name, vals in out.items():
        if not vals or any(not v for v in vals):
            raise SynthsteerError(f"{flag} {name}: give its values, e.g. {name}=yes,no")
    return out


def drawn_values(declared: tuple[str, ...]) -> dict[str, tuple[tuple[str, ...], tuple[float, ...]]]:
    """--given-values: per field, its values and their weights (normalised; equal when not given)."""
    out = {}
    for name, items in field_lists(declared, "--given-values").items():
        values, weights = [], []
        for item in items:
            value, sep, weight = item.rpartition(":") if ":" in item else (item, "", "")
            try:
                w = float(weight) if sep else 1.0
            except ValueError:
                raise SynthsteerError(f"--given-values {name}: {item!r}: the weight after ':' is not a number") from None
            if not w > 0 or w == float("inf"):
                raise SynthsteerError(f"--given-values {name}: {item!r}: a weight must be a positive number")
            values.append(value)
            weights.append(w)
        total = sum(weights)
        out[name] = (tuple(values), tuple(w / total for w in weights))
    return out


def force(request: Request, ids: list[int]) -> Request:
    """`request` with `ids` fed after every branch's prefix (STEER's negatives included): the leading
    literal and the given fields, which the LM continues from rather than writes."""
    if not ids:
        return request
    return Request({name: replace(p, ids=[*(p.ids or []), *ids]) for name, p in request.branches.items()},
                   request.key)


CLOSED_AT_MOST = 16  # distinct values of a field, each seen at least 4 times, that make it a closed set


def closed_values(fmt: RecordFormat, given: tuple[str, ...], declared: tuple[str, ...], records) -> dict:
    """The value sets of generated fields: --field-values (`label=yes,no`; the CLI may split it at the
    commas, so an item without `=` continues the field before it), else a field of the training data
    with at most CLOSED_AT_MOST distinct values, each seen at least 4 times (BoolQ's answer, a label)."""
    values = field_lists(declared, "--field-values")
    for name in values:
        if name not in fmt.fields or name in given:
            raise SynthsteerError(f"--field-values {name}: not a generated field of the record format "
                                  f"({', '.join(f for f in fmt.fields if f not in given)})")
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

