"""One training epoch: its learning rate, shuffle, augmentation and steps; and prediction."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.common.progress import Progress
from vogflow.common.runtime import derived_seed
from vogflow.config.schema import TrainConfig
from vogflow.data import loaders


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate during (1-based) ``epoch``: decays by ``gamma`` after each milestone epoch."""
    return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch > m)


def augment_batch(
    x: torch.Tensor,
    kind: str,
    generator: torch.Generator,
    *,
    rows: slice | None = None,
    of: int = 0,
) -> torch.Tensor:
    """The paper's CIFAR augmentation: 4-pixel zero-padded random crop and horizontal flip.

    ``x`` may be ``rows`` of an ``of``-example batch (a DDP rank's share): the draws are the
    whole batch's, in the same order, so every rank advances ``generator`` alike and each
    example gets the crop and flip it would get in one process.
    """
    if kind == "none":
        return x
    b, _, h, w = x.shape
    rows = slice(0, b) if rows is None else rows
    total = of or b
    pad = 4
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (total,), generator=generator)[rows]
    ox = torch.randint(0, 2 * pad + 1, (total,), generator=generator)[rows]
    at_rows = (oy[:, None] + torch.arange(h))[:, :, None]
    at_cols = (ox[:, None] + torch.arange(w))[:, None, :]
    crops = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], at_rows, at_cols]
    crops = crops.permute(0, 3, 1, 2)
    flip = (torch.rand(total, generator=generator) < 0.5)[rows]
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops).contiguous()


@torch.no_grad()
def predict(model: nn.Module, x: Any, *, batch_size: int = 1024) -> torch.Tensor:
    """Predicted classes in eval mode (the model's mode is restored); ``x`` a tensor, or a
    streamed split read in batches of the same size."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if torch.is_tensor(x):
        batches = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    else:
        batches = loaders.sequential(x, None, batch_size=batch_size, pin=device.type == "cuda")
    try:
        return torch.cat([model(xb.to(device)).argmax(1).cpu() for xb in batches])
    finally:
        model.train(was_training)


def as_input(x: Any) -> Any:
    """A split's inputs as the loop indexes them: a tensor view of an array, or the stream."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def run_epoch(
    epoch: int,
    *,
    model: nn.Module,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    ranks: Any,
    device: torch.device,
    cfg: TrainConfig,
    x_train: Any,
    y_train: torch.Tensor,
    augment: str,
    step: int,
) -> tuple[float, int, torch.Tensor, torch.Tensor]:
    """Train ``epoch`` (1-based); returns (its learning rate, the step count after it, and this
    rank's summed loss and count of correct predictions, still on the device)."""
    n = len(y_train)
    lr = lr_at(cfg, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    generator = torch.Generator().manual_seed(derived_seed(cfg.seed, epoch))
    torch.manual_seed(derived_seed(cfg.seed, epoch, 1))  # dropout and other layer randomness
    order = torch.randperm(n, generator=generator)
    model.train()
    # Running sums stay on the device: a .item() per step would stall a GPU every step.
    total_loss = torch.zeros((), device=device)
    total_correct = torch.zeros((), device=device, dtype=torch.long)
    # A live bar within the epoch on a terminal only; logs get the one line per epoch.
    bar = Progress(
        -(-n // cfg.batch_size),
        f"epoch {epoch}",
        unit="step",
        enabled=sys.stderr.isatty() and ranks.writer,
    )
    steps = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    # Each rank reads (decodes, for streamed data) only its own share of every batch.
    shares = [ranks.share(len(idx)) for idx in steps]
    own = [idx[share] for idx, share in zip(steps, shares, strict=True)]
    inputs = loaders.index_batches(x_train, own, pin=device.type == "cuda")
    for idx, share, x_own in zip(steps, shares, inputs, strict=True):
        xb = augment_batch(x_own, augment, generator, rows=share, of=len(idx))
        xb = xb.to(device)
        yb = y_train[idx[share]].to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = net(xb)
        loss, summed = ranks.loss(logits, yb, len(idx))
        loss.backward()
        optimizer.step()
        step += 1
        total_loss += summed
        total_correct += (logits.argmax(1) == yb).sum()
        bar.update()
    bar.close()
    return lr, step, total_loss, total_correct
