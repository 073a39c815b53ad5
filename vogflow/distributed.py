"""Sharded extraction under ``torchrun``: each rank scores a contiguous range, rank 0 assembles.

``torchrun --nproc_per_node=N stages/gradients.py ...`` (or any script calling
:func:`vogflow.engine.run_extraction` on every rank) splits a split into N contiguous index ranges
whose sizes differ by at most 1: no sampler padding, no reordering, so rank 0 rebuilds exactly the
rows a single process would give. Gloo carries the exchange on the CPU; on a GPU the default group
is ``cpu:gloo,cuda:nccl``, so the host-side results still travel over gloo with no device copies.

Failure protocol: after its range, every rank tells the others whether it failed (one line) and
how its rows look (:class:`vogflow.gradients.Health`). A failed rank re-raises its own error, the
others raise :class:`ShardError` naming it, so no rank waits on a peer that will never send, and
rank 0 never holds a partial table. The whole-split checks (non-finite rows, all-zero windows) run
on the merged health, so they fail on the same rows, with the same message, as one process.
A rank that dies outright is torchrun's to handle: it stops the others, and the command fails.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from vogflow.extraction import Extraction
from vogflow.gradients import GradientError, Health, check_health


def world_size() -> int:
    """How many processes share the work (``WORLD_SIZE`` set by torchrun; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (``RANK``; 0 without torchrun). Only rank 0 writes outputs."""
    return int(os.environ.get("RANK", "0"))


def sharded() -> bool:
    """Whether extraction is split across processes (more than one rank)."""
    return world_size() > 1


def shard_rows(num_examples: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous rows of ``num_examples``: the first ``num_examples % world``
    ranks get one row more, so sizes differ by at most 1 and the ranges tile ``[0, N)`` in order.
    """
    base, extra = divmod(int(num_examples), int(world))
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def shard_device(device: str) -> str:
    """Each rank its own GPU (``LOCAL_RANK``) for ``auto``/``cuda``; anything else unchanged."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def ensure_group(device: torch.device) -> None:
    """Join the torchrun process group once per process (``env://``); left at exit."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    # A refusal's message stands alone; a bug's type says what kind it was.
    return text if isinstance(err, GradientError) else f"{type(err).__name__}: {text}"


# A GradientError, so callers treat a peer's failure like their own refusal: one line, no
# traceback here (a rank that hit a bug prints its own traceback).
class ShardError(GradientError):
    """Another rank's range failed, so this rank cannot return the assembled split."""


def assemble(parts: Sequence[Extraction]) -> Extraction:
    """One :class:`Extraction` from the parts of consecutive ranges, in rank order."""
    first = parts[0]
    return Extraction(
        label=np.concatenate([p.label for p in parts]),
        pred=np.concatenate([p.pred for p in parts]),
        vog_raw={k: np.concatenate([p.vog_raw[k] for p in parts]) for k in first.vog_raw},
        stats={k: np.concatenate([p.stats[k] for p in parts], axis=1) for k in first.stats},
        windows=first.windows,
    )


def run_sharded(
    part: Callable[[range], tuple[Extraction, Health]],
    num_examples: int,
    *,
    device: torch.device,
) -> Extraction | None:
    """Run ``part`` on this rank's rows; rank 0 returns the assembled split, the others None.

    ``part(rows)`` streams the dataset rows ``rows`` (see :func:`vogflow.gradients.stream`).
    Every rank must call this, with the same ``num_examples``. Raises the rank's own error, or
    :class:`ShardError` when another rank failed; :class:`vogflow.gradients.GradientError` when
    the merged split fails the whole-split checks (on every rank alike).
    """
    ensure_group(device)
    me, world = dist.get_rank(), dist.get_world_size()
    result: tuple[Extraction, Health] | None = None
    failure: Exception | None = None
    try:
        result = part(shard_rows(num_examples, me, world))
    except Exception as err:  # handed to every rank below, then re-raised here
        failure = err
    message = None if failure is None else _one_line(failure)
    status = (message, None if result is None else result[1])
    statuses: list = [None] * world
    dist.all_gather_object(statuses, status)
    if failure is not None:
        raise failure
    failed = [(r, message) for r, (message, _) in enumerate(statuses) if message is not None]
    if failed:
        r, message = failed[0]
        rows = shard_rows(num_examples, r, world)
        others = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
        raise ShardError(
            f"rank {r} of {world} failed on examples {rows.start}-{rows.stop - 1}{others}: "
            f"{message}"
        )
    check_health(Health.merge([health for _, health in statuses]))
    parts: list | None = [None] * world if me == 0 else None
    # Objects, not padded tensors: a rank's arrays have their own sizes and dtypes, pickling
    # numpy arrays is a memory copy, and the gather is a small share of the extraction's time
    # (benchmarks/bench_distributed.py measures it).
    dist.gather_object(result[0], parts, dst=0)
    return assemble(parts) if me == 0 else None
