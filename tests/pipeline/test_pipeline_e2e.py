"""The whole audit, end to end: the real `dvc repro` and a real MLflow store, on tiny params.

Slow (several minutes on 2 cores): run with `pytest -m slow`. The tests share one project and run
in file order: each builds on the state the one before left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vogflow.rankings.table import contract_columns

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RUNS = ("main", "seed1", "seed2", "seed3", "seed4", "bs32", "bs128", "bs256", "bs512", "shuffled")
HEADLINE = (
    "test_accuracy",
    "decile_error_trend",
    "stability.seed.spearman.measured",
    "memorization.auroc.measured",
    "memorization.p_one_sided",
    "ood.auroc_vog",
    "toy.spearman.measured",
    "scorecard.chosen.reliability",
)


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=7, milestones=[5])
    params["checkpoints"].update(early=3, every=2, late=3)
    params["vog"]["bootstrap"] = 30
    params["toy"].update(n_points=80, epochs=4)
    params["ood"].update(
        corruptions=["shot_noise", "rotate"],
        n_examples=40,
        detectors=["vog", "msp", "pca", "gaussian"],
    )
    return params


# A limit for a hung command, not a speed: a loaded 2-core machine took over 25 minutes for
# the audited project's first `dvc repro`.
def sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 3600, ok: bool = True):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert out.returncode == 0, (
            f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out


def commit(repo: Path, env: dict, message: str) -> None:
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], repo, env)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project in a fresh git repository, `dvc init`-ed, with tiny params, audited
    from a clean commit and the audit committed. Tests read it; one that changes the project
    works on its own copy (`changeable`), so no test depends on which ran before it."""
    repo = tmp_path_factory.mktemp("audit")
    for name in ("dvc.yaml", "pyproject.toml", "README.md", ".gitignore", ".vogflow/builtin-data"):
        (repo / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "vogflow"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VOGFLOW_"))}
    env["PYTHONPATH"] = str(repo)  # the stages import the copy, so edits to it take effect
    env["DVC_NO_ANALYTICS"] = "1"
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    sh(["dvc", "config", "core.autostage", "true"], repo, env)
    commit(repo, env, "init")
    log = sh(["dvc", "repro"], repo, env).stdout
    commit(repo, env, "audit")
    return repo, env, log


def changeable(project, folder: Path) -> tuple[Path, dict]:
    """The audited project copied for one test that edits params or code, reruns or commits."""
    repo, env, _ = project
    copy = folder / "audit"
    shutil.copytree(repo, copy, symlinks=True)
    return copy, {**env, "PYTHONPATH": str(copy)}


def client_for(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo}/mlflow.db")


def audits(repo: Path) -> list:
    client = client_for(repo)
    exp = client.get_experiment_by_name("vogflow")
    parents = client.search_runs(
        [exp.experiment_id], "tags.`vogflow.kind` = 'audit'", order_by=["attributes.start_time ASC"]
    )
    out = []
    for parent in parents:
        children = client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        out.append((parent, {c.data.tags["vogflow.stage"]: c for c in children}))
    return out


def test_every_output_exists_and_rankings_follow_the_contract(project):
    repo, env, _ = project
    from vogflow.config.schema import DataConfig
    from vogflow.data import load_dataset

    digits = load_dataset(DataConfig())
    for run in RUNS:
        assert (repo / "runs" / run / "checkpoints" / "manifest.json").exists()
        for split, n in (("train", len(digits.train)), ("test", len(digits.test))):
            table = pd.read_parquet(repo / "runs" / run / "rankings" / f"{split}.parquet")
            assert list(table.columns) == contract_columns()
            assert len(table) == n and table["index"].tolist() == list(range(n))
    for path in (
        "results/toy/toy.png",
        "results/ood/table.md",
        "results/stability/metrics.json",
        "results/memorization/metrics.json",
        "results/figures/ood_auroc.png",
        "results/report/index.html",
    ):
        assert (repo / path).exists(), path
    assert "up to date" in sh(["dvc", "status"], repo, env).stdout
    shown = sh(["dvc", "metrics", "show"], repo, env)
    assert "failed" not in (shown.stdout + shown.stderr).lower()
    # No output holds a run id or a timestamp: outputs are reproducible files.
    parent_id = audits(repo)[0][0].info.run_id
    assert parent_id not in (repo / "dvc.lock").read_text()
    for path in repo.glob("runs/*/*.json"):
        assert parent_id not in path.read_text()


def test_mlflow_holds_one_complete_audit(project):
    repo, _, _ = project
    (parent, children), *others = audits(repo)
    assert not others
    expected = {"validate", "toy", "stability", "scorecard", "memorization", "ood", "figures"}
    expected.add("headline")
    expected.add("report")
    expected |= {f"{s}@{r}" for s in ("train", "gradients", "score") for r in RUNS}
    assert set(children) == expected
    for key in HEADLINE:
        assert key in parent.data.metrics, key
    tags = parent.data.tags
    assert tags["git.dirty"] == "false"  # audited from a clean commit; DVC's writes don't count
    assert tags["verdict.memorization"] in ("supported", "contradicted", "inconclusive")
    assert "hardest test examples" in tags["mlflow.note.content"]
    for stage, child in children.items():
        assert child.info.status == "FINISHED", stage
        if "@" in stage:
            assert child.data.tags["vogflow.run"] == stage.split("@")[1]
    train = children["train@main"]
    assert train.data.params["train.epochs"] == "7"
    assert train.info.end_time - train.info.start_time > 1000  # the stage's own duration
    client = client_for(repo)
    assert len(client.get_metric_history(train.info.run_id, "train_loss")) == 7
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "rankings/seed1")}
    assert "rankings/seed1/test.parquet" in files
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "config")} == {
        "config/dvc.lock",
        "config/params.yaml",
    }
    # The audit's page, where MLflow's artifact viewer shows it.
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "report")] == [
        "report/index.html"
    ]


