"""Tracking against real MLflow stores: a SQLite file, and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from audit_workspace import log, workspace
from processes import HUNG_AFTER_S, free_port
from servers import running_mlflow_server

from vogflow import tracking
from vogflow.tracking.record import compose

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("htp://127.0.0.1:5000", "unknown scheme 'htp'"),
        ("127.0.0.1:5000", "unknown scheme '127.0.0.1'"),
        ("mlflow.db", "unknown scheme '(none)'"),
        ("postgresql+nodriver://u@h/db", "check the URI's scheme"),
        ("mysql+pymysqlx://u@h/db", "check the URI's scheme"),
    ],
)
def test_mistyped_uris_are_refused_at_the_start(uri, message):
    with pytest.raises(
        tracking.TrackingError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        tracking.check_reachable(uri)


def test_a_database_uri_whose_driver_is_missing_names_the_package(monkeypatch):
    # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; hide it whether installed or not.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(tracking.TrackingError, match=r"pip install 'psycopg\[binary\]'"):
        tracking.check_reachable("postgresql://u@127.0.0.1/db")


@pytest.mark.integration
def test_one_audit_one_record_logged_once(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    folder = workspace(tmp_path / "project")
    uri = f"sqlite:///{tmp_path}/project/mlflow.db"
    run_id, new = log(folder, uri, exp_name="brisk-fawn")
    assert new
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_accuracy"] == 0.9
    assert parent.data.metrics["decile_error_trend"] == 0.5
    assert parent.data.tags["verdict.deciles.test.trend"] == "supported"
    assert parent.data.tags["dvc.exp_name"] == "brisk-fawn"
    assert parent.data.params["vog.rank_by"] == "all_label"
    assert "hardest test examples" in parent.data.tags["mlflow.note.content"]
    assert {a.path for a in client.list_artifacts(run_id, "config")} == {
        "config/dvc.lock",
        "config/params.yaml",
    }
    # load_table searches the global store's active experiment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "t")
    table = mlflow.load_table("tables/hardest_test.json", run_ids=[run_id])
    assert list(table["index"]) == [11, 10, 9]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"train@main", "score@main"}
    train = by_name["train@main"]
    assert train.data.params["train.epochs"] == "3"
    # The stage's real duration, not the time it took to log it.
    assert abs((train.info.end_time - train.info.start_time) / 1000 - 7.9) < 0.01
    assert [m.value for m in client.get_metric_history(train.info.run_id, "train_loss")] == [2, 1]
    score = by_name["score@main"]
    assert score.data.tags["vogflow.run"] == "main"
    assert [a.path for a in client.list_artifacts(score.info.run_id, "runs/main/rankings")] == [
        "runs/main/rankings/test.parquet"
    ]
    # The same pipeline state again: recognised, nothing new.
    again, new = log(folder, uri)
    assert (again, new) == (run_id, False)
    assert (
        len(client.search_runs([parent.info.experiment_id], "tags.`vogflow.kind` = 'audit'")) == 1
    )
    # Another state is another audit; stages that did not run again say so.
    workspace(folder, accuracy=0.8)
    stale = json.loads((folder / ".vogflow/timings/train@main.json").read_text())
    stale.update(
        start=stale["start"] - 3600, body_start=stale["body_start"] - 3600, end=stale["end"] - 3600
    )
    (folder / ".vogflow/timings/train@main.json").write_text(json.dumps(stale))
    (folder / ".vogflow/timings/score@main.json").write_text(
        json.dumps(
            {
                "stage": "score@main",
                "start": time.time(),
                "body_start": time.time(),
                "end": time.time() + 1,
            }
        )
    )
    third, new = log(folder, uri)
    assert new and third != run_id
    kids = {
        c.info.run_name: c
        for c in client.search_runs(
            [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{third}'"
        )
    }
    assert kids["train@main"].data.tags["vogflow.reran"] == "false"
    assert kids["score@main"].data.tags["vogflow.reran"] == "true"
    # The audit spans the stages that ran for it, not the reused ones.
    assert client.get_run(third).info.start_time >= kids["score@main"].info.start_time


@pytest.mark.integration
def test_runs_an_interrupted_attempt_left_running_are_closed_by_the_next(tmp_path):
    """A store that went away mid-way leaves runs RUNNING; the next attempt closes them."""
    from mlflow.tracking import MlflowClient

    folder = workspace(tmp_path / "p")
    uri = f"sqlite:///{folder}/mlflow.db"
    params = yaml.safe_load((folder / "params.yaml").read_text())
    record = compose(folder, params=params, git={})
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("t", artifact_location=(folder / "mlartifacts").as_uri())
    left = client.create_run(exp, tags={"vogflow.audit_key": record.key, "vogflow.kind": "audit"})
    child = client.create_run(exp, tags={"mlflow.parentRunId": left.info.run_id})
    run_id, new = log(folder, uri)
    assert new and run_id != left.info.run_id
    assert client.get_run(left.info.run_id).info.status == "FAILED"
    assert client.get_run(child.info.run_id).info.status == "FAILED"
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.integration
def test_a_copied_project_logs_artifacts_inside_the_copy(tmp_path):
    from mlflow.tracking import MlflowClient

    original = workspace(tmp_path / "a")
    log(original, f"sqlite:///{original}/mlflow.db")
    copy = tmp_path / "b"
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # the original is gone: nothing may point there any more
    workspace(copy, accuracy=0.7)
    uri = f"sqlite:///{copy}/mlflow.db"
    run_id, _ = log(copy, uri)
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    assert not (tmp_path / "a").exists()
    runs = client.search_runs([client.get_run(run_id).info.experiment_id])
    for run in runs:
        assert str(copy) in run.info.artifact_uri
    # The audit logged before the copy still shows its artifacts, read from inside the copy.
    audits = [r for r in runs if r.data.tags.get("vogflow.kind") == "audit"]
    assert len(audits) == 2
    for audit in audits:
        files = {a.path for a in client.list_artifacts(audit.info.run_id, "config")}
        assert files == {"config/dvc.lock", "config/params.yaml"}


@pytest.mark.integration
def test_concurrent_audits_on_a_fresh_store_lose_nothing(tmp_path):
    """Four real processes log at once to a store that does not exist yet."""
    from mlflow.tracking import MlflowClient

    script = textwrap.dedent("""
        import sys
        import numpy as np, pandas as pd
        from vogflow import tracking
        table = pd.DataFrame({"index": np.arange(5), "label": 0, "true_label": 0, "noisy": False,
                              "pred": 0, "correct": True, "vog_all_label": np.arange(5.0)})
        print(tracking.log_audit(table, params={"i": sys.argv[1]}, run_name=sys.argv[1],
                                 experiment="t"))
    """)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"audit{i}"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [p.communicate(timeout=HUNG_AFTER_S) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), [err[-800:] for _, err, _ in results]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"audit{i}" for i in range(4)]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_single_run_audit_logs_its_hardest_by_the_printouts_ranking(tmp_path, monkeypatch):
    """`vogflow audit --track` logs the hardest table by the score the printout ranks by (the
    single-run default), not by a VoG column the scorecard may drop."""
    import numpy as np
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from vogflow.rankings import choice as rank_choice

    rng = np.random.default_rng(0)
    n = 40
    table = pd.DataFrame(
        {"index": np.arange(n), "label": 0, "true_label": 0, "noisy": False, "pred": 0,
         "correct": True, "vog_late_label": rng.random(n), "hard_aum": rng.random(n)}
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_id = tracking.log_audit(table, params={}, run_name="one", experiment="t")
    client = MlflowClient(tracking_uri=uri)
    path = client.download_artifacts(run_id, "tables/hardest.json", str(tmp_path))
    logged = pd.read_json(path, orient="split")
    ranking = rank_choice.resolve(table)
    assert ranking.name == rank_choice.SINGLE_RUN_DEFAULT == "hard_aum"
    assert logged["index"].tolist() == table.nlargest(25, "hard_aum")["index"].tolist()
    assert client.get_run(run_id).data.tags["vogflow.ranked_by"] == ranking.line()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    with running_mlflow_server(f"sqlite:///{folder}/server.db", folder, startup=90) as uri:
        yield uri


@pytest.mark.integration
def test_an_audit_logs_to_a_real_server_over_http(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = mlflow_server
    folder = workspace(tmp_path / "p")
    run_id, new = log(folder, uri)
    assert new
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).data.metrics["test_accuracy"] == 0.9
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    assert {c.info.status for c in children} == {"FINISHED"}


@pytest.mark.integration
def test_the_track_stage_with_a_stopped_server_keeps_outputs_and_says_how_to_log(tmp_path):
    folder = workspace(tmp_path / "p")
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    uri = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "track.py")],
        cwd=folder,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert out.returncode != 0
    assert uri in out.stderr and "Traceback" not in out.stderr
    after = {
        p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and ".vogflow" not in p.parts
    }
    assert {p: b for p, b in before.items() if ".vogflow" not in p.parts} == after


@pytest.mark.integration
def test_tracking_off_logs_nothing(tmp_path):
    folder = workspace(tmp_path / "p")
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "track.py")],
        cwd=folder,
        env={**os.environ, "VOGFLOW_TRACKING": "off"},
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert out.returncode == 0, out.stderr
    assert "tracking is off" in out.stdout
    assert not (folder / "mlflow.db").exists()
