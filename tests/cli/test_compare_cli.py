"""`vogflow compare`, `vogflow top` and `vogflow audit` end to end, on a real MLflow SQLite store.

Audits are built without the pipeline: `vogflow.api.audit` on seeded random checkpoints of a tiny
model, laid out as the pipeline leaves them (dvc.lock, rankings) and logged by the same code as
the track stage (a parent audit run holding `rankings/main/<split>.parquet`, a child per stage, a
registered model version tagged with the audit).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from numerics import assert_tables_close
from torch import nn

from vogflow import tracking
from vogflow.api import audit
from vogflow.cli import main as cli
from vogflow.config.schema import DataConfig
from vogflow.data import load_dataset, load_raw
from vogflow.rankings import compare
from vogflow.rankings.table import contract_columns, read, write_parquet

MODEL = "vogflow-main"
N_TEST = 60
SCORE = "vog_late_label"
# What a table of one run (no audit ranking) is shown by when no score is named.
DEFAULT = "hard_aum"
FAST = ["--n-boot", "20"]  # the bootstrap only widens intervals; a few resamples suffice here

FACTORY_SOURCE = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))


def not_a_model():
    return 42
"""


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))


def seeded_states(seed: int, k: int = 4) -> list[dict[str, torch.Tensor]]:
    """``k`` distinct state dicts of :func:`tiny`: its weights plus seeded noise."""
    gen = torch.Generator().manual_seed(seed)
    base = tiny().state_dict()
    return [
        {n: v + 0.3 * torch.randn(v.shape, generator=gen) for n, v in base.items()}
        for _ in range(k)
    ]


def write_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.random((30, 8, 8), dtype=np.float32),
        y_train=np.arange(30) % 3,
        x_test=rng.random((N_TEST, 8, 8), dtype=np.float32),
        y_test=rng.integers(0, 3, N_TEST),
    )
    return path


class Store:
    """The MLflow store of this module and the audits logged into it."""

    uri: str
    root: Path
    npz: Path
    tables: dict[str, pd.DataFrame]
    audits: dict[str, str]  # name -> parent audit run id
    score_runs: dict[str, str]  # name -> child score run id
    versions: dict[str, int]  # name -> registered model version


def log_pipeline_audit(store: Store, name: str, table: pd.DataFrame, *, register: bool) -> None:
    """Log ``table`` as the test split of run ``main`` of a new audit, as the track stage does."""
    import yaml

    from vogflow.tracking.record import compose

    folder = store.root / name
    write_parquet(table, folder / "runs" / "main" / "rankings" / "test.parquet")
    (folder / "dvc.yaml").write_text(
        textwrap.dedent("""
        stages:
          score:
            foreach: [main]
            do:
              cmd: python stages/score.py --run ${key}
              outs:
                - runs/${key}/rankings
    """)
    )
    data = {"name": "npz", "path": str(store.npz)}
    lock = {
        "stages": {
            "train@main": {"params": {"params.yaml": {"data": data, "model": {"name": "tiny"}}}},
            "score@main": {"outs": [{"path": "runs/main/rankings", "md5": name}]},
        }
    }
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    params = {"data": data, "vog": {"rank_by": "late_label"}, "tracking": {"register_run": "main"}}
    record = compose(folder, params=params, git={})
    run_id, _ = tracking.log_pipeline_audit(
        record, experiment="vogflow", model_name=MODEL, model_dir=None, uri=store.uri
    )
    client = tracking.client(store.uri)
    if register:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(MODEL)
        except MlflowException:
            pass
        client.log_artifact(run_id, str(folder / "dvc.yaml"), "model")
        version = client.create_model_version(
            MODEL,
            f"{client.get_run(run_id).info.artifact_uri}/model",
            run_id=run_id,
            tags={tracking.AUDIT_RUN_TAG: run_id},
        )
        store.versions[name] = int(version.version)
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    store.audits[name] = run_id
    store.score_runs[name] = next(
        c.info.run_id for c in children if c.info.run_name == "score@main"
    )
    store.tables[name] = table


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("VOGFLOW_TRACKING", raising=False)
        mp.chdir(root)
        s = Store()
        s.uri, s.root, s.npz = f"sqlite:///{root / 'mlflow.db'}", root, write_npz(root / "d.npz")
        s.tables, s.audits, s.score_runs, s.versions = {}, {}, {}, {}
        split = load_dataset(DataConfig(name="npz", path=str(s.npz))).test
        data = (split.x, split.y)
        a = audit(tiny(), seeded_states(1), data, progress=False)
        b = audit(tiny(), seeded_states(2), data, progress=False)
        # The hardest and the easiest example of A trade places, nothing else moves.
        swapped = a.copy()
        hard, easy = int(a[SCORE].idxmax()), int(a[SCORE].idxmin())
        swapped.loc[[hard, easy], SCORE] = a.loc[[easy, hard], SCORE].to_numpy()
        relabelled = a.copy()
        for col in ("label", "true_label"):
            relabelled.loc[[0, 5, 7], col] = (a.loc[[0, 5, 7], col] + 1) % 3
        log_pipeline_audit(s, "a", a, register=True)  # version 1
        log_pipeline_audit(s, "b", b, register=True)  # version 2
        log_pipeline_audit(s, "swap", swapped, register=True)  # version 3
        log_pipeline_audit(s, "relabelled", relabelled, register=False)
        tracking.client(s.uri).set_registered_model_alias(MODEL, "champion", "2")
        s.hard, s.easy = hard, easy
        yield s


