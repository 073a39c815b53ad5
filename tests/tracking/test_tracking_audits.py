"""The audit record as its users meet it: the real `track` stage, a real SQLite store or a real
`mlflow server` on 127.0.0.1, the MLflow client reading it back, and the README's snippets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from audit_workspace import workspace
from servers import running_mlflow_server
from test_team_backends import planted_model

from vogflow import tracking
from vogflow.tracking.record import PARENT_METRICS, compose

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "vogflow-main"  # tracking.model_name of the project's params.yaml


def project(folder: Path, *, rank_by: str = "vog_all_label", accuracy: float = 0.9) -> Path:
    """A finished pipeline workspace with the project's params: metrics, rankings, the audit's
    ranking by ``rank_by`` (as the scorecard writes it) and the audited run's checkpoints."""
    workspace(folder, accuracy=accuracy)
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    table = pd.read_parquet(folder / "runs/main/rankings/test.parquet")
    n = len(table)
    rng = np.random.default_rng(0)
    table["hard_loss"] = rng.random(n)
    table["hard_aum"] = rng.random(n)
    table.to_parquet(folder / "runs/main/rankings/test.parquet")
    # A score that is a column of the table is copied; a derived one (_abs, _seedmean) is not.
    score = table[rank_by] if rank_by in table.columns else pd.Series(rng.random(n))
    ranking = folder / "results/ranking"
    ranking.mkdir(parents=True, exist_ok=True)
    for split in ("test", "train"):
        table.assign(
            rank_by=rank_by,
            rank_score=score.to_numpy(),
            rank=score.rank(ascending=False, method="first").astype(int).to_numpy(),
        ).to_parquet(ranking / f"{split}.parquet")
    if not (folder / "runs/main/checkpoints").exists():
        planted_model(folder / "runs/main/checkpoints")
    return folder


