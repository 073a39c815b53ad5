"""How far two rankings agree: Spearman correlation, top sets, their Jaccard overlap and its chance
level. Every other module ranks through these, so "Spearman" means one computation everywhere.

Arrays in, arrays or floats out; numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np


def _centred_ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis, minus their mean ``(n + 1) / 2``."""
    from scipy.stats import rankdata

    return rankdata(a, axis=-1) - (a.shape[-1] + 1) / 2.0


def spearman(x: np.ndarray, y: np.ndarray) -> float | np.ndarray:
    """Spearman rank correlation along the last axis; leading axes broadcast, so a row against a
    ``(R, n)`` stack gives ``(R,)``. A float for two ``(n,)`` arrays.

    Ties get average ranks. NaN where either side is constant or n < 2, instead of a warning, so
    bootstrap resamples on which the correlation is undefined are simply dropped by
    :func:`stats.bootstrap_ci`.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[-1:] != y.shape[-1:]:
        raise ValueError(f"spearman needs arrays of one length, got {x.shape} and {y.shape}")
    if x.shape[-1] < 2:
        out = np.full(np.broadcast_shapes(x.shape, y.shape)[:-1], np.nan)
    else:
        rx, ry = _centred_ranks(x), _centred_ranks(y)
        num = (rx * ry).sum(axis=-1)
        denom = np.sqrt((rx**2).sum(axis=-1) * (ry**2).sum(axis=-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.clip(np.where(denom > 0, num / denom, np.nan), -1.0, 1.0)
    return float(out) if out.ndim == 0 else out


def spearman_matrix(runs: np.ndarray) -> np.ndarray:
    """Pairwise Spearman correlation of ``(R, N)`` scores: ``(R, R)``, NaN for a constant run."""
    ranks = _centred_ranks(np.asarray(runs, dtype=np.float64))
    # The correlation of :func:`spearman`, with the product of the two norms as denominator
    # where it takes the root of the product: the audit's reported stability numbers keep their
    # bits (the two differ in the last bit only).
    norms = np.sqrt((ranks**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ranks @ ranks.T) / np.outer(norms, norms)
    return np.clip(out, -1.0, 1.0)


def top_sets(runs: np.ndarray, fraction: float) -> np.ndarray:
    """``(R, N)`` bool: each run's top ``ceil(fraction * N)`` scores (ties broken by position)."""
    runs = np.asarray(runs, dtype=np.float64)
    n = runs.shape[1]
    k = min(n, max(1, math.ceil(fraction * n)))
    order = np.argsort(-runs, axis=1, kind="stable")[:, :k]
    mask = np.zeros(runs.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def jaccard_matrix(sets: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard index of ``(R, N)`` membership masks: ``(R, R)``."""
    sets = np.asarray(sets, dtype=np.float64)
    inter = sets @ sets.T
    size = sets.sum(axis=1)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 1.0)


def chance_jaccard(k: int, n: int) -> float:
    """Expected Jaccard index of two independent uniformly random ``k``-subsets of ``n``."""
    # They share k^2/n members on average.
    shared = k * k / n
    return float(shared / (2 * k - shared))
