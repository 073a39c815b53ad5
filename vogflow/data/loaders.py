"""Torch loaders over a split's inputs, streamed or in memory: in-order batches for evaluation and
extraction, and the training loop's own index lists.

Loader processes only read and normalise rows; every random draw (shuffle order, augmentation,
dropout) stays in the training loop, so a streamed run draws exactly what an in-memory one does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vogflow.errors import DataError, VogflowError


class Rows(TorchDataset):
    """Row ``i`` of ``x`` as a tensor, with its label when ``y`` is given."""

    def __init__(self, x: Any, y: np.ndarray | None = None) -> None:
        self.x, self.y = x, None if y is None else np.asarray(y)

    def __len__(self) -> int:
        return len(self.x)

    def _item(self, row: np.ndarray, i: int) -> Any:
        xt = torch.from_numpy(np.ascontiguousarray(row))
        return xt if self.y is None else (xt, int(self.y[i]))

    def __getitem__(self, i: int) -> Any:
        return self._item(self.x[i], i)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        # One read per batch: a memory map or an image decoder serves the rows together.
        rows = self.x[np.asarray(indices, dtype=np.int64)]
        return [self._item(row, i) for row, i in zip(rows, indices, strict=True)]


class Loader(DataLoader):
    """A DataLoader whose worker processes fail as the main process does: in one line.

    torch re-raises a worker's error as the same type built from a message that embeds the
    worker's whole traceback; a refusal (an unreadable image, say) gets its own line back.
    """

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from super().__iter__()
        except VogflowError as err:
            original = worker_message(err)
            if original is None:
                raise
            raise type(err)(original) from err


def worker_message(err: BaseException) -> str | None:
    """The original one-line message of an error torch re-raised from a loader worker."""
    text = str(err)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return None
    last = text.rstrip().splitlines()[-1]
    name = f"{type(err).__module__}.{type(err).__qualname__}: "
    return last[len(name) :] if last.startswith(name) else None


def workers_of(x: Any) -> int:
    """The loader processes a streamed split asks for (``data.workers``); 0 for arrays."""
    return int(getattr(x, "workers", 0))


def sequential(
    x: Any, y: np.ndarray | None, *, batch_size: int, pin: bool | None = None
) -> DataLoader:
    """In-order batches of ``x`` (and ``y``): ``(inputs, labels)`` pairs, or inputs alone."""
    pin = torch.cuda.is_available() if pin is None else pin
    return Loader(
        Rows(x, y),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers_of(x),
        pin_memory=pin,
    )


def extraction_input(x: Any, y: np.ndarray, *, batch_size: int) -> Any:
    """What :func:`vogflow.scoring.extract.run_extraction` reads: the ``(x, y)`` arrays themselves,
    or an in-order loader of a streamed split with the same batch boundaries (and so the same
    bits)."""
    if isinstance(x, np.ndarray | torch.Tensor):
        return (x, y)
    return sequential(x, y, batch_size=batch_size)


def index_batches(
    x: Any, steps: Iterable[torch.Tensor], *, pin: bool = False
) -> Iterator[torch.Tensor]:
    """``x[idx]`` for each ``idx`` of ``steps`` in turn, as ``torch`` tensors.

    An array is indexed directly; a streamed split is read through a loader whose batch sampler
    is ``steps`` itself, so its workers decode the next batches while the current one trains.
    """
    if isinstance(x, np.ndarray | torch.Tensor):
        xt = torch.as_tensor(x)
        return (xt[idx] for idx in steps)
    steps = [torch.as_tensor(idx).tolist() for idx in steps]
    loader = Loader(
        Rows(x),
        batch_sampler=[idx for idx in steps if idx],
        num_workers=workers_of(x),
        pin_memory=pin,
    )
    return _with_empty(iter(loader), steps, tuple(x.shape[1:]))


def _with_empty(
    batches: Iterator[torch.Tensor], steps: Sequence[list[int]], shape: tuple[int, ...]
) -> Iterator[torch.Tensor]:
    # A loader cannot collate an empty batch; a DDP rank's share of a last batch smaller than
    # the job is one.
    for idx in steps:
        yield next(batches) if idx else torch.empty((0, *shape), dtype=torch.float32)


def check_label_values(y: torch.Tensor, *, offset: int = 0) -> None:
    """Refuse labels that are not whole class indices of shape ``(N,)``; never round them.

    ``offset``: the dataset position of ``y[0]``, so the message names dataset indices.
    """
    if y.dim() != 1:
        raise DataError(
            f"labels must be class indices of shape (batch,), got shape {tuple(y.shape)}; pass "
            "a 1-D vector (y.argmax(1) for one-hot or probability labels, y.squeeze(1) for a "
            "column)"
        )
    if not y.is_floating_point():
        return
    bad = torch.nonzero(~(torch.isfinite(y) & (y == torch.round(y))))[:, 0].tolist()
    if bad:
        rows = ", ".join(f"index {offset + i}: {float(y[i])!r}" for i in bad[:5])
        more = ", ..." if len(bad) > 5 else ""
        raise DataError(
            f"labels must be whole class indices, found {len(bad)} that are not ({rows}{more}): "
            "pass integer labels (vogflow does not round or truncate them)"
        )
