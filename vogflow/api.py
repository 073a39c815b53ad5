"""Audit your own model: ``vogflow.audit(model, checkpoints, data)`` returns the rankings table.

The same engine the pipeline runs (:func:`vogflow.scoring.extract.run_extraction`) and the same
table (:mod:`vogflow.rankings.table`): one implementation, two doors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vogflow.common.runtime import resolve_device
from vogflow.config.names import LABEL_MODES, WINDOWS
from vogflow.errors import CheckpointError, RunError
from vogflow.scoring.extract import Checkpoint, Data, load_checkpoints, run_extraction
from vogflow.scoring.options import ExtractionOptions
from vogflow.scoring.vog import check_checkpoint_count

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["audit", "check_audit"]


def _describe(data: Data) -> str:
    if isinstance(data, tuple | list) and len(data) == 2 and hasattr(data[0], "shape"):
        return f"inputs of shape {tuple(data[0].shape)}"
    return f"the data ({type(data).__name__})"


def check_audit(
    checkpoints: Sequence[Checkpoint], options: ExtractionOptions, *, track: bool = False
) -> torch.device:
    """What :func:`audit` can refuse before loading any weights; returns the resolved device.

    The options themselves were checked when ``options`` was built; this checks what depends on
    the checkpoints and the device (at least 2 checkpoints, the windows fit them, the precision
    runs on the device) and, with ``track``, that the MLflow store is reachable. Raises a
    one-line :class:`ConfigError` (or the checkpoint/tracking error).
    """
    check_checkpoint_count(len(checkpoints), error=CheckpointError)
    options.window_positions(len(checkpoints))
    device = options.device
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    options.precision_on(dev)
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
) -> pd.DataFrame | None:
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
            checkpoint folder, ``model`` may be None (built from its ``config.json``).
        precision, channels_last: speed options for a GPU (see
            :func:`vogflow.scoring.stream.extract`).
        track: also log the audit (params, rankings, top-k table) to MLflow.

    Everything checkable is refused before extraction, in one line: the options
    (:class:`ExtractionOptions`) and the tracking store (:func:`check_audit`), then the
    checkpoints (loadable, one architecture, distinct: :func:`vogflow.scoring.models.check_models`)
    and the labels of an ``(x, y)`` pair.

    Returns:
        The rankings table (pandas): ``index`` (then ``text`` for TextData), ``label,
        true_label, noisy, pred, correct`` and, per window and label mode, ``vog_{w}_{m}_raw``
        and class-normalised ``vog_{w}_{m}``.
        Higher VoG = harder. Under ``torchrun``, rank 0 returns it and the other ranks None
        (see :func:`run_extraction`).
    """
    from vogflow.checkpoints import sources
    from vogflow.checkpoints.local import is_model_uri
    from vogflow.rankings import table as rankings

    # Every option is refused here, in one line, before any checkpoint is read.
    options = ExtractionOptions(
        windows=windows,
        window_size=window_size,
        label_modes=label_modes,
        normalise=normalise,
        batch_size=batch_size,
        device=device,
        precision=precision,
        channels_last=channels_last,
        progress=progress,
    )
    with contextlib.ExitStack() as stack:
        if isinstance(checkpoints, str | Path) or any(map(is_model_uri, checkpoints)):
            # A downloaded runs:/ folder or models:/ list lives until the table is built.
            source = stack.enter_context(sources.resolve(checkpoints))
            if model is None:
                model = _model_of(source, data)
            checkpoints = source.for_audit()
        if model is None:
            raise CheckpointError(
                "audit: model is None; pass the nn.Module, or a checkpoint folder "
                "whose manifest names a built-in architecture (for text, a Hugging Face "
                "output folder with config.json)"
            )
        check_audit(checkpoints, options, track=track)
        models = load_checkpoints(model, checkpoints)
        try:
            extraction = run_extraction(models, data, options)
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
        table = rankings.build(extraction, normalise=options.normalise, text=_texts(data))
        if track:
            from vogflow import tracking

            tracking.log_audit(
                table,
                params={
                    "checkpoints": len(models),
                    "windows": ",".join(options.windows),
                    "window_size": options.window_size,
                    "label_modes": ",".join(options.label_modes),
                    "normalise": options.normalise,
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