def track(folder: Path, uri: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """The real `track` stage, as DVC runs it in ``folder``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_EXP"))}
    full.update(PYTHONPATH=str(ROOT), **env)
    if uri:
        full["MLFLOW_TRACKING_URI"] = uri
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "track.py")],
        cwd=folder,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def client_of(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def audits(client) -> list:
    exp = client.get_experiment_by_name("vogflow")
    return list(
        client.search_runs(
            [exp.experiment_id], "tags.`vogflow.kind` = 'audit'", order_by=["start_time ASC"]
        )
    )


# --- every rank_by logs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "rank_by",
    # a VoG variant, its |z| form, single-run baselines (the scorecard's `auto` picks them on
    # short audits), and a seed mean: the first two are columns of the rankings themselves.
    ["vog_all_label", "hard_loss", "hard_aum", "vog_late_label_abs", "hard_aum_seedmean"],
)
def test_the_track_stage_logs_whatever_the_audit_ranks_by(tmp_path, rank_by):
    folder = project(tmp_path / "p", rank_by=rank_by)
    uri = f"sqlite:///{folder}/mlflow.db"
    out = track(folder, uri)
    assert out.returncode == 0, out.stderr[-2000:]
    client = client_of(uri)
    (audit,) = audits(client)
    path = client.download_artifacts(audit.info.run_id, "tables/hardest_test.json", str(tmp_path))
    table = pd.read_json(path, orient="split")
    ranked = pd.read_parquet(folder / "results/ranking/test.parquet")
    assert list(table.columns).count(rank_by) == 1
    expected = ranked.nlargest(len(table), "rank_score")["index"].tolist()
    assert table["index"].tolist() == expected
    # The description names the score and where it was chosen, as every surface does.
    assert f"Ranked by {rank_by} (" in audit.data.tags["mlflow.note.content"]


# --- what the UI shows --------------------------------------------------------------------------


def log_state(folder: Path, uri: str, *, git: dict, exp_name=None, in_experiment=None):
    params = yaml.safe_load((folder / "params.yaml").read_text())
    record = compose(folder, params=params, git=git, exp_name=exp_name, in_experiment=in_experiment)
    return record, tracking.log_pipeline_audit(
        record,
        experiment="vogflow",
        model_name=MODEL,
        model_dir=folder / "runs/main/checkpoints",
        uri=uri,
    )


def test_model_versions_aliases_run_names_and_parent_metrics(tmp_path, capsys, monkeypatch):
    import json

    folder = project(tmp_path / "p")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = client_of(uri)
    committed = {"git.commit": "a" * 40, "git.dirty": "false"}

    first, logged = log_state(folder, uri, git=committed)
    assert logged.new
    v1 = client.get_model_version_by_alias(MODEL, "audited")
    assert str(v1.version) == "1" and v1.run_id == logged.run_id
    sha = v1.tags["vogflow.model_sha256"]
    manifest = json.loads((folder / "runs/main/checkpoints/manifest.json").read_text())
    assert sha == manifest["checkpoints"][-1]["sha256"]
    # The logged model links its registered version (the UI's "Registered" column).
    model = client.get_logged_model(v1.source.removeprefix("models:/"))
    assert json.loads(model.tags["mlflow.modelVersions"]) == [{"name": MODEL, "version": 1}]

    # The parent's metrics are the few headlines; every number is in its metrics table.
    parent = client.get_run(logged.run_id)
    assert set(parent.data.metrics) <= set(PARENT_METRICS)
    assert "test_accuracy" in parent.data.metrics
    table = pd.read_json(
        client.download_artifacts(logged.run_id, "tables/metrics.json", str(tmp_path)),
        orient="split",
    )
    assert list(table.columns) == ["group", "metric", "measured", "lo", "hi"]
    trend = table[(table.group == "model") & (table.metric == "decile_error_trend")].iloc[0]
    assert (trend.measured, trend.lo, trend.hi) == (0.5, 0.2, 0.8)

    # Another pipeline state, same weights, run as a DVC experiment: the version is reused and
    # the experiment gets its own alias; @audited stays.
    workspace(folder, accuracy=0.8)
    second, logged2 = log_state(folder, uri, git=committed, exp_name="brisk-fawn")
    assert logged2.new and logged2.run_id != logged.run_id
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    assert str(client.get_model_version_by_alias(MODEL, "exp-brisk-fawn").version) == "1"
    assert client.get_model_version_by_alias(MODEL, "audited").run_id == logged.run_id
    assert "model is unchanged" in capsys.readouterr().out
    # Each alias reads its own audit; the version number, the audit that first logged it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.resolve_audit(f"models:/{MODEL}@exp-brisk-fawn").audit_run_id == (
        logged2.run_id
    )
    assert tracking.resolve_audit(f"models:/{MODEL}@audited").audit_run_id == logged.run_id
    assert tracking.resolve_audit(f"models:/{MODEL}/1").audit_run_id == logged.run_id

    # New weights from a queued/--temp experiment (no name yet): a new version, its own alias.
    shutil.rmtree(folder / "runs/main/checkpoints")
    import torch

    torch.manual_seed(1)
    planted = planted_model(folder / "runs/main/checkpoints")
    state = torch.load(planted / "epoch_0001.pt", weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, planted / "epoch_0001.pt")
    from vogflow.checkpoints.files import read_manifest, write_manifest
    from vogflow.common.atomic import sha256_file

    manifest = read_manifest(planted)
    manifest["checkpoints"][0]["sha256"] = sha256_file(planted / "epoch_0001.pt")
    write_manifest(planted, manifest)
    workspace(folder, accuracy=0.7)
    _, logged3 = log_state(folder, uri, git=committed, in_experiment=True)
    v2 = client.get_model_version_by_alias(MODEL, "exp-aaaaaaa")
    assert str(v2.version) == "2" and v2.run_id == logged3.run_id
    assert str(client.get_model_version_by_alias(MODEL, "audited").version) == "1"
    # Uncommitted code moves no alias.
    workspace(folder, accuracy=0.6)
    _, logged4 = log_state(folder, uri, git={"git.commit": "b" * 40, "git.dirty": "true"})
    assert str(client.get_model_version_by_alias(MODEL, "audited").version) == "1"
    assert client.get_run(logged4.run_id).data.tags["vogflow.model_version"] == "2"

    # Run names tell the audits apart in the first ~20 characters of the runs list.
    names = [client.get_run(r.run_id).info.run_name for r in (logged, logged2, logged3, logged4)]
    assert names[0].startswith("aaaaaaa digits/lenet")
    assert names[1].startswith("brisk-fawn digits/lenet")
    assert names[3].startswith("bbbbbbb* ")
    assert all(re.search(r"\d{2}-\d{2} \d{2}:\d{2}$", n) for n in names)
    assert first.name == names[0] and second.name == names[1]


# --- the README's snippets, and a copied project ----------------------------------------------


def readme_blocks() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Tracking: one audit, one MLflow record")
    section = readme[start : readme.index("\n## ", start + 1)]
    return dict(re.findall(r"<!-- readme-test: (\w+) -->\n```python\n(.*?)```", section, re.S))


def run_snippet(code: str, folder: Path, monkeypatch) -> dict:
    """A README snippet as a user runs it: from the project root, no MLflow variables set."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "readme"}
    exec(compile(code, "README.md (tracking)", "exec"), namespace)
    return namespace


def test_the_readme_snippets_and_a_copied_project_read_everything(tmp_path, monkeypatch):
    import mlflow

    original = project(tmp_path / "a")
    out = track(original)  # the project's default store, as `dvc repro` uses it
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(readme_blocks()) == ["read"]
    got = run_snippet(readme_blocks()["read"], original, monkeypatch)
    ranked = pd.read_parquet(original / "results/ranking/test.parquet")
    top = ranked.nlargest(len(got["table"]), "rank_score")["index"].tolist()
    assert got["table"]["index"].tolist() == top
    assert got["model"] is not None

    copy = tmp_path / "b"
    shutil.copytree(original, copy)
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(original)  # nothing may point there any more
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "vogflow.cli",
            "top",
            f"models:/{MODEL}@audited",
            "-k",
            "3",
            "--score",
            "all_label",
        ],
        cwd=copy,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "hardest 3 by vog_all_label" in cli.stdout
    # Every artifact of every run, the tables, the model: read from inside the copy.
    uri = f"sqlite:///{copy}/mlflow.db"
    client = client_of(uri)
    exp = client.get_experiment_by_name("vogflow")
    for run in client.search_runs([exp.experiment_id]):
        assert str(copy) in run.info.artifact_uri
        pending = [None]
        while pending:
            for item in client.list_artifacts(run.info.run_id, pending.pop()):
                if item.is_dir:
                    pending.append(item.path)
                else:
                    local = client.download_artifacts(run.info.run_id, item.path, str(tmp_path))
                    assert Path(local).stat().st_size > 0, item.path
    got = run_snippet(readme_blocks()["read"], copy, monkeypatch)
    assert got["table"]["index"].tolist() == top
    import torch

    x = torch.zeros(2, 1, 4, 4)
    mlflow.set_tracking_uri(uri)
    assert mlflow.pytorch.load_model(f"models:/{MODEL}@audited")(x).shape == (2, 3)


