"""Audit your own model: ``vogflow.audit(model, checkpoints, data)`` returns the rankings table.

The same engine the pipeline runs (:func:`vogflow.scoring.extract.run_extraction`) and the same
table
(:mod:`vogflow.rankings.table`): one implementation, two doors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vogflow.checkpoints import files as ck
from vogflow.common.runtime import resolve_device
from vogflow.errors import ConfigError, RunError
from vogflow.scoring.extract import Checkpoint, Data, load_checkpoints, run_extraction
from vogflow.scoring.stream import check_label_modes, check_precision
from vogflow.scoring.vog import LABEL_MODES, NORMALISATIONS, WINDOWS, window_indices


def _describe(data: Data) -> str:
    if isinstance(data, tuple | list) and len(data) == 2 and hasattr(data[0], "shape"):
        return f"inputs of shape {tuple(data[0].shape)}"
    return f"the data ({type(data).__name__})"


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
    store is reachable. Raises a one-line :class:`ConfigError` (or the tracking/config error).
    """
    if len(checkpoints) < 2:
        raise ck.CheckpointError(f"VoG needs at least 2 checkpoints, got {len(checkpoints)}")
    bad = [w for w in windows if w not in WINDOWS]
    if bad or not windows or len(set(windows)) != len(windows):
        raise ConfigError(
            f"windows: {list(windows)!r} is not allowed; pass a non-empty list without repeats "
            f"drawn from: {', '.join(WINDOWS)}"
        )
    if isinstance(window_size, bool) or not isinstance(window_size, int):
        raise ConfigError(f"window_size: {window_size!r} is not allowed; pass an integer >= 2")
    try:
        for w in windows:
            window_indices(len(checkpoints), w, size=window_size)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    check_label_modes(label_modes)
    if normalise not in NORMALISATIONS:
        raise ConfigError(
            f"normalise: {normalise!r} is not allowed; valid: {', '.join(NORMALISATIONS)}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size!r} is not allowed; pass an integer >= 1")
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
    channels_last: bool = False,
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
            or where they are (:func:`vogflow.checkpoints.sources.resolve`): a checkpoint folder, a
            ``runs:/`` URI, a Hugging Face output folder, a glob; or a list of ``models:/``
            URIs (one checkpoint each), in training order.
        data: a ``Dataset`` of ``(x, y)``, an unshuffled ``DataLoader``, an ``(x, y)`` pair (``x``
            images ``(N, C, H, W)`` or tabular features ``(N, D)``), or text: a
            :class:`vogflow.data.text.TextData`, or a DataLoader of tokenised dict batches
            (``input_ids``, ``attention_mask``, ``labels``). Text is scored on the gradient
            w.r.t. the input embeddings (:mod:`vogflow.scoring.inputs`); with a Hugging Face
            checkpoint
            folder, ``model`` may be None (built from its ``config.json``).
        precision, channels_last: speed options for a GPU (see
            :func:`vogflow.scoring.stream.extract`).
        track: also log the audit (params, rankings, top-k table) to MLflow.

    Everything checkable is refused before extraction, in one line: the options and the
    tracking store (:func:`check_audit`), then the checkpoints (loadable, one architecture,
    distinct: :func:`vogflow.scoring.stream.check_models`) and the labels of an ``(x, y)`` pair.

    Returns:
        The rankings table (pandas): ``index`` (then ``text`` for TextData), ``label,
        true_label, noisy, pred, correct`` and, per window and label mode, ``vog_{w}_{m}_raw``
        and class-normalised ``vog_{w}_{m}``.
        Higher VoG = harder. Under ``torchrun``, rank 0 returns it and the other ranks None
        (see :func:`run_extraction`).
    """
    from vogflow.checkpoints import sources
    from vogflow.rankings import table as rankings

    with contextlib.ExitStack() as stack:
        if isinstance(checkpoints, str | Path) or any(map(sources.is_model_uri, checkpoints)):
            # A downloaded runs:/ folder or models:/ list lives until the table is built.
            source = stack.enter_context(sources.resolve(checkpoints))
            if model is None:
                model = _model_of(source, data)
            checkpoints = source.for_audit()
        if model is None:
            from vogflow.errors import CheckpointError

            raise CheckpointError(
                "audit: model is None; pass the nn.Module, or a checkpoint folder "
                "whose manifest names a built-in architecture (for text, a Hugging Face "
                "output folder with config.json)"
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
        try:
            extraction = run_extraction(
                models,
                data,
                windows=windows,
                window_size=window_size,
                label_modes=label_modes,
                batch_size=batch_size,
                device=device,
                precision=precision,
                channels_last=channels_last,
                progress=progress,
            )
        except torch.OutOfMemoryError:
            raise  # a resource, not a mismatch: its own message says what to lower
        except RuntimeError as err:
            from vogflow.parallel.launch import lost_contact

            if lost_contact(err):  # another torchrun rank went away; the launcher names it
                raise
            # The model's own error (a shape mismatch) names tensors, not the user's inputs.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunError(
                f"the model failed on {_describe(data)} ({first}); check that the model is the "
                "architecture the checkpoints and the data were made for",
                cause="model",
                first=first,
            ) from err
        if extraction is None:  # a torchrun peer: rank 0 holds the whole table, and logs it once
            return None
        table = rankings.build(extraction, normalise=normalise, text=_texts(data))
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


def _is_text(data: Data) -> bool:
    from vogflow.data.text import TextData  # cheap: transformers is imported only to build models

    return isinstance(data, TextData)


def _texts(data: Data) -> list[str] | None:
    return data.texts if _is_text(data) else None


def _model_of(source: Any, data: Data) -> nn.Module:
    """The untrained model a checkpoint source describes: its manifest's built-in architecture,
    or for text, a Hugging Face folder's ``config.json``."""
    if _is_text(data) and source.kind == "huggingface":
        from vogflow.data import text

        return text.build_model(text.checkpoint_folders(source)[-1])
    return source.build_model()
