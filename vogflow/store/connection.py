"""Where the audit record lives: the store's URI, checks that fail fast, and safe access to it.

Default store: ``mlflow.db`` (SQLite) at the project root with artifacts in ``mlartifacts/``
beside it; ``MLFLOW_TRACKING_URI`` overrides (a team's server); ``VOGFLOW_TRACKING=off`` turns
tracking off. Several audits may log to the default store at once: every writer holds a file lock
beside the database, so the store is created (migrated) once and no run is lost.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vogflow.common.atomic import project_root
from vogflow.errors import TrackingError

HINT = (
    "start the server, point MLFLOW_TRACKING_URI at a reachable store, or run with "
    "VOGFLOW_TRACKING=off"
)
# Database URIs need a driver that MLflow does not install.
DRIVERS = ("postgresql", "mysql", "mssql")
# The pip package that brings a driver module.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "pyodbc": "pyodbc",
}
SCHEMES = ("sqlite", "http", "https", "databricks", "file", *DRIVERS)


__all__ = [
    "TrackingError",
    "check_model_name",
    "check_reachable",
    "enabled",
    "project_root",
    "tracking_uri",
]


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def enabled() -> bool:
    return os.environ.get("VOGFLOW_TRACKING", "on").lower() not in ("off", "0", "false", "no")


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when the store cannot be used (before any heavy work)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme not in SCHEMES:
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={uri!r}: unknown scheme {scheme or '(none)'!r}; use "
            "sqlite:///PATH, http://HOST:PORT or postgresql://... (or unset it for the "
            "project's mlflow.db)"
        )
    if scheme == "file":
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={uri!r}: MLflow's file store is in maintenance mode (MLflow "
            "deprecates it); use sqlite:///PATH/mlflow.db (or unset it for the "
            "project's mlflow.db)"
        )
    if scheme in DRIVERS:
        _check_driver(uri)
        _check_port(uri, timeout)
    if scheme in ("http", "https"):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking server {uri} answered {resp.status}; {HINT}")
        except OSError as err:
            raise TrackingError(f"tracking server {uri} is unreachable ({err}); {HINT}") from err
    path = sqlite_path(uri)
    if path is not None:
        folder = path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} is not writable; {HINT}")
        _check_sqlite_file(uri, path)


def _check_sqlite_file(uri: str, path: Path) -> None:
    """The SQLite store is absent (created on first use), empty, or a SQLite database."""
    if path.is_dir():
        raise TrackingError(
            f"tracking store {uri}: {path} is a directory, not a database file; name a file "
            f"inside it (sqlite:///{path}/mlflow.db)"
        )
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as f:
            header = f.read(16)
    except OSError as err:
        raise TrackingError(f"tracking store {uri}: {path} cannot be read ({err})") from err
    if header != b"SQLite format 3\0":
        raise TrackingError(
            f"tracking store {uri}: {path} is not a SQLite database; point MLFLOW_TRACKING_URI "
            "at the store's .db file, or move this file away"
        )


# The port each database listens on when its URI names none.
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _check_port(uri: str, timeout: float) -> None:
    """A database server answers a TCP connect within ``timeout`` (its driver would retry for
    minutes first). A socket path (no host) is left to the driver."""
    import socket

    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if not url.host:
        return
    port = url.port or DEFAULT_PORTS.get(url.get_backend_name(), 0)
    try:
        with socket.create_connection((url.host, port), timeout=timeout):
            pass
    except OSError as err:
        shown = url.render_as_string(hide_password=True)
        raise TrackingError(
            f"tracking store {shown}: nothing answers on {url.host}:{port} ({err}); {HINT}"
        ) from err


def check_model_name(name: Any) -> None:
    """``tracking.model_name`` is a name MLflow registers and ``models:/`` URIs can spell.

    MLflow's own rules (mlflow.utils.validation._validate_model_name), restated: importing
    mlflow would cost the validate stage seconds on every params change."""
    import posixpath

    problem = None
    if not isinstance(name, str) or not name.strip():
        problem = "it is empty"
    elif any(c in name for c in "/:"):
        problem = "MLflow refuses '/' and ':' in names"
    elif "@" in name or name != name.strip():
        problem = "models:/ URIs cannot spell a name with '@' or outer spaces"
    elif posixpath.normpath(name) != name or name == "." or name.startswith(".."):
        problem = "MLflow refuses names that are not a plain path component"
    if problem:
        raise TrackingError(
            f"tracking.model_name: {name!r} is not a registered model name MLflow accepts "
            f"({problem}); use letters, digits, '-', '_' or '.', e.g. vogflow-main"
        )


def _check_driver(uri: str) -> None:
    """The database driver SQLAlchemy will load for ``uri`` is installed (it picks the default
    driver by its own version: ``postgresql://`` means psycopg 3 from SQLAlchemy 2.1 on)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(uri).get_dialect().import_dbapi()
    except ModuleNotFoundError as err:
        raise TrackingError(
            f"tracking store {uri}: its database driver {err.name!r} is not installed; "
            f"pip install '{DRIVER_PACKAGES.get(err.name, err.name)}', or name an installed "
            "driver in the URI (e.g. postgresql+psycopg2://)"
        ) from err
    except (ArgumentError, NoSuchModuleError) as err:
        raise TrackingError(f"tracking store {uri}: {err}; check the URI's scheme") from err


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def open_store(uri: str, *, timeout: float = 600) -> Iterator[Any]:
    """A client on ``uri``; for a SQLite store, held under an exclusive file lock.

    SQLite allows one writer, and MLflow creates (migrates) a new store on first use: two
    processes doing that at once left a half-migrated file. The lock makes writers take turns.
    """
    path = sqlite_path(uri)
    if path is None:
        _quiet_retries()
        yield client(uri)
        return
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(path) + ".lock", timeout=timeout):
            _rebase_artifacts(path)
            yield client(uri)
    except Timeout as err:
        raise TrackingError(
            f"tracking store {uri}: another audit held {path}.lock for {timeout:.0f}s; "
            "wait for it, or remove the lock file if no vogflow process is running"
        ) from err


