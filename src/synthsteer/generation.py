"""`synthsteer generate`: the run loop every method goes through.

The method (methods.py: plain and hard in baselines.py, softsrv/method.py, steer/method.py) turns
a block of record indices into engine requests; the engine (engine.py) decodes them
(`BlockGenerator`); the blocks are handed to a pool of generators, this process's (`LocalPool`) or
Ray workers' (ray_pool.py), and their records appended to the run directory (runs.py) as they
arrive (`write_blocks`). Record i's context, negatives, few-shot examples and sampling noise all
derive from (seed, i) and the blocks are fixed by the batch size, so reruns, resumes and any number
of workers write the same records.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import SynthsteerError
from .logs import console_settings, log
from .options import DataOptions, EngineOptions, LMOptions, LogOptions, RunOptions, SamplingConfig, flag, option
from .prompts import HardPromptOptions
from .softsrv.config import SoftSRVOptions
from .steer.config import SteerOptions

if TYPE_CHECKING:
    from .lm import LM

METHODS = ("softsrv", "plain", "hard", "steer")


@dataclass(frozen=True)
class GenerateConfig(RunOptions, LogOptions, EngineOptions, LMOptions, DataOptions, SamplingConfig,
                     HardPromptOptions, SoftSRVOptions, SteerOptions):
    """Everything `synthsteer generate` / `generate()` needs; the CLI flags map one to one.

    Built from the shared groups (run, LM, data, sampling) and one group per method (hard prompt,
    SoftSRV, STEER). `model` defaults to the LM the prompt or expert was trained for (required
    without one);
    `data` (the contexts, few-shot examples and negative pool) to the prompt's or expert's data.
    A setting of a group the method does not use is reported in one warning line.
    """

    method: str = option("softsrv", "softsrv (needs --prompt), steer (needs --expert or --prompt), hard (instruction, "
                                    "few-shot with --shots) or plain (unsteered sampling from --model).", choices=METHODS)

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.max_new_tokens)

    def __post_init__(self):
        super().__post_init__()
        if self.engine != "ray":
            for name in ("ray_address", "workers", "gpus_per_worker"):
                if getattr(self, name) is not None:
                    raise SynthsteerError(f"{flag(name)} needs --engine ray")
        unused = ignored_settings(self)
        if unused:
            log.warning(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --method "
                        f"{self.method} (ignored)")


# the option groups each method reads (the rest of a GenerateConfig is shared by all)
METHOD_GROUPS = {
    "plain": (),
    "hard": (HardPromptOptions, DataOptions),
    "softsrv": (SoftSRVOptions, DataOptions),
    "steer": (HardPromptOptions, SoftSRVOptions, SteerOptions, DataOptions),
}


def ignored_settings(config: GenerateConfig) -> list[str]:
    """Flags set away from their defaults in groups the chosen method does not read."""
    used = {f.name for group in METHOD_GROUPS[config.method] for f in fields(group)}
    out = []
    for group in (HardPromptOptions, SoftSRVOptions, SteerOptions, DataOptions):
        for f in fields(group):
            if f.name not in used and getattr(config, f.name) != f.default:
                out.append(flag(f.name))
    return sorted(set(out))


class BlockGenerator:
    """One process's generator: the method and its engine, loaded once; a block of record indices
    in, records out. The local run holds one; each Ray worker (ray_pool.py) holds its own, so what a
    record contains never depends on where it was decoded."""

    def __init__(self, config: GenerateConfig, lm: LM | None = None):
        from .data import records_digest
        from .engine import TransformersEngine
        from .methods import build_method
        from .prompts import stop_token_ids
        from .runs import settings_hash

        self.config = config
        self.method = build_method(config, lm)
        self.lm = self.method.lm
        self.engine = TransformersEngine(self.method.models)
        self.settings = {"method": config.method, "engine": {"name": self.engine.name, "version": self.engine.version},
                         "lm": self.lm.fingerprint(), "sampling": asdict(config.sampling),
                         "label_field": config.label_field, "seed": config.seed, **self.method.settings()}
        self.hash = settings_hash(self.settings)
        self.stop_ids = stop_token_ids(self.lm.tokenizer, self.lm.model)
        # not settings (runs written before them keep their hash), but a rerun must share them
        records = self.method.parts.records
        self.guards = {"data_sha256": records_digest(records)} if records else {}
        self._check_context([0])

    def _check_context(self, indices: list[int]) -> None:
        """Refuse what cannot fit the LM's context before the run directory is touched: --max-new-tokens
        itself, and record 0's requests (a probe; `records` checks every block again)."""
        from .lm import check_fits_context
        from .randomness import sample_key

        check_fits_context(self.lm, self.config.max_new_tokens + 1, "--max-new-tokens (after at least one prompt token)")
        # a probe, not a record: STEER's note of what its length cap dropped must not count it
        dropped = getattr(self.method, "dropped", None)
        dropped = list(dropped) if dropped is not None else None
        requests, _ = self.method.requests(indices, [sample_key(self.config.seed, i) for i in indices])
        if hasattr(self.method, "dropped"):
            self.method.dropped = dropped
        self._check_fits(requests)

    def _check_fits(self, requests) -> None:
        """Every branch's prefix and --max-new-tokens within the LM's context, or one line with the limit."""
        from .lm import check_fits_context

        longest = max(len(p.ids or ()) + (0 if p.embeds is None else p.embeds.shape[0])
                      for r in requests for p in r.branches.values())
        check_fits_context(self.lm, longest + self.config.max_new_tokens,
                           f"the prompt ({longest} tokens) + --max-new-tokens")

    def records(self, pool: list[list[dict]], indices: list[int]) -> tuple[list[dict], int]:
        """The records of `indices` (and how many tokens they took), after adding the blocks `pool`
        to the method's negative pool (STEER; in block order, each in index order)."""
        from .randomness import sample_key

        for block in pool:
            self.method.written(block)
        config = self.config
        keys = [sample_key(config.seed, i) for i in indices]
        requests, prov = self.method.requests(indices, keys)
        self._check_fits(requests)  # a few-shot draw of a later record may be longer than record 0's
        results = self.engine.run(requests, self.method.step(), config.sampling, self.stop_ids)
        texts = self.lm.tokenizer.batch_decode([r.tokens for r in results], skip_special_tokens=True)
        records = [{
            "id": record_id(self.hash, i), "index": i, "text": text.strip(), "num_tokens": len(res.tokens),
            "finish": res.finish, **({config.label_field: p.pop("label")} if config.label_field else {}),
            "provenance": {"method": config.method, "seed": config.seed, "key": key, "settings_hash": self.hash, **p},
        } for i, text, res, key, p in zip(indices, texts, results, keys, prov)]
        return records, sum(len(r.tokens) for r in results)


