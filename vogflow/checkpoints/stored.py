"""Checkpoints in an MLflow store: a run's checkpoint artifacts (``runs:/``) or models
(``models:/``), downloaded and then read as local checkpoints (:mod:`vogflow.checkpoints.local`)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vogflow.checkpoints import files as ck
from vogflow.checkpoints import logged
from vogflow.checkpoints.local import (
    DEFAULT_ARTIFACT_PATH,
    EXPORTED_FIX,
    MODELS_PREFIX,
    RUNS_PREFIX,
    SUFFIXES,
    Checkpoint,
    Source,
    from_files,
    from_folder,
    from_manifest,
)
from vogflow.errors import TrackingError


def _download_dir(download_dir: str | Path | None) -> tuple[Any, Path]:
    """Where downloads go: ``download_dir``, else a temporary folder (returned to clean up)."""
    tmp = None
    if download_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="vogflow-ckpts-")
        download_dir = tmp.name
    Path(download_dir).mkdir(parents=True, exist_ok=True)
    return tmp, Path(download_dir)


def _model_checkpoint(uri: str, local: Path) -> tuple[Checkpoint, dict[str, Any] | None]:
    """The one checkpoint in a downloaded model, and its manifest when a recorder logged it."""
    exported = sorted(local.rglob("*.pt2"))
    if exported:
        raise ck.CheckpointError(
            f"{uri} is an exported program ({exported[0].relative_to(local)}), which "
            "torch.export.load partly unpickles (weights_only=False), so vogflow does not open "
            f"it; {EXPORTED_FIX}"
        )
    if (local / ck.MANIFEST).is_file():
        found = from_manifest(uri, local)
        if len(found.checkpoints) != 1:
            raise ck.CheckpointError(
                f"{uri} holds {len(found.checkpoints)} checkpoints; a models:/ URI names one "
                "(log each checkpoint as its own model: CheckpointRecorder(log_models=True))"
            )
        one = found.checkpoints[0]
        named = Checkpoint(one.path, f"{uri} ({one.path.name})", one.sha256, one.epoch)
        return named, found.manifest
    files = [
        p for p in local.rglob("*") if p.is_file() and p.name.endswith(".safetensors.index.json")
    ]
    # The shards of an index are read through it, not as checkpoints of their own.
    files = files or [p for p in local.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    if len(files) != 1:
        what = ", ".join(str(p.relative_to(local)) for p in files) or "none"
        raise ck.CheckpointError(
            f"{uri}: expected one state dict file ({'/'.join(SUFFIXES)}) in the model, found "
            f"{what}; log one checkpoint per model"
        )
    return Checkpoint(files[0], f"{uri} ({files[0].relative_to(local)})"), None


# What a manifest says about the model itself (not about one checkpoint of it).
SAME_MODEL = ("architecture", "model_class", "num_classes", "input_shape", "normalisation")


def _joined(
    manifests: Sequence[dict[str, Any] | None], chosen: Sequence[Checkpoint]
) -> dict[str, Any] | None:
    """One manifest for checkpoints from several models, when they all describe one model."""
    known = [m for m in manifests if m is not None]
    if not known or len(known) < len(manifests):
        return None
    last = known[-1]
    if any(m.get(k) != last.get(k) for m in known for k in SAME_MODEL):
        return None
    entries = [{"file": c.path.name, "epoch": c.epoch, "sha256": c.sha256} for c in chosen]
    return {**last, "checkpoints": entries}


def from_models(
    where: str,
    uris: Sequence[str],
    *,
    download_dir: str | Path | None,
    tracking_uri: str | None,
    store: tuple[Any, str] | None = None,
) -> Source:
    mlflow_client, uri = store or logged.store_client(where, tracking_uri)
    tmp, folder = _download_dir(download_dir)
    chosen, manifests = [], []
    try:
        for i, ref in enumerate(uris, 1):
            local = logged.download_model(mlflow_client, ref, folder / f"model_{i}", uri=uri)
            checkpoint, manifest = _model_checkpoint(ref, local)
            chosen.append(checkpoint)
            manifests.append(manifest)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return Source(where, "models", chosen, manifest=_joined(manifests, chosen), _tmp=tmp)


def from_run(uri: str, *, download_dir: str | Path | None, tracking_uri: str | None) -> Source:
    rest = uri[len(RUNS_PREFIX) :].strip("/")
    run_id, _, artifact_path = rest.partition("/")
    if not run_id:
        raise ck.CheckpointError(
            f"{uri!r} names no run; write runs:/<run_id>/<artifact_path> (the recorder logs to "
            f"runs:/<run_id>/{DEFAULT_ARTIFACT_PATH})"
        )
    client, store = logged.store_client(uri, tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as err:  # MlflowException; its message is one line of the store's answer
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(
            f"{uri}: no such run in the tracking store {store} ({first}); check the run id and "
            "MLFLOW_TRACKING_URI"
        ) from err
    if not artifact_path and not client.list_artifacts(run_id, DEFAULT_ARTIFACT_PATH):
        from vogflow.checkpoints.recorder import RECORDER

        models = logged.logged_checkpoints(client, run_id, recorded_by=RECORDER)
        if not models:
            raise ck.CheckpointError(
                f"{uri}: the run has no {DEFAULT_ARTIFACT_PATH}/ artifacts and no checkpoints "
                "logged as models; name the artifact folder (runs:/<run_id>/<path>) or record "
                "with CheckpointRecorder(mlflow_run_id=...)"
            )
        refs = [f"{MODELS_PREFIX}{m}" for m in models]
        return from_models(
            uri, refs, download_dir=download_dir, tracking_uri=None, store=(client, store)
        )
    artifact_path = artifact_path or DEFAULT_ARTIFACT_PATH
    tmp, download_dir = _download_dir(download_dir)
    try:
        local = Path(client.download_artifacts(run_id, artifact_path, str(download_dir)))
        if not local.exists():
            raise FileNotFoundError(local)
        shown = f"{RUNS_PREFIX}{run_id}/{artifact_path}"
        if local.is_dir():
            source = from_folder(uri, local, names_from=shown)
        else:
            source = from_files(uri, [local], names_from=str(Path(shown).parent))
    except Exception as err:
        if tmp is not None:
            tmp.cleanup()
        if isinstance(err, ck.CheckpointError):
            raise
        raise TrackingError(
            f"{uri}: cannot download {artifact_path!r} from run {run_id} "
            f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); check the artifact path"
        ) from err
    source._tmp = tmp
    return source
