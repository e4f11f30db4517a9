"""One process's generator: the method and its engine, loaded once; a block of record indices in,
records out. A local run holds one; each Ray worker (ray_workers.py) holds its own, so what a record
contains never depends on where it was decoded."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from ..data import records_digest
from ..engine import ENGINES, Engine
from ..lm import check_fits_context
from ..prompts import stop_token_ids
from ..randomness import sample_key
from ..runs import settings_hash
from .loader import build_method

if TYPE_CHECKING:
    from ..engine import Request
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
        self.engine: Engine = ENGINES[config.engine](self.method.models)
        self.settings = {"method": config.method, "engine": {"name": self.engine.name, "version": self.engine.version},
                         "lm": self.lm.fingerprint(), "sampling": asdict(config.sampling),
                         "label_field": config.label_field, "seed": config.seed, **self.method.settings()}
        self.hash = settings_hash(self.settings)
        self.stop_ids = stop_token_ids(self.lm.tokenizer, self.lm.model)
        # not settings (runs written before them keep their hash), but a rerun must share them
        records = self.method.parts.records
        self.guards = {"data_sha256": records_digest(records)} if records else {}
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
        requests = [p.request for p in planned]
        self._check_fits(requests)  # a few-shot draw of a later record may be longer than record 0's
        results = self.engine.run(requests, self.method.step(), config.sampling, self.stop_ids)
        texts = self.lm.tokenizer.batch_decode([r.tokens for r in results], skip_special_tokens=True)
        records = [{
            "id": record_id(self.hash, i), "index": i, "text": text.strip(), "num_tokens": len(res.tokens),
            "finish": res.finish, **p.fields,
            "provenance": {"method": config.method, "seed": config.seed, "key": key, "settings_hash": self.hash,
                           **p.provenance},
        } for i, text, res, key, p in zip(indices, texts, results, keys, planned)]
        return records, sum(len(r.tokens) for r in results)
