"""One process's generator: the method and its engine, loaded once; a block of record indices in,
records out. A local run holds one; each Ray worker (ray_workers.py) holds its own, so what a record
contains never depends on where it was decoded."""

from __future__ import annotations

import bisect
import importlib.metadata
import itertools
from dataclasses import asdict
from typing import TYPE_CHECKING

import torch

from ..constrain import Grammar, enabled
from ..data import records_digest
from ..engine import Engine, Request, build_engine
from ..errors import SynthsteerError
from ..lm import check_fits_context
from ..prompts import stop_token_ids
from ..randomness import Stream, generator, sample_key, shuffled_cycle
from ..records import Unparsable, reject_reason
from ..runs import settings_hash
from .fields import closed_values, drawn_values, force, longest_fields, record_format
from .loader import build_method

if TYPE_CHECKING:
    from ..lm import LM
    from .config import GenerateConfig


def record_id(settings_hash: str, index: int) -> str:
    return f"{settings_hash[:8]}-{index:07d}"


class BlockGenerator:
    """The method (built on its view of `config`) and its engine, with the run's settings and guards."""

    def __init__(self, config: GenerateConfig, lm: LM | None = None):
        self.config = config
        self.method = build_method(config, lm)
        self.lm = self.method.lm
        self.stop_ids = stop_token_ids(self.lm.tokenizer, self.lm.model)
        self.engine: Engine = build_engine(config.engine, self.method, config)
        self.settings = {"method": config.method, "engine": {"name": self.engine.name, "version": self.engine.version},
                         "lm": self.lm.fingerprint(), "sampling": asdict(config.sampling),
                         "label_field": config.label_field, "seed": config.seed, **self.method.settings()}
        self.format, self.given = record_format(config, self.method.parts)
        self.grammar, self.drawn = None, {}
        if self.format is not None:  # only then: runs without a record format keep their settings hash
            self._record_settings(config)
        self.hash = settings_hash(self.settings)
        # not settings (runs written before them keep their hash), but a rerun must share them
        records = self.method.parts.records
        self.guards = {"data_sha256": records_digest(records)} if records else {}
        from_examples = [f for f in self.given if f not in self.drawn]
        if from_examples:
            if not records:
                raise SynthsteerError(f"--given {','.join(from_examples)}: --method {config.method} has no training "
                                      "examples to take the values from; pass --data, or draw them with "
                                      "--given-values")
            missing = [f for f in from_examples if f not in records[0].meta]
            if missing:
                raise SynthsteerError(f"--given {missing[0]}: not a field of the training examples")
            self.order = shuffled_cycle(config.seed, len(records))
        self._check_context()

    def _record_settings(self, config: GenerateConfig) -> None:
        """The record format's part of the settings: the format, the given fields, the drawn values and
        (constrained) the grammar's closed sets and bounds, which the grammar is compiled from here."""
        self.settings.update(format=self.format.as_dict(), given=list(self.given))
        self.drawn = drawn_values(config.given_values)
        if self.drawn:
            self.settings["given_values"] = {k: [list(v), list(w)] for k, (v, w) in self.drawn.items()}
        if not enabled(config.constrain):
            return
        records = self.method.parts.records
        values = closed_values(self.format, self.given, config.field_values, records)
        longest = longest_fields(self.format, records)
        vocab = self.lm.model.get_input_embeddings().weight.shape[0]
        self.grammar = Grammar(self.lm.tokenizer, vocab, self.stop_ids,
                               self.format.tail_regex(len(self.given), values, longest))
        self.settings.update(constrain={"library": "xgrammar", "version": importlib.metadata.version("xgrammar"),
                                        "values": {k: list(v) for k, v in values.items()}, "longest": longest})

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

    def close(self) -> None:
        """Stop the engine (vLLM's runs in processes of its own)."""
        self.engine.close()

    def _given(self, index: int, planned) -> dict:
        """The given fields' values: drawn from (seed, index) for a field of --given-values, else the
        seeding example's, or (no example seeds the record) those of example order[index mod n] of the
        training examples, in the same seeded cycle SoftSRV's contexts take."""
        if not self.given:
            return {}
        out = {}
        for name in self.given:
            if name in self.drawn:
                values, weights = self.drawn[name]
                u = float(torch.rand(1, generator=generator(self.config.seed, Stream.GIVEN, index)))
                out[name] = values[min(bisect.bisect(list(itertools.accumulate(weights)), u), len(values) - 1)]
                continue
            source = planned.source
            if source is None:
                records = self.method.parts.records
                source = records[self.order[index % len(records)]]
            out[name] = str(source.meta[name])
        return out

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
        return {**{k: v for k, v in record.items() if k != "provenance"}, **parsed, "provenance": record["provenance"]}
