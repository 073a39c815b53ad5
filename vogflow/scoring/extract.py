"""The one door to the extraction engine: checkpoints and data in any supported form in, one
:class:`~vogflow.scoring.results.Extraction` out, sharded over ``torchrun`` ranks when there are
several.

The pipeline's stages, the paper's replication and :func:`vogflow.audit` all extract through
:func:`run_extraction`; it knows nothing of tracking, so a logging change never reruns an
extraction stage.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from vogflow.checkpoints import files as ck
from vogflow.common.runtime import resolve_device
from vogflow.data.loaders import check_label_values
from vogflow.errors import CheckpointError, ConfigError
from vogflow.scoring import shards as distributed
from vogflow.scoring.health import Health
from vogflow.scoring.options import ExtractionOptions
from vogflow.scoring.results import Extraction
from vogflow.scoring.stream import extract, stream, tensor_batches
from vogflow.scoring.vog import check_checkpoint_count


@runtime_checkable
class Batched(Protocol):
    """Data that makes its own in-order batches (:class:`vogflow.data.text.TextData`): the same
    answer as :func:`batches_of`."""

    def batches(self, batch_size: int, rows: range | None = None) -> tuple[Any, int, int]: ...


Checkpoint = str | Path | Mapping[str, Any]
Data = Dataset | DataLoader | tuple[Any, Any] | Batched


def load_checkpoints(model: nn.Module, checkpoints: Sequence[Checkpoint]) -> list[nn.Module]:
    """One copy of ``model`` per checkpoint (path or in-memory state dict), in the given order."""
    check_checkpoint_count(len(checkpoints), error=CheckpointError)
    models = []
    for i, item in enumerate(checkpoints):
        if isinstance(item, str | Path):
            source = str(item)
            obj = ck.load_file(item)
        else:
            source = f"checkpoint #{i + 1} (in memory)"
            obj = item
        state = ck.extract_state_dict(obj, source=source)
        copy_ = copy.deepcopy(model)
        ck.load_into(copy_, state, source=source)
        models.append(copy_)
    return models


LABEL_KEYS = ("labels", "label")


def _loader_batches(loader: DataLoader) -> Iterator[tuple[Any, torch.Tensor]]:
    for batch in loader:
        if isinstance(batch, Mapping):
            # A tokenised batch (a Hugging Face collator's dict): the labels ride along with the
            # token ids; everything else stays for vogflow.scoring.inputs.Tokens to pick from.
            key = next((k for k in LABEL_KEYS if k in batch), None)
            if key is None:
                raise ConfigError(
                    f"a dict batch has no labels (keys: {', '.join(map(str, batch))}); add "
                    "'labels' to each example, as a Hugging Face Trainer dataset has"
                )
            yield {k: v for k, v in batch.items() if k != key}, batch[key]
            continue
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise ConfigError("each batch must be (inputs, labels, ...) or a dict with labels")
        yield batch[0], batch[1]


def batches_of(data: Data, batch_size: int, rows: range | None = None) -> tuple[Any, int, int]:
    """``(batches, num_batches, num_examples)`` of a Dataset, sequential DataLoader or (x, y).

    ``rows``: only that contiguous range of the dataset (a shard), in order; ``num_examples`` is
    then the range's length. A DataLoader's shard keeps its batch size, workers and collate.
    """
    if isinstance(data, Batched) and not isinstance(data, Dataset | DataLoader):
        return data.batches(batch_size, rows)
    if isinstance(data, DataLoader):
        sampler = data.batch_sampler.sampler if data.batch_sampler is not None else data.sampler
        if not isinstance(sampler, SequentialSampler):
            raise ConfigError(
                "the DataLoader is not sequential (shuffle=True or a custom sampler): rows would "
                "not match dataset indices. Pass a DataLoader with shuffle=False, or the Dataset"
            )
        if data.drop_last:
            raise ConfigError(
                "the DataLoader drops its last partial batch (drop_last=True): those examples "
                "would get no score. Pass a DataLoader with drop_last=False, or the Dataset"
            )
        if rows is None:
            return _loader_batches(data), len(data), len(data.dataset)
        loader = DataLoader(
            Subset(data.dataset, rows),
            batch_size=data.batch_size or batch_size,
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            pin_memory=data.pin_memory,
        )
        return _loader_batches(loader), len(loader), len(rows)
    if isinstance(data, Dataset):
        part = data if rows is None else Subset(data, rows)
        loader = DataLoader(part, batch_size=batch_size, shuffle=False)
        return _loader_batches(loader), len(loader), len(part)
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v for v in data)
        if len(x) != len(y):
            raise ConfigError(f"inputs ({len(x)}) and labels ({len(y)}) differ in length")
        # All labels at once, before any model runs (the engine checks batch by batch); the whole
        # split even for a shard, so a refusal names dataset indices.
        check_label_values(y)
        if rows is not None:
            x, y = x[rows.start : rows.stop], y[rows.start : rows.stop]
        return tensor_batches(x, y, batch_size), -(-len(y) // batch_size), len(y)
    raise ConfigError(
        "data must be a torch Dataset, a DataLoader, an (x, y) pair or "
        f"vogflow.data.text.TextData, got {type(data).__name__}"
    )


def run_extraction(
    models: Sequence[nn.Module],
    data: Data,
    options: ExtractionOptions | None = None,
    **changes: Any,
) -> Extraction | None:
    """Raw VoG and per-checkpoint statistics of every example of ``data``
    (see :func:`vogflow.scoring.stream.extract`).

    ``options``: the :class:`ExtractionOptions` (the defaults when None), with ``changes`` (any
    of its fields by keyword, ``batch_size=64``) applied.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank must call it with the same arguments: each
    scores a contiguous range of rows (sizes differ by at most 1) on its own device, and rank 0
    returns the assembled :class:`Extraction`, the same rows as one process; the other ranks
    return None. A failure on any rank fails every rank (:mod:`vogflow.scoring.shards`).
    """
    options = ExtractionOptions.of(options, **changes)
    batch_size = options.batch_size
    if not distributed.sharded():
        batches, num_batches, num_examples = batches_of(data, batch_size)
        return extract(models, batches, options, num_examples=num_examples, num_batches=num_batches)
    _, _, total = batches_of(data, batch_size)
    dev = resolve_device(distributed.shard_device(options.device))
    # One bar for the job: rank 0's range is as long as any other's, give or take a row.
    shard_options = replace(
        options, device=dev, progress=options.progress and distributed.rank() == 0
    )

    def part(rows: range) -> tuple[Extraction, Health]:
        batches, num_batches, num_examples = batches_of(data, batch_size, rows)
        return stream(
            models,
            batches,
            shard_options,
            num_examples=num_examples,
            num_batches=num_batches,
            offset=rows.start,
        )

    return distributed.run_sharded(part, total, device=dev)
