"""What the integrity checks cost: the LM fingerprint (a strided sample of every weight tensor), the
data hash a resume compares, a prompt's verified load, and a run's validated read.

Usage: python bench/bench_integrity.py [--model smollm2] [--repeats 5]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from synthsteer.data import load_records, records_digest
from synthsteer.lm import fingerprint, load_lm
from synthsteer.runs import read_run
from synthsteer.softsrv.prompt import load_soft_prompt

GOLDEN = Path(__file__).parents[1] / "tests" / "data" / "golden"


def timed(fn, repeats: int) -> float:
    """Median milliseconds of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    lm = load_lm(args.model, device="cpu")
    n_tensors = sum(1 for _ in lm.model.parameters())
    print(f"{args.model}: fingerprint of {n_tensors} tensors: {timed(lambda: fingerprint(lm.model, args.model), args.repeats):.1f} ms")
    records = load_records("builtin:gsm8k")
    print(f"data hash of {len(records):,} GSM8K records: {timed(lambda: records_digest(records), args.repeats):.1f} ms")
    print(f"golden prompt, verified load (sha256, header shapes, finite values): "
          f"{timed(lambda: load_soft_prompt(GOLDEN / 'prompt'), args.repeats):.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        import json
        import shutil

        run = Path(tmp) / "run"
        shutil.copytree(GOLDEN / "runs" / "plain", run)
        line = (run / "records-00000.jsonl").read_text().splitlines()[0]
        record = json.loads(line)
        with open(run / "records-00000.jsonl", "w") as f:  # 10,000 records of the golden shape
            for i in range(10_000):
                f.write(json.dumps({**record, "id": f"x-{i:07d}", "index": i}) + "\n")
        print(f"validated read of a 10,000-record run: {timed(lambda: read_run(run), args.repeats):.1f} ms")


if __name__ == "__main__":
    main()
