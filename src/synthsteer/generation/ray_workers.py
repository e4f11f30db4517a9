"""`--ray`: blocks of records decoded by Ray workers.

Each worker is an actor holding one `BlockGenerator` (the LM, the soft prompt or expert and the
training examples, loaded once) and decoding through the same engine as a local run.
The driver never loads the LM: it plans the blocks, hands each to an idle worker, and appends the
records it gets back to the run directory (one writer, one lock, no shared filesystem needed for
the output). A block is the unit of work and of retry: when a worker dies, its block goes back to
the queue and a fresh worker takes its place; a rerun resumes from what is on disk, as locally.

STEER's negative pool is the one thing shared across blocks: block b needs the records of blocks
0 .. b-1-pool_lag. The driver sends each worker the blocks it has not seen yet with its next block,
so every worker's negative pool is exactly the local run's, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

from ..errors import SynthsteerError, first_line
from ..logs import log, native_stderr_to_log

MAX_RETRIES = 3  # per block: a block that kills three workers is a bug, not a flaky node
_ENV_PREFIXES = ("SYNTHSTEER_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "VLLM_")
_CLIENT_PORT = 10001  # Ray Client's default port: ray://HOST means ray://HOST:10001


def _probe(address: str | None, where: str) -> None:
    """Refuse, within seconds, an explicit address (HOST:PORT or ray://HOST[:PORT]) that nothing answers
    at: ray.init would retry for minutes, printing its C++ connection lines. None, auto and local are
    Ray's to resolve (auto fails at once when no Ray runs on this machine)."""
    if address in (None, "", "auto", "local"):
        return
    client = address.startswith("ray://")
    hostport = address[len("ray://"):].rstrip("/") if client else address
    host, sep, port = hostport.rpartition(":")
    if client and not sep:
        host, port = hostport, str(_CLIENT_PORT)
    host = host.strip("[]")  # [::1]:6379
    if "://" in hostport or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SynthsteerError(f"{where}: expected HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6379), "
                              "ray://HOST[:PORT], auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except socket.gaierror as e:
        raise SynthsteerError(f"{where}: cannot resolve the host {host} ({e.strerror})") from None
    except OSError as e:
        raise SynthsteerError(f"{where}: nothing answers at {host}:{port} ({e.strerror or e}); is the Ray head "
                              "running there (ray start --head)?") from None


@contextlib.contextmanager
def _quiet_init(joining: bool):
    """Ray's start-up chatter (its token-auth notice, the C++ core's connection retries) goes to the
    debug log instead of the terminal."""
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        # only when joining: a local start spawns Ray's daemons, which would inherit the redirected stderr
        with native_stderr_to_log() if joining else contextlib.nullcontext():
            yield
    finally:
        logger.setLevel(level)


def _unschedulable(ray, config, n: int, gpus: float, resources: dict) -> str | None:
    """Why `n` workers of `gpus` GPUs cannot all start on the cluster, or None. Ray would wait forever
    for an actor that no node can hold, so this is checked before asking."""
    total = resources.get("GPU", 0)
    per_node = max((node["Resources"].get("GPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    flag = f"--gpus-per-worker {gpus:g}" if config.gpus_per_worker is not None else f"{gpus:g} GPU per worker"
    if gpus > total:
        return f"{flag}: the Ray cluster has {total:g} GPUs"
    if gpus > per_node:
        return f"{flag}: no node of the Ray cluster has more than {per_node:g} GPUs ({total:g} in all)"
    if n * gpus > total:
        return (f"--workers {n}: {n} workers of {gpus:g} GPU(s) need {n * gpus:g} GPUs; the Ray cluster has "
                f"{total:g} (lower --workers or --gpus-per-worker)")
    if n > resources.get("CPU", 0):
        return f"--workers {n}: each worker needs a CPU; the Ray cluster has {resources.get('CPU', 0):g}"
    return None


class _Worker:
    """The actor: one generator, loaded once. Errors in loading are returned, not raised, so that the
    driver can print them as the one-line errors they are."""

    def __init__(self, config, cwd: str, threads: int):
        import torch

        from .generator import BlockGenerator

        os.chdir(cwd)  # relative --data/--prompt/--expert paths mean what they mean to the driver
        torch.set_num_threads(threads)
        self.error = self.generator = None
        try:
            self.generator = BlockGenerator(config)
        except SynthsteerError as e:
            self.error = str(e)

    def settings(self) -> tuple[dict | None, str | None]:
        """The run's settings and its guards (the data's hash) together, or the error that stopped loading."""
        return ({**self.generator.settings, "__guards__": self.generator.guards} if self.generator else None), \
            self.error

    def records(self, written: list[list[dict]], indices: list[int]) -> tuple[list[dict], int]:
        return self.generator.records(written, indices)

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()


class RayWorkers:
    """Ray actors behind the interface of `run.LocalWorkers` (idle, submit, wait, busy)."""

    def __init__(self, config):
        try:
            import ray
        except ImportError:
            raise SynthsteerError("--ray needs Ray: pip install 'synthsteer[ray]'") from None
        self.ray, self.config = ray, config
        self.started = not ray.is_initialized()
        if self.started:
            address = config.ray_address or os.environ.get("RAY_ADDRESS") or None  # ray.init reads it too
            where = (f"--ray-address {address}" if config.ray_address else f"RAY_ADDRESS={address}" if address
                     else "--ray")
            _probe(address, where)
            try:
                with _quiet_init(joining=address not in (None, "local")):
                    ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR", configure_logging=False,
                             runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                                       if k.startswith(_ENV_PREFIXES)}})
            except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
                raise SynthsteerError(f"{where}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
        resources = ray.cluster_resources()
        # a vLLM engine split over --tensor-parallel-size GPUs needs them all in its worker
        gpus = config.gpus_per_worker if config.gpus_per_worker is not None else \
            (config.tensor_parallel_size if resources.get("GPU") else 0)
        n = config.workers or (int(resources.get("GPU", 0) // gpus) if gpus else 1) or 1
        problem = _unschedulable(ray, config, n, gpus, resources)
        if problem:
            if self.started:
                ray.shutdown()
            raise SynthsteerError(problem)
        cpus = max(1, int(resources.get("CPU", 1) // n))
        self.actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Worker)
        self.make = lambda: self.actor.remote(config, os.getcwd(), cpus)
        self.workers = [self.make() for _ in range(n)]
        self.seen = [0] * n  # written blocks each worker has been handed
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
        self.guards = self.settings.pop("__guards__")  # a rerun must share them; not part of the settings
        log.info(f"ray: {n} worker(s), {cpus} CPU(s) and {gpus} GPU(s) each")

    @property
    def idle(self) -> list[int]:
        busy = {slot for slot, _ in self.inflight.values()}
        return [slot for slot in range(len(self.workers)) if slot not in busy]

    @property
    def busy(self) -> bool:
        return bool(self.inflight)

    def seen_blocks(self, worker: int) -> int:
        return self.seen[worker]

    def submit(self, worker: int, block, written: list[list[dict]]) -> None:
        ref = self.workers[worker].records.remote(written, block.todo)
        self.seen[worker] += len(written)
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
            self.workers[slot], self.seen[slot] = self.make(), 0
            return block, None, 0
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            if isinstance(cause, SynthsteerError):
                raise SynthsteerError(str(cause).splitlines()[-1]) from None
            raise
        return block, records, tokens

    def close(self) -> None:
        try:  # let each engine stop its own processes (vLLM's) before the actor goes
            self.ray.get([w.close.remote() for w in self.workers], timeout=60)
        except Exception as e:  # a dead or stuck worker: killing it below is all that is left
            log.debug(f"ray: closing the workers: {first_line(e)}")
        for w in self.workers:
            self.ray.kill(w, no_restart=True)
        if self.started:
            self.ray.shutdown()
