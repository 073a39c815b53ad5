"""A team's tracking backend for the tests that need one: a real PostgreSQL server behind a
real `mlflow server` on 127.0.0.1.

A test module takes the fixtures by importing them (``team_mlflow_server =
servers.team_mlflow_server``), so only the tests that start servers pay for them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path:
    """PostgreSQL server binaries: ``$VOGFLOW_POSTGRES_BIN``, else Debian's newest versioned
    folder, else those on PATH, else the ones bundled by the ``pgserver`` wheel (the test extra),
    so the test command needs no system package on a fresh machine."""
    import importlib.util

    folders = [os.environ["VOGFLOW_POSTGRES_BIN"]] if os.environ.get("VOGFLOW_POSTGRES_BIN") else []
    folders += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        reverse=True,
        key=lambda f: int(Path(f).parent.name) if Path(f).parent.name.isdigit() else 0,
    )
    # Resolved: a lone symlink on PATH (e.g. /usr/local/bin/initdb) has no pg_ctl beside it.
    folders += [str(Path(found).resolve().parent)] if (found := shutil.which("initdb")) else []
    if (spec := importlib.util.find_spec("pgserver")) is not None and spec.origin:
        folders.append(str(Path(spec.origin).parent / "pginstall" / "bin"))
    for folder in folders:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    pytest.fail(
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin, on PATH "
        "or in the pgserver package): pip install -e '.[test]' or apt-get install -y "
        "postgresql",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def postgres_uri():
    """A throwaway PostgreSQL server on 127.0.0.1 with an empty database; yields its URI.

    Fails (never skips) when PostgreSQL or the psycopg2 driver is missing: the team-backend tests
    are the only check that an audit logs to the store a team would run.
    """
    try:
        import psycopg2  # MLflow's server needs it too, to open postgresql:// URIs
    except ImportError:
        pytest.fail("the PostgreSQL driver is missing: pip install psycopg2-binary", pytrace=False)
    bindir = _postgres_bin()
    # PostgreSQL refuses to run as root; its server then runs as the package's `postgres` user,
    # in a folder that user owns (pytest's own temp folders are private to root).
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="vogflow-pg-"))
    if os.geteuid() == 0:
        if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
            # Debian's package creates this user; the bundled binaries need it made here.
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=False)
        if (
            shutil.which("runuser") is None
            or subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0
        ):
            pytest.fail(
                "running as root, PostgreSQL needs the `postgres` user and runuser: "
                "apt-get install -y postgresql",
                pytrace=False,
            )
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    password = secrets.token_hex(8)
    data, log, port = folder / "data", folder / "server.log", _free_port()

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    def fail(what: str, out: subprocess.CompletedProcess) -> None:
        tail = log.read_text()[-2000:] if log.exists() else ""
        pytest.fail(
            f"PostgreSQL ({bindir}) {what} failed:\n{out.stdout[-2000:]}"
            f"{out.stderr[-2000:]}\n{tail}",
            pytrace=False,
        )

    try:
        (folder / "pw").write_text(password)
        if as_user:
            shutil.chown(folder / "pw", "postgres")
        # Passwords over TCP, as a team's server would ask; fsync off: the data is thrown away.
        out = run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "vogflow",
            f"--pwfile={folder}/pw",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        if out.returncode != 0:
            fail("initdb", out)
        options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off"
        out = run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        if out.returncode != 0:
            fail("start", out)
        con = psycopg2.connect(
            host="127.0.0.1", port=port, user="vogflow", password=password, dbname="postgres"
        )
        con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
        con.close()
        # The driver named: SQLAlchemy 2.1 made psycopg 3 the default for postgresql://.
        yield f"postgresql+psycopg2://vogflow:{password}@127.0.0.1:{port}/mlflow"
    finally:
        if (data / "postmaster.pid").exists():
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_mlflow_server(
    backend: str, folder: Path, *, startup: float = 180, port: int | None = None
):
    """A real `mlflow server` on 127.0.0.1 over ``backend``, artifacts uploaded to and served
    from ``folder / "artifacts"``; yields its URI and stops it (with its workers) afterwards.
    ``port``: the port of a server started again (default: a free one)."""
    from vogflow.errors import TrackingError
    from vogflow.store.connection import check_reachable

    log, port = folder / "server.log", port or _free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    with open(log, "wb") as sink:
        # Its own session, so the gunicorn/uvicorn workers stop with it.
        proc = subprocess.Popen(
            command, cwd=folder, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup  # the first start migrates an empty database
    while True:
        try:
            check_reachable(uri, timeout=1)
            break
        except TrackingError:
            if proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(
                    f"mlflow server did not start:\n{log.read_text()[-3000:]}", pytrace=False
                )
            time.sleep(0.5)
    try:
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            # Its workers wait for idle keep-alive connections; the data is thrown away anyway.
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def team_mlflow_server(postgres_uri, tmp_path_factory):
    """A real `mlflow server` as a team runs it: runs in PostgreSQL, artifacts uploaded to and
    served by the server (`--artifacts-destination`). Yields ``uri``, ``artifacts`` (the folder
    the server writes them to) and ``backend`` (the PostgreSQL URI)."""
    folder = tmp_path_factory.mktemp("team-server")
    with running_mlflow_server(postgres_uri, folder) as uri:
        yield SimpleNamespace(uri=uri, artifacts=folder / "artifacts", backend=postgres_uri)