# --- one audit per state per store, across clones --------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    with running_mlflow_server(f"sqlite:///{folder}/server.db", folder, startup=120) as uri:
        yield uri


def test_two_clones_at_one_state_log_one_audit_to_a_shared_server(server, tmp_path):
    a = project(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)  # a second clone at the same pipeline state
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_EXP"))}
    env.update(PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=server)
    procs = []
    for folder in (a, b):
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "stages" / "track.py")],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        time.sleep(1.5)  # the second starts while the first is still logging
    results = [(p.communicate(timeout=300), p.returncode) for p in procs]
    assert all(code == 0 for _, code in results), [err[-1500:] for (_, err), _ in results]
    said = [out for (out, _), _ in results]
    client = client_of(server)
    (audit,) = audits(client)  # one FINISHED audit; the other claim withdrew
    assert audit.info.status == "FINISHED"
    assert sum("logged audit" in s for s in said) == 1
    assert sum(f"by run {audit.info.run_id}" in s for s in said) == 1, said
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    # Later, a third clone: already logged, nothing new.
    out = track(b, server)
    assert f"already logged by run {audit.info.run_id}" in out.stdout
    assert len(audits(client)) == 1


# --- a store that cannot take the audit stops it at validate ---------------------------------


def validate(folder: Path, uri: str | None, params: dict | None = None):
    text = (ROOT / "params.yaml").read_text()
    if params is not None:
        full = yaml.safe_load(text)
        for key, value in params.items():
            section, name = key.split(".")
            full[section][name] = value
        text = yaml.safe_dump(full, sort_keys=False)
    (folder / "params.yaml").write_text(text)
    (folder / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    if uri is not None:
        env["MLFLOW_TRACKING_URI"] = uri
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "validate.py"), "--out", "ok"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, time.monotonic() - started


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("directory", "is a directory, not a database file"),
        ("not-a-database", "is not a SQLite database"),
        ("file-store", "file store is in maintenance mode"),
        ("postgres-closed-port", "nothing answers on 127.0.0.1"),
        ("server-down", "is unreachable"),
        ("empty-model-name", "tracking.model_name: ''"),
        ("slash-model-name", "tracking.model_name: 'team/main'"),
    ],
)
def test_validate_refuses_a_store_that_cannot_take_the_audit(tmp_path, case, message):
    port = closed_port()
    params = None
    uri = {
        "directory": f"sqlite:///{tmp_path}",
        "not-a-database": f"sqlite:///{tmp_path / 'params.yaml'}",
        "file-store": f"file://{tmp_path / 'mlruns'}",
        "postgres-closed-port": f"postgresql+psycopg2://u:secret@127.0.0.1:{port}/mlflow",
        "server-down": f"http://127.0.0.1:{port}",
    }.get(case)
    if case.endswith("model-name"):
        params = {"tracking.model_name": "" if case.startswith("empty") else "team/main"}
    out, seconds = validate(tmp_path, uri, params)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert message in err, err
    assert "secret" not in err
    assert seconds < 60  # (PostgreSQL's driver alone retried for ~2 minutes)
    assert not (tmp_path / "ok").exists()