def adopt_copy(uri: str, *, timeout: float = 60) -> None:
    """Point a copied or moved project's SQLite store at its own ``mlartifacts`` before a read,
    so a copy whose original is gone reads its tables, artifacts and model (see
    :func:`_rebase_artifacts`). A store vogflow cannot write to is left as it is."""
    path = sqlite_path(uri)
    if path is None or not path.exists() or not os.access(path, os.W_OK):
        return
    from filelock import FileLock, Timeout

    with contextlib.suppress(Timeout), FileLock(str(path) + ".lock", timeout=timeout):
        _rebase_artifacts(path)


def _quiet_retries() -> None:
    """A stopped server should fail a tracking step in seconds, not after minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


# Columns of MLflow's SQL schema that hold artifact locations.
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def _rebase_artifacts(db: Path) -> None:
    """Keep a copied or moved project's store pointing at its own ``mlartifacts``.

    MLflow stores absolute artifact locations; a project copied to another folder would keep
    writing (and reading) artifacts in the original one. The default store's artifacts live
    beside it by construction, so locations under another folder's ``mlartifacts`` are rewritten
    to this one's.
    """
    if not db.exists():
        return
    here = (db.parent / "mlartifacts").resolve().as_uri()
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            rows = con.execute("SELECT artifact_location FROM experiments").fetchall()
        except sqlite3.Error:
            return  # not migrated yet: nothing to rebase
        old = {
            loc[: loc.index("/mlartifacts") + len("/mlartifacts")]
            for (loc,) in rows
            if loc and "/mlartifacts" in loc
        }
        old.discard(here)
        for prefix in old:
            for table, column in _LOCATION_COLUMNS:
                with contextlib.suppress(sqlite3.Error):  # older schemas lack some tables
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {column} LIKE ? || '%'",
                        (here, len(prefix) + 1, prefix),
                    )
        con.commit()


# MLflow's UI opens an experiment of this kind in its "Model training" view, not the GenAI one.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(mlflow_client: Any, name: str, uri: str) -> str:
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND[0] not in exp.tags:
            mlflow_client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    path = sqlite_path(uri)
    if path is not None:
        # Artifacts beside the database, not in whichever folder the first writer ran from.
        location = (path.parent / "mlartifacts").resolve().as_uri()
    try:
        return mlflow_client.create_experiment(
            name, artifact_location=location, tags=dict([EXPERIMENT_KIND])
        )
    except Exception:  # another process created it meanwhile
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_state(root: Path, *, generated: Iterable[str] = ()) -> dict[str, str]:
    """Commit and dirty flag of the code behind an audit.

    ``generated``: paths that DVC itself writes (outputs, ``dvc.lock``); a change there is the
    audit's result, not an edit of its source, so it does not make the tree dirty.
    """

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise OSError(out.stderr)
        return out.stdout

    generated = [g.rstrip("/") for g in generated]

    def produced(path: str) -> bool:
        return any(path == g or path.startswith(g + "/") for g in generated)

    try:
        commit = os.environ.get("DVC_EXP_BASELINE_REV") or git("rev-parse", "HEAD").strip()
        changed = [
            line[3:].strip().strip('"')
            for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        ]
        dirty = any(not produced(path) for path in changed)
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "mlflow.source.git.commit": commit,
    }


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    """No download progress bar while the block runs; the setting is restored afterwards.

    MLflow draws a bar on stderr for every download; a few files need none, and the bar would
    garble the commands' one-line errors.
    """
    quiet = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(quiet)
    os.environ[quiet] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(quiet, None)
        else:
            os.environ[quiet] = before
