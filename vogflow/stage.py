"""What every pipeline stage does around its work: parse params first, then track the run.

Params are validated before anything else, so a bad value fails in the first second; the tracking
store is checked next, before any heavy work. Stage outputs are written (atomically) before they are
logged, so a tracking failure never loses a result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vogflow.config import ConfigError, Params, load_params


@dataclass
class StageContext:
    name: str
    params: Params
    track: Any  # vogflow.tracking.StageRun or NoTracking
    root: Path


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


@contextlib.contextmanager
def stage(
    name: str, *, params_path: str = "params.yaml", run: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[StageContext]:  # fmt: skip
    """Run a stage body with validated params and a child run of the audit's parent run."""
    try:
        params = load_params(params_path)
        if run is not None and run not in params.runs:
            defined = ", ".join(params.runs)
            raise ConfigError(f"--run: {run!r} is not a run; defined runs: {defined}")
    except ConfigError as err:
        sys.exit(f"{name}: invalid parameters: {err}")
    from vogflow import tracking

    try:
        track = tracking.start_stage(
            name, experiment=params.tracking.experiment, run=run, tags=tags
        )
    except tracking.TrackingError as err:
        sys.exit(f"{name}: {err}")
    print(f"== {name}", flush=True)
    body_start = time.time()
    root = tracking.project_root()
    try:
        yield StageContext(name, params, track, root)
    except BaseException:
        with contextlib.suppress(tracking.TrackingError):
            track.finish("FAILED")  # the stage's own error is the one to show
        raise
    # The exact configuration behind the outputs: the params this stage read, and the audit's
    # lock file as DVC left it before this stage (DVC updates it once the stage has finished).
    track.artifact(params_path, "config")
    if (root / "dvc.lock").exists():
        track.artifact(root / "dvc.lock", "config", parent=True)
    # Start-up (interpreter, imports, params, tracking store) against the stage's whole life:
    # the audit's overhead share is the sum of these over its stages.
    started = process_start_time()
    if started is not None:
        track.metrics(
            {
                "timing.startup_seconds": body_start - started,
                "timing.total_seconds": time.time() - started,
            }
        )
    track.finish()


def process_start_time() -> float | None:
    """When this process started (epoch seconds), from /proc; None where /proc is missing."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None