# --- the user's training loop is never held hostage ------------------------------------------


def test_a_server_stopped_mid_training_costs_the_loop_seconds_and_loses_nothing(tmp_path):
    import warnings

    import torch
    from torch import nn

    from vogflow.checkpoints import sources
    from vogflow.checkpoints.recorder import CheckpointRecorder

    folder = tmp_path / "server"
    folder.mkdir()
    backend = f"sqlite:///{folder}/server.db"
    with running_mlflow_server(backend, folder, startup=120) as uri:
        port = int(uri.rsplit(":", 1)[1])
        client = client_of(uri)
        run_id = client.create_run(client.create_experiment("loop")).info.run_id
        torch.manual_seed(0)
        net = nn.Linear(4, 3)
        recorder = CheckpointRecorder(
            tmp_path / "ckpts",
            model=net,
            epochs=8,
            early=8,
            mlflow_run_id=run_id,
            tracking_uri=uri,
            log_models=True,
        )
        for epoch in (1, 2, 3):
            recorder.epoch_end(epoch, net)
    # The server is stopped after epoch 3.
    waited = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(4, 9):
            started = time.monotonic()
            recorder.epoch_end(epoch, net)
            waited.append(time.monotonic() - started)
    assert sum(waited) < 15, waited  # (it was ~245 s, then the loop died)
    assert len([w for w in caught if "vogflow: logging to MLflow run" in str(w.message)]) == 1
    assert len(recorder.checkpoints) == 8 and all(p.exists() for p in recorder.checkpoints)
    # The server comes back: closing the recorder logs what was missed, in order.
    with running_mlflow_server(backend, folder, startup=120, port=port):
        assert recorder.close(timeout=120)
        with sources.resolve(f"runs:/{run_id}", tracking_uri=uri) as source:
            assert [c.epoch for c in source.checkpoints] == list(range(1, 9))


