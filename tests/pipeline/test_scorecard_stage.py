"""The scorecard stage on planted rankings tables, run as DVC runs it (a subprocess, tracking off):
a perfect detector is chosen, a claim the seeds disagree on is inconclusive, and the metrics file
holds scalars only."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from processes import HUNG_AFTER_S

from vogflow.config.names import LABEL_MODES, WINDOWS
from vogflow.figures import curves
from vogflow.scoring.vog import class_normalise

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ("main", "seed1", "seed2", "seed3", "seed4")
N, M, CLASSES = 300, 400, 3
OUTPUTS = ("metrics.json", "scorecard.csv", "report.json", "scorecard.png")


def _table(rng, n, *, noisy=None, vog=None, hard=None, error_driver=None) -> pd.DataFrame:
    """A rankings table: ``vog[w]`` is the raw VoG of window ``w`` (both modes), ``hard`` the
    baseline columns; errors follow ``error_driver`` (a latent difficulty) when given."""
    true_label = np.arange(n) % CLASSES
    noisy = np.zeros(n, bool) if noisy is None else noisy
    label = np.where(noisy, (true_label + 1) % CLASSES, true_label)
    if error_driver is None:
        correct = np.ones(n, bool)
    else:
        correct = rng.random(n) >= 1 / (1 + np.exp(-(3 * error_driver - 2)))
    pred = np.where(correct, true_label, (true_label + 2) % CLASSES)
    cols = {
        "index": np.arange(n),
        "label": label,
        "true_label": true_label,
        "noisy": noisy,
        "pred": pred,
        "correct": pred == true_label,
        "label_issue": np.zeros(n, bool),
    }
    for w in WINDOWS:
        for m in LABEL_MODES:
            raw = np.exp(vog[w]) if vog and w in vog else np.exp(rng.normal(size=n))
            cols[f"vog_{w}_{m}_raw"] = raw
            cols[f"vog_{w}_{m}"] = class_normalise(raw, label if m == "label" else pred)
    cols.update(hard or {})
    return pd.DataFrame(cols)


def _planted(folder: Path, *, misaligned: bool = False) -> None:
    """``hard_oracle`` is the latent difficulty itself in every run and the noise flag on the
    shuffled run; ``vog_all_*`` follows the difficulty in every seed run, ``vog_late_*`` only in
    the main run (the seed runs have it reversed); ``vog_early_*`` and the shuffled run's VoG are
    noise."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=N)
    for run in SEEDS:
        late = d if run == "main" else -d
        table = _table(
            rng,
            N,
            vog={"all": d + 0.05 * rng.normal(size=N), "late": late + 0.05 * rng.normal(size=N)},
            hard={"hard_oracle": d, "hard_loss": d + 0.7 * rng.normal(size=N)},
            error_driver=d,
        )
        if misaligned and run == "seed2":
            table = table.iloc[1:]
        out = folder / "runs" / run / "rankings" / "test.parquet"
        out.parent.mkdir(parents=True)
        table.to_parquet(out, index=False)
    noisy = rng.random(M) < 0.2
    shuffled = _table(
        rng,
        M,
        noisy=noisy,
        hard={"hard_oracle": noisy + 0.01 * rng.random(M), "hard_loss": noisy + rng.normal(size=M)},
    )
    # The flag finds the first 3 of every 4 changed labels and flags 5 clean ones.
    found = noisy & (np.cumsum(noisy) % 4 != 0)
    shuffled["label_issue"] = found | np.isin(np.arange(M), np.flatnonzero(~noisy)[:5])
    out = folder / "runs" / "shuffled" / "rankings" / "train.parquet"
    out.parent.mkdir(parents=True)
    shuffled.to_parquet(out, index=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["vog"]["bootstrap"] = 300  # enough for an interval, fast in a test
    params["vog"]["rank_by"] = "late_label"
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def run_stage(folder: Path) -> subprocess.CompletedProcess:
    out = folder / "results" / "scorecard"
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "scorecard.py"),
            "--runs",
            "runs",
            "--metrics",
            str(out / "metrics.json"),
            "--table",
            str(out / "scorecard.csv"),
            "--report",
            str(out / "report.json"),
            "--figure",
            str(out / "scorecard.png"),
            "--ranking",
            str(out / "ranking"),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
        env={**os.environ, "VOGFLOW_TRACKING": "off"},
    )


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scorecard")
    _planted(folder)
    done = run_stage(folder)
    assert done.returncode == 0, done.stderr
    return folder / "results" / "scorecard"


