"""Scaling out: one local process against 1 and 2 Ray workers, and the cost of the resume scan.

Part 1 generates the same run (plain sampling from --model, --n records of --new tokens, EOS kept
so the records are the real ones) three ways with the same total threads: one local process
(`--threads` torch threads), one Ray worker with all of them, two Ray workers with half each. Every
case writes to a new directory and its records are checked equal to the local run's. Wall times
include everything a user waits for: model loading, Ray start-up (the Ray cases start their own
local Ray), decoding and writing; the overhead of Ray is the 1-worker wall time minus the local one.

Part 2 writes a run of --scan-records records (tiny, 4 tokens each) and times the rerun of the
finished run: the resume scan (open the run directory, repair and index every shard, plan the
blocks) with and without loading the LM.

Usage: python bench/bench_ray.py [--model smollm2] [--n 200] [--new 48] [--batch-size 25] [--threads 2]
       [--scan-records 10000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _generate(args, out, extra):
    cmd = [sys.executable, "-m", "synthsteer.cli", "generate", "--method", "plain", "--model", args.model,
           "--n", str(args.n), "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.new),
           "--top-p", "0.95", "--device", "cpu", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall


def _records(out):
    from synthsteer.runs import read_run

    return read_run(out)


def scaling(args, root):
    cases = {"local process": [], "ray, 1 worker": ["--ray", "--workers", "1"],
             "ray, 2 workers": ["--ray", "--workers", "2"]}
    rows, reference = {}, None
    for name, extra in cases.items():
        out = root / name.replace(" ", "").replace(",", "-")
        wall = _generate(args, out, extra)
        records = _records(out)
        tokens = sum(r["num_tokens"] for r in records)
        if reference is None:
            reference = records
        same = [json.dumps(r, sort_keys=True) for r in records] == [json.dumps(r, sort_keys=True) for r in reference]
        rows[name] = {"wall_s": round(wall, 2), "samples_per_s": round(len(records) / wall, 2),
                      "tokens_per_s": round(tokens / wall, 1), "records_equal_local": same}
        print(f"{name:16s} {wall:7.1f} s  {len(records) / wall:6.2f} samples/s  {tokens / wall:7.1f} tok/s  "
              f"records equal to local: {same}", flush=True)
    rows["ray overhead (1 worker - local), s"] = round(rows["ray, 1 worker"]["wall_s"] - rows["local process"]["wall_s"],
                                                       2)
    print(f"ray overhead on {args.n} records: {rows['ray overhead (1 worker - local), s']:.1f} s", flush=True)
    return rows


def resume_scan(args, root):
    import torch

    from synthsteer import GenerateConfig, generate
    from synthsteer.generation import plan_blocks
    from synthsteer.runs import RunDir, read_run

    torch.set_num_threads(args.threads)
    config = GenerateConfig(method="plain", model="tiny", n=args.scan_records, batch_size=500, max_new_tokens=4,
                            device="cpu", out=str(root / "scan"))
    t0 = time.time()
    generate(config, progress=False)
    write = time.time() - t0
    t0 = time.time()
    generate(config, progress=False)  # finished: loads tiny, scans, decodes nothing
    rerun = time.time() - t0
    settings = json.loads((root / "scan" / "manifest.json").read_text())["settings"]
    t0 = time.time()
    run = RunDir(root / "scan", settings)
    on_disk = {r["index"]: r for r in read_run(run.path)}
    blocks = plan_blocks(config.n, config.batch_size, run.hash, on_disk)
    scan = time.time() - t0
    run.close()
    assert not any(b.todo for b in blocks)
    print(f"resume scan of {args.scan_records} records: {scan * 1000:.0f} ms (rerun of the finished run with tiny: "
          f"{rerun:.2f} s; writing it took {write:.1f} s)", flush=True)
    return {"records": args.scan_records, "scan_ms": round(scan * 1000), "rerun_s": round(rerun, 2),
            "write_s": round(write, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scan-records", type=int, default=10_000)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = {"args": vars(args), "scaling": scaling(args, root), "resume_scan": resume_scan(args, root)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
