"""Writing to MLflow: one pipeline audit, an API audit, a comparison. Runs never stay RUNNING.

Every writer goes through :func:`vogflow.store.connection.open_store`, so concurrent audits on the
default SQLite store take turns instead of losing runs.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vogflow.common.version import __version__
from vogflow.errors import TrackingError
from vogflow.store.connection import (
    check_reachable,
    experiment_id,
    git_state,
    open_store,
    project_root,
    sqlite_path,
    tracking_uri,
)
from vogflow.tracking.record import MODEL_ALIAS, AuditRecord, flatten, hardest, numbers

KIND_TAG = "vogflow.kind"
AUDIT_KEY_TAG = "vogflow.audit_key"
AUDIT_RUN_TAG = "vogflow.audit_run_id"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None else None


def _log_values(
    client: Any,
    run_id: str,
    *,
    params: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    steps: Iterable[tuple[int, Mapping[str, float]]] = (),
) -> None:
    """``params``, ``metrics`` at step 0 and ``steps`` (step, values) pairs, in batches of 100
    (one request per batch, not per value)."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = [Param(k, v) for k, v in (params or {}).items()]
    batch = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
    batch += [Metric(k, v, now, step) for step, values in steps for k, v in values.items()]
    for i in range(0, max(len(items), len(batch)), 100):
        client.log_batch(run_id, params=items[i : i + 100], metrics=batch[i : i + 100])


def _log_artifacts(client: Any, run_id: str, artifacts: list[tuple[Path, str]]) -> None:
    for path, folder in artifacts:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), folder or None)
        elif path.exists():
            client.log_artifact(run_id, str(path), folder or None)


