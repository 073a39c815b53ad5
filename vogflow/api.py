"""Audit your own model: ``vogflow.audit(model, checkpoints, data)`` returns the rankings table.

The same engine the pipeline runs (:func:`vogflow.gradients.extract`) and the same table
(:mod:`vogflow.rankings`): one implementation, two doors.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from vogflow import checkpoints as ck
from vogflow import distributed
from vogflow.extraction import Extraction
from vogflow.gradients import (
    GradientError,
    Health,
    check_label_modes,
    check_label_values,
    check_precision,
    extract,
    stream,
    tensor_batches,
)
from vogflow.runtime import resolve_device
from vogflow.vog import LABEL_MODES, NORMALISATIONS, WINDOWS, window_indices

Checkpoint = str | Path | Mapping[str, Any]
Data = Dataset | DataLoader | tuple[Any, Any]


def load_checkpoints(model: nn.Module, checkpoints: Sequence[Checkpoint]) -> list[nn.Module]:
    """One copy of ``model`` per checkpoint (path or in-memory state dict), in the given order."""
    if len(checkpoints) < 2:
        raise ck.CheckpointError(f"VoG needs at least 2 checkpoints, got {len(checkpoints)}")
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


def _loader_batches(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise GradientError("each batch must be (inputs, labels, ...)")
        yield batch[0], batch[1]


def batches_of(data: Data, batch_size: int, rows: range | None = None) -> tuple[Any, int, int]:
    """``(batches, num_batches, num_examples)`` of a Dataset, sequential DataLoader or (x, y).

    ``rows``: only that contiguous range of the dataset (a shard), in order; ``num_examples`` is
    then the range's length. A DataLoader's shard keeps its batch size, workers and collate.
    """
    if isinstance(data, DataLoader):
        sampler = data.batch_sampler.sampler if data.batch_sampler is not None else data.sampler
        if not isinstance(sampler, SequentialSampler):
            raise GradientError(
                "the DataLoader is not sequential (shuffle=True or a custom sampler): rows would "
                "not match dataset indices. Pass a DataLoader with shuffle=False, or the Dataset"
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
            raise GradientError(f"inputs ({len(x)}) and labels ({len(y)}) differ in length")
        # All labels at once, before any model runs (the engine checks batch by batch); the whole
        # split even for a shard, so a refusal names dataset indices.
        check_label_values(y)
        if rows is not None:
            x, y = x[rows.start : rows.stop], y[rows.start : rows.stop]
        return tensor_batches(x, y, batch_size), -(-len(y) // batch_size), len(y)
    raise GradientError(
        f"data must be a torch Dataset, a DataLoader or an (x, y) pair, got {type(data).__name__}"
    )


def run_extraction(
    models: Sequence[nn.Module],
    data: Data,
    *,
    windows: Sequence[str] = WINDOWS,
    window_size: int = 3,
    label_modes: Sequence[str] = LABEL_MODES,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "fp32",
    progress: bool = True,
) -> Extraction | None:
    """Raw VoG and per-checkpoint statistics of every example of ``data``
    (see :func:`vogflow.gradients.extract`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank must call it with the same arguments: each
    scores a contiguous range of rows (sizes differ by at most 1) on its own device, and rank 0
    returns the assembled :class:`Extraction`, the same rows as one process; the other ranks
    return None. A failure on any rank fails every rank (:mod:`vogflow.distributed`).
    """
    if not distributed.sharded():
        batches, num_batches, num_examples = batches_of(data, batch_size)
        return extract(
            models,
            batches,
            num_examples=num_examples,
            num_batches=num_batches,
            windows=windows,
            window_size=window_size,
            label_modes=label_modes,
            device=device,
            precision=precision,
            progress=progress,
        )
    _, _, total = batches_of(data, batch_size)
    dev = resolve_device(distributed.shard_device(device))

    def part(rows: range) -> tuple[Extraction, Health]:
        batches, num_batches, num_examples = batches_of(data, batch_size, rows)
        return stream(
            models,
            batches,
            num_examples=num_examples,
            num_batches=num_batches,
            windows=windows,
            window_size=window_size,
            label_modes=label_modes,
            device=dev,
            precision=precision,
            # One bar for the job: rank 0's range is as long as any other's, give or take a row.
            progress=progress and distributed.rank() == 0,
            offset=rows.start,
        )

    return distributed.run_sharded(part, total, device=dev)


def check_audit(
    checkpoints: Sequence[Checkpoint],
    *,
    windows: Sequence[str] = WINDOWS,
    window_size: int = 3,
    label_modes: Sequence[str] = LABEL_MODES,
    normalise: str = "z",
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "fp32",
    track: bool = False,
) -> torch.device:
    """What :func:`audit` can refuse before loading any weights; returns the resolved device.

    Checks the options (windows, window size against the number of checkpoints, label modes,
    normalisation, batch size, precision on the device) and, with ``track``, that the MLflow
    store is reachable. Raises a one-line :class:`GradientError` (or the tracking/config error).
    """
    if len(checkpoints) < 2:
        raise ck.CheckpointError(f"VoG needs at least 2 checkpoints, got {len(checkpoints)}")
    bad = [w for w in windows if w not in WINDOWS]
    if bad or not windows or len(set(windows)) != len(windows):
        raise GradientError(
            f"windows: {list(windows)!r} is not allowed; pass a non-empty list without repeats "
            f"drawn from: {', '.join(WINDOWS)}"
        )
    if isinstance(window_size, bool) or not isinstance(window_size, int):
        raise GradientError(f"window_size: {window_size!r} is not allowed; pass an integer >= 2")
    try:
        for w in windows:
            window_indices(len(checkpoints), w, size=window_size)
    except ValueError as err:
        raise GradientError(str(err)) from err
    check_label_modes(label_modes)
    if normalise not in NORMALISATIONS:
        raise GradientError(
            f"normalise: {normalise!r} is not allowed; valid: {', '.join(NORMALISATIONS)}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GradientError(f"batch_size: {batch_size!r} is not allowed; pass an integer >= 1")
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    check_precision(precision, dev)
    if track:
        from vogflow import tracking

        # The refusal's hint offers VOGFLOW_TRACKING=off, so that switch must be honoured here.
        if tracking.enabled():
            tracking.check_reachable(tracking.tracking_uri())
    return dev


def audit(
    model: nn.Module | None,
    checkpoints: Sequence[Checkpoint] | str | Path,
    data: Data,
    *,
    windows: Sequence[str] = WINDOWS,
    window_size: int = 3,
    label_modes: Sequence[str] = LABEL_MODES,
    normalise: str = "z",
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "fp32",
    progress: bool = True,
    track: bool = False,
    run_name: str = "audit",
    experiment: str = "vogflow",
) -> Any:
    """Rank every example of ``data`` by VoG over ``checkpoints`` of ``model``'s architecture.

    Args:
        model: an ``nn.Module`` of the audited architecture (its own weights are not used); None
            when ``checkpoints`` is a folder whose manifest names a built-in architecture.
        checkpoints: ordered paths or state dicts (bare, or under ``model``/``state_dict``/
            ``model_state_dict``; a DataParallel ``module.`` prefix is fine), the last "final";
            or where they are (:func:`vogflow.sources.resolve`): a checkpoint folder, a
            ``runs:/`` URI, a Hugging Face output folder, a glob.
        data: a ``Dataset`` of ``(x, y)``, an unshuffled ``DataLoader``, or an ``(x, y)`` pair.
        track: also log the audit (params, rankings, top-k table) to MLflow.

    Everything checkable is refused before extraction, in one line: the options and the
    tracking store (:func:`check_audit`), then the checkpoints (loadable, one architecture,
    distinct: :func:`vogflow.gradients.check_models`) and the labels of an ``(x, y)`` pair.

    Returns:
        The rankings table (pandas): ``index, label, true_label, noisy, pred, correct`` and, per
        window and label mode, ``vog_{w}_{m}_raw`` and class-normalised ``vog_{w}_{m}``.
        Higher VoG = harder. Under ``torchrun``, rank 0 returns it and the other ranks None
        (see :func:`run_extraction`).
    """
    from vogflow import rankings

    if isinstance(checkpoints, str | Path):
        from vogflow import sources

        with sources.resolve(checkpoints) as source:
            return audit(
                model if model is not None else source.build_model(),
                source.for_audit(),
                data,
                windows=windows,
                window_size=window_size,
                label_modes=label_modes,
                normalise=normalise,
                batch_size=batch_size,
                device=device,
                precision=precision,
                progress=progress,
                track=track,
                run_name=run_name,
                experiment=experiment,
            )
    if model is None:
        from vogflow.checkpoints import CheckpointError

        raise CheckpointError(
            "audit: model is None; pass the nn.Module, or a checkpoint folder "
            "whose manifest names a built-in architecture"
        )
    check_audit(
        checkpoints,
        windows=windows,
        window_size=window_size,
        label_modes=label_modes,
        normalise=normalise,
        batch_size=batch_size,
        device=device,
        precision=precision,
        track=track,
    )
    models = load_checkpoints(model, checkpoints)
    extraction = run_extraction(
        models,
        data,
        windows=windows,
        window_size=window_size,
        label_modes=label_modes,
        batch_size=batch_size,
        device=device,
        precision=precision,
        progress=progress,
    )
    if extraction is None:  # a torchrun peer: rank 0 holds the whole table, and logs it once
        return None
    table = rankings.build(extraction, normalise=normalise)
    if track:
        from vogflow import tracking

        tracking.log_audit(
            table,
            params={
                "checkpoints": len(models),
                "windows": ",".join(windows),
                "window_size": window_size,
                "label_modes": ",".join(label_modes),
                "normalise": normalise,
                "model": type(model).__name__,
            },
            run_name=run_name,
            experiment=experiment,
        )
    return table
