"""The scorecard: which difficulty score to rank by on this data, measured rather than assumed.

One job: for every candidate score (VoG variants, the hardness baselines, and their seed-averaged
versions) measure how well its ranking survives a rerun (cross-seed Spearman, top-set overlap,
split-half reliability), whether it finds planted label noise (the shuffled-label run), and whether
the test error rises with it (decile trend); then pick one by a stated rule (:func:`choose`).

Arrays in, plain JSON-able dicts out; numpy and scipy only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from vogflow.analysis.deciles import error_by_bucket
from vogflow.analysis.ranks import (
    chance_jaccard,
    jaccard_matrix,
    spearman,
    spearman_matrix,
    top_sets,
)
from vogflow.analysis.stats import detection_metrics

SEEDMEAN = "_seedmean"
# Enumerating every balanced split grows combinatorially; 10 runs give 126, so this cap only bites
# for unusually many seeds.
MAX_SPLITS = 256
COLUMNS = (
    "kind",
    "base",
    "n_runs",
    "spearman",
    "spearman_min",
    "top_jaccard",
    "top_chance",
    "split_half",
    "reliability",
    "noise_auroc",
    "noise_auprc",
    "noise_precision",
    "decile_trend",
)
NAN = float("nan")


def mean_percentile(scores_by_run: Mapping[str, np.ndarray]) -> np.ndarray:
    """A seed-averaged score: each run's scores turned into percentiles in ``(0, 100)`` (ties share
    their mean rank), then averaged over runs. ``run -> (N,)`` in, ``(N,)`` out, higher = harder.

    Ranking within each run first makes runs of different scale (raw VoG varies with the weights)
    count equally.
    """
    runs = _stack("mean_percentile", scores_by_run)
    if runs.shape[0] == 0:
        raise ValueError("a seed mean needs at least one run")
    return _percentiles(runs).mean(axis=0)


def _percentiles(runs: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return 100.0 * (rankdata(runs, axis=1) - 0.5) / runs.shape[1]


def _stack(name: str, scores_by_run: Mapping[str, np.ndarray]) -> np.ndarray:
    arrays = {run: np.asarray(a, dtype=np.float64) for run, a in scores_by_run.items()}
    shapes = {run: a.shape for run, a in arrays.items()}
    if len(set(shapes.values())) > 1 or any(a.ndim != 1 for a in arrays.values()):
        raise ValueError(f"{name}: every run must score the same N examples as (N,); got {shapes}")
    if not arrays:
        return np.zeros((0, 0))
    return np.stack(list(arrays.values()))


def _splits(r: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Balanced halves of ``r`` runs, each pair once: all of them up to :data:`MAX_SPLITS` (the
    first in lexicographic order). With an odd ``r`` each split leaves one run out."""
    h = r // 2
    out = []
    for left_out in range(r) if r % 2 else [None]:
        pool = [i for i in range(r) if i != left_out]
        # The half holding the pool's first run names the split, so each pair is counted once.
        for rest in itertools.combinations(pool[1:], h - 1):
            a = (pool[0], *rest)
            b = tuple(i for i in pool if i not in a)
            out.append((a, b))
            if len(out) == MAX_SPLITS:
                return out
    return out


def split_half(runs: np.ndarray) -> float:
    """Split-half reliability of ``(R, N)`` per-run scores: the Spearman correlation between the
    mean over one half of the runs and the mean over the other half, averaged over the balanced
    splits of :func:`_splits` (``R // 2`` runs a half). NaN below 4 runs (a half of one run is the
    plain cross-seed Spearman) or when every split is undefined."""
    runs = np.asarray(runs, dtype=np.float64)
    if runs.ndim != 2 or runs.shape[0] < 4:
        return NAN
    rhos = [spearman(runs[list(a)].mean(0), runs[list(b)].mean(0)) for a, b in _splits(len(runs))]
    rhos = [r for r in rhos if math.isfinite(r)]
    return float(np.mean(rhos)) if rhos else NAN


