"""Checkpoints in an MLflow store: logged as models of a training run, found again in epoch
order, and downloaded by their ``models:/`` URI.

Built on :mod:`vogflow.store.connection`; MLflow itself is imported only inside the functions
that use it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from vogflow.errors import TrackingError
from vogflow.store.connection import (
    check_reachable,
    client,
    quiet_downloads,
    sqlite_path,
    tracking_uri,
)

RECORDED_BY_TAG = "vogflow.recorded_by"
EPOCH_PARAM = "epoch"
CHECKPOINT_MODEL_TYPE = "vogflow.checkpoint"


def store_client(where: str, uri: str | None) -> tuple[Any, str]:
    """A client on the store of ``where`` (default: the configured one), checked first."""
    store = uri or tracking_uri()
    db = sqlite_path(store)
    if db is not None and not db.exists():
        # Opening a missing SQLite store would create an empty one instead of finding the run.
        raise TrackingError(
            f"{where}: the tracking store {store} does not exist; point MLFLOW_TRACKING_URI at "
            "the store that holds it"
        )
    check_reachable(store)
    return client(store), store


MODEL_URI = re.compile(r"models:/([^/@]+)(?:/([^/@]+)|@([^/@]+))/?")


def model_version(client: Any, ref: str, uri: str) -> Any:
    """``models:/name/<version|latest>`` or ``models:/name@alias`` -> its registered version."""
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.fullmatch(ref)
    if not match:
        raise TrackingError(
            f"{ref!r} is not a model URI; use models:/<name>/<version> or models:/<name>@<alias>"
        )
    name, version, alias = match.groups()

    def known_versions() -> str:
        try:
            found = client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return "none"
        return ", ".join(sorted((str(v.version) for v in found), key=int)) or "none"

    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if version == "latest":
            found = client.search_model_versions(f"name = '{name}'")
            if not found:
                raise MlflowException(f"no versions of {name}")
            return max(found, key=lambda v: int(v.version))
        return client.get_model_version(name, version)
    except MlflowException as err:
        raise TrackingError(
            f"{ref}: no such registered model version in {uri} (versions of {name!r}: "
            f"{known_versions()})"
        ) from err


MODEL_ID_URI = re.compile(r"models:/([^/@]+)/?")


def download_model(mlflow_client: Any, ref: str, dst: str | Path, *, uri: str) -> Path:
    """Download the artifacts of the model a ``models:/`` URI names into ``dst``.

    ``models:/<name>/<version>``, ``models:/<name>@<alias>`` (a registered version) or
    ``models:/<model_id>`` (a logged model). Raises :class:`TrackingError` naming ``ref`` when
    the store has no such model.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    by_id = MODEL_ID_URI.fullmatch(ref)
    model_id = by_id.group(1) if by_id else model_version(mlflow_client, ref, uri).model_id
    if model_id is None:
        # A version registered from a run's artifacts (as MLflow 2 did) names no logged model.
        source = model_version(mlflow_client, ref, uri).source
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].partition("/")
            fetch = partial(mlflow_client.download_artifacts, run_id, path, str(dst))
            return _download(ref, uri, fetch)
        location = source
    else:
        try:
            location = mlflow_client.get_logged_model(model_id).artifact_location
        except MlflowException as err:
            raise TrackingError(
                f"{ref}: no logged model {model_id!r} in {uri}; check the model id (or write "
                "models:/<name>/<version> for a registered model)"
            ) from err
    # The location itself, not models:/<id>: MLflow resolves that URI in the default store,
    # whatever tracking_uri says.
    fetch = partial(download_artifacts, artifact_uri=location, dst_path=str(dst), tracking_uri=uri)
    return _download(ref, uri, fetch)


def _download(ref: str, uri: str, fetch: Callable[[], str]) -> Path:
    try:
        with quiet_downloads():
            return Path(fetch())
    except Exception as err:  # MlflowException or the artifact store's own OSError
        raise TrackingError(
            f"{ref}: cannot download its artifacts from {uri} ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]})"
        ) from err


def logged_checkpoints(mlflow_client: Any, run_id: str, *, recorded_by: str) -> list[str]:
    """The ids of the checkpoints ``recorded_by`` logged as models of run ``run_id``, in epoch
    order; a replayed epoch (a resumed loop) supersedes what was logged from it on."""
    from mlflow.entities import LoggedModelStatus

    experiment = mlflow_client.get_run(run_id).info.experiment_id
    query = f"source_run_id = '{run_id}' AND tags.`{RECORDED_BY_TAG}` = '{recorded_by}'"
    found, token = [], None
    while True:
        page = mlflow_client.search_logged_models(
            [experiment], filter_string=query, page_token=token
        )
        found += list(page)
        token = page.token
        if not token:
            break
    latest: dict[int, Any] = {}
    # A half-logged checkpoint (FAILED, or PENDING while another process logs it) is not one.
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    for model in sorted(ready, key=lambda m: (m.creation_timestamp, int(m.params[EPOCH_PARAM]))):
        epoch = int(model.params[EPOCH_PARAM])
        # As the recorder does on disk: a replayed epoch supersedes it and every later one, so
        # a resumed attempt that stopped early is never mixed with a first attempt's later epochs.
        latest = {e: m for e, m in latest.items() if e < epoch}
        latest[epoch] = model
    return [latest[epoch].model_id for epoch in sorted(latest)]


def log_checkpoint_model(
    client: Any, run_id: str, files: Iterable[Path], *, name: str, epoch: int, recorded_by: str
) -> str:
    """One training checkpoint as an MLflow logged model of run ``run_id``; returns its id.

    ``files`` (the state dict and its manifest) become the model's artifacts; ``epoch`` is a
    param of the model and the step of the run's output, so the run lists its checkpoints in
    training order and :func:`logged_checkpoints` finds them again.
    """
    from mlflow.entities import LoggedModelOutput

    experiment = client.get_run(run_id).info.experiment_id
    model_id = client.create_logged_model(
        experiment,
        name=name,
        source_run_id=run_id,
        params={EPOCH_PARAM: str(epoch)},
        tags={RECORDED_BY_TAG: recorded_by},
        model_type=CHECKPOINT_MODEL_TYPE,
    ).model_id
    try:
        for path in files:
            client.log_model_artifact(model_id, str(path))
        client.log_outputs(run_id, [LoggedModelOutput(model_id, epoch)])
    except BaseException:
        # A half-logged checkpoint must not be found as one: only READY models are read back.
        with contextlib.suppress(Exception):
            client.finalize_logged_model(model_id, "FAILED")
        raise
    client.finalize_logged_model(model_id, "READY")
    return model_id
