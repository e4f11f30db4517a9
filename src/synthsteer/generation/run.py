"""The run loop: blocks of record indices handed to the workers, their records appended as they arrive.

The method turns a block of record indices into engine requests; the engine decodes them
(generator.py); the blocks go to workers, this process's (`LocalWorkers`) or Ray's
(ray_workers.py), and their records are appended to the run directory (runs.py) as they arrive
(`write_blocks`). Record i's context, negatives, few-shot examples and sampling noise all derive
from (seed, i) and the blocks are fixed by the batch size, so reruns, resumes and any number of
workers write the same records.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._version import __version__
from ..artifacts import check_out
from ..errors import SynthsteerError
from ..logs import Progress, console_settings, log, log_file
from ..runs import RunDir, read_records, read_run
from .config import GenerateConfig
from .generator import BlockGenerator, record_id
from .registry import method_spec

if TYPE_CHECKING:
    from ..lm import LM


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


class LocalWorkers:
    """One worker: the blocks decoded one after another by one generator in this process;
    `ray_workers.RayWorkers` is the same interface over Ray actors."""

    def __init__(self, generator: BlockGenerator):
        self.generator, self.seen, self._result = generator, 0, None
        self.settings, self.guards = generator.settings, generator.guards

    @property
    def idle(self) -> list[int]:
        return [] if self._result else [0]

    def seen_blocks(self, worker: int) -> int:
        """How many written blocks `worker` has been handed (they feed a method that reads written records)."""
        return self.seen

    def submit(self, worker: int, block: Block, written: list[list[dict]]) -> None:
        self.seen += len(written)
        self._result = (block, *self.generator.records(written, block.todo))

    def wait(self) -> tuple[Block, list[dict] | None, int]:
        result, self._result = self._result, None
        return result

    @property
    def busy(self) -> bool:
        return self._result is not None

    def close(self) -> None:
        self.generator.close()


def write_blocks(run: RunDir, blocks: list[Block], workers, *, reads_written: bool, lag: int, bar) -> None:
    """Decode every block with work left on the workers and append its records as it arrives. A
    method that reads written records (`reads_written`: STEER's negative pool) sees, for block b, the
    records of blocks 0 .. b-1-lag: the blocks are handed out in order and block b only once those
    are all on disk, so every worker count (and every resume) gives the same pools and records."""
    complete = {b.number: sorted(b.done, key=lambda r: r["index"]) for b in blocks if not b.todo}
    pending = deque(b for b in blocks if b.todo)
    t0, new_tokens = time.time(), 0
    while pending or workers.busy:
        for worker in workers.idle:
            if not pending:
                break
            block = pending[0]
            upto = block.number - lag if reads_written else 0
            if any(k not in complete for k in range(upto)):
                break  # waits for an earlier block to finish
            pending.popleft()
            workers.submit(worker, block, [complete[k] for k in range(workers.seen_blocks(worker), max(upto, 0))])
        block, records, tokens = workers.wait()
        if records is None:  # its worker died: the block goes back, in order
            pending = deque(sorted([*pending, block], key=lambda b: b.number))
            continue
        run.append(records)
        if reads_written:
            complete[block.number] = sorted(block.done + records, key=lambda r: r["index"])
        new_tokens += tokens
        bar.update(len(records), tok_s=new_tokens / (time.time() - t0))


def kept_line(kept: int, n: int, reasons) -> str:
    """`kept 481 of 500, 19 unparsable: 12 missing 'Answer:', 7 truncated at max-new-tokens`."""
    rejected = sum(reasons.values())
    if not rejected:
        return f"kept {kept} of {n}: every sample parsed"
    why = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    return f"kept {kept} of {n}, {rejected} unparsable: {why}"


@console_settings
def generate(config: GenerateConfig, *, progress: bool = True, lm: LM | None = None) -> Path:
    """Write (or complete) the run directory `config.out` with `config.n` records."""
    check_out(config.out)
    spec = method_spec(config.method)
    if spec.check:
        spec.check(config)
    if config.ray:
        if lm is not None:
            raise SynthsteerError("generate(lm=...) runs in this process; with ray=True each worker loads the LM")
        from .ray_workers import RayWorkers

        workers = RayWorkers(config)
    else:
        workers = LocalWorkers(BlockGenerator(config, lm))
    try:
        run = RunDir(config.out, workers.settings, info={"n_requested": config.n, "synthsteer_version": __version__,
                                                         "config": asdict(config)},
                     inputs=(config.data, config.prompt, config.expert, config.model),
                     guards=workers.guards)
        try:
            with log_file(run.path):
                log.debug(f"generate {config.method} into {run.path}: settings hash {run.hash}, {len(run.ids)} "
                          "records already there")
                on_disk = {r["index"]: r for r in [*read_run(run.path), *read_records(run.path, "rejects")]} \
                    if run.ids or run.rejected.ids else {}
                blocks = plan_blocks(config.n, config.batch_size, run.hash, on_disk)
                bar = Progress(config.n, f"generate {config.method}", "sample",
                               initial=sum(len(b.done) for b in blocks), enabled=progress)
                write_blocks(run, blocks, workers, reads_written=spec.reads_written, lag=config.pool_lag, bar=bar)
                bar.close()
                run.finish(n_requested=config.n)
                if run.rejected.ids or "format" in workers.settings:
                    log.info(kept_line(len(run.ids), config.n, run.rejected.reasons))
        finally:
            run.close()
    finally:
        workers.close()
    return run.path
