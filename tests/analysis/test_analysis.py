"""Analyses with planted answers: decile curves, stability, memorization tests, toy boundary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as st

from vogflow.analysis.deciles import decile_report, error_by_bucket, split_key
from vogflow.analysis.hardness import (
    baseline_scores,
    el2n_score,
    forgetting_events,
    mean_over_checkpoints,
)
from vogflow.analysis.ranks import spearman
from vogflow.errors import ConfigError, DataError
from vogflow.paper.memorization import memorization_regime, memorization_report, welch_test
from vogflow.paper.stability import stability_report
from vogflow.paper.toy import _ray_distances, boundary_distance, margin, toy_report

BOOT = {"n_boot": 200, "confidence": 0.95}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _correct_from(score: np.ndarray, rng: np.random.Generator, slope: float = 2.0) -> np.ndarray:
    """Planted difficulty: P(wrong) rises with ``score`` (a logistic curve)."""
    p_wrong = 1.0 / (1.0 + np.exp(-(slope * score - 1.0)))
    return rng.random(score.size) >= p_wrong


def _jsonable(report: dict) -> None:
    json.dumps(report)  # numpy ints and bools would raise here


# ---------------------------------------------------------------------------------------------
# deciles


def test_error_by_bucket_hand_counted():
    scores = np.arange(20.0)[::-1]  # reversed order: buckets must follow the score, not position
    correct = np.ones(20, bool)
    correct[[0, 1, 2]] = False  # scores 19, 18, 17: the top bucket (2/2) and the next (1/2)
    out = error_by_bucket(scores, correct, bins=10, rng=_rng(), **BOOT)
    assert out["count"] == [2] * 10
    assert out["error"] == [0.0] * 8 + [0.5, 1.0]
    assert out["top_error"] == 1.0 and out["bottom_error"] == 0.0
    assert out["overall_error"] == pytest.approx(3 / 20)
    assert out["top_minus_bottom"] == 1.0
    assert out["spearman"] > 0
    _jsonable(out)


def test_correlated_score_gives_increasing_curve_and_claim_holds():
    rng = _rng(1)
    score = rng.normal(size=3000)
    correct = _correct_from(score, rng)
    out = error_by_bucket(score, correct, bins=10, rng=rng, **BOOT)
    assert out["spearman"] > 0.9
    assert out["spearman_interval"][0] > 0.5
    assert out["top_error"] > out["bottom_error"] + 0.4
    for (lo, hi), err in zip(out["error_interval"], out["error"], strict=True):
        assert lo <= err <= hi
    report = decile_report({"late_label": score, "all_pred": score}, correct, rng=rng, **BOOT)
    for key in ("late_label", "all_pred"):
        assert report["claims"][key]["expected"] == "increasing"
        assert report["claims"][key]["holds"] and report["claims"][key]["confident"]
    # The same score under an early window is expected to fall, so the claim must fail.
    early = decile_report({"early_label": score}, correct, rng=rng, **BOOT)
    assert early["claims"]["early_label"]["expected"] == "decreasing"
    assert not early["claims"]["early_label"]["holds"]


def test_anticorrelated_score_is_decreasing_and_flip_only_when_planted():
    rng = _rng(2)
    hard = rng.normal(size=3000)
    correct = _correct_from(hard, rng)
    anti = -hard + 0.1 * rng.normal(size=hard.size)
    pro = hard + 0.1 * rng.normal(size=hard.size)
    curve = error_by_bucket(anti, correct, bins=10, rng=rng, **BOOT)
    assert curve["spearman"] < -0.9 and curve["spearman_interval"][1] < 0
    scores = {"early_label": anti, "late_label": pro, "early_pred": pro, "late_pred": pro}
    report = decile_report(scores, correct, bins=10, rng=rng, **BOOT)
    assert report["claims"]["early_label"]["holds"]
    assert not report["claims"]["early_pred"]["holds"]
    assert report["flip"]["label"]["measured"] and report["flip"]["label"]["confident"]
    assert report["flip"]["label"]["expected"] is True
    assert not report["flip"]["pred"]["measured"] and not report["flip"]["pred"]["holds"]
    _jsonable(report)


def test_split_key_and_spearman_edge_cases():
    assert split_key("early_label_abs") == ("early", "label_abs")
    assert split_key("vog_late_pred") == ("late", "vog_pred")
    assert split_key("loss") == (None, "loss")
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
    assert spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# stability


def test_identical_runs_are_perfectly_stable_and_a_shuffled_run_is_not():
    rng = _rng(3)
    base = rng.normal(size=800)
    correct = _correct_from(base, rng)
    same = {f"seed{i}": base.copy() for i in range(4)}
    right = {k: correct for k in same}
    out = stability_report(same, right, top_fraction=0.1, rng=rng, **BOOT)
    assert out["std"]["mean"] == 0.0 and out["std"]["max"] == 0.0 and out["std"]["ratio"] == 0.0
    assert out["spearman"]["mean"] == pytest.approx(1.0) and out["spearman"]["min"] == 1.0
    assert out["top_overlap"]["mean"] == 1.0 and out["top_overlap"]["k"] == 80
    assert out["spearman"]["claim"]["holds"] and out["spearman"]["claim"]["confident"]
    assert out["curve_spread"]["mean_std"] == 0.0
    assert out["curve_spread"]["max_range"] == 0.0
    _jsonable(out)

    mixed = dict(same)
    mixed["seed3"] = rng.permutation(base)
    worse = stability_report(mixed, top_fraction=0.1, rng=rng, **BOOT)
    assert worse["std"]["mean"] > 0.1
    assert worse["spearman"]["mean"] < 0.6 and worse["spearman"]["min"] < 0.2
    assert worse["top_overlap"]["mean"] < 0.7 and worse["top_overlap"]["min"] < 0.3
    assert "curves" not in worse
    assert 0.04 < worse["top_overlap"]["chance"] < 0.06  # 0.1 / 1.9


def test_noisy_runs_agree_but_not_perfectly_and_bad_input_fails():
    rng = _rng(4)
    base = rng.normal(size=600)
    runs = {f"r{i}": base + 0.5 * rng.normal(size=base.size) for i in range(3)}
    out = stability_report(runs, rng=rng, kind="batch_size", **BOOT)
    assert 0.5 < out["spearman"]["mean"] < 0.95
    assert out["spearman"]["interval"][0] < out["spearman"]["mean"] < out["spearman"]["interval"][1]
    assert out["spearman"]["claim"]["confident"]
    assert out["top_overlap"]["claim"]["holds"]
    assert "1.9e-5" in out["paper"]
    with pytest.raises(ConfigError, match="at least 2 runs"):
        stability_report({"a": base}, rng=rng, **BOOT)
    with pytest.raises(DataError, match="same N"):
        stability_report({"a": base, "b": base[:10]}, rng=rng, **BOOT)


# ---------------------------------------------------------------------------------------------
# memorization


def test_shifted_noisy_population_is_found():
    rng = _rng(5)
    n = 2000
    noisy = np.zeros(n, bool)
    noisy[rng.choice(n, size=n // 5, replace=False)] = True
    scores = rng.normal(size=n) + noisy * 1.0
    out = welch_test(scores, noisy, n_boot=200, rng=rng)
    assert out["p_two_sided"] < 1e-3 and out["p_one_sided"] < 1e-3
    assert out["t"] > 0 and 0.8 < out["cohen_d"] < 1.2 and out["hedges_g"] < out["cohen_d"]
    assert out["claim"]["holds"] and out["claim"]["confident"]
    ref = st.ttest_ind(scores[noisy], scores[~noisy], equal_var=False)
    assert out["t"] == pytest.approx(ref.statistic)
    assert out["p_two_sided"] == pytest.approx(ref.pvalue)
    assert out["dof"] == pytest.approx(ref.df)
    assert out["mean_difference"] == pytest.approx(out["mean_noisy"] - out["mean_clean"])
    _jsonable(out)

    none = welch_test(rng.normal(size=n), noisy)
    assert none["p_two_sided"] > 0.01 and "interval" not in none["claim"]

    lower = welch_test(-scores, noisy)  # a shift the wrong way: significant, but not the claim
    assert lower["p_two_sided"] < 1e-3 and lower["p_one_sided"] > 0.99
    assert not lower["claim"]["holds"] and lower["cohen_d"] == pytest.approx(-out["cohen_d"])

    report = memorization_report(
        {"vog": scores, "noise": rng.normal(size=n)}, noisy, rng=rng, **BOOT
    )
    assert report["scores"]["vog"]["auroc"]["measured"] > 0.7
    assert report["scores"]["vog"]["auroc"]["confident"]
    assert report["ranking"] == ["vog", "noise"]
    assert report["noise_rate"] == pytest.approx(0.2)
    _jsonable(report)


def test_forgetting_events_hand_counted():
    correct = np.array(
        [
            # e0: always right; e1: learned once; e2: forgotten twice; e3: never learned;
            # e4: right then wrong to the end; e5: wrong, right, wrong, right
            [1, 0, 1, 0, 1, 0],
            [1, 1, 0, 0, 0, 1],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0, 1],
        ],
        dtype=bool,
    )
    assert forgetting_events(correct).tolist() == [0, 0, 2, 4, 1, 1]


def test_checkpoint_means_and_baselines_are_oriented_hard_high():
    el2n = np.array([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [9.0, 9.0]])
    assert el2n_score(el2n).tolist() == pytest.approx([0.3, 0.7])  # the first 3 checkpoints
    assert el2n_score(el2n, checkpoints=[3]).tolist() == [9.0, 9.0]
    assert mean_over_checkpoints(el2n, None).tolist() == pytest.approx([2.475, 2.775])
    label = np.array([0, 1])
    stats = {
        "pred": np.array([[0, 0], [0, 0], [0, 1], [0, 0]]),
        "loss": np.array([[0.1, 2.0]] * 4),
        "margin": np.array([[3.0, -1.0]] * 4),
        "msp": np.array([[0.9, 0.4]] * 4),
        "el2n": el2n,
    }
    out = baseline_scores(stats, label)
    for name in ("loss", "margin", "el2n", "msp"):
        assert out[name][1] > out[name][0], name  # example 1 is the hard one in every stat
    assert out["forgetting"].tolist() == [0.0, 1.0]
    regime = memorization_regime(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0]), [0, 0, 1, 1])
    assert regime["clean_fit"] == 1.0 and regime["noisy_fit"] == 0.5


# ---------------------------------------------------------------------------------------------
# toy: distance to a ReLU network's boundary


def test_linear_boundary_distance_is_analytic():
    rng = _rng(6)
    # Both units stay active for x, y > -10, so g = (x + 10) + 2 (y + 10) - 29.5 there.
    w1, b1 = np.eye(2), np.array([10.0, 10.0])
    w2, b2 = np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([0.0, -29.5])
    points = rng.uniform(-3, 3, size=(300, 2))
    expected = np.abs(points @ np.array([1.0, 2.0]) + 0.5) / np.sqrt(5.0)
    got = boundary_distance(points, w1, b1, w2, b2)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    np.testing.assert_allclose(got, expected, atol=1e-9)  # the region computation is exact
    capped = boundary_distance(points, w1, b1, w2, b2, max_radius=1.0)
    assert np.isinf(capped[expected > 1.0]).all()


def _polygon_net(h: int = 24) -> tuple[np.ndarray, ...]:
    angles = np.linspace(0, 2 * np.pi, h, endpoint=False) + 0.1
    w1 = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    b1 = -np.ones(h)
    w2 = np.stack([np.zeros(h), -np.ones(h)])
    b2 = np.array([0.0, 0.5])
    return w1, b1, w2, b2


def test_closed_boundary_matches_dense_sampling():
    net = _polygon_net()
    rng = _rng(7)
    points = rng.uniform(-3, 3, size=(300, 2))
    got = boundary_distance(points, *net)
    # g falls monotonically along every ray from the origin: bisect for the boundary there.
    theta = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
    dirs = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    lo, hi = np.zeros(theta.size), np.full(theta.size, 5.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        inside = margin(mid[:, None] * dirs, *net) > 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    boundary = lo[:, None] * dirs
    from scipy.spatial import cKDTree

    brute = cKDTree(boundary).query(points)[0]
    assert np.all(got <= brute + 1e-9)  # the exact distance never exceeds a sampled point's
    np.testing.assert_allclose(got, brute, atol=1e-3)
    assert np.all(np.isfinite(got)) and got.max() < 3 * np.sqrt(2)


def test_random_network_matches_grid_and_ray_search():
    rng = _rng(8)
    h = 12
    w1, b1 = rng.normal(size=(h, 2)), rng.normal(size=h)
    w2, b2 = rng.normal(size=(2, h)), rng.normal(size=2)
    points = rng.uniform(-2, 2, size=(150, 2))
    got = boundary_distance(points, w1, b1, w2, b2)
    # Brute force: sign changes of g along the edges of a fine grid, linearly interpolated.
    step = 0.02
    axis = np.arange(-7, 7 + step, step)
    xx, yy = np.meshgrid(axis, axis, indexing="ij")
    g = margin(np.stack([xx.ravel(), yy.ravel()], 1), w1, b1, w2, b2).reshape(xx.shape)
    found = []
    for ga, gb, pa, pb in (
        (g[:-1], g[1:], (xx[:-1], yy[:-1]), (xx[1:], yy[1:])),
        (g[:, :-1], g[:, 1:], (xx[:, :-1], yy[:, :-1]), (xx[:, 1:], yy[:, 1:])),
    ):
        cross = ga * gb < 0
        frac = ga[cross] / (ga[cross] - gb[cross])
        found.append(
            np.stack(
                [
                    pa[0][cross] + frac * (pb[0][cross] - pa[0][cross]),
                    pa[1][cross] + frac * (pb[1][cross] - pa[1][cross]),
                ],
                1,
            )
        )
    from scipy.spatial import cKDTree

    brute = cKDTree(np.concatenate(found)).query(points)[0]
    valid = brute < 4.0  # the nearest boundary point lies inside the grid
    assert valid.sum() > 100
    np.testing.assert_allclose(got[valid], brute[valid], atol=2 * step)
    units = np.stack([np.cos(a := np.linspace(0, 2 * np.pi, 1024, endpoint=False)), np.sin(a)], 1)
    rays = _ray_distances(points, units, w1, b1, w2[1] - w2[0], float(b2[1] - b2[0]))
    assert np.all(got <= rays + 1e-9)
    np.testing.assert_allclose(rays, got, rtol=1e-2)  # corners cost the rays a little


def test_no_boundary_gives_inf():
    w1, b1 = np.eye(2), np.zeros(2)
    w2, b2 = np.zeros((2, 2)), np.array([0.0, 1.0])  # f1 - f0 = 1 everywhere
    assert np.isinf(boundary_distance(np.zeros((3, 2)), w1, b1, w2, b2)).all()


def test_toy_report_vog_falls_with_distance():
    rng = _rng(9)
    distance = rng.uniform(0, 3, size=400)
    vog = -distance + 0.3 * rng.normal(size=distance.size)
    out = toy_report(vog, distance, rng=rng, **BOOT)
    assert out["spearman"] < -0.8
    assert out["claim"]["expected"] == "negative"
    assert out["claim"]["holds"] and out["claim"]["confident"]
    assert out["distance_by_vog_bucket"][0] > out["distance_by_vog_bucket"][-1]
    _jsonable(out)
    flipped = toy_report(distance, distance, rng=rng, **BOOT)
    assert not flipped["claim"]["holds"]


# The hand-written statistics are kept (their bits are in the pipeline's committed reports) and
# pinned here to the libraries they stand beside, on random data, within rounding.


def _two_groups(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    noisy = rng.random(n) < rng.uniform(0.1, 0.5)
    noisy[:2], noisy[2:4] = True, False
    scale = np.where(noisy, rng.uniform(0.5, 3.0), 1.0)
    scores = rng.normal(size=n) * scale + rng.normal(scale=0.5) * noisy
    return scores, noisy


@pytest.mark.parametrize("seed", range(8))
def test_welch_test_equals_scipy_unequal_variance_t_test(seed: int) -> None:
    scores, noisy = _two_groups(seed, n=int(_rng(seed).integers(6, 3000)))
    out = welch_test(scores, noisy)
    two = st.ttest_ind(scores[noisy], scores[~noisy], equal_var=False)
    one = st.ttest_ind(scores[noisy], scores[~noisy], equal_var=False, alternative="greater")
    assert out["t"] == pytest.approx(float(two.statistic), rel=1e-12, abs=0)
    assert out["dof"] == pytest.approx(float(two.df), rel=1e-12, abs=0)
    assert out["p_two_sided"] == pytest.approx(float(two.pvalue), rel=1e-12, abs=1e-300)
    assert out["p_one_sided"] == pytest.approx(float(one.pvalue), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("seed", range(8))
def test_auroc_rank_formula_equals_sklearn(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    from vogflow.analysis.stats import auroc

    scores, positive = _two_groups(seed, n=int(_rng(seed).integers(6, 3000)))
    if seed % 2:  # ties count half in both
        scores = np.round(scores, 1)
    expected = float(roc_auc_score(positive, scores))
    assert auroc(scores, positive) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_bootstrap_ci_equals_scipy_percentile_bootstrap(seed: int) -> None:
    """Same draws (rows resampled jointly, one ``integers(0, n)`` stream), same percentile
    interval, wherever every resample is defined: scipy's bootstrap raises or returns NaN where
    ours drops an undefined resample, so ours is kept."""
    from vogflow.analysis.stats import auroc, bootstrap_ci

    scores, noisy = _two_groups(seed, n=400)
    for statistic in (auroc, spearman):
        ours = bootstrap_ci(statistic, scores, noisy, n_boot=300, confidence=0.9, rng=_rng(seed))
        theirs = st.bootstrap(
            (scores, noisy),
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=300,
            confidence_level=0.9,
            method="percentile",
            rng=_rng(seed),
        ).confidence_interval
        assert ours == pytest.approx(tuple(map(float, theirs)), rel=1e-12, abs=1e-15)


def test_bootstrap_ci_drops_undefined_resamples() -> None:
    from vogflow.analysis.stats import auroc, bootstrap_ci

    scores = _rng(3).normal(size=20)
    positive = np.zeros(20, bool)
    positive[0] = True  # most resamples miss the one positive: auroc is undefined there
    lo, hi = bootstrap_ci(auroc, scores, positive, n_boot=200, confidence=0.95, rng=_rng(0))
    assert 0.0 <= lo <= hi <= 1.0
    assert bootstrap_ci(auroc, scores, positive, n_boot=0, confidence=0.95, rng=_rng(0)) == (
        pytest.approx(float("nan"), nan_ok=True),
        pytest.approx(float("nan"), nan_ok=True),
    )
