"""Does VoG single out memorised (shuffled-label) training examples? (paper §4.1).

One job: compare the scores of examples whose training label was shuffled with the rest: Welch's
unequal-variance t-test (the paper's test), an effect size and the mean difference with an
interval in the expected direction (noisy higher), and each candidate score's AUROC at finding the
noisy examples. The baseline difficulty scores VoG is compared with live in
:mod:`vogflow.analysis.hardness`.

Arrays in, plain JSON-able dicts out; numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vogflow.analysis.stats import auroc, bootstrap_ci, claim, detection_metrics
from vogflow.errors import ConfigError, DataError

__all__ = [
    "PAPER",
    "memorization_regime",
    "memorization_report",
    "welch_test",
]

PAPER = (
    "paper §4.1: 20% shuffled labels, 0% training error; Welch t-test of VoG, shuffled vs rest, "
    "p < 0.001 on CIFAR-10 and CIFAR-100 (two-sided); §1: memorised examples get higher VoG"
)


def _split(scores: np.ndarray, noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    noisy = np.asarray(noisy).astype(bool)
    if scores.ndim != 1 or scores.shape != noisy.shape:
        raise DataError(f"scores {scores.shape} and noisy {noisy.shape} must both be (N,)")
    return scores[noisy], scores[~noisy]


def _mean_difference(scores: np.ndarray, noisy: np.ndarray) -> float:
    a, b = _split(scores, noisy)
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(a.mean() - b.mean())


def welch_test(
    scores: np.ndarray,
    noisy: np.ndarray,
    *,
    n_boot: int = 0,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Welch's unequal-variance t-test of noisy vs clean scores, with direction and effect size.

    Args:
        scores: ``(N,)`` score, higher = more likely memorised (e.g. VoG).
        noisy: ``(N,)`` bool, the example's training label was shuffled. Each group needs at least
            2 examples.
        n_boot, confidence, rng: percentile bootstrap (examples resampled jointly) of the mean
            difference; ``n_boot=0`` gives no interval.

    Returns:
        ``t`` (positive = noisy higher), ``dof`` (Welch-Satterthwaite), ``p_two_sided``,
        ``p_one_sided`` (alternative: noisy mean greater, the expected direction), ``cohen_d``
        (pooled-std, ddof 1) and ``hedges_g`` (small-sample corrected), ``mean_noisy``,
        ``mean_clean``, ``std_noisy``, ``std_clean``, ``n_noisy``, ``n_clean``,
        ``mean_difference`` and ``claim`` (:func:`stats.claim`, expected ``greater``, with
        ``interval`` when bootstrapped).

    ``t``, ``dof`` and the p-values equal ``scipy.stats.ttest_ind(equal_var=False)``'s within
    rounding (pinned in the tests), not to the bit that the committed reports carry.
    """
    from scipy import stats as st

    a, b = _split(scores, noisy)
    if a.size < 2 or b.size < 2:
        raise DataError(
            f"the t-test needs at least 2 noisy and 2 clean examples, got {a.size} and {b.size}"
        )
    n1, n0 = a.size, b.size
    v1, v0 = a.var(ddof=1), b.var(ddof=1)
    se2 = v1 / n1 + v0 / n0
    diff = float(a.mean() - b.mean())
    with np.errstate(invalid="ignore", divide="ignore"):
        t = diff / np.sqrt(se2)
        dof = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v0 / n0) ** 2 / (n0 - 1))
        pooled = np.sqrt(((n1 - 1) * v1 + (n0 - 1) * v0) / (n1 + n0 - 2))
        d = diff / pooled
    p_two = float(2 * st.t.sf(abs(t), dof)) if np.isfinite(t) else float("nan")
    p_one = float(st.t.sf(t, dof)) if np.isfinite(t) else float("nan")
    interval = None
    if n_boot > 0:
        if rng is None:
            raise ConfigError("a bootstrap interval (n_boot > 0) needs a seeded rng")
        interval = bootstrap_ci(
            _mean_difference, scores, noisy, n_boot=n_boot, confidence=confidence, rng=rng
        )
    return {
        "t": float(t),
        "dof": float(dof),
        "p_two_sided": p_two,
        "p_one_sided": p_one,
        "cohen_d": float(d),
        "hedges_g": float(d * (1 - 3 / (4 * (n1 + n0) - 9))),
        "mean_noisy": float(a.mean()),
        "mean_clean": float(b.mean()),
        "std_noisy": float(np.sqrt(v1)),
        "std_clean": float(np.sqrt(v0)),
        "n_noisy": int(n1),
        "n_clean": int(n0),
        "mean_difference": diff,
        "claim": claim("greater", diff, interval=interval, name="mean(noisy) - mean(clean)"),
    }


