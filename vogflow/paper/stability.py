"""Stability of the VoG ranking across training runs (paper Fig. 6 and §3 item 3).

One job: given the normalised VoG of the same examples from several runs (other seeds, other batch
sizes), measure how much the per-example score and the ranking move between runs, and how much
each run's error-per-percentile curve differs, with the paper's expectation beside each number.

Arrays in, plain JSON-able dicts out; numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vogflow.analysis.deciles import error_by_bucket
from vogflow.analysis.ranks import chance_jaccard, jaccard_matrix, spearman_matrix, top_sets
from vogflow.analysis.stats import bootstrap_ci, claim
from vogflow.errors import ConfigError, DataError

# The paper's numbers are per-example std of raw VoG, whose scale depends on the model and the
# input normalisation; the scores here are usually class-normalised z-scores (unit spread), so
# only the rank agreement and the scale-free ratio are comparable, not these magnitudes.
PAPER = {
    "seed": (
        "paper §3 item 3: mean per-example std of VoG across 10 CIFAR-10 initialisations 3.81e-9 "
        "(CIFAR-100: 9.6e-6), on raw scores of another scale; Fig. 6: per-percentile test error "
        "consistent across 5 runs"
    ),
    "batch_size": (
        "paper §3 item 3: mean per-example std of VoG across 5 CIFAR-10 batch sizes "
        "(128..640) 1.9e-5, on raw scores of another scale"
    ),
}


def _stack(scores_by_run: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(scores_by_run)
    if len(names) < 2:
        raise ConfigError(f"stability needs at least 2 runs, got {len(names)}: {names}")
    arrays = [np.asarray(scores_by_run[n], dtype=np.float64) for n in names]
    shapes = {n: a.shape for n, a in zip(names, arrays, strict=True)}
    if len(set(shapes.values())) != 1 or arrays[0].ndim != 1:
        raise DataError(f"every run must score the same N examples as (N,); got {shapes}")
    return names, np.stack(arrays)


def _upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


def _matrix_list(matrix: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in matrix]


def stability_report(
    scores_by_run: Mapping[str, np.ndarray],
    correct_by_run: Mapping[str, np.ndarray] | None = None,
    *,
    top_fraction: float = 0.1,
    bins: int = 10,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
    kind: str = "seed",
) -> dict[str, Any]:
    """How much VoG of the same examples changes between training runs.

    Args:
        scores_by_run: run name -> ``(N,)`` normalised VoG of the same examples in the same order,
            higher = harder (at least 2 runs).
        correct_by_run: optional run name -> ``(N,)`` bool, that run's prediction is right; gives
            each run's error-per-bucket curve and the spread of the curves (paper Fig. 6).
        top_fraction: share of highest-scored examples whose sets are compared (Jaccard).
        bins: buckets of the error curves (10 = deciles).
        n_boot, confidence, rng: percentile bootstrap over examples.
        kind: ``seed`` or ``batch_size``: which paper number the ``paper`` context quotes.

    Returns:
        ``runs``, ``n``, ``kind``, ``paper`` (context string); ``std``: per-example population
        std across runs summarised by ``mean``, ``median``, ``max``, plus ``ratio`` (mean std over
        the across-example std of the run-mean score: scale-free, 0 = identical runs);
        ``spearman``: ``matrix`` (R x R), ``mean`` and ``min`` over pairs, ``interval`` of the
        mean and ``claim`` (expected ``positive``); ``top_overlap``: ``fraction``, ``k``,
        ``matrix``, ``mean``, ``min``, ``chance`` (expected Jaccard of two random sets of that
        size), ``interval`` and ``claim`` (expected ``above`` chance); with ``correct_by_run``
        also ``curves`` (run -> :func:`deciles.error_by_bucket`) and ``curve_spread``: per-bucket
        ``std``, ``min``, ``max`` of the runs' errors, ``mean_std``, ``max_range``, and each run's
        ``trend`` (bucket-error Spearman).
    """
    if not 0 < top_fraction < 1:
        raise ConfigError(f"top_fraction must be strictly between 0 and 1, got {top_fraction}")
    if kind not in PAPER:
        raise ConfigError(f"unknown kind {kind!r}; valid: {', '.join(PAPER)}")
    names, runs = _stack(scores_by_run)
    n = runs.shape[1]

    per_example = runs.std(axis=0)
    spread = runs.mean(axis=0).std()
    std = {
        "mean": float(per_example.mean()),
        "median": float(np.median(per_example)),
        "max": float(per_example.max()),
        "ratio": float(per_example.mean() / spread) if spread > 0 else float("nan"),
    }

    def mean_spearman(*rows: np.ndarray) -> float:
        return float(np.mean(_upper(spearman_matrix(np.stack(rows)))))

    def mean_jaccard(*rows: np.ndarray) -> float:
        return float(np.mean(_upper(jaccard_matrix(top_sets(np.stack(rows), top_fraction)))))

    boot = {"n_boot": n_boot, "confidence": confidence, "rng": rng}
    rho = spearman_matrix(runs)
    rho_mean = float(np.mean(_upper(rho)))
    rho_ci = bootstrap_ci(mean_spearman, *runs, **boot)

    jac = jaccard_matrix(top_sets(runs, top_fraction))
    jac_mean = float(np.mean(_upper(jac)))
    jac_ci = bootstrap_ci(mean_jaccard, *runs, **boot)
    k = int(top_sets(runs[:1], top_fraction).sum())
    chance = chance_jaccard(k, n)

    out: dict[str, Any] = {
        "runs": names,
        "n": int(n),
        "kind": kind,
        "paper": PAPER[kind],
        "std": std,
        "spearman": {
            "matrix": _matrix_list(rho),
            "mean": rho_mean,
            "min": float(np.min(_upper(rho))),
            "interval": [float(rho_ci[0]), float(rho_ci[1])],
            "claim": claim("positive", rho_mean, interval=rho_ci, name="mean pairwise spearman"),
        },
        "top_overlap": {
            "fraction": float(top_fraction),
            "k": k,
            "matrix": _matrix_list(jac),
            "mean": jac_mean,
            "min": float(np.min(_upper(jac))),
            "chance": float(chance),
            "interval": [float(jac_ci[0]), float(jac_ci[1])],
            "claim": claim(
                "above", jac_mean, interval=jac_ci, null=float(chance), name="mean pairwise jaccard"
            ),
        },
        "n_boot": int(n_boot),
        "confidence": float(confidence),
    }
    if correct_by_run is not None:
        missing = [r for r in names if r not in correct_by_run]
        if missing:
            raise DataError(f"correct_by_run lacks runs {missing}; it has {list(correct_by_run)}")
        curves = {
            r: error_by_bucket(
                runs[i], correct_by_run[r], bins=bins, n_boot=n_boot, confidence=confidence, rng=rng
            )
            for i, r in enumerate(names)
        }
        errors = np.array([curves[r]["error"] for r in names], dtype=np.float64)
        out["curves"] = curves
        out["curve_spread"] = {
            "std": [float(v) for v in errors.std(axis=0)],
            "min": [float(v) for v in errors.min(axis=0)],
            "max": [float(v) for v in errors.max(axis=0)],
            "mean_std": float(errors.std(axis=0).mean()),
            "max_range": float((errors.max(axis=0) - errors.min(axis=0)).max()),
            "trend": {r: curves[r]["spearman"] for r in names},
        }
    return out
