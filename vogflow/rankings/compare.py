"""Compare two audits of the same data: how far the ranking of one model moved in another.

One job: given two rankings tables (see :mod:`vogflow.rankings.table`) of the same split, align the
examples by index (refusing tables of different data), then measure how the two rankings agree
(Spearman and Kendall correlation, overlap of the hardest sets), each audit's error per VoG decile,
and which examples moved most in rank, on one score column (the audit's ranking score by default,
see ``vogflow.rankings.choice``). Rank 1 = hardest (highest score).

Tables in, plain JSON-able dicts and a movers table out; numpy, scipy and pandas only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vogflow.analysis.deciles import error_by_bucket
from vogflow.analysis.ranks import chance_jaccard, jaccard_matrix, spearman, top_sets
from vogflow.errors import DataError


def score_names(table: pd.DataFrame) -> list[str]:
    """The score names a table offers (``late_label``, ``all_pred_raw``, ...)."""
    return [c[len("vog_") :] for c in table.columns if c.startswith("vog_")]


@dataclass(frozen=True)
class Aligned:
    """Two audits' views of the same ``n`` examples, in index order."""

    index: np.ndarray  # (n,) dataset index
    label: np.ndarray  # (n,) label the examples were checked on
    score_a: np.ndarray  # (n,) VoG in A, higher = harder
    score_b: np.ndarray  # (n,) VoG in B
    correct_a: np.ndarray  # (n,) bool, A's final model is right
    correct_b: np.ndarray  # (n,) bool


def _label_column(a: pd.DataFrame, b: pd.DataFrame) -> str:
    # The clean label identifies the data; the trained label may be deliberately shuffled.
    return "true_label" if "true_label" in a.columns and "true_label" in b.columns else "label"


def align(
    a: pd.DataFrame, b: pd.DataFrame, *, column: str, names: tuple[str, str] = ("A", "B")
) -> Aligned:
    """Align two rankings tables by ``index`` after checking they describe the same examples.

    Raises :class:`DataError` naming the difference when the tables differ in size, in their
    indices, or in the label of any example, or when ``column`` is missing from either.
    """
    for name, table in zip(names, (a, b), strict=True):
        missing = [c for c in ("index", "label", "correct", column) if c not in table.columns]
        if missing:
            offered = ", ".join(score_names(table)) or "none"
            raise DataError(
                f"{name} lacks the column(s) {', '.join(missing)}; scores it offers: {offered}"
            )
        if table["index"].duplicated().any():
            raise DataError(f"{name} has duplicated example indices; it is not a rankings table")
    if len(a) != len(b):
        raise DataError(
            f"{names[0]} has {len(a)} examples and {names[1]} has {len(b)}: they are audits of "
            "different datasets (or splits) and cannot be compared example by example"
        )
    a = a.sort_values("index", kind="stable").reset_index(drop=True)
    b = b.sort_values("index", kind="stable").reset_index(drop=True)
    index_a, index_b = a["index"].to_numpy(), b["index"].to_numpy()
    if not np.array_equal(index_a, index_b):
        only = np.setdiff1d(index_a, index_b)[:5].tolist()
        raise DataError(
            f"{names[0]} and {names[1]} hold different example indices (e.g. {only} only in "
            f"{names[0]}): they are audits of different datasets"
        )
    label = _label_column(a, b)
    la, lb = a[label].to_numpy(), b[label].to_numpy()
    differ = np.flatnonzero(la != lb)
    if differ.size:
        first = ", ".join(f"index {index_a[i]}: {la[i]} vs {lb[i]}" for i in differ[:3])
        raise DataError(
            f"{names[0]} and {names[1]} disagree on the {label} of {differ.size} of {len(a)} "
            f"examples ({first}): they are audits of different datasets (or of another example "
            "order) and cannot be compared example by example"
        )
    return Aligned(
        index=index_a.astype(np.int64),
        label=la.astype(np.int64),
        score_a=a[column].to_numpy(dtype=np.float64),
        score_b=b[column].to_numpy(dtype=np.float64),
        correct_a=a["correct"].to_numpy().astype(bool),
        correct_b=b["correct"].to_numpy().astype(bool),
    )


