"""The pipeline stages' toolkit, used by ``stages/*.py`` only: this module is what every stage
does around its work (validate params first, record how long it took); ``runs`` loads what a run
saw and produced; ``reports`` shapes the stages' reports and metrics. Three modules, not one, so
a stage's DVC deps hold only the glue it imports: a decile-report edit must not retrain models.

A user error (:class:`vogflow.errors.VogflowError`: a bad param, file or store) ends the stage
with one line and exit code 2; anything else keeps its traceback.

Stages write files and never talk to MLflow: the ``track`` stage at the end of the pipeline logs
the whole audit from those files. What changes from run to run (durations, per-epoch seconds) is
kept out of DVC's outputs, in ``.vogflow/timings/<stage>.json``, which the track stage reads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vogflow.common.atomic import TIMINGS, project_root, write_json
from vogflow.config.schema import Params, load_params
from vogflow.errors import ConfigError, VogflowError


@dataclass
class StageContext:
    name: str
    params: Params
    root: Path
    # Per-epoch or per-split numbers that vary between reruns (seconds): they reach MLflow
    # through the timings file, never a DVC output.
    timings: dict[str, Any] = field(default_factory=dict)


def processes_param(params_path: str, pick: Callable[[Params], int]) -> int:
    """How many processes a stage's ``*.processes`` param asks for (``pick`` reads it), or 1 when
    torchrun already started this process or the params do not load (the stage reports why)."""
    if "WORLD_SIZE" in os.environ:
        return 1
    try:
        return pick(load_params(params_path))
    except VogflowError:
        return 1


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


@contextlib.contextmanager
def stage(
    name: str, *, params_path: str = "params.yaml", run: str | None = None
) -> Iterator[StageContext]:
    """Run a stage body with validated params; on success, record its timings."""
    try:
        params = load_params(params_path)
        if run is not None and run not in params.runs:
            defined = ", ".join(params.runs)
            raise ConfigError(f"--run: {run!r} is not a run; defined runs: {defined}")
    except ConfigError as err:
        print(f"{name}: invalid parameters: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"== {name}", flush=True)
    body_start = time.time()
    ctx = StageContext(name, params, project_root())
    try:
        yield ctx
    except VogflowError as err:  # a bad input or file: one line, the bug-free path
        print(f"{name}: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        sys.exit(2)
    end = time.time()
    started = process_start_time() or body_start
    record = {
        "stage": os.environ.get("DVC_STAGE", name),
        "start": started,
        "body_start": body_start,
        "end": end,
        **ctx.timings,
    }
    with contextlib.suppress(OSError):  # a read-only workspace costs the timings, not the result
        write_json(TIMINGS / f"{record['stage']}.json", record)


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
