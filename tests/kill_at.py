"""Run the synthsteer CLI and kill -9 it at a known point: the n-th call of a function.

    python kill_at.py MODULE:ATTR.PATH N [--match TEXT] [--torn BYTES] -- CLI ARGS...

`--match` counts only calls with an argument that ends with TEXT (os.replace(..., "x.old")).
`--torn` cuts BYTES off the end of the file the call flushes (os.fsync(fd)) before the kill: what
the disk holds when a kill lands in the middle of a write.
"""

import argparse
import importlib
import os
import signal
import sys

cut = sys.argv.index("--")
ap = argparse.ArgumentParser()
ap.add_argument("target")
ap.add_argument("n", type=int)
ap.add_argument("--match")
ap.add_argument("--torn", type=int)
opts, cli = ap.parse_args(sys.argv[1:cut]), sys.argv[cut + 1:]

module, attr = opts.target.split(":")
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
real, calls = getattr(owner, name), [0]


def killer(*args, **kwargs):
    if opts.match is None or any(str(a).endswith(opts.match) for a in args):
        calls[0] += 1
        if calls[0] == opts.n:
            if opts.torn:
                os.ftruncate(args[0], os.fstat(args[0]).st_size - opts.torn)
            os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)


setattr(owner, name, killer)
from synthsteer.cli import main  # noqa: E402

main(cli)
