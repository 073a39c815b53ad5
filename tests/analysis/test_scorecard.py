"""The scorecard with planted answers: a perfect detector wins, pure noise is unstable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vogflow.analysis.scorecard import (
    COLUMNS,
    _splits,
    choose,
    mean_percentile,
    scorecard,
    split_half,
)

RUNS = ("main", "seed1", "seed2", "seed3", "seed4")
N, M = 400, 500


def _planted(seed: int = 0) -> dict:
    """A latent difficulty ``d`` of each test example drives the test error; the shuffled run's
    noisy examples are planted. ``perfect`` follows both closely in every run, ``medium`` with
    seed noise, ``noise`` is fresh randomness, ``reversed`` is stable but points the wrong way."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=N)
    correct = rng.random(N) >= 1 / (1 + np.exp(-(3 * d - 2)))
    noisy = rng.random(M) < 0.2
    run = {r: rng.normal(size=N) for r in RUNS}
    seed_scores = {
        "perfect": {r: d + 0.01 * rng.normal(size=N) for r in RUNS},
        "medium": {r: d + 0.7 * rng.normal(size=N) for r in RUNS},
        "noise": run,
        "reversed": {r: -d + 0.01 * rng.normal(size=N) for r in RUNS},
    }
    noise_scores = {
        "perfect": noisy + 0.1 * rng.random(M),
        "medium": noisy + rng.normal(size=M),
        "noise": rng.normal(size=M),
        "reversed": -(noisy + 0.1 * rng.random(M)),
    }
    return {
        "seed_scores": seed_scores,
        "noise_scores": noise_scores,
        "noisy": noisy,
        "correct": correct,
    }


def test_a_planted_perfect_detector_ranks_first_and_is_chosen():
    card = scorecard(**_planted())
    rows = card["scores"]
    assert set(rows) == {
        *("perfect", "medium", "noise", "reversed"),
        *("perfect_seedmean", "medium_seedmean", "noise_seedmean", "reversed_seedmean"),
    }
    assert all(list(row) == list(COLUMNS) for row in rows.values())
    perfect = rows["perfect"]
    assert perfect["spearman"] > 0.99 and perfect["top_jaccard"] > 0.9
    assert perfect["noise_auroc"] == 1.0 and perfect["noise_precision"] == 1.0
    assert perfect["noise_auprc"] == pytest.approx(1.0)
    assert perfect["decile_trend"] > 0.8
    assert set(card["ranking"][:2]) == {"perfect", "perfect_seedmean"}
    name, reason = choose(card)
    assert rows[name]["base"] == "perfect"
    assert "reversed" in reason  # dropped, and the reason says so
    assert choose(card, seedmean=False)[0] == "perfect"
    json.dumps(card)


def test_a_stable_score_that_points_the_wrong_way_is_not_chosen():
    card = scorecard(**_planted())
    rev = card["scores"]["reversed"]
    assert rev["reliability"] > 0.99  # as stable as the perfect one...
    assert rev["noise_auroc"] < 0.5 and rev["decile_trend"] < 0  # ...but backwards
    order = card["ranking"]
    assert max(order.index(n) for n in ("perfect", "medium")) < order.index("reversed")
    only_bad = {"scores": {k: v for k, v in card["scores"].items() if v["base"] == "reversed"}}
    name, reason = choose(only_bad)
    assert name is None and "wrong way" in reason


def test_pure_noise_has_stability_near_zero_and_chance_overlap():
    card = scorecard(**_planted())
    noise = card["scores"]["noise"]
    assert abs(noise["spearman"]) < 0.1
    assert abs(noise["split_half"]) < 0.15
    assert noise["top_jaccard"] == pytest.approx(noise["top_chance"], abs=0.05)
    assert noise["noise_auroc"] == pytest.approx(0.5, abs=0.1)
    # Averaging over seeds makes a noisy but real score more reliable than one run of it.
    medium, averaged = card["scores"]["medium"], card["scores"]["medium_seedmean"]
    assert averaged["reliability"] > medium["reliability"] > noise["reliability"]


def test_missing_parts_give_nan_columns_and_choose_still_answers():
    planted = _planted()
    # Seeds only: no shuffled run, no test correctness (and so nothing to tell a stable score
    # from its stable reverse: the choice is then by reliability alone).
    seeds = {k: v for k, v in planted["seed_scores"].items() if k != "reversed"}
    card = scorecard(seeds)
    row = card["scores"]["perfect"]
    for key in ("noise_auroc", "noise_auprc", "noise_precision", "decile_trend"):
        assert np.isnan(row[key])
    assert np.isnan(card["noise_rate"])
    assert choose(card)[0] in ("perfect", "perfect_seedmean")
    # The shuffled run only: no stability; the choice falls to noise detection.
    card = scorecard(noise_scores=planted["noise_scores"], noisy=planted["noisy"])
    row = card["scores"]["perfect"]
    for key in ("spearman", "top_jaccard", "split_half", "reliability", "decile_trend"):
        assert np.isnan(row[key])
    assert "perfect_seedmean" not in card["scores"]
    name, reason = choose(card)
    assert name == "perfect" and "reliability unmeasured" in reason
    # Three runs: pairwise stability, but no split half (and so no seed-mean reliability).
    three = {k: {r: v[r] for r in RUNS[:3]} for k, v in planted["seed_scores"].items()}
    card = scorecard(three, correct=planted["correct"])
    assert np.isnan(card["scores"]["perfect"]["split_half"])
    assert np.isnan(card["scores"]["perfect_seedmean"]["reliability"])
    assert card["scores"]["perfect"]["spearman"] > 0.99
    assert card["scores"]["perfect_seedmean"]["decile_trend"] > 0.8
    # Nothing at all.
    assert choose(scorecard()) == (None, "no candidate scores")
    with pytest.raises(ValueError, match="noisy"):
        scorecard(noise_scores=planted["noise_scores"])


