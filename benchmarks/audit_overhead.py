"""Where a whole audit's time goes: stage work, process start-up, and DVC between stages.

Clones the project (its committed state) into a fresh folder, runs the default audit there with
`dvc repro` as a new user would, then every stage again with `dvc repro -f`, and splits each wall
time using the timings every stage leaves in `.vogflow/timings/` (process start, first line of
work, end):

    python benchmarks/audit_overhead.py [--keep FOLDER]

- work: each stage's body (training, extraction, analysis, logging in the track stage);
- start-up: interpreter, imports and params of each stage process, before its first line of work;
- between stages: wall time not inside any stage process (DVC hashing, locking, its own start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(folder: Path, env: dict, command: list[str]) -> None:
    """Run ``command`` in ``folder`` and print where its wall time went."""
    timings = folder / ".vogflow" / "timings"
    shutil.rmtree(timings, ignore_errors=True)
    started = time.time()
    subprocess.run(command, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - started
    rows = []
    for path in sorted(timings.glob("*.json")):
        t = json.loads(path.read_text())
        rows.append((t["stage"], t["body_start"] - t["start"], t["end"] - t["body_start"]))
    startup = sum(r[1] for r in rows)
    work = sum(r[2] for r in rows)
    between = wall - startup - work
    print(f"\n`{' '.join(command)}`: {wall:.0f} s wall, {len(rows)} stages ran")
    print("| stage | start-up (s) | work (s) |\n|---|---|---|")
    for stage, s, w in rows:
        print(f"| {stage} | {s:.1f} | {w:.1f} |")
    print(f"| **all** | **{startup:.1f}** | **{work:.1f}** |\n")
    print(
        f"work {work:.0f} s ({work / wall:.0%}), start-up {startup:.0f} s ({startup / wall:.0%}), "
        f"between stages (DVC) {between:.0f} s ({between / wall:.0%})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", help="run in this folder and keep it (default: a temporary one)")
    args = p.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="vogflow-audit-"))
    if folder.exists():
        shutil.rmtree(folder)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    env = {**os.environ, "PYTHONPATH": str(folder)}
    env.pop("MLFLOW_TRACKING_URI", None)
    # What a newcomer runs (stages whose outputs came with git and whose deps match the lock
    # are skipped), then every stage.
    measure(folder, env, ["dvc", "repro"])
    measure(folder, env, ["dvc", "repro", "-f"])
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
