"""The VoG equations (vog.py) against the paper's definition written out directly."""

from __future__ import annotations

import numpy as np
import pytest
from vog_reference import direct_vog

from vogflow.scoring import vog


def test_vog_raw_matches_direct_definition():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(5, 7, 4, 6))  # K, N, H, W (channel-averaged)
    np.testing.assert_allclose(vog.vog_raw(grads), direct_vog(grads), rtol=1e-12)


def test_vog_raw_is_not_a_known_misreading():
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(4, 9, 3, 3))
    k = grads.shape[0]
    mu = grads.mean(0)
    misreading = (np.sqrt(1 / k) * ((grads - mu) ** 2).sum(0)).reshape(9, -1).mean(1)
    sample_std = grads.std(0, ddof=1).reshape(9, -1).mean(1)
    variance = grads.var(0).reshape(9, -1).mean(1)
    score = vog.vog_raw(grads)
    for wrong in (misreading, sample_std, variance):
        assert not np.allclose(score, wrong, rtol=1e-3)


def test_identical_checkpoints_give_zero():
    grads = np.repeat(np.random.default_rng(2).normal(size=(1, 5, 4, 4)), 6, axis=0)
    assert np.array_equal(vog.vog_raw(grads), np.zeros(5))


def test_checkpoint_order_does_not_matter():
    grads = np.random.default_rng(3).normal(size=(6, 5, 2, 2))
    np.testing.assert_allclose(vog.vog_raw(grads), vog.vog_raw(grads[::-1]), rtol=1e-12)


def test_window_indices():
    assert vog.window_indices(10, "early").tolist() == [0, 1, 2]
    assert vog.window_indices(10, "late").tolist() == [7, 8, 9]
    assert vog.window_indices(10, "all").tolist() == list(range(10))
    assert vog.window_indices(10, "late", size=4).tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        vog.window_indices(1, "all")
    with pytest.raises(ValueError, match="unknown window"):
        vog.window_indices(5, "middle")


def test_class_normalise_z():
    rng = np.random.default_rng(4)
    scores = rng.gamma(2.0, size=300)
    classes = rng.integers(0, 3, size=300)
    z = vog.class_normalise(scores, classes, method="z")
    for c in range(3):
        assert abs(z[classes == c].mean()) < 1e-12
        assert abs(z[classes == c].std() - 1) < 1e-12
    np.testing.assert_allclose(vog.class_normalise(scores, classes, method="abs"), np.abs(z))
    np.testing.assert_array_equal(vog.class_normalise(scores, classes, method="none"), scores)


def test_class_normalise_singleton_and_constant_classes_get_zero():
    scores = np.array([5.0, 1.0, 2.0, 3.0, 7.0, 7.0])
    classes = np.array([0, 1, 1, 1, 2, 2])
    z = vog.class_normalise(scores, classes)
    assert z[0] == 0.0 and z[4] == 0.0 and z[5] == 0.0
    np.testing.assert_allclose(z[1:4], (scores[1:4] - 2.0) / np.std([1.0, 2.0, 3.0]))


def test_percentiles_and_deciles():
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    assert vog.deciles(scores).tolist() == [5, 1, 9, 3, 7, 2, 8, 4, 6, 0]
    assert vog.percentiles(scores).max() < 100
    assert vog.deciles(np.arange(25.0), n=5).tolist() == sorted(list(range(5)) * 5)


@pytest.mark.parametrize("k", [4, 5])
def test_a_window_as_long_as_the_run_is_refused_not_collapsed(k):
    # With no more checkpoints than the window, early, late and all are the same checkpoints.
    for window in ("early", "late"):
        with pytest.raises(ValueError) as err:
            vog.window_indices(k, window, size=5)
        assert str(err.value) == (
            f"window {window!r} of size 5 over {k} checkpoints: the early and late windows of 5 "
            f"checkpoints would each hold all {k}, so the early, late and all windows would be "
            f"the same checkpoints; use a window size below {k}, more checkpoints, or only the "
            "'all' window"
        )
    # The all window does not depend on the size; one checkpoint more than the window is a window.
    assert vog.window_indices(4, "all", size=5).tolist() == [0, 1, 2, 3]
    assert vog.window_indices(5, "late", size=4).tolist() == [1, 2, 3, 4]