def find_audit(client: Any, experiment: str, key: str) -> str | None:
    """The finished audit already logged for this pipeline state, if any."""
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.`{AUDIT_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


def _last_audit_end(client: Any, experiment: str) -> float:
    """When the latest audit in the store ended (epoch seconds; 0 if none)."""
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.`{KIND_TAG}` = 'audit' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"],
        max_results=1,
    )
    return (found[0].info.end_time or 0) / 1000 if found else 0.0


# A logger refreshes its claim's heartbeat after every child run; a RUNNING claim silent for
# longer was abandoned (its store went away, or it was killed).
HEARTBEAT_TAG = "vogflow.heartbeat"
CLAIM_TAG = "vogflow.claimed_at"
STALE_SECONDS = 300.0
# Two loggers that claim a state within this window both see both claims before deciding.
SETTLE_SECONDS = 2.0


def _beat(client: Any, run_id: str) -> None:
    client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time() * 1000)))


def _alive(run: Any, now_ms: int) -> bool:
    beat = run.data.tags.get(HEARTBEAT_TAG)
    return beat is not None and now_ms - int(beat) < STALE_SECONDS * 1000


def _claims(client: Any, experiment: str, key: str) -> list[Any]:
    return list(
        client.search_runs(
            [experiment],
            filter_string=f"tags.`{AUDIT_KEY_TAG}` = '{key}'",
            max_results=1000,
        )
    )


def _order(run: Any) -> tuple[int, str]:
    """Who claimed first; the run id settles a tie, so every logger elects the same one."""
    return int(run.data.tags.get(CLAIM_TAG) or run.info.start_time or 0), run.info.run_id


def _winner(client: Any, experiment: str, key: str, mine: str) -> Any | None:
    """The audit that owns this state when it is not ``mine``: a finished one, else the first
    live claim; ``None`` when ``mine`` goes on. Abandoned claims are closed on the way."""
    runs = _claims(client, experiment, key)
    finished = sorted((r for r in runs if r.info.status == "FINISHED"), key=_order)
    if finished:
        return finished[0]
    now = int(time.time() * 1000)
    live = [r for r in runs if r.info.status == "RUNNING" and _alive(r, now)]
    live.sort(key=_order)
    if live and live[0].info.run_id != mine:
        return live[0]
    for run in runs:
        if run.info.status == "RUNNING" and run.info.run_id != mine and not _alive(run, now):
            _close(client, experiment, run.info.run_id)
    return None


def _close(client: Any, experiment: str, parent_id: str) -> None:
    """Mark FAILED an abandoned audit and its stage runs, so no audit stays RUNNING for ever."""
    children = client.search_runs(
        [experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'"
    )
    for run in children:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FAILED")
    client.set_terminated(parent_id, "FAILED")


def _withdraw(client: Any, run_id: str) -> None:
    """A claim that lost the election leaves no trace in the runs list."""
    client.set_terminated(run_id, "KILLED")
    client.delete_run(run_id)


class Logged:
    """The outcome of :func:`log_pipeline_audit`: ``run_id``, whether this call logged it
    (``new``), and, when another logger holds the state but has not finished, ``running``."""

    def __init__(self, run_id: str, new: bool, running: bool = False) -> None:
        self.run_id, self.new, self.running = run_id, new, running

    def __iter__(self) -> Iterator[Any]:  # ``run_id, new = log_pipeline_audit(...)``
        return iter((self.run_id, self.new))


def log_pipeline_audit(
    record: AuditRecord,
    *,
    experiment: str,
    model_name: str,
    model_dir: Path | None,
    uri: str | None = None,
) -> Logged:
    """Log ``record`` as one parent run with a child per stage (unpacks as ``(run id, new)``).

    ``model_dir`` (the audited run's checkpoint folder) becomes a logged MLflow model, registered
    as a version of ``model_name`` (one version per distinct model, by sha256); see
    :func:`_log_model` for the aliases. A state already logged in the store, by this project or
    by a clone sharing the server, is not logged again (``new`` is False).

    Loggers of one state elect one of them through the store: each first claims the state with
    a RUNNING parent run, waits :data:`SETTLE_SECONDS`, then goes on only if its claim is the
    first live one (others withdraw theirs, so the model is registered and the alias moved once).
    """
    uri = uri or tracking_uri()
    check_reachable(uri)
    with open_store(uri) as client:
        exp = experiment_id(client, experiment, uri)
        done = find_audit(client, exp, record.key)
        if done:
            return Logged(done, False)
        # Stages reused from an earlier state ran before the last logged audit: the audit's own
        # span starts with the first stage that ran for this state.
        since = _last_audit_end(client, exp)
        ran = {c.name for c in record.children if c.start is not None and c.start > since}
        started = [c.start for c in record.children if c.name in ran] or [
            c.start for c in record.children if c.start is not None
        ]
        now = str(int(time.time() * 1000))
        parent = client.create_run(
            exp,
            run_name=record.name,
            tags={**record.tags, NOTE_TAG: record.description, CLAIM_TAG: now, HEARTBEAT_TAG: now},
            start_time=_ms(min(started)) if started else None,
        )
        parent_id = parent.info.run_id
        created = [parent_id]
        try:
            if sqlite_path(uri) is None:  # a file lock already serialises a SQLite store
                time.sleep(SETTLE_SECONDS)
            owner = _winner(client, exp, record.key, parent_id)
            if owner is not None:
                _withdraw(client, parent_id)
                return Logged(owner.info.run_id, False, running=owner.info.status == "RUNNING")
            _log_values(client, parent_id, params=record.params, metrics=record.metrics)
            _log_artifacts(client, parent_id, record.artifacts)
            for split, table in record.top.items():
                client.log_table(parent_id, table, f"tables/hardest_{split}.json")
            if record.metric_table is not None:
                client.log_table(parent_id, record.metric_table, "tables/metrics.json")
            for child in record.children:
                run = client.create_run(
                    exp,
                    run_name=child.name,
                    start_time=_ms(child.start),
                    tags={
                        **child.tags,
                        PARENT_TAG: parent_id,
                        AUDIT_RUN_TAG: parent_id,
                        "vogflow.reran": str(child.name in ran).lower(),
                    },
                )
                created.append(run.info.run_id)
                _log_values(
                    client,
                    run.info.run_id,
                    params=child.params,
                    metrics=child.metrics,
                    steps=[(int(step.get("epoch", 0)), numbers(step)) for step in child.steps],
                )
                _log_artifacts(client, run.info.run_id, child.artifacts)
                client.set_terminated(run.info.run_id, "FINISHED", end_time=_ms(child.end))
                _beat(client, parent_id)
            if model_dir is not None:
                _log_model(client, uri, parent_id, record, model_dir, model_name)
            client.set_terminated(parent_id, "FINISHED")
        except BaseException:
            for run_id in created:  # never leave a run RUNNING
                try:
                    client.set_terminated(run_id, "FAILED")
                except Exception:  # noqa: BLE001 - the store itself may be what failed
                    break
            raise
    return Logged(parent_id, True)


MODEL_SHA_TAG = "vogflow.model_sha256"


def alias_tag(alias: str) -> str:
    """The version tag holding the audit an alias points at (``models:/name@alias``)."""
    return f"{AUDIT_RUN_TAG}.{alias}"


def _version_of(client: Any, model_name: str, digest: str) -> Any | None:
    """The registered version already holding these exact weights, if any."""
    found = client.search_model_versions(
        f"name = '{model_name}' and tags.`{MODEL_SHA_TAG}` = '{digest}'"
    )
    return min(found, key=lambda v: int(v.version)) if found else None


def _log_model(
    client: Any, uri: str, parent_id: str, record: AuditRecord, model_dir: Path, model_name: str
) -> None:
    """The audited model as a real MLflow model: ``torch.export`` (no pickle), a signature and an
    input example, registered from the logged model (so its page links the version).

    One version per distinct model: the same weights (by sha256) logged again reuse their
    version. The alias ``audited`` is moved only by an audit of committed code; an audit run by
    ``dvc exp run`` (in the workspace, ``--temp`` or queued) moves ``exp-<name>`` instead."""
    import mlflow
    import numpy as np
    import torch

    from vogflow.checkpoints.files import load_run_models

    models, manifest = load_run_models(model_dir)
    final = manifest["checkpoints"][-1]
    digest = str(final["sha256"])  # load_run_models verified it against the file
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(run_id=parent_id):
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        dataset = str(manifest.get("dataset", "dataset"))
        mlflow.log_input(
            MetaDataset(
                resolve_dataset_source(dataset),
                name=dataset,
                digest=str(manifest["data_fingerprint"])[:36],
            ),
            context="train",
        )
        _ensure_registered(client, model_name)
        version = _version_of(client, model_name, digest)
        if version is None:
            model = models[-1].eval()
            # Two rows: torch.export fixes a dimension of size 1, and the batch must stay free.
            example = np.zeros((2, *manifest["input_shape"]), dtype=np.float32)
            with torch.no_grad():
                info = mlflow.pytorch.log_model(
                    model,
                    name="model",
                    serialization_format="pt2",
                    input_example=example,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
            version = mlflow.register_model(
                info.model_uri, model_name, tags={AUDIT_RUN_TAG: parent_id, MODEL_SHA_TAG: digest}
            )
            client.update_model_version(
                model_name,
                version.version,
                description=(
                    f"Final checkpoint ({final['file']}, sha256 {digest[:12]}) of the audited "
                    f"run; audit: {record.name}. Test accuracy "
                    f"{record.metrics.get('test_accuracy', float('nan')):.3f}."
                ),
            )
            said = f"registered {model_name} version {version.version}"
        else:
            said = f"the model is unchanged (sha256 {digest[:12]}): {model_name} version " + str(
                version.version
            )
    alias = record.alias
    if alias:
        client.set_registered_model_alias(model_name, alias, version.version)
        # A reused version was first logged by another audit: the alias names this one.
        client.set_model_version_tag(model_name, version.version, alias_tag(alias), parent_id)
        said += f" (alias @{alias})"
    else:
        said += f"; @{MODEL_ALIAS} not moved: the audited code has uncommitted changes"
    client.set_tag(parent_id, "vogflow.model_name", model_name)
    client.set_tag(parent_id, "vogflow.model_version", str(version.version))
    client.set_tag(parent_id, MODEL_SHA_TAG, digest)
    print(said, flush=True)


def _ensure_registered(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name,
            description=(
                "The audited model of vogflow audits, one version per distinct model (tag "
                "vogflow.model_sha256). Aliases: @audited, the latest audit of committed code; "
                "@exp-<name>, the latest audit of that DVC experiment."
            ),
        )
    except MlflowException:
        pass  # already registered


@contextlib.contextmanager
def _standalone_run(
    experiment: str, run_name: str, tags: Mapping[str, str]
) -> Iterator[tuple[Any, str]]:
    """A parent-less run on the configured store, FINISHED when the block ends, FAILED if it
    raises; yields ``(client, run id)``."""
    root = project_root()
    uri = tracking_uri(root)
    check_reachable(uri)
    with open_store(uri) as client:
        exp = experiment_id(client, experiment, uri)
        tags = {"vogflow.version": __version__, **git_state(root), **tags}
        run_id = client.create_run(exp, run_name=run_name, tags=tags).info.run_id
        try:
            yield client, run_id
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:6000] for k, v in flatten(dict(params)).items()}


def log_audit(table: Any, *, params: Mapping[str, Any], run_name: str, experiment: str) -> str:
    """Log a :func:`vogflow.audit` result as a standalone run; returns its run id."""
    from vogflow.rankings import choice as rank_choice
    from vogflow.rankings import table as rankings

    with _standalone_run(experiment, run_name, {KIND_TAG: "api"}) as (client, run_id):
        metrics = {"examples": len(table), "error_rate": float(1 - table["correct"].mean())}
        _log_values(client, run_id, params=_params(params), metrics=metrics)
        with tempfile.TemporaryDirectory() as tmp:
            rankings.write_parquet(table, Path(tmp) / "rankings.parquet")
            client.log_artifacts(run_id, tmp, "rankings")
        # The ranking the audit printout shows, under the same name (one ranking everywhere).
        ranking = rank_choice.resolve(table, where="the audit's table")
        client.set_tag(run_id, "vogflow.ranked_by", ranking.line())
        top = hardest(ranking.ranked(table), ranking.name, 25)
        client.log_table(run_id, top, "tables/hardest.json")
    return run_id


def log_compare(
    folder: str | Path,
    *,
    a: str,
    b: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    curves: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    experiment: str = "vogflow",
    run_name: str = "compare",
) -> str:
    """Log a comparison of audits ``a`` and ``b`` as a new parent-less run; returns its id.

    Tags ``vogflow.kind=compare``, ``vogflow.compare.a`` and ``vogflow.compare.b`` (the references
    as given), ``params``, ``metrics`` (step 0), ``curves`` (name -> values, one step per bucket)
    and every file of ``folder`` as artifacts.
    """
    tags = {KIND_TAG: "compare", "vogflow.compare.a": a, "vogflow.compare.b": b, **(tags or {})}
    with _standalone_run(experiment, run_name, tags) as (client, run_id):
        steps = [
            (step, numbers({name: value}))
            for name, values in (curves or {}).items()
            for step, value in enumerate(values)
        ]
        _log_values(
            client, run_id, params=_params(params), metrics=numbers(dict(metrics)), steps=steps
        )
        client.log_artifacts(run_id, str(folder))
    return run_id


def tracking_failed(err: BaseException, uri: str) -> TrackingError:
    """A tracking failure after the work: the outputs are intact, and how to log them later."""
    return TrackingError(
        f"logging the audit to {uri} failed ({type(err).__name__}: {str(err).splitlines()[0]}); "
        "every output is intact: once the store is reachable, run `dvc repro -f -s track` "
        "(or `python stages/track.py`) to log it"
    )
