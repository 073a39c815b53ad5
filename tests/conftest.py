"""Shared fixtures: small random models and checkpoints, a direct re-implementation of VoG, and a
team's tracking backend (a real PostgreSQL server behind a real `mlflow server`)."""

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

import numpy as np
import pytest
import torch
from torch import nn


class SmallCNN(nn.Module):
    """A user-style model with BatchNorm and dropout (modes matter for gradients)."""

    def __init__(self, channels: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(5 * 6 * 6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(h.flatten(1)))


def perturbed_checkpoints(model: nn.Module, k: int, seed: int = 0) -> list[dict]:
    """K distinct state dicts: the model's weights plus seeded noise, BatchNorm stats varied too."""
    gen = torch.Generator().manual_seed(seed)
    states = []
    for _ in range(k):
        state = {}
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                noise = torch.randn(value.shape, generator=gen) * 0.3
                state[name] = value + noise if "running_var" not in name else value + noise.abs()
            else:
                state[name] = value.clone()
        states.append(state)
    return states


def models_from(factory, states: list[dict]) -> list[nn.Module]:
    models = []
    for state in states:
        m = factory()
        m.load_state_dict(state)
        models.append(m)
    return models


def direct_gradients(models: list[nn.Module], x: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """(K, N, C, H, W) logit gradients, one example and one checkpoint at a time, in eval mode."""
    out = []
    for model in models:
        model.eval()
        per_example = []
        for i in range(len(x)):
            xi = x[i : i + 1].clone().requires_grad_(True)
            logit = model(xi)[0, int(classes[i])]
            (g,) = torch.autograd.grad(logit, xi)
            per_example.append(g[0].double().numpy())
        out.append(np.stack(per_example))
    return np.stack(out)


def direct_vog(grads: np.ndarray) -> np.ndarray:
    """The paper's eqs. 2-4 written out with loops: channel mean, population std, pixel mean."""
    k, n = grads.shape[:2]
    scores = np.zeros(n)
    for i in range(n):
        maps = [grads[t, i].mean(axis=0) if grads.ndim == 5 else grads[t, i] for t in range(k)]
        mu = sum(maps) / k
        var = sum((s - mu) ** 2 for s in maps) / k
        scores[i] = np.sqrt(var).mean()
    return scores


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The tensors in the tests are tiny: a second intra-op thread only adds synchronisation,
    # which costs several times the work itself when the machine is busy.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_cnn_setup():
    torch.manual_seed(0)

    def factory() -> nn.Module:
        return SmallCNN()

    states = perturbed_checkpoints(factory(), k=5, seed=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(23, 3, 6, 6, generator=gen)
    y = torch.randint(0, 4, (23,), generator=gen)
    return factory, states, x, y


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
    from vogflow.tracking.store import TrackingError, check_reachable

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
