"""Tracking against real MLflow stores: a SQLite file, and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vogflow import tracking

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_store_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri() == "http://127.0.0.1:1"
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(ROOT / "stages")
    assert tracking.project_root() == ROOT  # found by walking up to dvc.yaml


def test_unreachable_server_fails_fast_naming_the_uri():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(tracking.TrackingError, match=uri.replace(".", r"\.")):
        tracking.check_reachable(uri, timeout=2)


def test_stage_children_share_one_parent_and_log_artifacts(monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("VOGFLOW_AUDIT_ID", "audit-under-test")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    runs = []
    for stage in ("train@main", "score@main"):
        run = tracking.StageRun(stage, experiment="t", run="main", tags={"vogflow.data_hash": "d"})
        run.params({"vog": {"normalise": "z", "bins": 10}})
        run.metrics({"accuracy": 0.5, "nested": {"value": 2}}, parent=True)
        run.artifact(tmp_path / "table.csv", "tables")
        run.finish()
        runs.append(run)
    assert runs[0].parent_id == runs[1].parent_id
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(runs[0].parent_id)
    assert parent.data.tags[tracking.AUDIT_KEY_TAG] == "audit-under-test"
    assert parent.data.metrics["nested.value"] == 2
    for run in runs:
        child = client.get_run(run.run_id)
        assert child.data.tags["mlflow.parentRunId"] == run.parent_id
        assert child.data.tags[tracking.STAGE_TAG] in ("train@main", "score@main")
        assert child.data.tags["vogflow.run"] == "main"
        assert child.data.params["vog.normalise"] == "z"
        assert {"git.commit", "git.dirty", "vogflow.version"} <= set(child.data.tags)
        assert [a.path for a in client.list_artifacts(run.run_id, "tables")] == ["tables/table.csv"]
    # Artifacts live beside the database, not in whatever folder a stage ran from.
    assert (tmp_path / "mlartifacts").is_dir()
    # A different audit key opens a new parent.
    monkeypatch.setenv("VOGFLOW_AUDIT_ID", "another-audit")
    other = tracking.StageRun("figures", experiment="t", run=None, tags={})
    other.finish()
    assert other.parent_id != runs[0].parent_id


def test_tracking_off_logs_nothing(monkeypatch):
    monkeypatch.setenv("VOGFLOW_TRACKING", "off")
    run = tracking.start_stage("toy", experiment="t")
    assert isinstance(run, tracking.NoTracking)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder}/server.db",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            tracking.check_reachable(uri, timeout=1)
            break
        except tracking.TrackingError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def test_stage_logs_to_a_real_server_over_http(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    params = (ROOT / "params.yaml").read_text()
    params = params.replace("n_points: 400", "n_points: 60").replace("epochs: 15", "epochs: 4")
    params = params.replace("bootstrap: 1000", "bootstrap: 20")
    (tmp_path / "params.yaml").write_text(params)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "VOGFLOW_AUDIT_ID": "over-http"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "toy.py"), "--params", "params.yaml",
         "--out", "results/toy"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("vogflow")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`vogflow.stage` = 'toy'")
    assert len(runs) == 1
    toy = runs[0]
    assert toy.info.status == "FINISHED"
    assert "vog.spearman" in toy.data.metrics
    names = {a.path for a in client.list_artifacts(toy.info.run_id, "toy")}
    assert names == {"toy/metrics.json", "toy/toy.png"}


def test_stage_with_unreachable_store_stops_before_work(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "toy.py"), "--out", "results/toy"],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert uri in out.stderr and "unreachable" in out.stderr
    assert not (tmp_path / "results").exists()
