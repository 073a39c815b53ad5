"""One ranking, one name: which score a table is shown by, and the line that says why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vogflow.analysis.scorecard import mean_percentile
from vogflow.errors import ConfigError
from vogflow.rankings.choice import SINGLE_RUN_DEFAULT, canonical, resolve, scores
from vogflow.scoring.vog import class_normalise


def _table(seed: int, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 3
    raw = rng.random(n)
    return pd.DataFrame(
        {
            "index": np.arange(n),
            "label": label,
            "true_label": label,
            "noisy": np.zeros(n, bool),
            "pred": label,
            "correct": np.ones(n, bool),
            "vog_late_label_raw": raw,
            "vog_late_label": class_normalise(raw, label),
            "vog_late_pred_raw": raw,
            "vog_late_pred": class_normalise(raw, label),
            "hard_loss": rng.random(n),
            "hard_aum": rng.normal(size=n),
            "label_issue": np.zeros(n, bool),
            "suggested_label": label,
            "suggested_label_prob": rng.random(n),
            "label_prob": rng.random(n),
        }
    )


def test_a_single_runs_table_is_shown_by_the_measured_default():
    table = _table(0)
    ranking = resolve(table)
    assert ranking.name == SINGLE_RUN_DEFAULT == "hard_aum"
    np.testing.assert_array_equal(ranking.values, table["hard_aum"])
    assert ranking.line().startswith("ranked by hard_aum (the single-run default: one run")
    assert "benchmarks/bench_single_run_default.py" in ranking.line()


def test_a_table_ranked_by_the_audit_is_shown_by_that_ranking():
    table = _table(1)
    score = np.linspace(0, 1, len(table))[::-1]
    ranked = table.assign(
        rank_by="hard_aum_seedmean", rank_reason="chosen by the scorecard: why", rank_score=score
    )
    ranking = resolve(ranked)
    assert ranking.name == "hard_aum_seedmean"
    assert ranking.line() == "ranked by hard_aum_seedmean (chosen by the scorecard: why)"
    np.testing.assert_array_equal(ranking.values, score)
    # Asked for by its name, the same ranking, and the line still says where it was chosen.
    asked = resolve(ranked, "hard_aum_seedmean")
    np.testing.assert_array_equal(asked.values, score)
    assert "chosen by the scorecard: why" in asked.reason
    # Any other score of the table is still there.
    np.testing.assert_array_equal(resolve(ranked, "hard_loss").values, table["hard_loss"])


def test_every_score_column_and_scorecard_name_is_accepted():
    table = _table(2)
    offered = scores(table)
    for name in ("vog_late_label", "vog_late_label_abs", "vog_late_pred_raw", "hard_aum"):
        assert name in offered
    for name in ("label_prob", "suggested_label_prob", "label_issue"):
        assert name in offered  # the label-issue evidence ranks too
    for name in ("index", "label", "pred", "suggested_label"):
        assert name not in offered  # identifiers, not scores
    assert canonical("late_label", offered) == "vog_late_label"
    assert canonical("late_label_abs", offered) == "vog_late_label_abs"
    assert canonical("late_label_seedmean", offered) == "vog_late_label_seedmean"
    assert canonical("hard_aum_seedmean", offered) == "hard_aum_seedmean"
    assert canonical("aum", offered) == "hard_aum"
    assert canonical("loss_seedmean", offered) == "hard_loss_seedmean"
    np.testing.assert_allclose(
        resolve(table, "late_label_abs").values, np.abs(table["vog_late_label"]), rtol=1e-6
    )


def test_a_seed_mean_comes_from_the_seed_runs_tables():
    seeds = {r: _table(i) for i, r in enumerate(("main", "seed1", "seed2"))}
    ranking = resolve(seeds["main"], "hard_loss_seedmean", seed_tables=seeds)
    want = mean_percentile({r: t["hard_loss"].to_numpy() for r, t in seeds.items()})
    np.testing.assert_allclose(ranking.values, want, rtol=1e-12)
    assert ranking.reason.endswith("over runs main, seed1, seed2")


def test_names_that_cannot_rank_fail_in_one_line_naming_the_fix():
    table = _table(3)
    with pytest.raises(ConfigError, match="a seed mean needs the audit's seed runs") as err:
        resolve(table, "hard_aum_seedmean", where="t.parquet")
    assert "or use hard_aum" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"--score 'middle_label': no such score in t.parquet"):
        resolve(table, "middle_label", where="t.parquet")
