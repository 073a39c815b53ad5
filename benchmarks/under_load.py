"""The process tests, several runs in a row while CPU-bound processes load the machine.

A test that assumes how fast a peer process runs (a rank, a torchrun agent, a server) passes on
an idle machine and fails on a busy one; this shows whether any does:

    python benchmarks/under_load.py                 # 5 runs, 2 busy processes
    python benchmarks/under_load.py --runs 3 --busy 4 -k "ddp"

Each run is ``pytest -m "slow or not slow or integration" -k "distributed or torchrun or ddp or
shard"`` (every tier, the tests that start ranks). It prints one line a run (passed, failed,
seconds, load average) and exits nonzero if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELECTION = "distributed or torchrun or ddp or shard"
BUSY = "while True: pass"


def summary(output: str) -> dict[str, int]:
    """pytest's closing counts ("3 passed, 1 failed in 9.1s") as a dict."""
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error|errors)", last)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the runs")
    parser.add_argument("-k", default=SELECTION, help="pytest -k expression")
    parser.add_argument("--json", type=Path, help="write the runs' records here")
    args = parser.parse_args(argv)

    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    records = []
    try:
        for run in range(1, args.runs + 1):
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            command += ["-m", "slow or not slow or integration", "-k", args.k]
            start = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.monotonic() - start
            counts = summary(done.stdout)
            load = os.getloadavg()[0]
            records.append({"run": run, "exit": done.returncode, "seconds": seconds,
                            "load1": load, **counts})  # fmt: skip
            print(
                f"run {run}/{args.runs}: exit {done.returncode}, {counts.get('passed', 0)} passed,"
                f" {counts.get('failed', 0) + counts.get('error', 0) + counts.get('errors', 0)}"
                f" failed, {seconds:.0f} s, load average {load:.1f}",
                flush=True,
            )
            if done.returncode != 0:
                print(done.stdout[-4000:], flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    failed = [r["run"] for r in records if r["exit"] != 0]
    print(f"{len(records) - len(failed)} of {len(records)} runs passed with {args.busy} busy "
          "processes" + (f"; failed: {failed}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