def _spearman_brown(rho: float, factor: float) -> float:
    """Reliability of an average of ``factor`` times as many runs as the one measured."""
    if not math.isfinite(rho) or 1 + (factor - 1) * rho <= 0:
        return NAN
    return float(factor * rho / (1 + (factor - 1) * rho))


def _stability(runs: np.ndarray, top_fraction: float) -> dict[str, float]:
    out = {"spearman": NAN, "spearman_min": NAN, "top_jaccard": NAN, "top_chance": NAN}
    if runs.shape[0] < 2:
        return out
    upper = np.triu_indices(runs.shape[0], k=1)
    with np.errstate(invalid="ignore"):
        rho = spearman_matrix(runs)[upper]
    sets = top_sets(runs, top_fraction)
    n, k = runs.shape[1], int(sets[0].sum())
    out.update(
        spearman=float(np.mean(rho)),
        spearman_min=float(np.min(rho)),
        top_jaccard=float(np.mean(jaccard_matrix(sets)[upper])),
        top_chance=chance_jaccard(k, n),
    )
    return out


def _noise(scores: np.ndarray, noisy: np.ndarray) -> dict[str, float]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != noisy.shape:
        raise ValueError(f"noise scores {scores.shape} and noisy {noisy.shape} must both be (M,)")
    if noisy.all() or not noisy.any():
        return {"noise_auroc": NAN, "noise_auprc": NAN, "noise_precision": NAN}
    metrics = detection_metrics(scores, noisy)
    top = top_sets(scores[None, :], float(noisy.mean()))[0]
    return {
        "noise_auroc": metrics["auroc"],
        "noise_auprc": metrics["aupr_out"],
        "noise_precision": float(noisy[top].mean()),
    }


def _trend(scores: np.ndarray, correct: np.ndarray, bins: int) -> float:
    if scores.shape != correct.shape:
        raise ValueError(f"test scores {scores.shape} and correct {correct.shape} must match")
    # No bootstrap (n_boot=0): the generator is never drawn from.
    curve = error_by_bucket(
        scores, correct, bins=bins, n_boot=0, confidence=0.95, rng=np.random.default_rng(0)
    )
    return float(curve["spearman"])


