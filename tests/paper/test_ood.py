"""OoD detectors and the Table 1 summary, checked on planted answers."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
from numerics import assert_arrays_close

from vogflow.analysis.stats import auroc
from vogflow.errors import ConfigError, DataError
from vogflow.paper import ood, ood_table

N_TRAIN, N_TEST = 200, 100


def _low_rank_blob(rng: np.random.Generator, n: int, d: int, shift: np.ndarray | None = None):
    # In-distribution data with structure (3 latent factors plus small noise), so that subspace
    # and reconstruction detectors have something to learn, not only isotropic noise.
    mixing = np.random.default_rng(123).normal(size=(3, d))
    x = rng.normal(size=(n, 3)) @ mixing + 0.3 * rng.normal(size=(n, d))
    return x if shift is None else x + shift


def _shifted_case(d: int, magnitude: float = 20.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    train = _low_rank_blob(rng, N_TRAIN, d)
    clean = _low_rank_blob(rng, N_TEST, d)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    far = _low_rank_blob(rng, N_TEST, d, shift=magnitude * direction)
    labels = (train @ np.ones(d) > 0).astype(int)  # two arbitrary classes for 'gaussian'
    test = np.vstack([clean, far])
    is_out = np.r_[np.zeros(N_TEST, bool), np.ones(N_TEST, bool)]
    return train, labels, test, is_out


@pytest.mark.parametrize("d", [10, 64])
@pytest.mark.parametrize("name", ood.FEATURE_DETECTORS)
def test_detector_flags_a_far_shifted_blob(name, d):
    train, labels, test, is_out = _shifted_case(d)
    scores = ood.fit_score(name, train, test, rng=np.random.default_rng(1), train_labels=labels)
    assert scores.shape == (2 * N_TEST,)
    assert np.isfinite(scores).all()
    # Higher = more OoD: a flipped sign would give an AUROC near 0, not above 0.95.
    assert auroc(scores, is_out) > 0.95


@pytest.mark.parametrize("name", ood.FEATURE_DETECTORS)
def test_detector_scores_each_test_row_on_its_own(name):
    # A detector sees only the training rows (and their labels): scoring the test rows in two
    # batches, or in reverse order, gives the same score per row, so no test row (nor which rows
    # are corrupted) can shape the reference distribution.
    train, labels, test, _ = _shifted_case(16, magnitude=5.0)

    def score(rows):
        return ood.fit_score(name, train, rows, rng=np.random.default_rng(7), train_labels=labels)

    whole = score(test)
    halves = np.concatenate([score(test[:N_TEST]), score(test[N_TEST:])])
    reversed_ = score(test[::-1])[::-1]
    assert_arrays_close(halves, whole)
    assert_arrays_close(reversed_, whole)


def test_detectors_take_no_test_labels():
    train, labels, test, is_out = _shifted_case(10)
    for name in ood.FEATURE_DETECTORS:
        with pytest.raises(TypeError, match="test_labels"):
            ood.fit_score(name, train, test, rng=np.random.default_rng(0), test_labels=is_out)


def test_seeded_detectors_repeat_exactly():
    train, labels, test, _ = _shifted_case(16, magnitude=5.0)
    for name in ("kpca", "mve", "ae"):
        kwargs = {"max_train": 50} if name == "kpca" else {}  # forces the seeded subsample
        a = ood.fit_score(name, train, test, rng=np.random.default_rng(3), **kwargs)
        b = ood.fit_score(name, train, test, rng=np.random.default_rng(3), **kwargs)
        np.testing.assert_array_equal(a, b)  # the same computation, rerun: the same bits


def test_gaussian_uses_class_structure_a_single_blob_misses():
    # Two tight classes at -5 and +5 on the first axis; the OoD points sit between them, at the
    # centre of the pooled data. One Gaussian over all training rows calls the centre typical;
    # class-conditional Gaussians call it far from both classes.
    rng = np.random.default_rng(0)
    d = 10
    centre = np.zeros(d)
    centre[0] = 5.0
    labels = np.repeat([0, 1], N_TRAIN // 2)
    train = np.where(labels[:, None] == 0, -centre, centre) + 0.5 * rng.normal(size=(N_TRAIN, d))
    test_labels = np.repeat([0, 1], N_TEST // 2)
    clean = np.where(test_labels[:, None] == 0, -centre, centre)
    clean = clean + 0.5 * rng.normal(size=(N_TEST, d))
    between = 0.5 * rng.normal(size=(N_TEST, d))
    test = np.vstack([clean, between])
    is_out = np.r_[np.zeros(N_TEST, bool), np.ones(N_TEST, bool)]

    gen = np.random.default_rng(0)
    per_class = ood.fit_score("gaussian", train, test, rng=gen, train_labels=labels)
    one_blob = ood.fit_score("gaussian", train, test, rng=gen, train_labels=np.zeros(N_TRAIN))
    assert auroc(per_class, is_out) > 0.95
    assert auroc(one_blob, is_out) < 0.5


def test_gaussian_needs_train_labels_and_handles_singular_covariance():
    rng = np.random.default_rng(0)
    train = np.zeros((30, 8))
    train[:, :2] = rng.normal(size=(30, 2))  # six constant features: a singular covariance
    test = np.vstack([train[:5], train[:5] + 10.0])
    with pytest.raises(ConfigError, match="train_labels"):
        ood.fit_score("gaussian", train, test, rng=rng)
    scores = ood.fit_score("gaussian", train, test, rng=rng, train_labels=np.zeros(30))
    assert np.isfinite(scores).all()
    assert scores[5:].min() > scores[:5].max()


def test_unknown_detector_names_the_valid_ones():
    x = np.zeros((5, 2))
    with pytest.raises(ConfigError, match="valid: kde, pca, kpca, svdd, mve, gaussian, ae"):
        ood.fit_score("lof", x, x, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="scored from the trained model"):
        ood.get_detector("vog")
    with pytest.raises(TypeError, match="bandwdth"):
        ood.fit_score("kde", x, x, rng=np.random.default_rng(0), bandwdth=1.0)


def test_registry_covers_the_configured_detectors():
    config = pytest.importorskip("vogflow.config.paper")
    assert set(ood.FEATURE_DETECTORS) | set(ood.MODEL_SCORES) == set(config.DETECTORS)


def test_feature_shapes_are_checked():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="must match"):
        ood.fit_score("pca", np.ones((10, 3)), np.ones((4, 2)), rng=rng)
    with pytest.raises(DataError, match="2-D"):
        ood.fit_score("pca", np.ones(10), np.ones((4, 1)), rng=rng)
    bad = np.ones((10, 3))
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ood.fit_score("pca", bad, np.ones((4, 3)), rng=rng)


def test_separated_scores_give_perfect_metrics_and_reversed_give_zero_auroc():
    clean = np.array([0.0, 1.0, 2.0, 3.0])
    corrupt = np.array([5.0, 6.0])
    m = ood_table.corruption_metrics(clean, corrupt)
    assert (m["auroc"], m["aupr_in"], m["aupr_out"]) == (1.0, 1.0, 1.0)
    assert (m["n_clean"], m["n_out"]) == (4, 2)
    assert ood_table.corruption_metrics(corrupt, clean)["auroc"] == 0.0


def _hand_rows():
    values = {
        # method: per-corruption (auroc, aupr_in, aupr_out) as fractions
        "vog": [(0.9, 0.8, 0.85), (0.7, 0.6, 0.65), (0.8, 0.9, 0.75)],
        "kde": [(0.5, 0.55, 0.6), (0.3, 0.35, 0.4), (0.4, 0.45, 0.5)],
    }
    corruptions = ["shot_noise", "rotate", "fog"]
    rows = [
        {"corruption": c, "method": m, "auroc": a, "aupr_in": i, "aupr_out": o}
        for m, triples in values.items()
        for c, (a, i, o) in zip(corruptions, triples, strict=True)
    ]
    return values, rows


def test_summary_table_means_and_stds_over_corruptions():
    values, rows = _hand_rows()
    table = ood_table.summary_table(rows)
    assert list(table.columns) == [
        "auroc_mean",
        "auroc_std",
        "aupr_in_mean",
        "aupr_in_std",
        "aupr_out_mean",
        "aupr_out_std",
        "n_corruptions",
    ]
    assert list(table.index) == ["kde", "vog"]  # ascending AUROC, as the paper lists them
    for method, triples in values.items():
        for j, metric in enumerate(("auroc", "aupr_in", "aupr_out")):
            percents = [100 * t[j] for t in triples]
            assert table.loc[method, f"{metric}_mean"] == pytest.approx(statistics.mean(percents))
            assert table.loc[method, f"{metric}_std"] == pytest.approx(statistics.stdev(percents))
        assert table.loc[method, "n_corruptions"] == 3
    pop = ood_table.summary_table(rows, ddof=0)
    assert pop.loc["vog", "auroc_std"] == pytest.approx(statistics.pstdev([90, 70, 80]))


def test_evaluate_then_summarise_from_scores():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=50)
    scores = {
        "shot_noise": {"vog": (clean, clean + 10.0), "msp": (clean, clean - 10.0)},
        "rotate": {"vog": (clean, clean + 10.0), "msp": (clean, clean + 10.0)},
    }
    rows = ood_table.evaluate(scores)
    assert isinstance(rows, pd.DataFrame)
    assert len(rows) == 4
    assert set(rows["n_clean"]) == {50}
    table = ood_table.summary_table(rows)
    assert table.loc["vog", "auroc_mean"] == pytest.approx(100.0)
    assert table.loc["vog", "auroc_std"] == pytest.approx(0.0)
    assert table.loc["msp", "auroc_mean"] == pytest.approx(50.0)  # one perfect, one reversed
    assert table.loc["msp", "auroc_std"] == pytest.approx(statistics.stdev([0.0, 100.0]))


def test_summary_table_rejects_duplicates():
    _, rows = _hand_rows()
    with pytest.raises(DataError, match="more than once"):
        ood_table.summary_table(rows + rows[:1])


def test_markdown_has_every_method_and_the_published_numbers():
    _, rows = _hand_rows()
    rows = rows + [{**r, "method": "msp"} for r in rows[:3]]
    text = ood_table.to_markdown(ood_table.summary_table(rows))
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| Method | AUROC | AUPR-In | AUPR-Out |")
    vog_line = next(line for line in lines if line.startswith("| VoG |"))
    assert "80.00 ± 10.00" in vog_line  # measured AUROC of the hand-built rows
    assert "85.42 ± 10.28" in vog_line  # the paper's
    assert any(line.startswith("| KDE |") and "57.46 ± 32.09" in line for line in lines)
    msp_line = next(line for line in lines if line.startswith("| msp |"))
    assert msp_line.rstrip(" |").endswith("–")  # the paper has no MSP row


def test_paper_table1_is_complete():
    table = ood_table.paper_table1()
    assert len(table) == 10
    assert table["vog"]["auroc_mean"] == 85.42
    assert table["aegan"]["aupr_out_std"] == 9.46
    order = sorted(table, key=lambda k: table[k]["auroc_mean"])
    assert order == list(table)  # listed in the paper's ascending order


def test_auroc_claim_direction_and_interval():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=100)
    good = ood_table.auroc_claim(clean, rng.normal(loc=2.0, size=100), rng=np.random.default_rng(1))
    assert good["expected"] == "above" and good["null"] == 0.5
    assert good["holds"] and good["confident"]
    lo, hi = good["interval"]
    assert 0.5 < lo <= good["measured"] <= hi <= 1.0
    assert good["published"] == pytest.approx(0.8542)

    bad = ood_table.auroc_claim(
        clean, rng.normal(loc=-2.0, size=100), rng=np.random.default_rng(1), method="msp"
    )
    assert not bad["holds"] and not bad["confident"]
    assert bad["published"] is None

    chance = ood_table.auroc_claim(clean, rng.normal(size=100), rng=np.random.default_rng(1))
    lo, hi = chance["interval"]
    assert lo < 0.5 < hi and not chance["confident"]
