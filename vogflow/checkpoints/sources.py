"""Where checkpoints already are -> the ordered checkpoints of one training run.

:func:`resolve` takes what a team has, with no copying by hand:

- a vogflow checkpoint folder (``manifest.json``: the pipeline's ``train`` stage or
  :class:`vogflow.checkpoints.recorder.CheckpointRecorder`): the manifest's order, every file
  checked against its sha256; a built-in architecture rebuilds the model from the manifest (no
  factory needed);
- ``runs:/<run_id>/<artifact_path>``: a folder of checkpoint files in an MLflow run, downloaded
  through the tracking client and then read as a folder; ``runs:/<run_id>`` alone reads
  ``checkpoints/``, else the checkpoints a recorder logged as models of the run, in epoch order;
- ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<model_id>``: one
  checkpoint each (a logged model's state dict), so a list of them, in training order;
- a Hugging Face ``Trainer`` output folder (``checkpoint-<step>/model.safetensors``, sorted by
  step), or a quoted glob of such folders;
- PyTorch Lightning ``.ckpt`` files (their ``state_dict``, less a ``model.`` prefix on every key);
- plain ``state_dict`` files: a folder or glob (sorted by the number in the name) or a list.

Nothing here runs code from a file: torch files load with ``weights_only=True``
(:func:`vogflow.checkpoints.files.load_file`), safetensors files with the ``safetensors`` package.
An MLflow model exported with ``torch.export`` (``.pt2``, as the pipeline registers its audited
model) is refused: ``torch.export.load`` unpickles parts of the archive with
``weights_only=False``, so a crafted file runs code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vogflow.checkpoints import files as ck
from vogflow.checkpoints.local import (
    RUNS_PREFIX,
    Source,
    from_glob,
    from_path,
    has_magic,
    is_model_uri,
)
from vogflow.checkpoints.stored import from_models, from_run

__all__ = ["resolve"]


def _resolve_list(
    items: list[str | Path], *, download_dir: str | Path | None, tracking_uri: str | None
) -> Source:
    """Several sources in the order given: ``models:/`` URIs only, or files only."""
    if any(is_model_uri(i) for i in items):
        shown = ", ".join(map(str, items))
        others = [str(i) for i in items if not is_model_uri(i)]
        if others:
            raise ck.CheckpointError(
                f"{others[0]}: a list with models:/ URIs takes only models:/ URIs ({shown}); "
                "log every checkpoint as a model, or pass files only"
            )
        return from_models(shown, items, download_dir=download_dir, tracking_uri=tracking_uri)
    if len(items) == 1:
        return resolve(items[0], download_dir=download_dir, tracking_uri=tracking_uri)
    shown = ", ".join(map(str, items))

    def alone(where: str) -> ck.CheckpointError:
        return ck.CheckpointError(
            f"{where}: a checkpoint folder or run is one source; pass it alone, not in a "
            f"list of files ({shown})"
        )

    # Refused before anything is downloaded: a run in a list would fetch its files first.
    runs = [str(i) for i in items if str(i).startswith(RUNS_PREFIX)]
    if runs:
        raise alone(runs[0])
    parts = [resolve(i) for i in items]
    for p in parts:
        if p.kind != "files" or p._tmp is not None:
            for q in parts:
                q.close()
            raise alone(p.where)
    return Source(shown, "files", [c for p in parts for c in p.checkpoints])


def resolve(
    where: str | Path | Sequence[str | Path],
    *,
    download_dir: str | Path | None = None,
    tracking_uri: str | None = None,
) -> Source:
    """The checkpoints at ``where``, in training order (see the module docstring for the kinds).

    Several paths, or several ``models:/`` URIs, are used in the order given. ``download_dir``
    keeps a ``runs:/`` or ``models:/`` download (default: a temporary folder, removed by
    :meth:`Source.close`); ``tracking_uri`` is the store of that run or model (default:
    :func:`vogflow.store.connection.tracking_uri`).
    """
    if not isinstance(where, str | Path):
        return _resolve_list(list(where), download_dir=download_dir, tracking_uri=tracking_uri)
    text = str(where)
    if text.startswith(RUNS_PREFIX):
        return from_run(text, download_dir=download_dir, tracking_uri=tracking_uri)
    if is_model_uri(text):
        return from_models(text, [text], download_dir=download_dir, tracking_uri=tracking_uri)
    if has_magic(text):
        return from_glob(text)
    return from_path(text)