def scorecard(
    seed_scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    *,
    noise_scores: Mapping[str, np.ndarray] | None = None,
    noisy: np.ndarray | None = None,
    correct: np.ndarray | None = None,
    main: str = "main",
    top_fraction: float = 0.1,
    bins: int = 10,
    seedmean: bool = True,
) -> dict[str, Any]:
    """Every candidate score's reliability and usefulness on this data, side by side.

    Args:
        seed_scores: score name -> run name -> ``(N,)`` that run's score of the same test
            examples in the same order (the main run and the seed runs), higher = harder.
        noise_scores: score name -> ``(M,)`` the score of the shuffled-label run's training
            examples; ``noisy``: ``(M,)`` bool, that example's label was shuffled.
        correct: ``(N,)`` bool, the ``main`` run's final prediction is right on each test example.
        main: the run whose scores the decile trend uses.
        top_fraction: share of top-scored examples whose sets are compared across runs.
        bins: buckets of the error trend (10 = deciles).
        seedmean: also score ``<name>_seedmean`` (:func:`mean_percentile` over the seed runs) for
            every score with at least 2 runs.

    Any part may be missing; its columns are then NaN. Candidates are the union of the names.

    Returns:
        ``scores``: name -> row with :data:`COLUMNS`:

        - ``kind`` (``run`` = one run's score, ``seedmean``), ``base`` (the score averaged, or the
          name itself), ``n_runs``;
        - ``spearman`` / ``spearman_min``: mean / min pairwise Spearman across the seed runs;
          ``top_jaccard``: mean pairwise Jaccard of the top ``top_fraction`` sets and
          ``top_chance`` its value for random sets (NaN for ``seedmean``: it is one ranking);
        - ``split_half``: :func:`split_half` of the runs' scores (percentiles for ``seedmean``);
        - ``reliability``: how well the ranking as used would agree with an independent redo:
          ``spearman`` for a single run; for ``seedmean`` the split-half stepped up to all runs
          (Spearman-Brown, factor ``R / (R // 2)``);
        - ``noise_auroc``, ``noise_auprc`` (noisy = positive; chance = ``noise_rate``),
          ``noise_precision`` (precision among the top ``noise_rate`` share). A ``seedmean``
          shares its base's values: there is one shuffled run, on which mean-percentile ranks like
          its base;
        - ``decile_trend``: Spearman of bucket index vs test error on the ``main`` run (> 0 =
          error rises with the score). Baselines from the final checkpoint are circular here
          (``disagree`` is exactly the error), so the trend is a direction check, not a contest.

        Also ``ranking`` (names in :func:`choose`'s order, eligible ones first), ``runs``, ``n``,
        ``n_noise``, ``noise_rate``, ``top_fraction``, ``bins``, ``main``.
    """
    if not 0 < top_fraction < 1:
        raise ValueError(f"top_fraction must be strictly between 0 and 1, got {top_fraction}")
    seed_scores = dict(seed_scores or {})
    noise_scores = dict(noise_scores or {})
    if noise_scores and noisy is None:
        raise ValueError("noise_scores need the noisy mask of the shuffled run")
    noisy_mask = None if noisy is None else np.asarray(noisy).astype(bool)
    correct_mask = None if correct is None else np.asarray(correct).astype(bool)

    stacks = {name: _stack(name, runs) for name, runs in seed_scores.items()}
    sizes = {name: s.shape[1] for name, s in stacks.items() if s.size}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"every score must cover the same test examples; sizes {sizes}")

    rows: dict[str, dict[str, Any]] = {}
    for name in list(dict.fromkeys([*seed_scores, *noise_scores])):
        runs = stacks.get(name, np.zeros((0, 0)))
        row: dict[str, Any] = {"kind": "run", "base": name, "n_runs": int(runs.shape[0])}
        row.update(_stability(runs, top_fraction))
        row["split_half"] = split_half(runs)
        row["reliability"] = row["spearman"]
        row.update(_noise_part(noise_scores.get(name), noisy_mask))
        main_scores = seed_scores.get(name, {}).get(main)
        row["decile_trend"] = _trend_part(main_scores, correct_mask, bins)
        rows[name] = row
        if seedmean and runs.shape[0] >= 2:
            pct = _percentiles(runs)
            averaged = pct.mean(axis=0)
            half = split_half(pct)
            mean_row: dict[str, Any] = {
                "kind": "seedmean",
                "base": name,
                "n_runs": len(runs),
                **dict.fromkeys(("spearman", "spearman_min", "top_jaccard", "top_chance"), NAN),
                "split_half": half,
                "reliability": _spearman_brown(half, len(runs) / (len(runs) // 2)),
                **{k: row[k] for k in ("noise_auroc", "noise_auprc", "noise_precision")},
            }
            mean_row["decile_trend"] = _trend_part(averaged, correct_mask, bins)
            rows[f"{name}{SEEDMEAN}"] = mean_row

    all_runs = list(dict.fromkeys(r for runs in seed_scores.values() for r in runs))
    card: dict[str, Any] = {
        "scores": {name: {k: row[k] for k in COLUMNS} for name, row in rows.items()},
        "runs": all_runs,
        "n": int(next(iter(sizes.values()), 0)),
        "n_noise": 0 if noisy_mask is None else int(noisy_mask.size),
        "noise_rate": NAN if noisy_mask is None else float(noisy_mask.mean()),
        "top_fraction": float(top_fraction),
        "bins": int(bins),
        "main": main,
    }
    card["ranking"] = _order(card["scores"], min_auroc=0.5, min_trend=0.0)
    return card


def _noise_part(scores: np.ndarray | None, noisy: np.ndarray | None) -> dict[str, float]:
    if scores is None or noisy is None:
        return {"noise_auroc": NAN, "noise_auprc": NAN, "noise_precision": NAN}
    return _noise(scores, noisy)


def _trend_part(scores: np.ndarray | None, correct: np.ndarray | None, bins: int) -> float:
    if scores is None or correct is None:
        return NAN
    return _trend(np.asarray(scores, dtype=np.float64), correct, bins)


def _exclusion(row: Mapping[str, Any], min_auroc: float, min_trend: float) -> str | None:
    """Why a score is known to point the wrong way on this data (None = it is not)."""
    auc, trend = row["noise_auroc"], row["decile_trend"]
    if math.isfinite(auc) and auc <= min_auroc:
        return f"noise AUROC {auc:.3f} <= {min_auroc:g}"
    if math.isfinite(trend) and trend <= min_trend:
        return f"decile trend {trend:+.3f} <= {min_trend:g}"
    return None


def exclusion(
    row: Mapping[str, Any], *, min_auroc: float = 0.5, min_trend: float = 0.0
) -> str | None:
    """Why :func:`choose` drops this scorecard row (``noise AUROC 0.412 <= 0.5``), or None when it
    is eligible; the thresholds are :func:`choose`'s."""
    return _exclusion(row, min_auroc, min_trend)


def _order(
    scores: Mapping[str, Mapping[str, Any]], *, min_auroc: float, min_trend: float
) -> list[str]:
    def high_first(value: float) -> float:
        return -value if math.isfinite(value) else math.inf

    def key(name: str) -> tuple:
        row = scores[name]
        return (
            _exclusion(row, min_auroc, min_trend) is not None,
            high_first(row["reliability"]),
            high_first(row["noise_auroc"]),
            high_first(row["decile_trend"]),
            row["kind"] != "run",
            name,
        )

    return sorted(scores, key=key)


def choose(
    card: Mapping[str, Any],
    *,
    seedmean: bool = True,
    min_auroc: float = 0.5,
    min_trend: float = 0.0,
) -> tuple[str | None, str]:
    """The score to rank by on this data, and why.

    The rule: drop every score known to point the wrong way here (planted-noise AUROC measured and
    ``<= min_auroc``, or test-error decile trend measured and ``<= min_trend``; a part that was not
    measured drops nothing); among the rest take the highest ``reliability`` (agreement of the
    ranking with an independent redo); ties, or reliabilities not measured, go to the higher noise
    AUROC, then the higher decile trend, then a single-run score before a seed mean (it needs no
    extra runs), then the name. ``seedmean=False`` leaves seed-averaged scores out (for audits
    that will not have seed runs).

    Returns ``(name, reason)``; ``(None, reason)`` when no score is left.
    """
    scores = {
        name: row for name, row in card["scores"].items() if seedmean or row["kind"] != "seedmean"
    }
    if not scores:
        return None, "no candidate scores"
    order = _order(scores, min_auroc=min_auroc, min_trend=min_trend)
    excluded = {n: _exclusion(scores[n], min_auroc, min_trend) for n in order}
    kept = [n for n in order if excluded[n] is None]
    dropped = "; ".join(f"{n}: {why}" for n, why in excluded.items() if why)
    if not kept:
        return None, f"every score points the wrong way on this data ({dropped})"
    best = kept[0]
    row = scores[best]
    measured = [
        f"{label} {row[key]:.3f}"
        for key, label in (
            ("reliability", "reliability"),
            ("noise_auroc", "noise AUROC"),
            ("decile_trend", "decile trend"),
        )
        if math.isfinite(row[key])
    ]
    basis = "highest reliability" if math.isfinite(row["reliability"]) else "reliability unmeasured"
    reason = f"{basis} among {len(kept)} of {len(order)} scores not pointing the wrong way"
    if measured:
        reason += f" ({', '.join(measured)})"
    if dropped:
        reason += f"; dropped {dropped}"
    return best, reason
