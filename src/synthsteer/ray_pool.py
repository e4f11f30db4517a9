"""`--engine ray`: blocks of records decoded by a pool of Ray workers.

Each worker is an actor holding one `BlockGenerator` (the LM, the soft prompt or expert and the
training examples, loaded once) and decoding through the same transformers engine as a local run.
The driver never loads the LM: it plans the blocks, hands each to an idle worker, and appends the
records it gets back to the run directory (one writer, one lock, no shared filesystem needed for
the output). A block is the unit of work and of retry: when a worker dies, its block goes back to
the queue and a fresh worker takes its place; a rerun resumes from what is on disk, as locally.

STEER's negative pool is the one thing shared across blocks: block b needs the records of blocks
0 .. b-1-pool_lag. The driver sends each worker the blocks it has not seen yet with its next block,
so every worker's pool is exactly the local run's, whatever the number of workers.
"""

from __future__ import annotations

import os

from .errors import SynthsteerError
from .logs import log

MAX_RETRIES = 3  # per block: a block that kills three workers is a bug, not a flaky node
_ENV_PREFIXES = ("SYNTHSTEER_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


class _Worker:
    """The actor: one generator, loaded once. Errors in loading are returned, not raised, so that the
    driver can print them as the one-line errors they are."""

    def __init__(self, config, cwd: str, threads: int):
        import torch

        from .generation import BlockGenerator

        os.chdir(cwd)  # relative --data/--prompt/--expert paths mean what they mean to the driver
        torch.set_num_threads(threads)
        self.error = self.generator = None
        try:
            self.generator = BlockGenerator(config)
        except SynthsteerError as e:
            self.error = str(e)

    def settings(self) -> tuple[dict | None, str | None]:
        return (self.generator.settings if self.generator else None), self.error

    def records(self, pool: list[list[dict]], indices: list[int]) -> tuple[list[dict], int]:
        return self.generator.records(pool, indices)


class RayPool:
    """Ray workers behind the interface of `generation.LocalPool` (idle, submit, wait, busy)."""

    def __init__(self, config):
        try:
            import ray
        except ImportError:
            raise SynthsteerError("--engine ray needs Ray: pip install 'synthsteer[ray]'") from None
        self.ray, self.config = ray, config
        self.started = not ray.is_initialized()
        if self.started:
            try:
                ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", configure_logging=False,
                         runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                                   if k.startswith(_ENV_PREFIXES)}})
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise SynthsteerError(f"--ray-address {config.ray_address or os.environ.get('RAY_ADDRESS', '')}: "
                                      f"cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
        resources = ray.cluster_resources()
        gpus = config.gpus_per_worker if config.gpus_per_worker is not None else (1 if resources.get("GPU") else 0)
        n = config.workers or (int(resources.get("GPU", 0) // gpus) if gpus else 1) or 1
        cpus = max(1, int(resources.get("CPU", 1) // n))
        self.actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Worker)
        self.make = lambda: self.actor.remote(config, os.getcwd(), cpus)
        self.workers = [self.make() for _ in range(n)]
        self.fed = [0] * n
        self.inflight: dict = {}  # object ref -> (worker slot, block)
        self.retries: dict[int, int] = {}
        answers = ray.get([w.settings.remote() for w in self.workers])
        errors = [e for _, e in answers if e]
        if errors:
            self.close()
            raise SynthsteerError(errors[0])
        self.settings = answers[0][0]
        if any(s != self.settings for s, _ in answers[1:]):
            self.close()
            raise SynthsteerError("the Ray workers disagree on the run's settings (different synthsteer, transformers "
                                  "or model versions on the nodes?); give every node the same environment")
        log.info(f"ray: {n} worker(s), {cpus} CPU(s) and {gpus} GPU(s) each")

    @property
    def idle(self) -> list[int]:
        busy = {slot for slot, _ in self.inflight.values()}
        return [slot for slot in range(len(self.workers)) if slot not in busy]

    @property
    def busy(self) -> bool:
        return bool(self.inflight)

    def fed_blocks(self, worker: int) -> int:
        return self.fed[worker]

    def submit(self, worker: int, block, pool: list[list[dict]]) -> None:
        ref = self.workers[worker].records.remote(pool, block.todo)
        self.fed[worker] += len(pool)
        self.inflight[ref] = (worker, block)

    def wait(self):
        """The next finished block: (block, records, tokens), or (block, None, 0) when its worker
        died, which has then been replaced."""
        ray = self.ray
        [ref], _ = ray.wait(list(self.inflight), num_returns=1)
        slot, block = self.inflight.pop(ref)
        try:
            records, tokens = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            self.retries[block.number] = self.retries.get(block.number, 0) + 1
            if self.retries[block.number] > MAX_RETRIES:
                raise SynthsteerError(f"block {block.number} (records {block.indices.start}-{block.indices.stop - 1}) "
                                      f"killed {MAX_RETRIES} Ray workers; last: {str(e).splitlines()[0]}") from None
            log.warning(f"ray: a worker died on block {block.number}; retrying it on a new worker")
            ray.kill(self.workers[slot], no_restart=True)
            self.workers[slot], self.fed[slot] = self.make(), 0
            return block, None, 0
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            if isinstance(cause, SynthsteerError):
                raise SynthsteerError(str(cause).splitlines()[-1]) from None
            raise
        return block, records, tokens

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w, no_restart=True)
        if self.started:
            self.ray.shutdown()
