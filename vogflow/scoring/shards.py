"""Sharded extraction under ``torchrun``: each rank scores a contiguous range, rank 0 assembles.

``torchrun --nproc_per_node=N stages/gradients.py ...`` (or any script calling
:func:`vogflow.scoring.extract.run_extraction` on every rank) splits a split into N contiguous
index ranges whose sizes differ by at most 1: no sampler padding, no reordering, so rank 0
rebuilds exactly the rows a single process would give. Gloo carries the exchange on the CPU; on a
GPU the default group is ``cpu:gloo,cuda:nccl``, so the host-side results still travel over gloo
with no device copies.

Failure protocol: after its range, every rank tells the others whether it failed (one line) and
how its rows look (:class:`vogflow.scoring.health.Health`). A failed rank re-raises its own
error, the others raise :class:`RunError` naming it, so no rank waits on a peer that will never
send, and rank 0 never holds a partial table. The whole-split checks (non-finite rows, all-zero
windows) run on the merged health, so they fail on the same rows, with the same message, as one
process. A rank that dies outright is torchrun's to handle: it stops the others, and the command
fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from vogflow.errors import RunError

# The process-group basics live in vogflow.parallel.launch (DDP training shares them); they are
# named here too, since callers of sharded extraction ask this module which rank they are.
from vogflow.parallel.launch import (
    ensure_group,
    rank,
    settle,
    shard_device,
    shard_rows,
    sharded,
    world_size,
)
from vogflow.scoring.health import Health, check_health
from vogflow.scoring.results import Extraction

__all__ = [
    "RunError",
    "assemble",
    "ensure_group",
    "rank",
    "run_sharded",
    "shard_device",
    "shard_rows",
    "sharded",
    "world_size",
]


def assemble(parts: Sequence[Extraction]) -> Extraction:
    """One :class:`Extraction` from the parts of consecutive ranges, in rank order."""
    first = parts[0]
    return Extraction(
        label=np.concatenate([p.label for p in parts]),
        pred=np.concatenate([p.pred for p in parts]),
        vog_raw={k: np.concatenate([p.vog_raw[k] for p in parts]) for k in first.vog_raw},
        stats={k: np.concatenate([p.stats[k] for p in parts], axis=1) for k in first.stats},
        windows=first.windows,
        # An empty range never saw a logit, so it knows no class count: it adds no rows anyway.
        probs=None
        if first.probs is None
        else np.concatenate([p.probs for p in parts if len(p.label)] or [first.probs]),
    )


def run_sharded(
    part: Callable[[range], tuple[Extraction, Health]],
    num_examples: int,
    *,
    device: torch.device,
) -> Extraction | None:
    """Run ``part`` on this rank's rows; rank 0 returns the assembled split, the others None.

    ``part(rows)`` streams the dataset rows ``rows`` (see :func:`vogflow.scoring.stream.stream`).
    Every rank must call this, with the same ``num_examples``. Raises the rank's own error, or
    :class:`RunError` when another rank failed; :class:`~vogflow.errors.ConfigError` when
    the merged split fails the whole-split checks (on every rank alike).
    """
    ensure_group(device)
    me, world = dist.get_rank(), dist.get_world_size()
    result: tuple[Extraction, Health] | None = None
    failure: Exception | None = None
    try:
        result = part(shard_rows(num_examples, me, world))
    except Exception as err:  # handed to every rank by settle, then re-raised there
        failure = err

    def where(r: int) -> str:
        rows = shard_rows(num_examples, r, world)
        return f" on examples {rows.start}-{rows.stop - 1}"

    healths = settle(failure, None if result is None else result[1], error=RunError, where=where)
    check_health(Health.merge(healths))
    parts: list | None = [None] * world if me == 0 else None
    # Objects, not padded tensors: a rank's arrays have their own sizes and dtypes, pickling
    # numpy arrays is a memory copy, and the gather is a small share of the extraction's time
    # (benchmarks/bench_distributed.py measures it).
    dist.gather_object(result[0], parts, dst=0)
    return assemble(parts) if me == 0 else None
