"""Streaming input-gradient extraction: K checkpoints, one pass over the data, raw VoG out.

Data-major: the K models sit on the device together; each batch gets all K input gradients of
the selected pre-softmax logit, which are reduced at once to per-example raw VoG for every window
and label mode. Memory is O(batch x K x pixels) whatever the dataset size; nothing per checkpoint
is written out. The same forward passes give each checkpoint's prediction, loss, margin, EL2N and
max softmax probability, so later analyses never rerun the models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.common.progress import Progress
from vogflow.common.runtime import resolve_device
from vogflow.errors import ConfigError
from vogflow.scoring.batch import BatchScorer, tf32
from vogflow.scoring.health import Health, check_health
from vogflow.scoring.models import check_models, frozen_eval, placed
from vogflow.scoring.options import ExtractionOptions
from vogflow.scoring.results import Extraction

__all__ = ["extract", "stream", "tensor_batches"]


def extract(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[Any, torch.Tensor]],
    options: ExtractionOptions | None = None,
    *,
    num_examples: int,
    num_batches: int | None = None,
    **changes: Any,
) -> Extraction:
    """Raw VoG of every example for each window and label mode, in one streaming pass.

    Args:
        models: the ``K`` checkpoints of one run, in training order (the last is "final").
        batches: ``(x, y)`` in dataset order, never shuffled or augmented; ``x`` a tensor as fed
            to the model (normalised), or a mapping of token ids (``input_ids``,
            ``attention_mask``; the gradient is then taken w.r.t. the input embeddings: see
            :mod:`vogflow.scoring.inputs`); ``y`` the labels for ``label`` mode and the statistics.
        num_examples: how many examples the batches hold (the outputs are allocated once).
        options: the :class:`ExtractionOptions` (the defaults when None), with ``changes`` (any
            of its fields by keyword) applied. Of them:
        windows, window_size: the checkpoints each score uses (see ``vog.window_indices``).
        label_modes: ``label`` (gradient of the given label's logit) and/or ``pred`` (of the class
            the final checkpoint predicts, at every checkpoint). With both, ``pred`` costs a
            forward and backward of only the rows whose prediction is not their label: the rest
            are ``label``'s gradients, bit for bit.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        precision: ``fp32``; ``tf32`` or ``bf16`` trade exactness for speed on a GPU (bf16 is
            refused on the CPU; tf32 there runs fp32 with a warning).
        channels_last: run image models and ``(N, C, H, W)`` batches in the channels-last memory
            layout, which cuDNN's fastest convolutions use on recent GPUs; the same values in
            another layout, so scores agree with the default to float rounding.

    Refused as degenerate (:class:`ConfigError`): see :func:`check_models`; labels that are
    not whole numbers; a model whose input gradients are all zero (its output ignores its
    input); a window whose VoG is 0 for every example.
    """
    extraction, health = stream(
        models,
        batches,
        options,
        num_examples=num_examples,
        num_batches=num_batches,
        **changes,
    )
    check_health(health)
    return extraction


def stream(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[Any, torch.Tensor]],
    options: ExtractionOptions | None = None,
    *,
    num_examples: int,
    num_batches: int | None = None,
    offset: int = 0,
    **changes: Any,
) -> tuple[Extraction, Health]:
    """:func:`extract` without the whole-split checks: one part of a split, and its health.

    ``offset``: the dataset index of the first example, so that messages and ``Health`` name
    dataset indices when the batches are a slice of the split (a shard). An empty part is fine.
    """
    options = ExtractionOptions.of(options, **changes)
    chosen = check_models(models, options)
    n = int(num_examples)
    device = options.device
    dev = resolve_device(device) if isinstance(device, str) else device
    precision = options.precision_on(dev)
    scorer = BatchScorer(models, options, chosen, num_examples=n, dev=dev, precision=precision)
    seen = 0
    bar = Progress(num_batches or 0, "gradients", unit="batch", enabled=options.progress)
    try:
        # enable_grad: a caller inside `torch.no_grad()` would otherwise get no input gradients.
        with (
            placed(models, dev, options.channels_last),
            frozen_eval(models),
            tf32(precision == "tf32"),
            torch.enable_grad(),
        ):
            for x, y in batches:
                b = scorer.score(x, y, seen, offset)
                if b:
                    seen += b
                    bar.update()
    finally:
        bar.close()
    if seen != n:
        raise ConfigError(f"the batches held {seen} examples, not num_examples={n}")
    return scorer.out.extraction(chosen), scorer.out.health(seen, offset, chosen)


def tensor_batches(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """In-order ``(x, y)`` batches of in-memory arrays (no copies beyond each batch)."""
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    pin = torch.cuda.is_available()
    for i in range(0, len(y), batch_size):
        xb = x[i : i + batch_size]
        yield (xb.pin_memory() if pin else xb), y[i : i + batch_size]
