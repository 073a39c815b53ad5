"""The VoG equations (paper eqs. 2-4 and the class normalisation), numpy only.

Every function is array-in, array-out. Higher VoG means harder. These functions are the reference
form of the score: the streaming engine in :mod:`vogflow.scoring.stream` computes the same numbers
without ever holding a ``(K, N, H, W)`` stack, and the tests pin one against the other.
"""

from __future__ import annotations

import numpy as np

from vogflow.config.names import NORMALISATIONS, WINDOWS, window_problem


def check_checkpoint_count(k: int, *, error: type[Exception] = ValueError) -> None:
    """Refuse fewer than 2 checkpoints (VoG is a spread over them) with ``error``: the one place
    of the rule, for the equations, the engine and the audit alike."""
    if k < 2:
        raise error(f"VoG needs at least 2 checkpoints, got {k}")


def vog_raw(grads: np.ndarray) -> np.ndarray:
    """Raw VoG from a stack of channel-averaged input gradients.

    Args:
        grads: ``(K, N, *pixels)``: gradient maps ``S_t`` of ``N`` examples at ``K`` checkpoints.

    Returns:
        ``(N,)`` float64: the mean over pixels of the per-pixel population standard deviation over
        checkpoints, ``mean_px sqrt((1/K) sum_t (S_t - mu)^2)``. Higher = harder.
    """
    grads = np.asarray(grads, dtype=np.float64)
    if grads.ndim < 2:
        raise ValueError(f"grads must be (K, N, ...), got shape {grads.shape}")
    check_checkpoint_count(grads.shape[0])
    # Shifting by the first checkpoint leaves the spread unchanged and makes identical
    # checkpoints give exactly 0 (a plain mean of K equal floats can round away from them).
    shifted = grads - grads[0]
    mu = shifted.mean(axis=0)
    per_pixel = np.sqrt(((shifted - mu) ** 2).mean(axis=0))
    return per_pixel.reshape(per_pixel.shape[0], -1).mean(axis=1)


def window_indices(k: int, window: str, *, size: int = 3) -> np.ndarray:
    """Indices of the checkpoints (in training order) that a window uses.

    ``early``: the first ``size``; ``late``: the last ``size``; ``all``: every one of the ``k``.
    Raises ``ValueError`` when there are fewer than 2 checkpoints, or when ``early`` or ``late``
    asks for as many checkpoints as there are or more (it would silently be ``all``).
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; valid: {', '.join(WINDOWS)}")
    check_window_size(size)
    check_checkpoint_count(k)
    problem = window_problem(k, size) if window != "all" else None
    if problem:
        raise ValueError(
            f"window {window!r} of size {size} over {k} checkpoints: {problem}; use a window "
            f"size below {k}, more checkpoints, or only the 'all' window"
        )
    if window == "all":
        idx = np.arange(k)
    elif window == "early":
        idx = np.arange(min(size, k))
    else:
        idx = np.arange(max(k - size, 0), k)
    return idx


def check_window_size(size: int, *, error: type[Exception] = ValueError) -> None:
    """Refuse a window of fewer than 2 checkpoints."""
    if size < 2:
        raise error(f"window size must be at least 2 (VoG is a spread), got {size}")


def class_normalise(scores: np.ndarray, classes: np.ndarray, *, method: str = "z") -> np.ndarray:
    """Normalise scores within each class: ``(s - mean_c) / std_c`` (population std).

    Args:
        scores: ``(N,)`` raw VoG.
        classes: ``(N,)`` integer class of each example (the label or predicted class the
            gradients were taken for).
        method: ``z`` (signed z-score), ``abs`` (``|z|``) or ``none`` (raw scores as float64).

    A class with one member or zero spread gets 0 for all its members. Higher = harder.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; valid: {', '.join(NORMALISATIONS)}")
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(classes)
    if scores.shape != classes.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and classes {classes.shape} must both be (N,)")
    if method == "none":
        return scores.copy()
    out = np.zeros_like(scores)
    for c in np.unique(classes):
        members = classes == c
        values = scores[members]
        std = values.std()
        if values.size > 1 and std > 0:
            out[members] = (values - values.mean()) / std
    return np.abs(out) if method == "abs" else out


def percentiles(scores: np.ndarray) -> np.ndarray:
    """Percentile rank in ``[0, 100)`` of each score (ties broken by position). ``(N,) -> (N,)``."""
    scores = np.asarray(scores)
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[np.argsort(scores, kind="stable")] = np.arange(scores.size)
    return 100.0 * ranks / max(scores.size, 1)


def deciles(scores: np.ndarray, *, n: int = 10) -> np.ndarray:
    """Bucket of each score when sorted into ``n`` equal-count groups; 0 = lowest VoG (easiest)."""
    if n < 1:
        raise ValueError(f"number of buckets must be positive, got {n}")
    return np.minimum((percentiles(scores) * n / 100.0).astype(np.int64), n - 1)