def test_the_registered_model_loads_without_pickle_and_matches_the_checkpoint(project):
    import mlflow
    import torch

    from vogflow.checkpoints.files import load_run_models

    repo, _, _ = project
    client = client_for(repo)
    version = client.get_model_version_by_alias("vogflow-main", "audited")
    assert version.tags["vogflow.audit_run_id"] == audits(repo)[0][0].info.run_id
    assert version.description
    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    loaded = mlflow.pytorch.load_model(f"models:/vogflow-main/{version.version}")
    models, manifest = load_run_models(repo / "runs" / "main" / "checkpoints")
    x = torch.randn(7, *manifest["input_shape"])
    with torch.no_grad():
        assert torch.equal(loaded(x), models[-1].eval()(x))
    stored = Path(
        client.get_model_version_download_uri("vogflow-main", version.version).removeprefix(
            "file://"
        )
    )
    assert list(stored.rglob("*.pt2")) and not list(stored.rglob("*.pkl"))


def test_second_repro_and_forced_track_log_nothing_new(project, tmp_path):
    repo, env = changeable(project, tmp_path)
    before = len(audits(repo))
    assert "Running stage" not in sh(["dvc", "repro"], repo, env).stdout
    out = sh(["dvc", "repro", "-f", "-s", "track"], repo, env).stdout
    assert "already logged by run" in out
    assert len(audits(repo)) == before


def test_a_bad_param_is_refused_before_any_output_is_removed(project, tmp_path):
    repo, env = changeable(project, tmp_path)
    params_file = repo / "params.yaml"
    good = params_file.read_text()
    kept = {p: p.read_bytes() for p in (repo / "runs" / "main").glob("*.json")}
    params = yaml.safe_load(good)
    params["vog"]["window_size"] = 9  # more than the 7-epoch runs' checkpoints
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = sh(["dvc", "repro"], repo, env, ok=False)
        assert out.returncode != 0
        assert "vog.window_size" in out.stdout + out.stderr
        assert {p: p.read_bytes() for p in kept} == kept
        assert (repo / "runs" / "main" / "rankings" / "test.parquet").exists()
    finally:
        params_file.write_text(good)
    sh(["dvc", "repro"], repo, env)  # the marker comes back; nothing else reruns


def test_a_scoring_param_reruns_scoring_and_logs_a_complete_audit(project, tmp_path):
    repo, env = changeable(project, tmp_path)
    before = len(audits(repo))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["vog"]["normalise"] = "abs"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = sh(["dvc", "repro"], repo, env).stdout
    assert "Running stage 'score@main'" in log
    assert "Running stage 'train@" not in log and "Running stage 'toy'" not in log
    runs = audits(repo)
    assert len(runs) == before + 1
    parent, children = runs[-1]
    for key in HEADLINE:  # stages that did not rerun are still part of the record
        assert key in parent.data.metrics, key
    assert len(children) == len(runs[0][1])
    table = pd.read_parquet(repo / "runs/main/rankings/test.parquet")
    assert (table["vog_late_label"] >= 0).all()  # |z| now


