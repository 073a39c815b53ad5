"""From one machine to a team: a real MLflow server backed by PostgreSQL, and a real DVC remote.

Slow (a PostgreSQL and an MLflow server start; a tiny pipeline trains): run with `pytest -m slow`.
PostgreSQL (`apt-get install -y postgresql`) and psycopg2 (`pip install psycopg2-binary`) are
required: without them the server test fails, naming what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vogflow import tracking
from vogflow.store.connection import git_state
from vogflow.tracking.record import compose, outputs

sys.path.insert(0, str(Path(__file__).parent))
from audit_workspace import workspace
from servers import postgres_uri, team_mlflow_server  # noqa: E402

pytestmark = pytest.mark.slow
# The servers' fixtures, taken here so that only these tests start them.
__all__ = ["postgres_uri", "team_mlflow_server"]
ROOT = Path(__file__).resolve().parents[2]
MAIN_STAGES = ("train@main", "gradients@main", "score@main")


def planted_model(folder: Path) -> Path:
    """A finished one-checkpoint training run of a tiny MLP, as the train stage leaves it."""
    import torch

    from vogflow.checkpoints.files import checkpoint_name, save_state_dict, write_manifest
    from vogflow.models.architectures import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (1, 4, 4), 3, hidden=5)
    folder.mkdir(parents=True)
    sha = save_state_dict(folder / checkpoint_name(1), model.state_dict())
    write_manifest(
        folder,
        {
            "architecture": "mlp",
            "input_shape": [1, 4, 4],
            "num_classes": 3,
            "model_options": {"hidden": 5},
            "dataset": "digits",
            "data_fingerprint": "f" * 64,
            "checkpoints": [
                {"epoch": 1, "file": checkpoint_name(1), "sha256": sha, "test_accuracy": 0.9}
            ],
            "complete": True,
        },
    )
    return folder


def audit_record(folder: Path):
    params = yaml.safe_load((folder / "params.yaml").read_text())
    lock = yaml.safe_load((folder / "dvc.lock").read_text())
    return compose(folder, params=params, git=git_state(folder, generated=outputs(lock)))


def backend_db(server):
    """A psycopg2 connection to the server's own database (its URI without SQLAlchemy's driver)."""
    import psycopg2

    return psycopg2.connect(server.backend.replace("postgresql+psycopg2://", "postgresql://"))


def test_an_audit_logs_to_a_team_server_on_postgresql(team_mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    server = team_mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)  # how a team points every audit at it
    folder = workspace(tmp_path / "p")

    run_id, new = tracking.log_pipeline_audit(
        audit_record(folder), experiment="team", model_name="team-main", model_dir=None
    )
    assert new
    client = MlflowClient(tracking_uri=server.uri)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_accuracy"] == 0.9
    assert parent.data.tags["verdict.deciles.test.trend"] == "supported"
    exp_id = parent.info.experiment_id
    # Artifacts go through the server, not to a path on the logging machine.
    assert client.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")
    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"train@main", "score@main"}
    assert {c.info.status for c in children} == {"FINISHED"}
    assert by_name["train@main"].data.params["train.epochs"] == "3"
    with backend_db(server) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(exp_id),))
        assert cur.fetchone()[0] == 3  # parent and two stages, in PostgreSQL itself

    # Readable through the server, byte for byte, and stored in its artifacts destination.
    score_id = by_name["score@main"].info.run_id
    parquet = "runs/main/rankings/test.parquet"
    got = Path(client.download_artifacts(score_id, parquet, str(tmp_path / "dl")))
    assert got.read_bytes() == (folder / parquet).read_bytes()
    got = Path(client.download_artifacts(run_id, "config/params.yaml", str(tmp_path / "dl")))
    assert got.read_bytes() == (folder / "params.yaml").read_bytes()
    stored = server.artifacts / exp_id / score_id / "artifacts" / parquet
    assert stored.read_bytes() == (folder / parquet).read_bytes()
    assert (server.artifacts / exp_id / run_id / "artifacts" / "config" / "dvc.lock").is_file()

    # The same pipeline state again: recognised, nothing new in the store or the artifacts.
    files = sorted(p for p in server.artifacts.rglob("*") if p.is_file())
    again, new = tracking.log_pipeline_audit(
        audit_record(folder), experiment="team", model_name="team-main", model_dir=None
    )
    assert (again, new) == (run_id, False)
    assert len(client.search_runs([exp_id])) == 3
    assert sorted(p for p in server.artifacts.rglob("*") if p.is_file()) == files


def test_the_audited_model_registers_on_the_team_server(team_mlflow_server, tmp_path, monkeypatch):
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from vogflow.checkpoints.files import load_run_models

    server = team_mlflow_server
    # Registering points mlflow's process-wide URI at this server; later tests must not inherit a
    # server that stops with the session.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    folder = workspace(tmp_path / "p", accuracy=0.85)
    model_dir = planted_model(folder / "runs" / "main" / "checkpoints")

    run_id, new = tracking.log_pipeline_audit(
        audit_record(folder), experiment="team-models", model_name="team-main", model_dir=model_dir
    )
    assert new
    client = MlflowClient(tracking_uri=server.uri)
    version = client.get_model_version_by_alias("team-main", "audited")
    assert version.run_id == run_id
    assert version.tags["vogflow.audit_run_id"] == run_id
    # Loaded back through the server: the weights travelled through its artifact store.
    loaded = mlflow.pytorch.load_model("models:/team-main@audited")
    x = torch.randn(5, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), load_run_models(model_dir)[0][-1].eval()(x))
    assert list(server.artifacts.rglob("*.pt2"))
    with backend_db(server) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM model_versions WHERE name = 'team-main'")
        assert cur.fetchone()[0] == 1
    again, new = tracking.log_pipeline_audit(
        audit_record(folder), experiment="team-models", model_name="team-main", model_dir=model_dir
    )
    assert (again, new) == (run_id, False)
    assert len(client.search_model_versions("name = 'team-main'")) == 1


def sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout + out.stderr


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_dvc_remote_gives_a_fresh_clone_the_outputs_without_retraining(tmp_path):
    """Push a trained, scored run to a remote; a fresh clone pulls it and reruns nothing."""
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    repo.mkdir()
    for name in ("dvc.yaml", "pyproject.toml", ".gitignore", ".vogflow/builtin-data"):
        (repo / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "vogflow"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=4, milestones=[3])
    params["checkpoints"].update(early=3, every=2, late=3)
    params["vog"]["bootstrap"] = 20
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VOGFLOW_"))}
    env.update(PYTHONPATH=str(repo), DVC_NO_ANALYTICS="1", VOGFLOW_TRACKING="off")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    sh(["dvc", "config", "core.autostage", "true"], repo, env)
    sh(["dvc", "repro", *MAIN_STAGES], repo, env)
    sh(["dvc", "remote", "add", "-d", "local", str(remote)], repo, env)
    sh(["dvc", "push"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh([*git, "commit", "-qm", "audit main"], repo, env)

    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    env["PYTHONPATH"] = str(clone)
    outs = ("runs/main/checkpoints", "runs/main/gradients", "runs/main/rankings")
    assert not any((clone / out).exists() for out in outs)  # git alone does not carry them
    # Only these stages ran; --with-deps brings the validated-params marker they depend on.
    sh(["dvc", "pull", "--with-deps", *MAIN_STAGES], clone, env)
    for out in outs:
        pulled = tree(clone / out)
        assert pulled and pulled == tree(repo / out), out
    assert (clone / "runs/main/rankings/test.parquet").is_file()
    assert "up to date" in sh(["dvc", "status", *MAIN_STAGES], clone, env)
    log = sh(["dvc", "repro", *MAIN_STAGES], clone, env)
    assert "Running stage" not in log, log
    assert tree(clone / "runs/main/checkpoints") == tree(repo / "runs/main/checkpoints")