def hardness_rank(scores: np.ndarray) -> np.ndarray:
    """Rank of each score, 1 = highest (hardest); ties keep index order. ``(n,) -> (n,)``.

    The same convention as :func:`vogflow.rankings.table.top_bottom`, so ranks printed here match
    the
    audits' own top-k tables.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, scores.size + 1)
    return ranks


def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman and Kendall (tau-b) correlation of two ``(n,)`` scores; NaN when undefined."""
    from scipy.stats import kendalltau

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return {"spearman": math.nan, "kendall": math.nan, "kendall_p": math.nan}
    rho = spearman(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        # kendalltau warns and returns NaN on a constant input; say NaN without the warning.
        return {"spearman": rho, "kendall": math.nan, "kendall_p": math.nan}
    tau = kendalltau(x, y)
    return {"spearman": rho, "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}


def top_overlap(x: np.ndarray, y: np.ndarray, *, fraction: float = 0.1) -> dict[str, float]:
    """Jaccard index of the two hardest ``ceil(fraction * n)`` sets, with its chance level."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction}")
    sets = top_sets(np.stack([np.asarray(x, float), np.asarray(y, float)]), fraction)
    n, k = sets.shape[1], int(sets[0].sum())
    shared = int((sets[0] & sets[1]).sum())
    return {
        "fraction": float(fraction),
        "k": k,
        "shared": shared,
        "jaccard": float(jaccard_matrix(sets)[0, 1]),
        "chance": chance_jaccard(k, n),
    }


def movers(aligned: Aligned, *, k: int = 25) -> pd.DataFrame:
    """The ``k`` examples whose hardness rank moved most from A to B.

    Columns: ``index, label, rank_a, rank_b, shift`` (``rank_b - rank_a``: > 0 = easier in B),
    ``vog_a, vog_b``; sorted by ``|shift|`` descending, ties by index.
    """
    rank_a = hardness_rank(aligned.score_a)
    rank_b = hardness_rank(aligned.score_b)
    shift = rank_b - rank_a
    table = pd.DataFrame(
        {
            "index": aligned.index,
            "label": aligned.label,
            "rank_a": rank_a,
            "rank_b": rank_b,
            "shift": shift,
            "vog_a": aligned.score_a,
            "vog_b": aligned.score_b,
        }
    )
    order = np.lexsort((aligned.index, -np.abs(shift)))
    return table.iloc[order[: max(0, int(k))]].reset_index(drop=True)


def _curve(curve: dict[str, Any]) -> dict[str, Any]:
    keep = ("error", "count", "error_interval", "spearman", "spearman_interval")
    return {k: curve[k] for k in keep} | {
        "top_error": curve["top_error"],
        "bottom_error": curve["bottom_error"],
        "overall_error": curve["overall_error"],
    }


@dataclass(frozen=True)
class Comparison:
    report: dict[str, Any]  # JSON-able numbers (see :func:`compare`)
    movers: pd.DataFrame  # see :func:`movers`
    aligned: Aligned


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    column: str,
    top_fraction: float = 0.1,
    n_movers: int = 25,
    bins: int = 10,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Compare two rankings tables of the same examples on the score ``column``.

    Returns a :class:`Comparison` whose ``report`` holds ``n``, ``column``, ``spearman``,
    ``kendall``, ``kendall_p``, ``top_overlap`` (:func:`top_overlap`), ``error`` (each audit's
    error rate), ``deciles`` (each audit's error per VoG decile, bucket 0 = lowest VoG, with
    bootstrap intervals and the bucket-error trend) and ``movers`` (records of the movers table).
    Examples whose score is not finite in either audit are left out of every statistic
    (``excluded`` counts them).
    """
    aligned = align(a, b, column=column, names=names)
    ok = np.isfinite(aligned.score_a) & np.isfinite(aligned.score_b)
    if ok.sum() < 2:
        raise DataError(f"fewer than 2 examples have a finite {column} in both audits")
    if not ok.all():
        aligned = Aligned(*(np.asarray(v)[ok] for v in vars(aligned).values()))
    rng = np.random.default_rng(seed)
    boot = {"bins": bins, "n_boot": n_boot, "confidence": confidence, "rng": rng}
    curves = {
        "a": _curve(error_by_bucket(aligned.score_a, aligned.correct_a, **boot)),
        "b": _curve(error_by_bucket(aligned.score_b, aligned.correct_b, **boot)),
    }
    moved = movers(aligned, k=n_movers)
    report = {
        "n": int(aligned.index.size),
        "excluded": int((~ok).sum()),
        "column": column,
        "names": list(names),
        **correlations(aligned.score_a, aligned.score_b),
        "top_overlap": top_overlap(aligned.score_a, aligned.score_b, fraction=top_fraction),
        "error": {
            "a": float(1 - aligned.correct_a.mean()),
            "b": float(1 - aligned.correct_b.mean()),
        },
        "deciles": curves,
        "movers": moved.to_dict(orient="records"),
    }
    return Comparison(report=report, movers=moved, aligned=aligned)