def record_id(settings_hash: str, index: int) -> str:
    return f"{settings_hash[:8]}-{index:07d}"


@dataclass
class Block:
    """A fixed block of record indices (`batch_size` of them): a resumed run decodes exactly the
    batches an uninterrupted one would. `done` holds the block's records already on disk."""

    number: int
    indices: range
    todo: list[int]
    done: list[dict]


def plan_blocks(n: int, batch_size: int, settings_hash: str, on_disk: dict[int, dict]) -> list[Block]:
    blocks = []
    for number, start in enumerate(range(0, n, batch_size)):
        indices = range(start, min(start + batch_size, n))
        mine = {i: on_disk[i] for i in indices if i in on_disk and on_disk[i]["id"] == record_id(settings_hash, i)}
        blocks.append(Block(number, indices, [i for i in indices if i not in mine], list(mine.values())))
    return blocks


class LocalPool:
    """The blocks decoded one after another by one generator in this process (`--engine
    transformers`); `ray_pool.RayPool` is the same interface over Ray workers."""

    def __init__(self, generator: BlockGenerator):
        self.generator, self.fed, self._result = generator, 0, None
        self.settings, self.guards = generator.settings, generator.guards

    @property
    def idle(self) -> list[int]:
        return [] if self._result else [0]

    def fed_blocks(self, worker: int) -> int:
        return self.fed

    def submit(self, worker: int, block: Block, pool: list[list[dict]]) -> None:
        self.fed += len(pool)
        self._result = (block, *self.generator.records(pool, block.todo))

    def wait(self) -> tuple[Block, list[dict] | None, int]:
        result, self._result = self._result, None
        return result

    @property
    def busy(self) -> bool:
        return self._result is not None

    def close(self) -> None:
        """Nothing to release: the generator lives as long as this process."""


