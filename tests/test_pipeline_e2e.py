"""The whole audit, end to end: the real `dvc repro` and a real MLflow store, on tiny params.

Slow (several minutes on 2 cores): run with `pytest -m slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vogflow.rankings import BASE_COLUMNS, score_columns

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RUNS = ("main", "seed1", "seed2", "seed3", "seed4", "bs32", "bs128", "bs256", "bs512", "shuffled")


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=7, milestones=[5])
    params["checkpoints"].update(early=3, every=2, late=3)
    params["vog"]["bootstrap"] = 30
    params["toy"].update(n_points=80, epochs=4)
    params["ood"].update(corruptions=["shot_noise", "rotate"], n_examples=40,
                         detectors=["vog", "msp", "pca", "gaussian"])  # fmt: skip
    return params


def sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 1500) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project in a fresh git repository, `dvc init`-ed, with tiny params."""
    repo = tmp_path_factory.mktemp("audit")
    for name in ("dvc.yaml", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "vogflow"):
        shutil.copytree(ROOT / folder, repo / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    (repo / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n__pycache__/\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VOGFLOW_"))}
    env["PYTHONPATH"] = str(repo)  # the stages import the copy, so edits to it take effect
    env["DVC_NO_ANALYTICS"] = "1"
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], repo, env)
    log = sh(["dvc", "repro"], repo, env)
    return repo, env, log


def client_for(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo}/mlflow.db")


def audits(repo: Path) -> list:
    client = client_for(repo)
    exp = client.get_experiment_by_name("vogflow")
    parents = client.search_runs([exp.experiment_id], "tags.`vogflow.kind` = 'audit'",
                                 order_by=["attributes.start_time ASC"])  # fmt: skip
    out = []
    for parent in parents:
        children = client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        out.append((parent, {c.data.tags["vogflow.stage"]: c for c in children}))
    return out


def test_every_output_exists_and_rankings_follow_the_contract(project):
    repo, env, _ = project
    from vogflow.config import DataConfig
    from vogflow.data import load_dataset

    digits = load_dataset(DataConfig())
    for run in RUNS:
        assert (repo / "runs" / run / "checkpoints" / "manifest.json").exists()
        for split, n in (("train", len(digits.train)), ("test", len(digits.test))):
            table = pd.read_parquet(repo / "runs" / run / "rankings" / f"{split}.parquet")
            assert list(table.columns) == [*BASE_COLUMNS, *score_columns()]
            assert len(table) == n and table["index"].tolist() == list(range(n))
            assert (repo / "runs" / run / "rankings" / f"{split}_top.csv").exists()
    shuffled = pd.read_parquet(repo / "runs/shuffled/rankings/train.parquet")
    assert shuffled["noisy"].mean() == pytest.approx(0.2, abs=0.01)
    for path in (
        "results/toy/metrics.json",
        "results/toy/toy.png",
        "results/ood/table.md",
        "results/stability/metrics.json",
        "results/memorization/metrics.json",
        "results/figures/grid_test_late_label.png",
        "results/figures/ood_auroc.png",
    ):
        assert (repo / path).exists(), path
    status = sh(["dvc", "status"], repo, env)
    assert "up to date" in status
    metrics = json.loads((repo / "runs/main/score.json").read_text())
    claim = metrics["test"]["claims"]["late_label"]
    assert {"expected", "measured", "holds", "interval"} <= set(claim)
    # No output holds a run id or a timestamp: outputs are reproducible files.
    lock = (repo / "dvc.lock").read_text()
    parent_id = audits(repo)[0][0].info.run_id
    assert parent_id not in lock
    for path in repo.glob("runs/*/*.json"):
        assert parent_id not in path.read_text()


def test_mlflow_holds_one_parent_with_a_child_per_stage(project):
    repo, _, _ = project
    (parent, children), *_ = audits(repo)
    expected = {"toy", "stability", "memorization", "ood", "figures"}
    expected |= {f"{s}@{r}" for s in ("train", "gradients", "score") for r in RUNS}
    assert set(children) == expected
    for stage, child in children.items():
        tags = child.data.tags
        assert child.info.status == "FINISHED", stage
        assert tags["git.commit"] != "unknown" and tags["git.dirty"] in ("true", "false")
        assert tags["vogflow.version"]
        if "@" in stage:
            assert tags["vogflow.run"] == stage.split("@")[1]
    assert children["train@main"].data.tags["vogflow.data_hash"]
    assert children["train@main"].data.params["train.epochs"] == "7"
    for key in (
        "test_accuracy",
        "decile_error_trend",
        "stability_spearman_seed",
        "memorization_p_value",
        "ood_auroc_vog",
    ):
        assert key in parent.data.metrics, key
    client = client_for(repo)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "rankings/main")}
    assert "rankings/main/test.parquet" in artifacts
    assert client.list_artifacts(parent.info.run_id, "figures")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "config")} == {
        "config/dvc.lock"
    }
    score_config = client.list_artifacts(children["score@main"].info.run_id, "config")
    assert {a.path for a in score_config} == {"config/params.yaml", "config/dvc.lock"}
    version = client.get_model_version("vogflow-main", "1")
    assert version.tags["vogflow.audit_run_id"] == parent.info.run_id
    assert version.run_id == children["train@main"].info.run_id


def test_second_repro_runs_nothing(project):
    repo, env, _ = project
    before = len(audits(repo))
    log = sh(["dvc", "repro"], repo, env)
    assert "Running stage" not in log
    assert len(audits(repo)) == before


def test_scoring_param_reruns_only_what_depends_on_it(project):
    repo, env, _ = project
    before = len(audits(repo))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["vog"]["normalise"] = "abs"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["dvc", "repro"], repo, env)
    runs = audits(repo)
    assert len(runs) == before + 1
    stages = set(runs[-1][1])
    assert {f"score@{r}" for r in RUNS} <= stages
    assert not any(s.startswith(("train@", "gradients@")) or s == "toy" for s in stages)
    table = pd.read_parquet(repo / "runs/main/rankings/test.parquet")
    assert (table["vog_late_label"] >= 0).all()  # |z| now


def test_editing_the_equations_marks_scoring_stale(project):
    repo, env, _ = project
    vog = repo / "vogflow" / "vog.py"
    original = vog.read_text()
    try:
        vog.write_text(original + "\n# a harmless edit\n")
        status = sh(["dvc", "status"], repo, env)
        assert "score@main" in status and "train@main" not in status
    finally:
        vog.write_text(original)


def test_dvc_exp_run_with_set_param(project):
    repo, env, _ = project
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "audit"], repo, env)
    before = len(audits(repo))
    sh(["dvc", "exp", "run", "-S", "vog.top_k=5", "--name", "topk5"], repo, env)
    top = pd.read_csv(repo / "runs/main/rankings/test_top.csv")
    assert len(top) == 10  # 5 hardest + 5 easiest
    runs = audits(repo)
    assert len(runs) == before + 1
    assert "score@main" in runs[-1][1]