def memorization_report(
    scores_by_name: Mapping[str, np.ndarray],
    noisy: np.ndarray,
    *,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Each candidate score's power to find the shuffled-label examples.

    Args:
        scores_by_name: name -> ``(N,)`` score over the training examples, already oriented so
            that higher = more likely memorised (VoG variants, loss, negated margin, EL2N,
            forgetting events; see :func:`hardness.baseline_scores`).
        noisy: ``(N,)`` bool, the training label was shuffled.
        n_boot, confidence, rng: percentile bootstrap over examples.

    Returns:
        ``n``, ``n_noisy``, ``noise_rate``, ``paper``; ``scores``: name -> ``auroc`` (claim
        expected ``above`` 0.5 with interval), ``aupr_out`` (noisy as positive; chance =
        ``noise_rate``), ``aupr_in``, ``welch`` (:func:`welch_test` with interval); ``ranking``
        (names by AUROC, best first).
    """
    noisy = np.asarray(noisy).astype(bool)
    boot = {"n_boot": n_boot, "confidence": confidence, "rng": rng}
    per_score: dict[str, Any] = {}
    for name, scores in scores_by_name.items():
        scores = np.asarray(scores, dtype=np.float64)
        metrics = detection_metrics(scores, noisy)
        interval = bootstrap_ci(auroc, scores, noisy, **boot)
        per_score[name] = {
            "auroc": claim("above", metrics["auroc"], interval=interval, null=0.5, name="auroc"),
            "aupr_out": metrics["aupr_out"],
            "aupr_in": metrics["aupr_in"],
            "welch": welch_test(scores, noisy, **boot),
        }
    ranking = sorted(per_score, key=lambda k: -per_score[k]["auroc"]["measured"])
    return {
        "n": int(noisy.size),
        "n_noisy": int(noisy.sum()),
        "noise_rate": float(noisy.mean()),
        "paper": PAPER,
        "scores": per_score,
        "ranking": ranking,
        "n_boot": int(n_boot),
        "confidence": float(confidence),
    }


def memorization_regime(pred: np.ndarray, label: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    """Whether the run memorised its shuffled labels: the regime the §4.1 claim depends on.

    ``pred``, ``label`` (the labels the run trained on, shuffled ones included), ``noisy``: ``(N,)``
    over the training set, ``pred`` from the final checkpoint. Returns ``train_accuracy`` on the
    trained labels, ``clean_fit`` and ``noisy_fit`` (share of clean / noisy examples predicted as
    their trained label: ``noisy_fit`` near 1 = memorised) and the paper's regime.
    """
    pred, label = np.asarray(pred), np.asarray(label)
    noisy = np.asarray(noisy).astype(bool)
    fit = pred == label

    def share(mask: np.ndarray) -> float:
        return float(fit[mask].mean()) if mask.any() else float("nan")

    return {
        "train_accuracy": float(fit.mean()),
        "clean_fit": share(~noisy),
        "noisy_fit": share(noisy),
        "paper": "0% training error: every shuffled label memorised (noisy_fit = 1)",
    }