@pytest.fixture(autouse=True)
def _env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if "store" in request.fixturenames:
        s = request.getfixturevalue("store")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", s.uri)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)


def one_line_error(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"vogflow {command}: error: ")
    return err


def compare_runs(uri: str) -> list:
    client = tracking.client(uri)
    exp = client.get_experiment_by_name("vogflow")
    return list(client.search_runs([exp.experiment_id], "tags.`vogflow.kind` = 'compare'"))


# ---------------------------------------------------------------------------------------------
# compare


@pytest.mark.integration
def test_compare_two_versions_logs_a_compare_run(store: Store, tmp_path: Path, capsys) -> None:
    a, b = f"models:/{MODEL}/1", f"models:/{MODEL}/2"
    before = {r.info.run_id for r in compare_runs(store.uri)}
    assert cli.main(["compare", a, b, *FAST, "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    for word in ("spearman", "kendall", "jaccard", "decile", "movers"):
        assert word in out

    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["a"]["audit_run_id"] == store.audits["a"]
    assert report["b"]["audit_run_id"] == store.audits["b"]
    # Neither audit logged a ranking of its own: both are shown by the single-run default.
    assert report["n"] == N_TEST and report["column"] == DEFAULT
    assert f"ranked by {DEFAULT} (the single-run default: one run cannot measure" in out
    assert 0 <= report["top_overlap"]["jaccard"] <= 1 and report["top_overlap"]["k"] == 6
    assert len(report["deciles"]["a"]["error"]) == len(report["deciles"]["b"]["error"]) == 10
    assert report["error"]["a"] == pytest.approx(1 - store.tables["a"]["correct"].mean())
    assert report["notes"] == []  # images came from the audit's logged data params
    movers = pd.read_csv(tmp_path / "cmp" / "movers.csv")
    assert list(movers.columns) == ["index", "label", "rank_a", "rank_b", "shift", "vog_a", "vog_b"]
    assert len(movers) == 25 and movers["shift"].abs().is_monotonic_decreasing

    (run,) = [r for r in compare_runs(store.uri) if r.info.run_id not in before]
    assert run.data.tags["vogflow.compare.a"] == a and run.data.tags["vogflow.compare.b"] == b
    assert run.info.run_name == f"compare {a} vs {b} (test)"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.metrics["spearman"] == pytest.approx(report["spearman"])
    client = tracking.client(store.uri)
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    files |= {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert {"compare.json", "movers.csv", "figures/deciles.png", "figures/movers.png"} <= files
    history = client.get_metric_history(run.info.run_id, "decile_error_a")
    assert sorted(m.step for m in history) == list(range(10))


@pytest.mark.integration
@pytest.mark.parametrize(
    "other",
    ["audit", "score_run", f"models:/{MODEL}@champion"],
    ids=["audit-run-id", "child-score-run-id", "alias"],
)
def test_identical_audits_agree_fully(store: Store, tmp_path: Path, capsys, other: str) -> None:
    first, second = (
        f"models:/{MODEL}/1",
        {
            "audit": store.audits["a"],
            "score_run": store.score_runs["a"],
        }.get(other, other),
    )
    if other.endswith("@champion"):
        first = f"models:/{MODEL}/2"  # the alias points at version 2
    args = ["compare", first, second, *FAST, "--no-images", "--out", str(tmp_path / "c")]
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert report["spearman"] == pytest.approx(1.0)
    assert report["kendall"] == pytest.approx(1.0)
    assert report["top_overlap"]["jaccard"] == 1.0
    assert all(m["shift"] == 0 for m in report["movers"])
    assert report["deciles"]["a"]["error"] == report["deciles"]["b"]["error"]
    assert report["notes"] == ["movers grid skipped (--no-images)"]


@pytest.mark.integration
def test_compare_does_not_depend_on_images(store: Store, tmp_path: Path, capsys) -> None:
    moved = store.npz.rename(store.npz.with_suffix(".moved"))
    try:
        args = ["compare", f"models:/{MODEL}/1", f"models:/{MODEL}/2", *FAST]
        assert cli.main([*args, "--out", str(tmp_path / "c")]) == 0
    finally:
        moved.rename(store.npz)
    assert "movers grid skipped: dataset 'npz' could not be loaded" in capsys.readouterr().out
    assert (tmp_path / "c" / "figures" / "deciles.png").exists()
    assert not (tmp_path / "c" / "figures" / "movers.png").exists()


@pytest.mark.integration
def test_planted_swap_is_the_top_mover(store: Store, tmp_path: Path) -> None:
    args = ["compare", f"models:/{MODEL}/1", f"models:/{MODEL}/3", *FAST, "--score", "late_label"]
    assert cli.main([*args, "--no-images", "--out", str(tmp_path / "c")]) == 0
    movers = pd.read_csv(tmp_path / "c" / "movers.csv")
    top = movers.head(2).set_index("index")
    assert set(top.index) == {store.hard, store.easy}
    assert (top.loc[store.hard, "rank_a"], top.loc[store.hard, "rank_b"]) == (1, N_TEST)
    assert (top.loc[store.easy, "rank_a"], top.loc[store.easy, "rank_b"]) == (N_TEST, 1)
    assert top.loc[store.hard, "vog_b"] == pytest.approx(top.loc[store.easy, "vog_a"])
    assert (movers["shift"].iloc[2:] == 0).all()  # nothing else moved


@pytest.mark.integration
def test_mismatched_labels_fail_clearly(store: Store, capsys) -> None:
    args = ["compare", f"models:/{MODEL}/1", store.audits["relabelled"], *FAST]
    assert cli.main(args) == 2
    err = one_line_error(capsys, "compare")
    assert f"disagree on the true_label of 3 of {N_TEST} examples" in err
    assert "index 0:" in err and "different datasets" in err


@pytest.mark.integration
def test_mismatched_sizes_fail_clearly(store: Store) -> None:
    a = store.tables["a"]
    with pytest.raises(compare.DataError, match=f"A has {N_TEST} examples and B has 50"):
        compare.align(a, a.head(50), column=SCORE)


@pytest.mark.integration
def test_unknown_references_fail_clearly(store: Store, capsys) -> None:
    assert cli.main(["compare", f"models:/{MODEL}/9", f"models:/{MODEL}/1"]) == 2
    assert "versions of 'vogflow-main': 1, 2, 3" in one_line_error(capsys, "compare")
    assert cli.main(["compare", "0123abcd", f"models:/{MODEL}/1"]) == 2
    assert "'0123abcd' is neither a run id" in one_line_error(capsys, "compare")
    assert cli.main(["compare", f"models:/{MODEL}/1", f"models:/{MODEL}/2", "--split", "val"]) == 2
    err = one_line_error(capsys, "compare")
    assert "no rankings for split 'val'" in err and "share: test" in err


# ---------------------------------------------------------------------------------------------
# top


def _printed_indices(out: str) -> list[int]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "index"])
    return [int(line.split()[1]) for line in lines[start + 1 :] if line.strip()]


@pytest.mark.integration
def test_top_prints_the_k_hardest_in_order(store: Store, capsys) -> None:
    assert cli.main(["top", f"models:/{MODEL}/1", "-k", "7"]) == 0
    table = store.tables["a"]
    expected = table.sort_values(DEFAULT, ascending=False, kind="stable")["index"].head(7).tolist()
    out = capsys.readouterr().out
    assert _printed_indices(out) == expected
    assert f"ranked by {DEFAULT} (the single-run default" in out
    # The same from the audit run id, with another score.
    assert cli.main(["top", store.audits["a"], "-k", "3", "--score", "early_pred"]) == 0
    by = table.sort_values("vog_early_pred", ascending=False, kind="stable")["index"]
    assert _printed_indices(capsys.readouterr().out) == by.head(3).tolist()


def log_ranked_audit(store: Store, name: str) -> tuple[str, dict[str, pd.DataFrame], pd.DataFrame]:
    """A pipeline audit of two seed runs whose scorecard ranked it by ``hard_aum_seedmean``
    (``results/ranking``), logged as the track stage logs it; returns its run id, the runs'
    tables and the ranking table."""
    import yaml

    from vogflow.analysis.scorecard import mean_percentile
    from vogflow.tracking.record import compose

    folder = store.root / name
    tables = {"main": store.tables["a"], "seed1": store.tables["b"]}
    for run, table in tables.items():
        write_parquet(table, folder / "runs" / run / "rankings" / "test.parquet")
    score = mean_percentile({r: t["hard_aum"].to_numpy() for r, t in tables.items()})
    ranked = tables["main"].assign(
        rank_by="hard_aum_seedmean",
        rank_reason="chosen by the scorecard: planted here",
        rank_score=score,
        rank=pd.Series(score).rank(ascending=False, method="first").astype(int).to_numpy(),
    )
    write_parquet(ranked, folder / "results" / "ranking" / "test.parquet")
    (folder / "dvc.yaml").write_text((store.root / "a" / "dvc.yaml").read_text())
    data = {"name": "npz", "path": str(store.npz)}
    lock = {
        "stages": {
            "train@main": {"params": {"params.yaml": {"data": data, "model": {"name": "tiny"}}}},
            "score@main": {"outs": [{"path": "runs/main/rankings", "md5": name}]},
        }
    }
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    params = {
        "data": data,
        "vog": {"rank_by": "auto"},
        "tracking": {"register_run": "main"},
        "stability": {"seed_runs": list(tables)},
    }
    record = compose(folder, params=params, git={})
    run_id, _ = tracking.log_pipeline_audit(
        record, experiment="vogflow", model_name=MODEL, model_dir=None, uri=store.uri
    )
    return run_id, tables, ranked


def test_top_shows_the_audits_own_ranking_and_any_seed_mean(store: Store, capsys) -> None:
    from vogflow.analysis.scorecard import mean_percentile

    run_id, tables, ranked = log_ranked_audit(store, "ranked")
    assert cli.main(["top", run_id, "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "ranked by hard_aum_seedmean (chosen by the scorecard: planted here)" in out
    by_audit = ranked.sort_values("rank_score", ascending=False, kind="stable")["index"]
    assert _printed_indices(out) == by_audit.head(5).tolist()
    # Another seed mean is computed from the seed runs' logged rankings.
    assert cli.main(["top", run_id, "-k", "5", "--score", "hard_loss_seedmean"]) == 0
    out = capsys.readouterr().out
    want = mean_percentile({r: t["hard_loss"].to_numpy() for r, t in tables.items()})
    assert _printed_indices(out) == np.argsort(-want, kind="stable")[:5].tolist()
    assert "ranked by hard_loss_seedmean (asked for with --score; over runs main, seed1)" in out
    # The ranking file answers its own seed mean (the name the scorecard gave it) ...
    local = store.root / "ranked" / "results" / "ranking" / "test.parquet"
    assert cli.main(["top", str(local), "--score", "hard_aum_seedmean", "-k", "5"]) == 0
    assert _printed_indices(capsys.readouterr().out) == by_audit.head(5).tolist()
    # ... while one run's table cannot make one, and says what to do instead.
    one_run = store.root / "ranked" / "runs" / "main" / "rankings" / "test.parquet"
    assert cli.main(["top", str(one_run), "--score", "hard_aum_seedmean"]) == 2
    err = one_line_error(capsys, "top")
    assert "a seed mean needs the audit's seed runs" in err and "or use hard_aum" in err


@pytest.mark.integration
def test_top_unknown_score_lists_the_valid_ones(store: Store, capsys) -> None:
    assert cli.main(["top", f"models:/{MODEL}/1", "--score", "middle_label"]) == 2
    err = one_line_error(capsys, "top")
    assert "--score 'middle_label': no such score" in err
    assert "vog_late_label" in err and "hard_aum" in err and "label_prob" in err


# ---------------------------------------------------------------------------------------------
# audit


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A factory module on sys.path, an npz, and checkpoints written out of order."""
    (tmp_path / "tiny_factory.py").write_text(textwrap.dedent(FACTORY_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    states = dict(zip((1, 2, 10), seeded_states(5, k=3), strict=True))
    for epoch in (2, 10, 1):  # written out of order on purpose
        torch.save({"model_state_dict": states[epoch], "epoch": epoch}, ckpts / f"epoch_{epoch}.pt")
    return {"npz": write_npz(tmp_path / "mine.npz"), "ckpts": ckpts, "root": tmp_path}


@pytest.mark.integration
def test_audit_end_to_end_natural_order(
    user_project: dict[str, Path], store: Store, capsys
) -> None:
    ckpts, out = user_project["ckpts"], user_project["root"] / "out" / "rankings.parquet"
    args = [
        "audit",
        "--model",
        "tiny_factory:build",
        "--checkpoints",
        f"{ckpts}/*.pt",
        "--data",
        f"npz:{user_project['npz']}",
        "--split",
        "test",
        "--out",
        str(out),
        "--window-size",
        "2",
        "--quiet",
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    order = [printed.index(f"epoch_{e}.pt") for e in (1, 2, 10)]
    assert order == sorted(order)
    assert f"hardest 10 by {DEFAULT}" in printed
    assert f"ranked by {DEFAULT} (the single-run default: one run cannot measure" in printed
    assert "label issues: " in printed

    table = read(out)
    assert list(table.columns) == contract_columns()
    assert len(table) == N_TEST and table["index"].tolist() == list(range(N_TEST))
    # With windows of 2, early = epochs (1, 2) and late = (2, 10): only the natural order matches.
    # The CLI feeds the inputs as loaded, never standardised: the API on the same arrays agrees.
    raw = load_raw(DataConfig(name="npz", path=str(user_project["npz"])))
    paths = [ckpts / f"epoch_{e}.pt" for e in (1, 2, 10)]
    direct = audit(tiny(), paths, (raw.x_test, raw.y_test), window_size=2, progress=False)
    assert_tables_close(table, direct)

    # A folder works the same, and --track logs an audit (into the module's store: a new SQLite
    # store costs seconds of schema migrations) that `vogflow top` reads back.
    assert cli.main([*args[:4], str(ckpts), *args[5:], "--track"]) == 0
    printed = capsys.readouterr().out
    run_id = printed.split("logged to MLflow: run ")[1].split()[0]
    assert_tables_close(read(out), direct)
    assert cli.main(["top", run_id, "-k", "4"]) == 0
    expected = direct.sort_values(DEFAULT, ascending=False, kind="stable")["index"].head(4)
    assert _printed_indices(capsys.readouterr().out) == expected.tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "tiny_factory"}, "is not of the form package.module:factory"),
        ({"--model": "no_such_module_xyz:build"}, "cannot import 'no_such_module_xyz'"),
        ({"--model": "tiny_factory:nope"}, "has no 'nope'"),
        ({"--model": "tiny_factory:not_a_model"}, "returned int, not a torch.nn.Module"),
        ({"--checkpoints": "{root}/ckpts/*.pth"}, "matches no file"),
        ({"--checkpoints": "{root}/ckpts/epoch_1.pt"}, "needs at least 2"),
        ({"--data": "csv:{root}/mine.npz"}, "unknown data kind 'csv'; valid kinds: npz"),
        ({"--data": "npz:{root}/missing.npz"}, "missing.npz' does not exist"),
        ({"--checkpoints": "{root}/bad/*.pt"}, "does not fit the model"),
    ],
    ids=["spec", "import", "attr", "not-module", "no-match", "one", "kind", "no-file", "engine"],
)
def test_audit_bad_inputs_exit_2(user_project, capsys, change: dict, message: str) -> None:
    root = user_project["root"]
    (root / "bad").mkdir()
    for e in (1, 2, 3, 4):  # checkpoints of another architecture (one more than the window)
        torch.save(nn.Linear(64, 3).state_dict(), root / "bad" / f"e{e}.pt")
    opts = {
        "--model": "tiny_factory:build",
        "--checkpoints": "{root}/ckpts/*.pt",
        "--data": "npz:{root}/mine.npz",
        "--out": "{root}/r.parquet",
        **change,
    }
    args = ["audit", "--quiet"] + [x.format(root=root) for kv in opts.items() for x in kv]
    assert cli.main(args) == 2
    assert message in one_line_error(capsys, "audit")
    assert not (root / "r.parquet").exists()


def test_help_describes_every_command(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("audit", "compare", "top"):
        assert command in out
        assert cli.main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"vogflow {command} " in text
