"""Experiment tracking in MLflow: the only module that imports mlflow.

One parent run per audit (one ``dvc repro`` or ``dvc exp run``), one child run per stage that
executed. Plain ``dvc repro`` needs no wrapper: each stage finds the DVC process it runs under and
joins (or opens) the parent run keyed by it. Default store: ``mlflow.db`` (SQLite) at the project
root with artifacts in ``mlartifacts/`` beside it; ``MLFLOW_TRACKING_URI`` overrides, and
``VOGFLOW_TRACKING=off`` turns tracking off.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import vogflow

AUDIT_KEY_TAG = "vogflow.audit_key"
STAGE_TAG = "vogflow.stage"
RUN_TAG = "vogflow.run"
AUDIT_RUN_TAG = "vogflow.audit_run_id"
PARENT_TAG = "mlflow.parentRunId"


class TrackingError(RuntimeError):
    """The tracking store cannot be used."""


def project_root() -> Path:
    """``DVC_ROOT`` when DVC runs us, else the nearest folder holding ``dvc.yaml``, else cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def enabled() -> bool:
    return os.environ.get("VOGFLOW_TRACKING", "on").lower() not in ("off", "0", "false", "no")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_reachable(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when the store cannot be reached (before any heavy work)."""
    hint = ("start the server, point MLFLOW_TRACKING_URI at a reachable store, or run with "
            "VOGFLOW_TRACKING=off")  # fmt: skip
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking server {uri} answered {resp.status}; {hint}")
        except OSError as err:
            raise TrackingError(f"tracking server {uri} is unreachable ({err}); {hint}") from err
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} is not writable; {hint}")


def experiment_id(client: Any, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # Artifacts beside the database, not in the working directory of whichever stage ran first.
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it meanwhile
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _proc_start(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
        return fh.read().rsplit(")", 1)[1].split()[19]


def audit_key() -> str:
    """Identity of the current audit: the ``dvc repro``/``dvc exp`` process we run under.

    ``VOGFLOW_AUDIT_ID`` overrides; outside DVC every invocation is its own audit.
    """
    if os.environ.get("VOGFLOW_AUDIT_ID"):
        return os.environ["VOGFLOW_AUDIT_ID"]
    pid = os.getppid()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        while pid > 1:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            words = [Path(w.decode(errors="replace")).name for w in cmdline if w]
            if any(w == "dvc" or w.startswith("dvc") for w in words[:3]) and (
                "repro" in words or "exp" in words
            ):
                return f"dvc-{boot}-{pid}-{_proc_start(pid)}"
            with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        pass
    return f"single-{uuid.uuid4().hex}"


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise OSError(out.stderr)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"git.commit": commit, "git.dirty": str(dirty).lower(),
                "mlflow.source.git.commit": commit}  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}


class StageRun:
    """The child run of one executed stage, under its audit's parent run.

    Importing MLflow and opening its store costs seconds, which in an audit of dozens of stage
    processes was half the stage time. So the run is recorded by a tracking agent: a child
    process that imports MLflow and connects on the other core while the stage works, and takes
    the stage's calls over a pipe, in order. Calls that name files (artifacts) or return a value
    wait for the agent; metrics and params do not. ``finish`` waits until everything is stored.
    """

    def __init__(self, stage: str, *, experiment: str, run: str | None, tags: Mapping[str, str]):
        self.root = project_root()
        self.uri = tracking_uri(self.root)
        check_reachable(self.uri)  # fail fast, before any heavy work, without importing MLflow
        base_tags = {
            STAGE_TAG: stage,
            "vogflow.version": vogflow.__version__,
            **git_state(self.root),
            **({RUN_TAG: run} if run else {}),
            **tags,
        }
        self._agent = subprocess.Popen(
            [sys.executable, "-c", "from vogflow.tracking import agent_main; agent_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        self._ids: tuple[str, str] | None = None
        self._call("open", uri=self.uri, stage=stage, experiment=experiment, key=audit_key(),
                   base_tags=base_tags)  # fmt: skip

    def _call(self, cmd: str, *, wait: bool = False, **args: Any) -> Any:
        try:
            self._agent.stdin.write(json.dumps({"cmd": cmd, "wait": wait, **args}) + "\n")
            self._agent.stdin.flush()
            if not wait:
                return None
            line = self._agent.stdout.readline()
        except (OSError, ValueError) as err:  # a closed or broken pipe
            raise TrackingError(f"tracking agent for {self.uri} stopped: {err}") from err
        if not line:
            raise TrackingError(f"tracking agent for {self.uri} stopped (see the error above)")
        reply = json.loads(line)
        if "error" in reply:
            raise TrackingError(f"tracking store {self.uri}: {reply['error']}")
        return reply.get("result")

    @property
    def run_id(self) -> str:
        return self._run_ids()[0]

    @property
    def parent_id(self) -> str:
        return self._run_ids()[1]

    def _run_ids(self) -> tuple[str, str]:
        if self._ids is None:
            self._ids = tuple(self._call("ids", wait=True))
        return self._ids

    def params(self, params: Mapping[str, Any], *, prefix: str = "") -> None:
        self._call("params", values={k: str(v)[:6000] for k, v in flatten(params, prefix).items()})

    def metrics(self, metrics: Mapping[str, Any], *, step: int = 0, parent: bool = False) -> None:
        values = {k: float(v) for k, v in flatten(metrics).items() if _is_number(v)}
        self._call("metrics", values=values, step=step, parent=parent,
                   timestamp=int(time.time() * 1000))  # fmt: skip

    def tags(self, tags: Mapping[str, str], *, parent: bool = False) -> None:
        self._call("tags", values={k: str(v) for k, v in tags.items()}, parent=parent)

    def artifact(self, path: str | Path, artifact_path: str | None = None, *,
                 parent: bool = False) -> None:  # fmt: skip
        self._call("artifact", wait=True, path=str(Path(path).resolve()),
                   artifact_path=artifact_path, parent=parent)  # fmt: skip

    def register_model(self, name: str, model_dir: str | Path) -> int:
        """Log ``model_dir`` (final weights + manifest) and register it as a new model version."""
        return int(self._call("register_model", wait=True, name=name,
                              model_dir=str(Path(model_dir).resolve())))  # fmt: skip

    def finish(self, status: str = "FINISHED") -> None:
        try:
            with contextlib.suppress(TrackingError):
                self._run_ids()  # kept for callers that read them after the run has ended
            self._call("finish", wait=True, status=status)
        finally:
            self._agent.stdin.close()
            self._agent.wait(timeout=120)


class _Recorder:
    """Inside the tracking agent: the child run of one stage, under its audit's parent run."""

    def __init__(self, uri: str, stage: str, experiment: str, key: str,
                 base_tags: Mapping[str, str]) -> None:  # fmt: skip
        self.uri = uri
        self.client = _client(uri)
        self.experiment_id = experiment_id(self.client, experiment, uri)
        self.parent_id = self._parent(key, base_tags)
        child = self.client.create_run(
            self.experiment_id,
            run_name=stage,
            tags={**base_tags, PARENT_TAG: self.parent_id, AUDIT_RUN_TAG: self.parent_id},
        )
        self.run_id = child.info.run_id

    def _parent(self, key: str, tags: Mapping[str, str]) -> str:
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{AUDIT_KEY_TAG}` = '{key}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        shared = {
            k: v for k, v in tags.items() if k.startswith(("git.", "mlflow.source", "vogflow.v"))
        }
        name = time.strftime("audit-%Y%m%d-%H%M%S")
        parent = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={**shared, AUDIT_KEY_TAG: key, "vogflow.kind": "audit"},
        )
        return parent.info.run_id

    def ids(self) -> list[str]:
        return [self.run_id, self.parent_id]

    def params(self, values: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in values.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def metrics(self, values: Mapping[str, float], step: int, parent: bool, timestamp: int) -> None:
        from mlflow.entities import Metric

        batch = [Metric(k, v, timestamp, step) for k, v in values.items()]
        targets = [self.run_id, self.parent_id] if parent else [self.run_id]
        for run_id in targets:
            for i in range(0, len(batch), 500):
                self.client.log_batch(run_id, metrics=batch[i : i + 500])

    def tags(self, values: Mapping[str, str], parent: bool) -> None:
        for run_id in [self.run_id, self.parent_id] if parent else [self.run_id]:
            for k, v in values.items():
                self.client.set_tag(run_id, k, str(v))

    def artifact(self, path: str, artifact_path: str | None, parent: bool) -> None:
        path = Path(path)
        for run_id in [self.run_id, self.parent_id] if parent else [self.run_id]:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(run_id, str(path), artifact_path)

    def register_model(self, name: str, model_dir: str) -> int:
        from mlflow.exceptions import MlflowException

        self.client.log_artifacts(self.run_id, str(model_dir), "model")
        try:
            self.client.create_registered_model(name)
        except MlflowException:
            pass  # already registered
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model"
        version = self.client.create_model_version(
            name, source, run_id=self.run_id, tags={AUDIT_RUN_TAG: self.parent_id}
        )
        self.tags({"vogflow.model_name": name, "vogflow.model_version": str(version.version)},
                  parent=True)  # fmt: skip
        return int(version.version)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)
        # The parent has no end of its own: it ends with its latest stage (and fails with it).
        self.client.set_terminated(self.parent_id, status)


class NoTracking:
    """Tracking turned off (``VOGFLOW_TRACKING=off``): the same calls, nothing recorded."""

    run_id = parent_id = None

    def params(self, *a: Any, **k: Any) -> None: ...
    def metrics(self, *a: Any, **k: Any) -> None: ...
    def tags(self, *a: Any, **k: Any) -> None: ...
    def artifact(self, *a: Any, **k: Any) -> None: ...
    def register_model(self, *a: Any, **k: Any) -> int:
        return 0

    def finish(self, *a: Any, **k: Any) -> None: ...


def start_stage(stage: str, *, experiment: str, run: str | None = None,
                tags: Mapping[str, str] | None = None) -> StageRun | NoTracking:  # fmt: skip
    if not enabled():
        print("tracking is off (VOGFLOW_TRACKING=off): nothing is logged to MLflow", flush=True)
        return NoTracking()
    return StageRun(stage, experiment=experiment, run=run, tags=tags or {})


def agent_main() -> None:
    """The tracking agent: apply a stage's calls (JSON lines on stdin) to MLflow, in order.

    A call that asks to wait gets a JSON line back (its result, or the first error so far). If the
    stage dies without finishing, its run is marked FAILED.
    """
    # Replies get the pipe to themselves: whatever MLflow prints goes to stderr instead.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    recorder: _Recorder | None = None
    error: str | None = None
    finished = False
    for line in sys.stdin:
        call = json.loads(line)
        cmd, wait = call.pop("cmd"), call.pop("wait")
        result = None
        if error is None:
            try:
                if cmd == "open":
                    recorder = _Recorder(**call)
                else:
                    result = getattr(recorder, cmd)(**call)
            except Exception as err:  # reported to the stage at its next waiting call
                error = f"{type(err).__name__}: {err}"
        finished = finished or cmd == "finish"
        if wait:
            reply = {"error": error} if error else {"result": result}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
    if recorder is not None and not finished:
        recorder.finish("FAILED")


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a.b.c`` keys; lists of scalars kept as one value."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _is_number(value: Any) -> bool:
    import math

    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(float(value))) or isinstance(value, bool)  # fmt: skip


def log_audit(table: Any, *, params: Mapping[str, Any], run_name: str, experiment: str) -> str:
    """Log an :func:`vogflow.audit` result as a standalone run; returns its run id."""
    import tempfile

    from vogflow import rankings

    tracker = StageRun(run_name, experiment=experiment, run=None, tags={"vogflow.kind": "api"})
    try:
        tracker.params(params)
        with tempfile.TemporaryDirectory() as tmp:
            rankings.write_parquet(table, Path(tmp) / "rankings.parquet")
            score = next((c for c in ("vog_late_label", "vog_all_label", "vog_late_pred")
                          if c in table.columns), None)  # fmt: skip
            if score:
                rankings.write_csv(rankings.top_bottom(table, score, 25), Path(tmp) / "top.csv")
            tracker.artifact(tmp, "rankings")
        tracker.metrics({"examples": len(table), "error": float(1 - table["correct"].mean())})
        tracker.finish()
    except BaseException:
        tracker.finish("FAILED")
        raise
    return tracker.run_id


# ---------------------------------------------------------------------------------------------
# Reading audits back (``vogflow compare``, ``vogflow top``) and logging comparisons.

KIND_TAG = "vogflow.kind"
COMPARE_A_TAG = "vogflow.compare.a"
COMPARE_B_TAG = "vogflow.compare.b"
DEFAULT_RUN = "main"


class AuditRef:
    """Where one audit's rankings live, resolved from what the user typed.

    ``audit_run_id`` is the parent audit run; ``run`` the named training run whose rankings are
    read; ``source_run_id`` a run holding the rankings itself (a child score run or an API audit
    run), else ``None`` (then they are looked up in the audit); ``model`` is ``name/version`` when
    the reference was a registered model.
    """

    def __init__(self, ref: str, audit_run_id: str, run: str, *, source_run_id: str | None = None,
                 model: str | None = None, uri: str = "") -> None:  # fmt: skip
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
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        raise TrackingError(
            f"tracking store {uri} does not exist: run an audit first (`dvc repro`) or point "
            "MLFLOW_TRACKING_URI at the store that holds it"
        )
    check_reachable(uri)
    return _client(uri), uri


def _model_audit(client: Any, ref: str, uri: str) -> tuple[str, str, str | None]:
    """``models:/name/<version|latest>`` or ``models:/name@alias`` -> (audit, name/version, run)."""
    import re

    from mlflow.exceptions import MlflowException

    match = re.fullmatch(r"models:/([^/@]+)(?:/([^/@]+)|@([^/@]+))/?", ref)
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
            mv = client.get_model_version_by_alias(name, alias)
        elif version == "latest":
            found = client.search_model_versions(f"name = '{name}'")
            if not found:
                raise MlflowException(f"no versions of {name}")
            mv = max(found, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(name, version)
    except MlflowException as err:
        raise TrackingError(
            f"{ref}: no such registered model version in {uri} (versions of {name!r}: "
            f"{known_versions()})"
        ) from err
    run_name = None
    audit = (mv.tags or {}).get(AUDIT_RUN_TAG)
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
    """``(run id, rankings folder)`` pairs that may hold the audit's rankings, best first."""
    if audit.source_run_id:
        return [(audit.source_run_id, "rankings")]
    out = [(audit.audit_run_id, f"rankings/{audit.run}")]
    for child in _children(client, audit.audit_run_id):
        tags = child.data.tags
        score = tags.get(STAGE_TAG, "").startswith("score") and tags.get(RUN_TAG) == audit.run
        if score or tags.get(KIND_TAG) == "api":
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

    from vogflow import rankings

    client, _ = _reading_client()
    run_id, path = _locate(client, audit, split)
    # MLflow draws a progress bar on stderr for every download; a one-file read needs none, and
    # the bar would garble the command's one-line errors. The setting is restored afterwards.
    quiet = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(quiet)
    os.environ[quiet] = "false"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            return rankings.read(local)
    finally:
        if before is None:
            os.environ.pop(quiet, None)
        else:
            os.environ[quiet] = before


def audit_params(audit: AuditRef) -> dict[str, str]:
    """The logged params behind the audit's rankings: its train run's, then the scoring run's.

    Keys are flattened (``data.name``, ``model.name``, ``train.epochs``, ...); empty when none
    were logged.
    """
    client, _ = _reading_client()
    params: dict[str, str] = {}
    children = _children(client, audit.audit_run_id)
    runs = [c for c in children if c.data.tags.get(STAGE_TAG, "").startswith("train")
            and c.data.tags.get(RUN_TAG) == audit.run]  # fmt: skip
    if audit.source_run_id:
        runs.append(client.get_run(audit.source_run_id))
    else:
        runs += [c for c in children if c.data.tags.get(KIND_TAG) == "api"]
    for found in runs:
        params.update(found.data.params)
    return params


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
    from mlflow.entities import Metric, Param

    root = project_root()
    uri = tracking_uri(root)
    check_reachable(uri)
    client = _client(uri)
    exp = experiment_id(client, experiment, uri)
    all_tags = {
        KIND_TAG: "compare",
        COMPARE_A_TAG: a,
        COMPARE_B_TAG: b,
        "vogflow.version": vogflow.__version__,
        **git_state(root),
        **(tags or {}),
    }
    run_id = client.create_run(exp, run_name=run_name, tags=all_tags).info.run_id
    try:
        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _is_number(v)]
        for name, values in (curves or {}).items():
            batch += [Metric(name, float(v), now, step) for step, v in enumerate(values)
                      if _is_number(v)]  # fmt: skip
        for i in range(0, max(len(items), len(batch)), 100):
            client.log_batch(run_id, metrics=batch[i : i + 100], params=items[i : i + 100])
        client.log_artifacts(run_id, str(folder))
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def compare_run_url(run_id: str) -> str:
    """Where to look at a run: the server page for an http store, else the store URI and id."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        client = _client(uri)
        exp = client.get_run(run_id).info.experiment_id
        return f"{uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    return f"run {run_id} in {uri}"
