"""The processes that train one run: one (the plain loop) or a ``torchrun`` job (DDP).

Under ``torchrun --nproc_per_node=N`` every rank draws the same seeded permutation, cuts the
same global batches of ``train.batch_size`` examples from it and trains on a contiguous share of
each batch, reading only that share (shares differ in size by at most one example); augmentation
draws for the whole batch, so the generators advance and each example is cropped and flipped as
in one process. Each rank's loss is its share's summed loss scaled by
``world / batch``, so DDP's mean of the ranks' gradients is the gradient of the global batch's
mean loss, as in one process, even for uneven shares. What differs from one process is only the
float summation order (per-rank sums, then the all-reduce), so checkpoints agree to float
tolerance (1e-7 after 4 epochs of the tests' recipe), not bit for bit; the same world size
reproduces its own bits. A recipe that amplifies float-order differences drifts apart as much as
it does between 1 and 2 torch threads in one process. Layer randomness (dropout; none in the
built-in models) would draw the same stream on every rank, not one stream over the whole batch.

BatchNorm would see each rank's share alone; the faithful choice is SyncBatchNorm (statistics
over the global batch), which torch provides on GPUs only, so a BatchNorm model under DDP on the
CPU is refused rather than trained to another recipe.

Rank 0 alone decides how to start (fresh, resume, nothing to do), hands that to the others, and
writes every file; the others write nothing. Failures: a rank that fails on its own says so in
one line naming itself; one that loses contact with the others (the failed rank left, or
torchrun stopped the job) leaves quietly, so the command fails with the failing rank's line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vogflow.common.runtime import resolve_device
from vogflow.errors import ConfigError, RunError
from vogflow.parallel import launch as procgroup


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes training one run."""

    world: int = 1
    rank: int = 0

    @property
    def writer(self) -> bool:
        """Whether this rank writes the run's files and reports (rank 0)."""
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: ``model`` itself for one process, else DDP around it (BatchNorm
        synced across ranks). ``model`` keeps the weights that checkpoints save."""
        if self.world == 1:
            return model
        self.check(model, device)
        if _has_batchnorm(model):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def check(self, model: nn.Module, device: torch.device) -> None:
        """Refuse a model these processes cannot train to the one-process recipe."""
        if self.world > 1 and device.type != "cuda" and _has_batchnorm(model):
            raise ConfigError(
                f"model.name: this model has BatchNorm, whose statistics each of the "
                f"{self.world} CPU processes would take over its share of the batch alone "
                "(torch syncs them on GPUs only); train it with one process on the CPU"
            )

    def share(self, batch: int) -> slice:
        """This rank's contiguous rows of a ``batch``-example global batch (all for one process)."""
        rows = procgroup.shard_rows(batch, self.rank, self.world)
        return slice(rows.start, rows.stop)

    def loss(
        self, logits: torch.Tensor, y: torch.Tensor, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss to backpropagate for this rank's rows of a ``batch``-example global batch,
        and their summed loss (detached) for the epoch's metrics."""
        if self.world == 1:
            loss = F.cross_entropy(logits, y)
            return loss, loss.detach() * batch
        # A sum, not a mean: an empty share (a last batch smaller than the job) adds 0, not NaN.
        summed = F.cross_entropy(logits, y, reduction="sum")
        return summed * (self.world / batch), summed.detach()

    def total(self, *sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-rank running sums added over the ranks (unchanged for one process)."""
        if self.world == 1:
            return sums
        both = torch.stack([s.to(torch.float64) for s in sums])
        dist.all_reduce(both)
        return tuple(both[i].to(s.dtype) for i, s in enumerate(sums))

    def from_writer(self, work: Callable[[], Any]) -> Any:
        """``work()`` run on rank 0 and its result handed to every rank, once rank 0 is done
        (so no rank reads a file before rank 0 has written it). A failure there raises on rank 0
        and :class:`RunError` on the others."""
        if self.world == 1:
            return work()
        failure, result = None, None
        if self.writer:
            try:
                result = work()
            except Exception as err:  # handed to every rank by settle, then re-raised there
                failure = err
        return procgroup.settle(failure, result, error=RunError)[0]


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def join(device: str) -> tuple[Ranks, torch.device]:
    """This process's :class:`Ranks` and device; under torchrun, joins the process group (gloo
    on the CPU, NCCL with one GPU per ``LOCAL_RANK``)."""
    world = procgroup.world_size()
    if world == 1:
        return Ranks(), resolve_device(device)
    if device.startswith("cuda:"):
        raise ConfigError(
            f"train.device: {device!r} puts all {world} processes on one GPU; use 'auto' or "
            "'cuda' under torchrun (each process takes the GPU of its LOCAL_RANK)"
        )
    dev = resolve_device(procgroup.shard_device(device))
    procgroup.ensure_group(dev)
    return Ranks(dist.get_world_size(), dist.get_rank()), dev
