"""One process's generator: the method and its engine, loaded once; a block of record indices in,
records out. A local run holds one; each Ray worker (ray_workers.py) holds its own, so what a record
contains never depends on where it was decoded."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from ..data import records_digest
from ..engine import ENGINES, Engine, Request
from ..errors import SynthsteerError
from ..lm import check_fits_context
from ..prompts import stop_token_ids
from ..randomness import sample_key, shuffled_cycle
from ..constrain import Grammar
from ..logs import log
from ..records import RecordFormat, Unparsable, reject_reason
from ..runs import settings_hash
from .loader import build_method

if TYPE_CHECKING:
    from ..lm import LM
    from .config import GenerateConfig


def record_id(settings_hash: str, index: int) -> str:
    return f"{settings_hash[:8]}-{index:07d}"


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
        from collections import Counter

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


def _version(package: str) -> str:
    import importlib.metadata as md

    return md.version(package)


class BlockGenerator:
    """The method (built on its view of `config`) and its engine, with the run's settings and guards."""

    def __init__(self, config: GenerateConfig, lm: LM | None = None):
        self.config = config
        self.method = build_method(config, lm)
        self.lm = self.method.lm
        self.stop_ids = stop_token_ids(self.lm.tokenizer, self.lm.model)
        self.engine: Engine = ENGINES[config.engine](self.method.models)
        self.settings = {"method": config.method, "engine": {"name": self.engine.name, "version": self.engine.version},
                         "lm": self.lm.fingerprint(), "sampling": asdict(config.sampling),
                         "label_field": config.label_field, "seed": config.seed, **self.method.settings()}
        self.format, self.given = record_format(config, self.method.parts)
        self.grammar = None
        if self.format is not None:  # only then: runs without a record format keep their settings hash
            self.settings.update(format=self.format.as_dict(), given=list(self.given))
            if constrained(config.constrain):
                records = self.method.parts.records
                values = closed_values(self.format, self.given, config.field_values, records)
                longest = longest_fields(self.format, records)
                vocab = self.lm.model.get_input_embeddings().weight.shape[0]
                self.grammar = Grammar(self.lm.tokenizer, vocab, self.stop_ids,
                                       self.format.tail_regex(len(self.given), values, longest))
                self.settings.update(constrain={"library": "xgrammar", "version": _version("xgrammar"),
                                                "values": {k: list(v) for k, v in values.items()},
                                                "longest": longest})
        self.hash = settings_hash(self.settings)
        # not settings (runs written before them keep their hash), but a rerun must share them
        records = self.method.parts.records
        self.guards = {"data_sha256": records_digest(records)} if records else {}
        if self.given:
            if not records:
                raise SynthsteerError(f"--given {','.join(self.given)}: --method {config.method} has no training "
                                      "examples to take the values from; pass --data")
            missing = [f for f in self.given if f not in records[0].meta]
            if missing:
                raise SynthsteerError(f"--given {missing[0]}: not a field of the training examples")
            self.order = shuffled_cycle(config.seed, len(records))
        self._check_context()

    def _check_context(self) -> None:
        """Refuse what cannot fit the LM's context before the run directory is touched: --max-new-tokens
        itself, and record 0's requests (a probe; `records` checks every block again)."""
        check_fits_context(self.lm, self.config.max_new_tokens + 1, "--max-new-tokens (after at least one prompt token)")
        self._check_fits([p.request for p in self.method.probe([0], [sample_key(self.config.seed, 0)])])

    def _check_fits(self, requests: list[Request]) -> None:
        """Every branch's prefix and --max-new-tokens within the LM's context, or one line with the limit."""
        longest = max(len(p.ids or ()) + (0 if p.embeds is None else p.embeds.shape[0])
                      for r in requests for p in r.branches.values())
        check_fits_context(self.lm, longest + self.config.max_new_tokens,
                           f"the prompt ({longest} tokens) + --max-new-tokens")

    def records(self, written: list[list[dict]], indices: list[int]) -> tuple[list[dict], int]:
        """The records of `indices` (and how many tokens they took), after handing the method the
        blocks `written` since this generator last saw one (STEER's negative pool grows from them;
        in block order, each in index order)."""
        for block in written:
            self.method.written(block)
        config = self.config
        keys = [sample_key(config.seed, i) for i in indices]
        planned = self.method.plan(indices, keys)
        given = [self._given(i, p) for i, p in zip(indices, planned)] if self.format else [None] * len(indices)
        forced = [self.format.forced_prefix(g) if self.format else "" for g in given]
        requests = [force(p.request, self._ids(text)) for p, text in zip(planned, forced)]
        self._check_fits(requests)  # a few-shot draw of a later record may be longer than record 0's
        results = self.engine.run(requests, self.method.step(), config.sampling, self.stop_ids, grammar=self.grammar)
        texts = self.lm.tokenizer.batch_decode([r.tokens for r in results], skip_special_tokens=True)
        records = []
        for i, text, res, key, p, g, f in zip(indices, texts, results, keys, planned, given, forced):
            record = {"id": record_id(self.hash, i), "index": i, "text": text.strip(), "num_tokens": len(res.tokens),
                      "finish": res.finish, **p.fields,
                      "provenance": {"method": config.method, "seed": config.seed, "key": key,
                                     "settings_hash": self.hash, **p.provenance}}
            if self.format is not None:
                # without a leading literal the record starts at whatever the LM wrote first, spaces aside
                record = self._parsed(record, f + text.rstrip() if f else text.strip(), g, res.finish)
            records.append(record)
        return records, sum(len(r.tokens) for r in results)

    def _given(self, index: int, planned) -> dict:
        """The given fields' values: the seeding example's, or (no example seeds the record) those of
        example order[index mod n] of the training examples, in the same seeded cycle SoftSRV's contexts
        take."""
        if not self.given:
            return {}
        source = planned.source
        if source is None:
            records = self.method.parts.records
            source = records[self.order[index % len(records)]]
        return {name: str(source.meta[name]) for name in self.given}

    def _ids(self, text: str) -> list[int]:
        return self.lm.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _parsed(self, record: dict, text: str, given: dict, finish: str) -> dict:
        """The record with its fields, or (its text does not parse) a reject with the reason."""
        parsed = self.format.parse(text)
        if not isinstance(parsed, Unparsable) and any(parsed[k] != v for k, v in given.items()):
            parsed = Unparsable("a given field holds the text that follows it")  # the split is ambiguous
        record["text"] = text
        if isinstance(parsed, Unparsable):
            return {**record, "reject": reject_reason(parsed, finish)}
        record["provenance"]["given"] = list(given)
        fields = {k: v for k, v in parsed.items()}
        return {**{k: v for k, v in record.items() if k != "provenance"}, **fields, "provenance": record["provenance"]}
