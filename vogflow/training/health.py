"""Training health: a loss that diverged, or a run that stopped learning, ends the run with a
:class:`RunError` that names the fix."""

from __future__ import annotations

import numpy as np
import torch

from vogflow.errors import RunError

# Epochs in a row at chance before a run counts as stalled: one or two such epochs happen in
# healthy runs (a large first step, a learning-rate bump); a collapse stays.
STALL_EPOCHS = 3


def stalled(history: list[tuple[float, float]], *, classes: int, chance: float) -> bool:
    """Whether ``history`` ((loss, accuracy) per epoch) ends in a run that stopped learning: in
    each of the last :data:`STALL_EPOCHS` epochs, training accuracy at most 5 points above
    ``chance`` (the share of the most common training label), after the run had learned (an
    earlier epoch 10 points above chance: the collapse of a recipe too hot for the data), or
    with a loss 2 % above log(classes) throughout (worse than a uniform guess: a recipe thrown
    about from the start). A run still on its first plateau, its loss at or just below log(classes),
    is slow, not broken: a lower learning rate would not help it."""
    if len(history) < STALL_EPOCHS:
        return False
    before, window = history[:-STALL_EPOCHS], history[-STALL_EPOCHS:]
    if any(accuracy > chance + 0.05 for _, accuracy in window):
        return False
    learned = any(accuracy > chance + 0.1 for _, accuracy in before)
    # 2 % above: an untrained network's loss starts a little above log(classes) (weight decay,
    # initial logits), and a slow first plateau can stay there for epochs.
    return learned or all(loss > 1.02 * float(np.log(classes)) for loss, _ in window)


def check_finite(total_loss: torch.Tensor, epoch: int) -> None:
    """Refuse an epoch whose summed loss is not finite: the run diverged."""
    # Also a FloatingPointError, which callers of the loop caught before it was a refusal.
    if not torch.isfinite(total_loss):
        raise RunError(
            f"training loss became {total_loss.item()} during epoch {epoch}: lower train.lr",
            cause="diverged",
            epoch=epoch,
        )


def check_learning(
    history: list[tuple[float, float]],
    metrics: dict[str, float],
    *,
    epoch: int,
    classes: int,
    chance: float,
    lr: float,
) -> None:
    """Refuse a run that :func:`stalled` at ``epoch`` (``metrics`` are that epoch's)."""
    if stalled(history, classes=classes, chance=chance):
        reason = (
            f"training stopped learning at epoch {epoch}: train accuracy "
            f"{metrics['train_accuracy']:.3f} (chance {chance:.3f}) and loss "
            f"{metrics['train_loss']:.3f} (a uniform guess: {np.log(classes):.3f}) "
            f"for {STALL_EPOCHS} epochs; the usual cause is a learning rate too high for the "
            f"recipe ({lr:g})"
        )
        raise RunError(f"{reason}: lower train.lr", cause="stalled", epoch=epoch, reason=reason)