@pytest.mark.integration
def test_a_planted_perfect_detector_is_chosen(audit):
    metrics = json.loads((audit / "metrics.json").read_text())
    report = json.loads((audit / "report.json").read_text())
    assert metrics["chosen"]["score"] in ("hard_oracle", "hard_oracle_seedmean")
    assert metrics["chosen"]["noise_auroc"] == 1.0
    assert metrics["chosen"]["reliability"] > 0.99
    assert report["choice"]["score"] == metrics["chosen"]["score"]
    assert report["choices"]["single_run"]["score"] == "hard_oracle"
    # Of the VoG scores a user can set as vog.rank_by, the one that agrees across seeds wins.
    assert report["choices"]["rank_by"]["score"] == "vog_all_label"
    with open(audit / "scorecard.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["score"] == metrics["chosen"]["score"] and rows[0]["rank"] == "1"
    # One row per candidate: 18 VoG variants and 2 baselines, each also seed-averaged.
    assert len(rows) == 2 * (len(WINDOWS) * len(LABEL_MODES) * 3 + 2)
    assert (audit / "scorecard.png").stat().st_size > 10_000


@pytest.mark.integration
def test_seeds_that_disagree_make_the_decile_claim_inconclusive(audit):
    claims = json.loads((audit / "report.json").read_text())["claims"]
    late = claims["vog_late_label"]
    # The main run alone would support it: its whole bootstrap interval is above 0.
    assert late["interval"][0] > 0 and late["per_seed"]["main"] > 0
    assert all(late["per_seed"][s] < 0 for s in SEEDS[1:])
    assert late["verdict"] == "inconclusive"
    assert claims["vog_all_label"]["verdict"] == "supported"
    assert claims["vog_all_label"]["n_seeds"] == len(SEEDS)
    metrics = json.loads((audit / "metrics.json").read_text())
    assert metrics["rank_by"]["score"] == "vog_late_label"
    assert metrics["rank_by"]["verdict"] == "inconclusive"
    assert metrics["rank_by"]["expected"] == "increasing" and metrics["rank_by"]["lo"] > 0


def test_the_label_issue_flag_is_scored_on_the_changed_labels(audit):
    metrics = json.loads((audit / "metrics.json").read_text())["label_issues"]
    report = json.loads((audit / "report.json").read_text())["label_issues"]
    assert metrics == report
    table = pd.read_parquet(audit.parents[1] / "runs" / "shuffled" / "rankings" / "train.parquet")
    changed = table["label"] != table["true_label"]
    hits = int((table["label_issue"] & changed).sum())
    assert metrics["flagged"] == hits + 5 and metrics["wrong"] == int(changed.sum())
    assert metrics["precision"] == pytest.approx(hits / (hits + 5))
    assert metrics["recall"] == pytest.approx(hits / changed.sum())
    p, r = metrics["precision"], metrics["recall"]
    assert metrics["f1"] == pytest.approx(2 * p * r / (p + r))


@pytest.mark.integration
def test_metrics_hold_only_scalars(audit):
    metrics = json.loads((audit / "metrics.json").read_text())

    def leaves(obj, path=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from leaves(v, f"{path}.{k}")
        else:
            yield path, obj

    found = dict(leaves(metrics))
    bad = {k: v for k, v in found.items() if not isinstance(v, str | int | float | None)}
    assert not bad
    assert isinstance(metrics["chosen"]["score"], str)
    assert isinstance(metrics["best_vog"]["split_half"], float)


@pytest.mark.integration
def test_runs_that_scored_different_examples_are_refused(tmp_path):
    _planted(tmp_path, misaligned=True)
    done = run_stage(tmp_path)
    assert done.returncode != 0
    assert "runs main and seed2 scored different examples" in done.stderr
    assert not any((tmp_path / "results" / "scorecard" / f).exists() for f in OUTPUTS)


def test_scorecard_figure_draws_one_bar_per_measured_value():
    rows = {"a": {"r": 0.9, "auc": 0.8}, "b": {"r": -0.2, "auc": float("nan")}}
    fig = curves.scorecard(
        rows,
        panels=(("r", "reliability", 0.0), ("auc", "AUROC", 0.5)),
        groups={"a": "VoG", "b": "baseline, seed mean"},
        marks={"a": "chosen"},
    )
    left, right = fig.axes[:2]
    assert [round(p.get_width(), 6) for p in left.patches] == [0.9, -0.2]
    assert [t.get_text() for t in right.texts] == ["0.80", "n/a"]
    labels = left.get_yticklabels()
    assert labels[0].get_text() == "a  [chosen]" and labels[0].get_fontweight() == "bold"


@pytest.mark.integration
def test_the_audit_ranks_by_the_configured_score(audit):
    ranked = pd.read_parquet(audit / "ranking" / "test.parquet")
    assert (ranked["rank_by"] == "vog_late_label").all()
    assert (ranked["rank_reason"] == "set in params.yaml (vog.rank_by)").all()
    top = ranked.loc[ranked["rank"] == 1]
    assert top["vog_late_label"].item() == ranked["vog_late_label"].max()
    assert (audit / "ranking" / "test_top.csv").exists()
    assert not (audit / "ranking" / "train.parquet").exists()  # the runs scored no train split


@pytest.mark.integration
def test_auto_ranks_by_the_scorecard_choice_and_a_bad_name_is_refused(tmp_path):
    _planted(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["vog"]["rank_by"] = "auto"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_stage(tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "results" / "scorecard"
    chosen = json.loads((out / "metrics.json").read_text())["chosen"]["score"]
    ranked = pd.read_parquet(out / "ranking" / "test.parquet")
    assert (ranked["rank_by"] == chosen).all() and chosen.startswith("hard_oracle")
    # Where the choice was made, in the line every surface prints beside the ranking.
    reason = ranked["rank_reason"].iloc[0]
    assert reason.startswith("chosen by the scorecard: most reliable across 5 seeds")
    assert "noise AUROC 1.00" in reason
    hardest = ranked.loc[ranked["rank"] == 1, "hard_oracle"].item()
    assert hardest == ranked["hard_oracle"].max()

    params["vog"]["rank_by"] = "hard_nothing"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_stage(tmp_path)
    assert done.returncode != 0
    # Refused by the params check, before the scorecard reads a table, with the nearest name.
    assert "vog.rank_by: 'hard_nothing' is not allowed; did you mean 'hard_forgetting'?" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
