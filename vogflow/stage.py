"""What every pipeline stage does around its work: parse params first, then track the run.

Params are validated before anything else, so a bad value fails in the first second; the tracking
store is checked next, before any heavy work. Stage outputs are written (atomically) before they are
logged, so a tracking failure never loses a result.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
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
    try:
        yield StageContext(name, params, track, tracking.project_root())
    except BaseException:
        track.finish("FAILED")
        raise
    track.finish()
