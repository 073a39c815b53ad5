"""Error rate by VoG bucket, and the paper's decile claims (Figs. 4, 5, 12a; §3 items 2 and 5).

One job: turn a score per example and whether the model got each example right into the
"error per VoG decile" curve, its trend with an interval, and the paper's expected direction
beside the measured one. Bucket 0 holds the lowest scores (easiest when higher = harder).

Arrays in, plain JSON-able dicts out; numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vogflow.analysis.ranks import spearman
from vogflow.analysis.stats import claim, percentile_interval
from vogflow.config.names import LABEL_MODES, WINDOWS
from vogflow.scoring.vog import deciles

TREND = "spearman(bucket, error)"

# What the paper reports for each window (§3 item 5, Figs. 4, 5, 8, 11, 12a).
PAPER = {
    "early": "Figs. 5a/8a/11a: early-stage VoG flips, higher VoG = lower test error",
    "late": "Figs. 5b/8b/11b: late-stage error rises with VoG; top decile has the highest error",
    "all": "Fig. 4 (Fig. 12a with predicted labels): error rises with VoG decile",
}
EXPECTED = {"early": "decreasing", "late": "increasing", "all": "increasing"}


def _bucket_errors(bucket: np.ndarray, wrong: np.ndarray, bins: int) -> np.ndarray:
    counts = np.bincount(bucket, minlength=bins)
    errors = np.bincount(bucket, weights=wrong, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, errors / np.maximum(counts, 1), np.nan)


def _trend(bucket: np.ndarray, wrong: np.ndarray, bins: int) -> float:
    err = _bucket_errors(bucket, wrong, bins)
    filled = np.isfinite(err)
    return spearman(np.arange(bins)[filled], err[filled])


def _top_minus_bottom(bucket: np.ndarray, wrong: np.ndarray, bins: int) -> float:
    err = _bucket_errors(bucket, wrong, bins)
    return float(err[-1] - err[0])


def error_by_bucket(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    bins: int = 10,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Error rate per score bucket (paper Fig. 4), with bootstrap intervals and its trend.

    Args:
        scores: ``(N,)`` score per example, higher = harder (e.g. normalised VoG).
        correct: ``(N,)`` bool, the model's prediction matches the true label.
        bins: number of equal-count buckets (10 = deciles); bucket 0 = lowest scores.
        n_boot, confidence, rng: percentile bootstrap over examples (0 resamples gives NaN
            intervals).

    Bucket membership is fixed at the full-sample quantiles and examples are resampled: the
    interval of a bucket's error resamples that bucket's members; the trend and the top-minus-bottom
    difference resample all examples jointly.

    Returns:
        ``bins``, ``n``, ``count`` (per bucket), ``error`` (per bucket, NaN when empty),
        ``error_interval`` (``[lo, hi]`` per bucket), ``spearman`` (rank correlation of bucket
        index with bucket error over non-empty buckets: > 0 = error rises with the score) and
        ``spearman_interval``, ``top_error``, ``bottom_error``, ``top_minus_bottom`` and its
        ``top_minus_bottom_interval``, ``overall_error``, ``n_boot``, ``confidence``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct).astype(bool)
    if scores.ndim != 1 or scores.shape != correct.shape:
        raise ValueError(f"scores {scores.shape} and correct {correct.shape} must both be (N,)")
    if scores.size == 0:
        raise ValueError("error_by_bucket needs at least one example")
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    bucket = deciles(scores, n=bins)
    wrong = (~correct).astype(np.float64)
    counts = np.bincount(bucket, minlength=bins)
    error = _bucket_errors(bucket, wrong, bins)

    # The bootstrap is vectorised over resamples (one index matrix, bincounts with a row offset):
    # a Python loop of resamples made this the slowest part of the audit.
    per_bucket = []
    for b in range(bins):
        members = wrong[bucket == b]
        if members.size == 0 or n_boot == 0:
            per_bucket.append([float("nan"), float("nan")])
            continue
        means = members[rng.integers(0, members.size, size=(n_boot, members.size))].mean(axis=1)
        per_bucket.append(percentile_interval(means, confidence))

    trend_ci = gap_ci = [float("nan"), float("nan")]
    if n_boot > 0:
        picks = rng.integers(0, scores.size, size=(n_boot, scores.size))
        boot_err = _bucket_errors_rows(bucket[picks], wrong[picks], bins)
        trend_ci = percentile_interval(_row_trends(boot_err), confidence)
        gap_ci = percentile_interval(boot_err[:, -1] - boot_err[:, 0], confidence)
    return {
        "bins": int(bins),
        "n": int(scores.size),
        "count": counts.astype(int).tolist(),
        "error": [float(e) for e in error],
        "error_interval": per_bucket,
        "spearman": _trend(bucket, wrong, bins),
        "spearman_interval": trend_ci,
        "top_error": float(error[-1]),
        "bottom_error": float(error[0]),
        "top_minus_bottom": _top_minus_bottom(bucket, wrong, bins),
        "top_minus_bottom_interval": gap_ci,
        "overall_error": float(wrong.mean()),
        "n_boot": int(n_boot),
        "confidence": float(confidence),
    }


def _bucket_errors_rows(bucket: np.ndarray, wrong: np.ndarray, bins: int) -> np.ndarray:
    """Per-row bucket error rates of ``(B, N)`` resamples: ``(B, bins)``, NaN for empty buckets."""
    rows = bucket.shape[0]
    flat = (bucket + bins * np.arange(rows)[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows * bins).reshape(rows, bins)
    errors = np.bincount(flat, weights=wrong.ravel(), minlength=rows * bins).reshape(rows, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, errors / np.maximum(counts, 1), np.nan)


def _row_trends(errors: np.ndarray) -> np.ndarray:
    """Spearman(bucket index, error) of each row; NaN for rows with an empty or constant curve."""
    complete = np.isfinite(errors).all(axis=1)
    out = np.full(errors.shape[0], np.nan)
    if complete.any():
        out[complete] = spearman(np.arange(errors.shape[1]), errors[complete])
    return out


def split_key(key: str) -> tuple[str | None, str]:
    """``"early_label_abs" -> ("early", "label_abs")``: the window token and the rest of the key.

    The window is the first ``_``-separated token that is a window name (``None`` if there is
    none); the rest (label mode and any variant suffix) names the group an early/late flip is
    looked for in.
    """
    tokens = key.split("_")
    for i, token in enumerate(tokens):
        if token in WINDOWS:
            return token, "_".join(tokens[:i] + tokens[i + 1 :])
    return None, key


def decile_report(
    scores_by_key: Mapping[str, np.ndarray],
    correct: np.ndarray,
    *,
    bins: int = 10,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
    expected: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Error-by-decile curves for several scores and the paper's direction claims.

    Args:
        scores_by_key: name -> ``(N,)`` score, higher = harder, e.g. ``early_label``,
            ``late_pred``, ``all_label_abs``. The window is read from the name (see
            :func:`split_key`): ``early`` is expected ``decreasing`` (the paper: high early VoG =
            lower error), ``late`` and ``all`` ``increasing``; a name without a window is expected
            ``increasing``.
        correct: ``(N,)`` bool, the model's (final) prediction is right.
        expected: optional name -> direction overrides.

    Returns:
        ``curves`` (name -> :func:`error_by_bucket`), ``claims`` (name -> :func:`stats.claim` on
        the bucket-error Spearman, with ``paper`` context), ``flip`` (group -> whether the
        early/late flip appears: ``expected`` True, ``measured`` = early trend < 0 and late trend
        > 0, ``holds``, ``confident`` when both intervals exclude 0, and the two trends), ``n``,
        ``bins``.
    """
    expected = dict(expected or {})
    curves: dict[str, Any] = {}
    claims: dict[str, Any] = {}
    for key, scores in scores_by_key.items():
        curve = error_by_bucket(
            scores, correct, bins=bins, n_boot=n_boot, confidence=confidence, rng=rng
        )
        window, _ = split_key(key)
        direction = expected.get(key, EXPECTED.get(window or "", "increasing"))
        record = claim(
            direction,
            curve["spearman"],
            interval=tuple(curve["spearman_interval"]),
            name=TREND,
        )
        record["paper"] = PAPER.get(window or "", "higher score = harder: error should rise")
        curves[key] = curve
        claims[key] = record
    return {
        "n": int(np.asarray(correct).size),
        "bins": int(bins),
        "curves": curves,
        "claims": claims,
        "flip": _flips(curves),
    }


def _flips(curves: Mapping[str, Any]) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    for key, curve in curves.items():
        window, group = split_key(key)
        if window in ("early", "late"):
            groups.setdefault(group, {})[window] = curve
    out = {}
    for group, pair in sorted(groups.items()):
        if set(pair) != {"early", "late"}:
            continue
        early, late = pair["early"], pair["late"]
        measured = bool(early["spearman"] < 0 and late["spearman"] > 0)
        out[group] = {
            "expected": True,
            "measured": measured,
            "holds": measured,
            "confident": bool(
                early["spearman_interval"][1] < 0 and late["spearman_interval"][0] > 0
            ),
            "early_spearman": early["spearman"],
            "early_interval": early["spearman_interval"],
            "late_spearman": late["spearman"],
            "late_interval": late["spearman_interval"],
            "label_mode": next((t for t in group.split("_") if t in LABEL_MODES), group),
            "paper": "§3 item 5: early trend decreasing, late trend increasing (the flip)",
        }
    return out
