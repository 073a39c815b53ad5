"""Verdicts with planted answers: an effect, its reverse, seeds that disagree, a null AUROC."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as st

from vogflow.analysis.verdicts import VERDICTS, p_values, seed_interval, verdict
from vogflow.paper.memorization import welch_test

SEEDS = {"main": 0.30, "seed1": 0.28, "seed2": 0.33, "seed3": 0.31, "seed4": 0.29}


def test_planted_effect_is_supported():
    out = verdict("positive", 0.30, interval=[0.2, 0.4], per_seed=SEEDS, name="rho")
    assert out["verdict"] == "supported"
    assert out["holds"] and out["confident"]
    assert out["per_seed"] == SEEDS and out["n_seeds"] == 5
    lo, hi = out["seed_interval"]
    assert 0 < lo < min(SEEDS.values()) and hi > max(SEEDS.values())
    assert out["statistic"] == "rho" and out["interval"] == [0.2, 0.4]
    json.dumps(out)


def test_planted_reverse_effect_is_contradicted():
    seeds = {k: -v for k, v in SEEDS.items()}
    out = verdict("increasing", -0.30, interval=[-0.4, -0.2], per_seed=seeds)
    assert out["verdict"] == "contradicted"
    assert not out["holds"]
    # The same numbers against a "decreasing" claim support it.
    assert verdict("decreasing", -0.30, interval=[-0.4, -0.2], per_seed=seeds)["verdict"] == (
        "supported"
    )


def test_seeds_that_disagree_make_the_claim_inconclusive():
    seeds = {"main": 0.30, "seed1": -0.20, "seed2": 0.25, "seed3": 0.30}
    out = verdict("positive", 0.30, interval=[0.2, 0.4], per_seed=seeds)
    assert out["verdict"] == "inconclusive"
    assert "run seed1" in out["reason"]
    # Two seeds that disagree: the interval is their [min, max] and straddles 0.
    two = verdict("positive", 0.30, interval=[0.2, 0.4], per_seed={"main": 0.3, "seed1": -0.1})
    assert two["seed_interval"] == [-0.1, 0.3] and two["verdict"] == "inconclusive"


def test_one_seed_that_flips_is_caught_even_inside_a_wide_interval():
    # Nine seeds far above 0 and one just below: the t interval clears 0, the seed does not.
    seeds = {f"s{i}": 1.0 + 0.01 * i for i in range(9)} | {"s9": -0.01}
    assert seed_interval(list(seeds.values()))[0] > 0
    out = verdict("positive", 1.0, interval=[0.9, 1.1], per_seed=seeds)
    assert out["verdict"] == "inconclusive" and "run s9 on the opposite side" in out["reason"]


def test_auroc_a_hair_above_chance_with_a_wide_interval_is_inconclusive():
    out = verdict("above", 0.50001, interval=[0.45, 0.55], null=0.5, name="auroc")
    assert out["holds"]  # on the expected side, but not decided
    assert out["verdict"] == "inconclusive"
    assert out["seed_interval"] is None and out["n_seeds"] == 0


def test_one_seed_lets_the_bootstrap_decide_and_no_interval_decides_nothing():
    assert (
        verdict("above", 0.8, interval=[0.7, 0.9], null=0.5, per_seed={"main": 0.8})["verdict"]
        == "supported"
    )
    assert verdict("above", 0.8, interval=None, null=0.5)["verdict"] == "inconclusive"
    nan = float("nan")
    out = verdict("above", 0.8, interval=[nan, nan], null=0.5, per_seed=SEEDS)
    assert out["verdict"] == "inconclusive" and out["reason"] == "no bootstrap interval"
    with pytest.raises(ValueError, match="unknown direction"):
        verdict("up", 0.8, interval=[0.7, 0.9])
    assert set(VERDICTS) == {"supported", "contradicted", "inconclusive"}


def test_seed_interval_is_the_t_prediction_interval():
    v = np.array([0.2, 0.3, 0.4, 0.5])
    half = st.t.ppf(0.975, 3) * v.std(ddof=1) * np.sqrt(1 + 1 / 4)
    assert seed_interval(v) == pytest.approx([v.mean() - half, v.mean() + half])
    assert seed_interval([0.2, 0.5]) == [0.2, 0.5]
    assert seed_interval([0.2]) is None and seed_interval([]) is None
    assert seed_interval([0.2, float("nan")]) is None  # non-finite runs are dropped


def test_p_values_come_in_pairs_with_the_claimed_direction():
    up = p_values(2.0, 10, expected="greater")
    assert up["p_one_sided"] == pytest.approx(st.t.sf(2.0, 10))
    assert up["p_two_sided"] == pytest.approx(2 * st.t.sf(2.0, 10))
    down = p_values(2.0, 10, expected="decreasing")
    assert down["alternative"] == "less"
    assert down["p_one_sided"] == pytest.approx(1 - st.t.sf(2.0, 10))
    assert down["p_two_sided"] == up["p_two_sided"]
    z = p_values(-1.96, float("inf"), expected="negative")
    assert z["p_one_sided"] == pytest.approx(0.025, abs=1e-4)
    assert np.isnan(p_values(float("nan"), 3, expected="above")["p_one_sided"])
    # Matches the memorization test's own one- and two-sided p-values.
    rng = np.random.default_rng(0)
    noisy = np.arange(200) < 40
    welch = welch_test(rng.normal(size=200) + 0.4 * noisy, noisy)
    pair = p_values(welch["t"], welch["dof"], expected="greater")
    assert pair["p_one_sided"] == pytest.approx(welch["p_one_sided"])
    assert pair["p_two_sided"] == pytest.approx(welch["p_two_sided"])
