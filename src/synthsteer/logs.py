"""Logs people can read: what a command says, where it goes, and how progress is reported.

Everything synthsteer says goes through the `synthsteer` logger: to stderr at `--log-level`
(warnings as `warning: ...`; `--quiet` keeps only errors) and, once a command knows its output
directory, to `OUT/log.txt` with timestamps, whatever the level on screen. Python warnings and the
chatter of transformers, sentence-transformers and datasets (weight-loading bars, deprecation
notices) go to the log file, not the terminal; so do the lines C++ libraries (faiss, inside MAUVE)
print straight to file descriptor 2 (`native_stderr_to_log`).

`Progress` is a tqdm bar on a terminal; anywhere else (a pipe, a file, a cluster's log) it is one
plain line per tenth of the work with the same figures, so a log stays a few dozen lines.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("synthsteer")


class _Console(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return prefix + record.getMessage()


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is at the time of the message (pytest and notebooks swap it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(_Console())

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_console = _Stderr()
_console.setLevel(logging.INFO)  # the Python API's default too: debug lines belong in log.txt only
log.setLevel(logging.DEBUG)
log.propagate = False
log.addHandler(_console)  # the Python API prints notes and warnings as the CLI does


def setup(quiet: bool = False, level: str = "info") -> None:
    """The terminal side (`--quiet`, `--log-level`); third-party chatter muted."""
    _console.setLevel(logging.ERROR if quiet else getattr(logging, level.upper()))
    logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger -> log.txt, not the terminal
    warnings_log = logging.getLogger("py.warnings")
    warnings_log.propagate = False
    if not warnings_log.handlers:
        warnings_log.addHandler(logging.NullHandler())  # until a log file is attached
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:
        pass


def _outside_state() -> dict:
    """What `setup` changes outside synthsteer's logger: warnings capture and the verbosity and
    progress bars of transformers and datasets."""
    state = {"capturing": getattr(warnings.showwarning, "__module__", None) == "logging"}
    try:
        import transformers

        state["transformers"] = (transformers.utils.logging.get_verbosity(),
                                 transformers.utils.logging.is_progress_bar_enabled())
    except ImportError:
        pass
    try:
        import datasets

        state["datasets"] = (datasets.utils.logging.get_verbosity(), datasets.is_progress_bar_enabled())
    except ImportError:
        pass
    return state


def _restore_outside(state: dict) -> None:
    if not state["capturing"]:
        logging.captureWarnings(False)
    if "transformers" in state:
        from transformers.utils import logging as hf_logging

        level, bars = state["transformers"]
        hf_logging.set_verbosity(level)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    if "datasets" in state:
        import datasets

        level, bars = state["datasets"]
        datasets.utils.logging.set_verbosity(level)
        (datasets.enable_progress_bars if bars else datasets.disable_progress_bars)()


@contextmanager
def console(quiet: bool = False, level: str = "info"):
    """`setup(quiet, level)` within the block; afterwards everything it changed is as it was, so a
    script's or a notebook's own settings (its warnings, transformers' bars) survive a command."""
    previous, outside = _console.level, _outside_state()
    setup(quiet, level)
    try:
        yield
    finally:
        _console.setLevel(previous)
        _restore_outside(outside)


def console_settings(fn):
    """Run an API function with its config's `quiet` and `log_level` on the terminal, as the CLI does."""

    @functools.wraps(fn)
    def wrapper(config, *args, **kwargs):
        with console(config.quiet, config.log_level):
            return fn(config, *args, **kwargs)

    return wrapper


@contextmanager
def log_file(out: str | Path, enabled: bool = True):
    """Within the block, also write everything to `out/log.txt` (appended: a resumed run adds to its
    log); the file is closed however the block ends. `enabled=False` (a DDP rank other than 0) does
    nothing."""
    if not enabled:
        yield None
        return
    path = Path(out) / "log.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    loggers = (log, logging.getLogger("py.warnings"))
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield path
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


@contextmanager
def native_stderr_to_log(level: int = logging.DEBUG):
    """Within the block, whatever is written to file descriptor 2 (faiss's C++ "WARNING clustering
    160 points to 6 centroids" lines, which no Python setting silences) is logged at `level` instead
    of reaching the terminal."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (some embedded interpreters): leave it be
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    log.log(level, line.strip())


def quiet_console() -> bool:
    return _console.level > logging.INFO


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Progress of `total` units: a tqdm bar on a terminal, else a line per tenth of the work; either
    way those lines go to the log file.

    Args:
        total: units of work (steps, samples).
        desc: what is running, e.g. "fit mc".
        unit: the unit's name.
        initial: units already done (a resumed run).
        enabled: False shows nothing on screen (the API's `progress=False`; `--quiet`).
    """

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.start_n, self.t0 = initial, time.time()
        self.figures: dict[str, str] = {}
        self.next_line = self._next(initial)
        enabled = enabled and not quiet_console()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit)
        self.lines_on_screen = enabled and self.bar is None

    def _next(self, n: int) -> int:
        tenth = max(1, self.total // 10)
        return (n // tenth + 1) * tenth

    def update(self, n: int = 1, **figures) -> None:
        self.n += n
        self.figures.update({k: v if isinstance(v, str) else f"{v:,.3f}" if isinstance(v, float) and abs(v) < 100
                             else f"{v:,.0f}" for k, v in figures.items()})
        if self.bar is not None:
            self.bar.update(n)
            if figures:
                self.bar.set_postfix(self.figures, refresh=False)
        if self.n >= self.next_line or self.n >= self.total:
            self.next_line = self._next(self.n)
            self._line()

    def _line(self) -> None:
        elapsed = time.time() - self.t0
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        figures = "  ".join(f"{k} {v}" for k, v in self.figures.items())
        line = (f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * self.n / max(1, self.total):.0f}%)  "
                f"{rate:.2f} {self.unit}/s  {figures}  elapsed {_duration(elapsed)}  eta {_duration(eta)}")
        if self.lines_on_screen:
            log.info(line)
        else:  # on screen as a bar, or nothing: the line goes to the log file only
            log.debug(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