def write_blocks(run, blocks: list[Block], pool, *, uses_pool: bool, lag: int, bar) -> None:
    """Decode every block with work left on the pool of workers and append its records as it
    arrives. A method that grows a negative pool (`uses_pool`) sees, for block b, the records of
    blocks 0 .. b-1-lag: the blocks are handed out in order and block b only once those are all on
    disk, so every worker count (and every resume) gives the same pools and the same records."""
    complete = {b.number: sorted(b.done, key=lambda r: r["index"]) for b in blocks if not b.todo}
    pending = deque(b for b in blocks if b.todo)
    t0, new_tokens = time.time(), 0
    while pending or pool.busy:
        for worker in pool.idle:
            if not pending:
                break
            block = pending[0]
            upto = block.number - lag if uses_pool else 0
            if any(k not in complete for k in range(upto)):
                break  # waits for an earlier block to finish
            pending.popleft()
            pool.submit(worker, block, [complete[k] for k in range(pool.fed_blocks(worker), max(upto, 0))])
        block, records, tokens = pool.wait()
        if records is None:  # its worker died: the block goes back, in order
            pending = deque(sorted([*pending, block], key=lambda b: b.number))
            continue
        run.append(records)
        if uses_pool:
            complete[block.number] = sorted(block.done + records, key=lambda r: r["index"])
        new_tokens += tokens
        bar.update(len(records), tok_s=new_tokens / (time.time() - t0))


@console_settings
def generate(config: GenerateConfig, *, progress: bool = True, lm: LM | None = None) -> Path:
    """Write (or complete) the run directory `config.out` with `config.n` records."""
    from .artifacts import check_out
    from .logs import Progress, log_file
    from .methods import method_class
    from .runs import RunDir, read_run

    check_out(config.out)
    cls = method_class(config.method)
    cls.check(config)
    if config.engine == "ray":
        if lm is not None:
            raise SynthsteerError("generate(lm=...) runs in this process; with engine='ray' each worker loads the LM")
        from .ray_pool import RayPool

        pool = RayPool(config)
    else:
        pool = LocalPool(BlockGenerator(config, lm))
    try:
        run = RunDir(config.out, pool.settings, info={"n_requested": config.n, "synthsteer_version": __version__,
                                                      "config": asdict(config)},
                     inputs=(config.data, config.prompt, config.expert, config.model),
                     guards=pool.guards)
        try:
            with log_file(run.path):
                log.debug(f"generate {config.method} into {run.path}: settings hash {run.hash}, {len(run.ids)} "
                          "records already there")
                on_disk = {r["index"]: r for r in read_run(run.path)} if run.ids else {}
                blocks = plan_blocks(config.n, config.batch_size, run.hash, on_disk)
                bar = Progress(config.n, f"generate {config.method}", "sample",
                               initial=sum(len(b.done) for b in blocks), enabled=progress)
                write_blocks(run, blocks, pool, uses_pool=cls.uses_pool, lag=config.pool_lag, bar=bar)
                bar.close()
                run.finish(n_requested=config.n)
        finally:
            run.close()
    finally:
        pool.close()
    return run.path
