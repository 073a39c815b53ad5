"""Reading audits back from MLflow (``vogflow compare``, ``vogflow top``): resolve what the user
typed (a registered model version or alias, an audit run id, a child run id) to an audit, and
download its rankings (parquet, never pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vogflow.checkpoints.logged import MODEL_URI, model_version
from vogflow.errors import TrackingError
from vogflow.store.connection import (
    adopt_copy,
    check_reachable,
    client,
    quiet_downloads,
    sqlite_path,
    tracking_uri,
)
from vogflow.tracking.write import AUDIT_RUN_TAG, KIND_TAG, PARENT_TAG, alias_tag

STAGE_TAG = "vogflow.stage"
RUN_TAG = "vogflow.run"


DEFAULT_RUN = "main"


class AuditRef:
    """Where one audit's rankings live, resolved from what the user typed.

    ``audit_run_id`` is the parent audit run; ``run`` the named training run whose rankings are
    read; ``source_run_id`` a run holding the rankings itself (a child score run or an API audit
    run), else ``None`` (then they are looked up in the audit); ``model`` is ``name/version`` when
    the reference was a registered model.
    """

    def __init__(
        self,
        ref: str,
        audit_run_id: str,
        run: str,
        *,
        source_run_id: str | None = None,
        model: str | None = None,
        uri: str = "",
    ) -> None:
        self.ref = ref
        self.audit_run_id = audit_run_id
        self.run = run
        self.source_run_id = source_run_id
        self.model = model
        self.uri = uri

    def describe(self) -> str:
        what = f"model {self.model}, " if self.model else ""
        return f"{self.ref} ({what}audit run {self.audit_run_id}, run {self.run})"

    def __repr__(self) -> str:
        return f"AuditRef({self.describe()})"


def _reading_client() -> tuple[Any, str]:
    """A client on the configured store, refusing to create an empty SQLite file by reading."""
    uri = tracking_uri()
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise TrackingError(
            f"tracking store {uri} does not exist: run an audit first (`dvc repro`; in a clone "
            "that pulled its outputs, `dvc repro -f -s track`) or point MLFLOW_TRACKING_URI at "
            "the store that holds it"
        )
    check_reachable(uri)
    adopt_copy(uri)
    return client(uri), uri


def _model_audit(client: Any, ref: str, uri: str) -> tuple[str, str, str | None]:
    """``models:/name/<version|latest>`` or ``models:/name@alias`` -> (audit, name/version, run)."""
    mv = model_version(client, ref, uri)
    run_name = None
    alias = MODEL_URI.fullmatch(ref).group(3)
    tags = mv.tags or {}
    audit = (alias and tags.get(alias_tag(alias))) or tags.get(AUDIT_RUN_TAG)
    if mv.run_id:
        tags = client.get_run(mv.run_id).data.tags
        run_name = tags.get(RUN_TAG)
        audit = audit or tags.get(AUDIT_RUN_TAG) or tags.get(PARENT_TAG)
    if not audit:
        raise TrackingError(
            f"{ref}: the model version carries no {AUDIT_RUN_TAG} tag and no run, so its audit "
            "is unknown; pass the audit run id instead"
        )
    return audit, f"{mv.name}/{mv.version}", run_name


def resolve_audit(ref: str, *, run: str | None = None) -> AuditRef:
    """Resolve a ``models:/...`` URI, an audit run id or a child run id to its audit.

    ``run`` chooses the named training run inside the audit; by default the run a registered
    model was trained in, the run a child score run scored, or ``main``. Raises
    :class:`TrackingError` with a message naming ``ref`` when it cannot be found.
    """
    from mlflow.exceptions import MlflowException

    client, uri = _reading_client()
    if ref.startswith("models:/"):
        audit, model, trained = _model_audit(client, ref, uri)
        return AuditRef(ref, audit, run or trained or DEFAULT_RUN, model=model, uri=uri)
    try:
        found = client.get_run(ref)
    except MlflowException as err:
        raise TrackingError(
            f"{ref!r} is neither a run id in {uri} nor a models:/ URI; pass an audit run id or "
            "models:/<name>/<version>"
        ) from err
    tags = found.data.tags
    if tags.get(KIND_TAG) == "compare":
        raise TrackingError(f"run {ref} is a comparison, not an audit; pass an audit run id")
    parent = tags.get(PARENT_TAG)
    if tags.get(KIND_TAG) == "api":  # `vogflow audit --track`: one table, in the run itself
        return AuditRef(ref, ref, run or DEFAULT_RUN, source_run_id=ref, uri=uri)
    if not parent:
        return AuditRef(ref, ref, run or DEFAULT_RUN, uri=uri)
    own = tags.get(RUN_TAG)
    holds = tags.get(STAGE_TAG, "").startswith("score") or tags.get(KIND_TAG) == "api"
    if holds and (run is None or run == own):
        # A child score run (or API audit run) holds its own rankings: read them there.
        return AuditRef(ref, parent, own or run or DEFAULT_RUN, source_run_id=ref, uri=uri)
    return AuditRef(ref, parent, run or own or DEFAULT_RUN, uri=uri)


def _files(client: Any, run_id: str, folder: str) -> list[str]:
    return [f.path for f in client.list_artifacts(run_id, folder) if not f.is_dir]


def _children(client: Any, audit_run_id: str) -> list[Any]:
    experiment = client.get_run(audit_run_id).info.experiment_id
    return list(
        client.search_runs(
            [experiment], filter_string=f"tags.`{PARENT_TAG}` = '{audit_run_id}'", max_results=1000
        )
    )


def _candidates(client: Any, audit: AuditRef) -> list[tuple[str, str]]:
    """``(run id, rankings folder)`` pairs that may hold the audit's rankings, best first.

    A pipeline audit keeps every run's rankings on the parent (``rankings/<run>``) and on each
    score child in the project's layout (``runs/<run>/rankings``); an API audit in ``rankings``.
    The audited run's table ranked by the audit (``ranking``: the same columns plus ``rank_by``,
    ``rank_score``, ``rank_reason``, ``rank``) comes first, so every reader shows that ranking.
    """
    if audit.source_run_id:
        return [
            (audit.source_run_id, f"runs/{audit.run}/rankings"),
            (audit.source_run_id, "rankings"),
        ]
    out = []
    params = client.get_run(audit.audit_run_id).data.params
    if params.get("tracking.register_run", "main") == audit.run:
        out.append((audit.audit_run_id, "ranking"))
    out.append((audit.audit_run_id, f"rankings/{audit.run}"))
    for child in _children(client, audit.audit_run_id):
        tags = child.data.tags
        if tags.get(STAGE_TAG, "").startswith("score") and tags.get(RUN_TAG) == audit.run:
            out.append((child.info.run_id, f"runs/{audit.run}/rankings"))
        elif tags.get(KIND_TAG) == "api":
            out.append((child.info.run_id, "rankings"))
    return out


def _locate(client: Any, audit: AuditRef, split: str) -> tuple[str, str]:
    seen: list[str] = []
    for run_id, folder in _candidates(client, audit):
        files = _files(client, run_id, folder)
        wanted = f"{folder}/{split}.parquet"
        if wanted in files:
            return run_id, wanted
        # An API audit (`vogflow audit --track`) logs one table as rankings.parquet.
        single = f"{folder}/rankings.parquet"
        if single in files and client.get_run(run_id).data.params.get("split", split) == split:
            return run_id, single
        seen += [f for f in files if f.endswith(".parquet")]
    found = ", ".join(sorted(set(seen))) or "no rankings at all"
    raise TrackingError(
        f"{audit.describe()}: no rankings for split {split!r} of run {audit.run!r} (found: "
        f"{found}); choose --split or --run accordingly"
    )


def seed_rankings(audit: AuditRef, split: str) -> dict[str, Any]:
    """The rankings tables of ``split`` of the audit's seed runs (``stability.seed_runs``), for a
    ``_seedmean`` score; empty when the audit logged none (an API audit, one run)."""
    import ast

    if audit.source_run_id:
        return {}
    client, _ = _reading_client()
    listed = client.get_run(audit.audit_run_id).data.params.get("stability.seed_runs")
    if not listed:
        return {}
    runs = [str(r) for r in ast.literal_eval(listed)]
    return {
        r: read_rankings(AuditRef(audit.ref, audit.audit_run_id, r, uri=audit.uri), split)
        for r in runs
    }


def rankings_splits(audit: AuditRef) -> list[str]:
    """The splits whose rankings the audit logged for its run (e.g. ``["test", "train"]``)."""
    client, _ = _reading_client()
    for run_id, folder in _candidates(client, audit):
        names = [Path(f).stem for f in _files(client, run_id, folder) if f.endswith(".parquet")]
        if names:
            return sorted(names)
    return []


def read_rankings(audit: AuditRef, split: str) -> Any:
    """Download the audit's rankings table of ``split`` and read it (a pandas DataFrame)."""
    import tempfile

    from vogflow.rankings import table as rankings

    client, _ = _reading_client()
    run_id, path = _locate(client, audit, split)
    with quiet_downloads(), tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return rankings.read(local)


def audit_params(audit: AuditRef) -> dict[str, str]:
    """The logged params behind the audit's rankings: its train run's, then the scoring run's.

    Keys are flattened (``data.name``, ``model.name``, ``train.epochs``, ...); empty when none
    were logged.
    """
    client, _ = _reading_client()
    params: dict[str, str] = {}
    children = _children(client, audit.audit_run_id)
    runs = [
        c
        for c in children
        if c.data.tags.get(STAGE_TAG, "").startswith("train")
        and c.data.tags.get(RUN_TAG) == audit.run
    ]
    if audit.source_run_id:
        runs.append(client.get_run(audit.source_run_id))
    else:
        runs += [c for c in children if c.data.tags.get(KIND_TAG) == "api"]
    for found in runs:
        params.update(found.data.params)
    return params


def compare_run_url(run_id: str) -> str:
    """Where to look at a run: the server page for an http store, else the store URI and id."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        exp = client(uri).get_run(run_id).info.experiment_id
        return f"{uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    return f"run {run_id} in {uri}"


# ---------------------------------------------------------------------------------------------