# --- a pulled clone is clean, and logs into its own store on request --------------------------


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}: {out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    return out.stdout + out.stderr


def test_a_pulled_clone_is_clean_and_experiments_keep_off_the_audited_alias(tmp_path):
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    source = project(tmp_path / "source")
    repo.mkdir()
    shutil.copy(source / "params.yaml", repo / "params.yaml")
    for folder in ("stages", "vogflow"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(source / "runs", tmp_path / "made" / "runs")
    shutil.copytree(source / "results", tmp_path / "made" / "results")
    # One stage makes the outputs the audit reads (as the pipeline's would); `track` is the
    # project's own stage, its deps narrowed to what this project has.
    real = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["track"]
    stages = {
        "make": {
            "cmd": f"cp -r {tmp_path / 'made' / 'runs'} {tmp_path / 'made' / 'results'} .",
            "params": ["train.epochs", "vog.top_k"],
            "outs": ["runs", "results"],
        },
        "track": {**real, "deps": ["stages/track.py", "vogflow/tracking", "runs", "results"]},
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    # The outputs ignored as DVC would ignore them, so its first run leaves git clean.
    (repo / ".gitignore").write_text((ROOT / ".gitignore").read_text() + "/runs\n/results\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VOGFLOW_"))}
    env.update(PYTHONPATH=str(repo), DVC_NO_ANALYTICS="1")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    sh([*git, "add", "-A"], repo, env)
    sh([*git, "commit", "-qm", "project"], repo, env)
    log = sh(["dvc", "repro"], repo, env)
    assert "logged audit" in log and "(alias @audited)" in log
    sh(["dvc", "remote", "add", "-d", "local", str(remote)], repo, env)
    sh(["dvc", "push"], repo, env)
    sh([*git, "add", "-A"], repo, env)
    sh([*git, "commit", "-qm", "audit"], repo, env)
    client = client_of(f"sqlite:///{repo}/mlflow.db")
    (audit,) = audits(client)
    assert audit.data.tags["git.dirty"] == "false"

    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    env["PYTHONPATH"] = str(clone)
    sh(["dvc", "pull"], clone, env)
    assert "up to date" in sh(["dvc", "status"], clone, env)
    assert "didn't change" in sh(["dvc", "repro"], clone, env)
    # The clone's own store gets the audit on request; the shared one says it has it.
    assert "logged audit" in sh(["dvc", "repro", "-f", "-s", "track"], clone, env)
    assert len(audits(client_of(f"sqlite:///{clone}/mlflow.db"))) == 1
    shared = env | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"}
    said = sh(["dvc", "repro", "-f", "-s", "track"], clone, shared)
    assert f"already logged by run {audit.info.run_id}" in said

    # Experiments, in the workspace and in a temporary copy, never move @audited.
    env["PYTHONPATH"] = str(repo)
    sh(["dvc", "exp", "run", "--temp", "-S", "vog.top_k=6", "--name", "topk6"], repo, env)
    sh(["dvc", "exp", "run", "-S", "vog.top_k=7", "--name", "topk7"], repo, env)
    assert client.get_model_version_by_alias(MODEL, "audited").run_id == audit.info.run_id
    names = {r.data.tags.get("dvc.exp_name"): r for r in audits(client)}
    assert set(names) == {None, "topk6", "topk7"}
    for name in ("topk6", "topk7"):
        version = client.get_model_version_by_alias(MODEL, f"exp-{name}")
        assert str(version.version) == "1"  # the same weights: no new version
        assert names[name].info.run_name.startswith(f"{name} ")
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
