"""Shared statistics: detection metrics, bootstrap intervals, and claims stated with direction.

Every score passed here is "higher = more of the positive class" (harder, more out-of-distribution,
more likely memorised); callers flip a score whose hard direction is low before calling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _binary(positive: np.ndarray) -> np.ndarray:
    positive = np.asarray(positive).astype(bool)
    if positive.all() or not positive.any():
        raise ValueError("detection metrics need both positive and negative examples")
    return positive


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half).

    Equal to ``sklearn.metrics.roc_auc_score`` within rounding (pinned in the tests), but not to
    the bit, and the committed reports carry these bits: the rank formula stays.
    """
    from scipy.stats import rankdata

    positive = _binary(positive)
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    n_pos = positive.sum()
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def aupr(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision) with ``positive`` as the class."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(_binary(positive), np.asarray(scores, dtype=np.float64)))


def detection_metrics(scores: np.ndarray, is_out: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-In and AUPR-Out for a score where higher = more out-of-distribution.

    AUPR-In treats in-distribution examples as positive and ranks them by the negated score;
    AUPR-Out treats the outliers as positive (the paper's definitions).
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_out = _binary(is_out)
    return {
        "auroc": auroc(scores, is_out),
        "aupr_in": aupr(-scores, ~is_out),
        "aupr_out": aupr(scores, is_out),
    }


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling rows jointly.

    Resamples on which the statistic is undefined (raises ``ValueError`` or returns NaN, e.g. a
    resample with a single class) are dropped. Returns ``(nan, nan)`` when ``n_boot`` is 0 or no
    resample is defined.

    The draws and the interval are ``scipy.stats.bootstrap(..., paired=True,
    method="percentile")``'s within rounding (pinned in the tests), but scipy raises or gives NaN
    where a resample is undefined instead of dropping it, and differs in the last bit of some
    intervals: this loop stays.
    """
    n = len(arrays[0])
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, size=n)
        try:
            value = statistic(*(np.asarray(a)[pick] for a in arrays))
        except ValueError:
            continue
        if np.isfinite(value):
            values.append(value)
    lo, hi = percentile_interval(np.asarray(values, dtype=np.float64), confidence)
    return (lo, hi)


def percentile_interval(values: np.ndarray, confidence: float) -> list[float]:
    """``[lo, hi]`` percentile interval of bootstrap ``values``, ignoring non-finite ones (NaN if
    none is left)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


DIRECTIONS = (
    "increasing",
    "decreasing",
    "positive",
    "negative",
    "greater",
    "less",
    "above",
    "below",
)


def claim(
    expected: str,
    measured: float,
    *,
    interval: tuple[float, float] | None = None,
    null: float = 0.0,
    name: str = "",
) -> dict[str, Any]:
    """A paper claim next to what this data says.

    ``expected`` is the direction the paper reports (``increasing``, ``positive``,
    ``greater`` and ``above`` mean ``measured > null``; the others mean ``measured < null``).
    ``holds``: the measured value lies on the expected side; ``confident``: the whole interval does.
    """
    if expected not in DIRECTIONS:
        raise ValueError(f"unknown direction {expected!r}; valid: {', '.join(DIRECTIONS)}")
    up = expected in ("increasing", "positive", "greater", "above")
    holds = bool(measured > null) if up else bool(measured < null)
    out: dict[str, Any] = {
        "expected": expected,
        "measured": float(measured),
        "null": null,
        "holds": holds,
    }
    if name:
        out["statistic"] = name
    if interval is not None:
        lo, hi = interval
        out["interval"] = [float(lo), float(hi)]
        out["confident"] = bool(lo > null) if up else bool(hi < null)
    return out