def test_mean_percentile_ranks_within_each_run_first():
    got = mean_percentile({"a": np.array([1.0, 2.0, 3.0]), "b": np.array([30.0, 20.0, 10.0])})
    assert got.tolist() == pytest.approx([50.0, 50.0, 50.0])
    ties = mean_percentile({"a": np.array([5.0, 5.0, 9.0])})
    assert ties.tolist() == pytest.approx([100 / 3, 100 / 3, 250 / 3])
    with pytest.raises(ValueError, match="same N"):
        mean_percentile({"a": np.zeros(3), "b": np.zeros(4)})


def test_split_half_uses_every_balanced_split_once():
    assert len(_splits(4)) == 3 and len(_splits(6)) == 10
    assert len(_splits(5)) == 15  # each of 5 runs left out, then 3 splits of the other 4
    for a, b in _splits(5):
        assert len(a) == len(b) == 2 and not set(a) & set(b)
    runs = np.tile(np.arange(10.0), (4, 1))
    assert split_half(runs) == pytest.approx(1.0)
    assert np.isnan(split_half(runs[:3]))


def _card_rows() -> dict:
    def row(kind: str, rel: float, auc: float, trend: float) -> dict:
        return {
            "kind": kind,
            "reliability": rel,
            "noise_auroc": auc,
            "decile_trend": trend,
            "split_half": rel,
        }

    return {
        "hard_loss_seedmean": row("seedmean", 0.95, 0.9, 0.5),
        "vog_late_label": row("run", 0.4, 0.7, 0.3),
        "vog_all_label": row("run", 0.6, 0.8, 0.2),
        "vog_late_label_raw": row("run", 0.9, 0.8, 0.2),
        "hard_margin": row("run", 0.7, 0.2, 0.4),  # finds no noise: dropped
    }


def test_choices_apply_the_rule_to_each_subset_a_user_may_be_limited_to():
    from vogflow.analysis import choice

    rows = _card_rows()
    card = {"scores": rows, "ranking": list(rows)}
    picked = {k: v["score"] for k, v in choice.choices(card).items()}
    assert picked == {
        "any": "hard_loss_seedmean",
        "single_run": "vog_late_label_raw",
        "vog": "vog_late_label_raw",
        "rank_by": "vog_all_label",  # _raw is not a window_mode vog.rank_by can name
    }
    assert choice.best_vog(card) == "vog_late_label"  # the first single-run VoG of the ranking


def test_resolve_rank_by_takes_auto_a_variant_or_a_score_and_refuses_others():
    from vogflow.analysis import choice
    from vogflow.errors import ConfigError

    rows = _card_rows()
    chosen = {"any": {"score": "hard_loss_seedmean", "reason": "most reliable"}}
    assert choice.resolve_rank_by("auto", chosen, rows) == (
        "hard_loss_seedmean",
        "auto: most reliable",
    )
    none = {"any": {"score": None, "reason": "every score points the wrong way"}}
    assert choice.resolve_rank_by("auto", none, rows)[0] == choice.PAPER_SCORE
    assert choice.resolve_rank_by("all_label", chosen, rows)[0] == "vog_all_label"
    assert choice.resolve_rank_by("hard_margin", chosen, rows)[0] == "hard_margin"
    with pytest.raises(ConfigError, match="vog.rank_by: 'early_pred' is not a score"):
        choice.resolve_rank_by("early_pred", chosen, rows)


def test_short_reason_and_headline_metrics():
    from vogflow.analysis import choice

    rows = _card_rows()
    assert choice.short_reason("late_label", None, 5) == "set in params.yaml (vog.rank_by)"
    assert "no score passed" in choice.short_reason("auto", None, 5)
    line = choice.short_reason("auto", rows["vog_all_label"], 5)
    assert "across 5 seeds" in line and "reliability 0.60, noise AUROC 0.80" in line
    claim = {"expected": "increasing", "measured": 0.3, "interval": None, "verdict": "holds"}
    out = choice.headline_metrics(
        rows,
        chosen=None,
        rank_by="vog_late_label",
        best="vog_late_label",
        claims={"vog_late_label": claim},
        label_issues={"precision": 1.0},
    )
    assert out["chosen"]["score"] == "none" and np.isnan(out["chosen"]["reliability"])
    assert out["rank_by"]["verdict"] == "holds" and np.isnan(out["rank_by"]["lo"])
    assert out["best_vog"] == {"score": "vog_late_label", "reliability": 0.4, "split_half": 0.4}