def test_editing_the_equations_marks_scoring_stale(project, tmp_path):
    repo, env = changeable(project, tmp_path)
    vog = repo / "vogflow" / "scoring" / "vog.py"
    original = vog.read_text()
    try:
        vog.write_text(original + "\n# a harmless edit\n")
        status = sh(["dvc", "status"], repo, env).stdout
        assert "score@main" in status and "train@main" not in status
    finally:
        vog.write_text(original)


def test_a_corrupted_checkpoint_is_rebuilt_not_cached(project, tmp_path):
    repo, env = changeable(project, tmp_path)
    path = repo / "runs" / "main" / "checkpoints" / "epoch_0003.pt"
    good = path.read_bytes()
    path.chmod(0o644)
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    log = sh(["dvc", "repro", "score@main"], repo, env)
    assert "epoch_0003.pt" in log.stdout + log.stderr
    assert path.read_bytes() == good  # rebuilt bit for bit
    assert "up to date" in sh(["dvc", "status", "score@main"], repo, env).stdout


def test_experiments_land_in_the_project_store(project, tmp_path):
    from vogflow.cli import main as cli

    repo, env = changeable(project, tmp_path)
    before = len(audits(repo))
    sh(["dvc", "exp", "run", "-S", "vog.top_k=5", "--name", "topk5"], repo, env)
    sh(["dvc", "exp", "run", "--temp", "-S", "vog.top_k=6", "--name", "topk6"], repo, env)
    sh(["dvc", "exp", "run", "--queue", "-S", "vog.top_k=7", "--name", "topk7"], repo, env)
    sh(["dvc", "exp", "run", "--run-all"], repo, env)
    runs = audits(repo)
    names = [p.data.tags.get("dvc.exp_name") for p, _ in runs[before:]]
    assert sorted(names) == ["topk5", "topk6", "topk7"]
    for parent, _ in runs[before:]:
        for key in HEADLINE:
            assert key in parent.data.metrics, key
    assert not list(repo.glob(".dvc/tmp/exps/**/mlflow.db"))
    # The latest model version's audit answers for every run, not only the registered one.
    latest = max(
        int(v.version) for v in client_for(repo).search_model_versions("name = 'vogflow-main'")
    )
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo}/mlflow.db"
    try:
        assert cli.main(["top", f"models:/vogflow-main/{latest}", "--run", "seed1", "-k", "3"]) == 0
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]

    def columns(*extra: str) -> int:
        shown = sh(["dvc", "exp", "show", "--no-pager", "--csv", *extra], repo, env).stdout
        return len(shown.splitlines()[0].split(","))

    # Scalar headlines only (the issue counted 2,679 columns); without code hashes, fewer still;
    # and the experiments' differences in a screenful.
    assert columns() < 400
    assert columns("--drop", "vogflow/.*|stages/.*") < 300
    assert columns("--only-changed") < 40


def test_a_fresh_clone_logs_its_audit_into_its_own_store(project, tmp_path):
    """A clean clone (outputs from the cache, metrics from git) is up to date; `dvc repro -f -s
    track` logs the audit into the clone's store, marked clean; nothing else reruns."""
    repo, env, _ = project
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    clone_env = {**env, "PYTHONPATH": str(clone)}
    sh(["dvc", "cache", "dir", "--local", str(repo / ".dvc" / "cache")], clone, clone_env)
    sh(["dvc", "checkout"], clone, clone_env)
    assert "up to date" in sh(["dvc", "status"], clone, clone_env).stdout
    assert "Running stage" not in sh(["dvc", "repro"], clone, clone_env).stdout
    log = sh(["dvc", "repro", "-f", "-s", "track"], clone, clone_env).stdout
    assert "Running stage 'track'" in log
    assert log.count("Running stage") == 1, log[-2000:]
    (parent, children), *others = audits(clone)
    assert not others and parent.data.tags["git.dirty"] == "false"
    assert len(children) == len(audits(repo)[0][1])
    assert "Running stage" not in sh(["dvc", "repro"], clone, clone_env).stdout
