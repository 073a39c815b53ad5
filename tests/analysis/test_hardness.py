"""Hardness baselines: hand-computed AUM, forgetting and data maps; every score hard-high."""

from __future__ import annotations

import numpy as np
import pytest

from vogflow.analysis.hardness import (
    BASELINES,
    area_under_margin,
    baseline_scores,
    data_map,
    forgetting_events,
)
from vogflow.paper import memorization

LABEL = np.array([0, 1, 2])
# K = 4 checkpoints (rows, in training order) of N = 3 examples (columns).
MARGIN = np.array(
    [
        [2.0, -1.0, 0.5],
        [3.0, -2.0, -0.5],
        [1.0, 1.0, 1.5],
        [4.0, -3.0, -1.5],
    ]
)
PRED = np.array(
    [
        [0, 0, 2],  # correct: T F T
        [0, 1, 1],  # correct: T T F
        [1, 0, 2],  # correct: F F T
        [0, 0, 1],  # correct: T F F
    ]
)
P_LABEL = np.array(
    [
        [0.5, 0.2, 0.1],
        [0.5, 0.2, 0.3],
        [1.0, 0.2, 0.1],
        [1.0, 0.2, 0.3],
    ]
)


def _tiny_stats() -> dict[str, np.ndarray]:
    return {
        "pred": PRED,
        "loss": -np.log(P_LABEL),
        "margin": MARGIN,
        "el2n": np.array([[0.1, 0.9, 0.5]] * 4),
        "msp": np.array([[0.9, 0.5, 0.4]] * 4),
    }


def test_aum_is_the_mean_margin_hand_computed():
    assert area_under_margin(MARGIN).tolist() == pytest.approx([2.5, -1.25, 0.0])
    late = area_under_margin(MARGIN, idx=[1, 2, 3])
    assert late.tolist() == pytest.approx([8 / 3, -4 / 3, -1 / 6])
    out = baseline_scores(_tiny_stats(), LABEL)
    assert out["aum"].tolist() == pytest.approx([-2.5, 1.25, 0.0])  # negated: hard = high


def test_forgetting_counts_correct_to_incorrect_hand_computed():
    correct = PRED == LABEL[None, :]
    # e0: T T F T (1); e1: F T F F (1); e2: T F T F (2).
    assert forgetting_events(correct).tolist() == [1, 1, 2]
    assert baseline_scores(_tiny_stats(), LABEL)["forgetting"].tolist() == [1.0, 1.0, 2.0]
    # Over checkpoints 1..3 only: e0 T F T, e1 T F F, e2 F T F -> one event each.
    sub = baseline_scores(_tiny_stats(), LABEL, idx=[1, 2, 3])
    assert sub["forgetting"].tolist() == [1.0, 1.0, 1.0]


def test_data_map_and_final_scores_hand_computed():
    confidence, variability = data_map(-np.log(P_LABEL))
    assert confidence.tolist() == pytest.approx([0.75, 0.2, 0.2])
    assert variability.tolist() == pytest.approx([0.25, 0.0, 0.1])  # population std
    out = baseline_scores(_tiny_stats(), LABEL)
    assert list(out) == list(BASELINES)
    assert out["datamap_confidence"].tolist() == pytest.approx([-0.75, -0.2, -0.2])
    assert out["datamap_variability"].tolist() == pytest.approx([0.25, 0.0, 0.1])
    assert out["loss"].tolist() == pytest.approx([0.0, -np.log(0.2), -np.log(0.3)])  # final
    assert out["margin"].tolist() == [-4.0, 3.0, 1.5]  # negated final margin
    assert out["msp"].tolist() == pytest.approx([-0.9, -0.5, -0.4])
    assert out["el2n"].tolist() == pytest.approx([0.1, 0.9, 0.5])
    assert out["disagree"].tolist() == [0.0, 1.0, 1.0]  # final pred 0, 0, 1 vs labels 0, 1, 2
    # "final" is the last selected checkpoint.
    early = baseline_scores(_tiny_stats(), LABEL, idx=[0, 1])
    assert early["margin"].tolist() == [-3.0, 2.0, 0.5]
    assert early["disagree"].tolist() == [0.0, 0.0, 1.0]


def test_every_baseline_is_higher_for_the_harder_example():
    # Example 1 is worse than example 0 at every checkpoint, in every statistic.
    k = 5
    stats = {
        "pred": np.array([[0, 0], [0, 1], [0, 0], [0, 1], [0, 0]]),
        "loss": np.array([[0.05, 1.5], [0.05, 0.7], [0.05, 2.0], [0.05, 0.6], [0.05, 1.8]]),
        "margin": np.array([[4.0, -1.0]] * k),
        "el2n": np.array([[0.1, 1.1]] * k),
        "msp": np.array([[0.95, 0.4]] * k),
    }
    out = baseline_scores(stats, np.array([0, 1]))
    assert set(out) == set(BASELINES)
    for name, score in out.items():
        assert score[1] > score[0], name


def test_missing_statistics_give_only_their_scores_and_bad_shapes_are_refused():
    out = baseline_scores({"margin": MARGIN}, LABEL)
    assert list(out) == ["margin", "aum"]
    assert baseline_scores({}, LABEL) == {}
    with pytest.raises(ValueError, match="one \\(K, N\\) shape"):
        baseline_scores({"margin": MARGIN, "loss": MARGIN[:2]}, LABEL)
    with pytest.raises(ValueError, match="label"):
        baseline_scores({"margin": MARGIN}, np.array([0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        baseline_scores({"margin": MARGIN}, LABEL, idx=[4])


def test_the_baselines_have_one_home():
    # One way to say each thing: the paper's memorization study imports the baselines from
    # analysis.hardness and does not hand them on under a second name.
    for name in ("baseline_scores", "forgetting_events", "el2n_score", "mean_over_checkpoints"):
        assert not hasattr(memorization, name), name
    assert baseline_scores.__module__ == forgetting_events.__module__ == "vogflow.analysis.hardness"
