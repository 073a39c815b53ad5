"""Out-of-distribution detection, the comparison half: the paper's Table 1 (paper §4.2).

One job: turn "scores on clean examples" and "scores on corrupted examples" into the paper's
detection metrics (:func:`corruption_metrics`, :func:`evaluate`), summarise them per method over
corruptions as Table 1 does (:func:`summary_table`, :func:`to_markdown`), hold the published
numbers (:func:`paper_table1`) and state VoG's claim with an interval (:func:`auroc_claim`). The
detectors that produce the scores are :mod:`vogflow.paper.ood`. Every score is **higher = more
out-of-distribution**.

Arrays in, tables and dicts out: numpy and pandas only, no files, no plots.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from vogflow.analysis.stats import auroc, bootstrap_ci, claim, detection_metrics
from vogflow.errors import DataError

METRICS = ("auroc", "aupr_in", "aupr_out")

__all__ = [
    "METRICS",
    "auroc_claim",
    "corruption_metrics",
    "evaluate",
    "paper_table1",
    "summary_table",
    "to_markdown",
]


def corruption_metrics(clean_scores: np.ndarray, corrupt_scores: np.ndarray) -> dict[str, float]:
    """Detection metrics for one corruption: ``clean_scores`` (N,) vs ``corrupt_scores`` (M,).

    Scores are higher = more OoD; the corrupted examples are the outliers. Returns ``auroc``,
    ``aupr_in``, ``aupr_out`` as fractions in [0, 1], plus ``n_clean`` and ``n_out``.
    """
    clean = np.asarray(clean_scores, dtype=np.float64).ravel()
    corrupt = np.asarray(corrupt_scores, dtype=np.float64).ravel()
    scores = np.concatenate([clean, corrupt])
    is_out = np.concatenate([np.zeros(clean.size, bool), np.ones(corrupt.size, bool)])
    out: dict[str, float] = dict(detection_metrics(scores, is_out))
    out["n_clean"] = int(clean.size)
    out["n_out"] = int(corrupt.size)
    return out


def evaluate(
    scores: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
) -> pd.DataFrame:
    """Metrics for every (corruption, method) pair.

    ``scores[corruption][method] = (clean_scores, corrupt_scores)``, each 1-D, higher = more OoD.
    Returns a long table with columns ``corruption, method, auroc, aupr_in, aupr_out, n_clean,
    n_out`` (metrics as fractions), one row per pair, in input order.
    """
    rows = []
    for corruption, by_method in scores.items():
        for method, (clean, corrupt) in by_method.items():
            rows.append(
                {"corruption": corruption, "method": method, **corruption_metrics(clean, corrupt)}
            )
    columns = ["corruption", "method", *METRICS, "n_clean", "n_out"]
    return pd.DataFrame(rows, columns=columns)


def summary_table(
    rows: pd.DataFrame | Iterable[Mapping[str, Any]], *, ddof: int = 1
) -> pd.DataFrame:
    """Table 1: per method, mean and std over corruptions of each metric, in percent.

    ``rows``: the output of :func:`evaluate` (or records with ``corruption``, ``method`` and the
    metrics as fractions). Returns one row per method (index ``method``) with columns
    ``auroc_mean, auroc_std, aupr_in_mean, aupr_in_std, aupr_out_mean, aupr_out_std,
    n_corruptions``, sorted by ``auroc_mean`` ascending as the paper lists them. ``ddof=1`` is the
    sample std across corruptions (the paper does not say which it used); one corruption gives NaN.
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in ("corruption", "method", *METRICS) if c not in frame.columns]
    if missing:
        raise DataError(f"rows lack column(s) {', '.join(missing)}")
    if frame.duplicated(["corruption", "method"]).any():
        raise DataError("rows hold the same (corruption, method) pair more than once")
    out = {}
    for method, group in frame.groupby("method", sort=False):
        entry: dict[str, float] = {}
        for metric in METRICS:
            values = 100.0 * group[metric].to_numpy(dtype=np.float64)
            entry[f"{metric}_mean"] = float(values.mean())
            entry[f"{metric}_std"] = (
                float(values.std(ddof=ddof)) if values.size > ddof else float("nan")
            )
        entry["n_corruptions"] = int(group["corruption"].nunique())
        out[method] = entry
    columns = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")] + ["n_corruptions"]
    table = pd.DataFrame.from_dict(out, orient="index", columns=columns)
    table.index.name = "method"
    table["n_corruptions"] = table["n_corruptions"].astype(int)
    return table.sort_values("auroc_mean", kind="stable")


def _cell(mean: float, std: float, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_markdown(table: pd.DataFrame, *, digits: int = 2, published: bool = True) -> str:
    """Render a :func:`summary_table` as a markdown table with "mean ± std" cells (percent).

    With ``published``, two more columns give the paper's AUROC and AUPR-Out for the same method
    ("–" where the paper has no such row), so measured and published sit side by side.
    """
    paper = paper_table1()
    header = ["Method", "AUROC", "AUPR-In", "AUPR-Out", "Corruptions"]
    if published:
        header += ["Paper AUROC", "Paper AUPR-Out"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for method, row in table.iterrows():
        label = paper[method]["label"] if method in paper else str(method)
        cells = [
            label,
            _cell(row["auroc_mean"], row["auroc_std"], digits),
            _cell(row["aupr_in_mean"], row["aupr_in_std"], digits),
            _cell(row["aupr_out_mean"], row["aupr_out_std"], digits),
            str(int(row["n_corruptions"])),
        ]
        if published:
            ref = paper.get(method)
            cells += (
                [
                    _cell(ref["auroc_mean"], ref["auroc_std"], digits),
                    _cell(ref["aupr_out_mean"], ref["aupr_out_std"], digits),
                ]
                if ref
                else ["–", "–"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paper_table1() -> dict[str, dict[str, Any]]:
    """The paper's Table 1 (MNIST-C, mean ± std over 15 corruptions, percent).

    Keys are this project's detector names (plus ``docc`` and ``aegan``, which it does not run);
    each value has ``label`` (the paper's name), ``auroc_mean``, ``auroc_std``, ``aupr_out_mean``
    and ``aupr_out_std``. The paper reports no AUPR-In and no MSP row.
    """
    rows = [
        ("kde", "KDE", 57.46, 32.09, 62.56, 24.16),
        ("mve", "MVE", 62.84, 21.92, 61.42, 19.1),
        ("docc", "DOCC", 69.16, 28.35, 70.37, 23.25),
        ("kpca", "kPCA", 72.12, 31.00, 75.39, 26.37),
        ("svdd", "SVDD", 74.01, 21.39, 73.33, 21.98),
        ("pca", "PCA", 77.71, 30.90, 80.86, 25.2),
        ("gaussian", "Gaussian", 80.57, 29.71, 84.51, 22.62),
        ("vog", "VoG", 85.42, 10.28, 84.96, 9.61),
        ("ae", "AE", 89.89, 18.52, 89.99, 18.19),
        ("aegan", "AEGAN", 95.93, 7.90, 95.40, 9.46),
    ]
    return {
        key: {
            "label": label,
            "auroc_mean": au_m,
            "auroc_std": au_s,
            "aupr_out_mean": out_m,
            "aupr_out_std": out_s,
        }
        for key, label, au_m, au_s, out_m, out_s in rows
    }


def auroc_claim(
    clean_scores: np.ndarray,
    corrupt_scores: np.ndarray,
    *,
    rng: np.random.Generator,
    method: str = "vog",
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The claim "``method`` detects corrupted examples better than chance": AUROC above 0.5.

    ``clean_scores`` (N,) and ``corrupt_scores`` (M,) are higher = more OoD (pool the corruptions
    first for one overall claim). Returns :func:`stats.claim`'s record (``expected``,
    ``measured``, ``holds``, ``interval``, ``confident``) with a percentile bootstrap interval
    over examples, plus ``method``, ``n_clean``, ``n_out`` and the paper's mean AUROC as a
    fraction under ``published`` (None where the paper has no such row).
    """
    clean = np.asarray(clean_scores, dtype=np.float64).ravel()
    corrupt = np.asarray(corrupt_scores, dtype=np.float64).ravel()
    scores = np.concatenate([clean, corrupt])
    is_out = np.concatenate([np.zeros(clean.size, bool), np.ones(corrupt.size, bool)])
    measured = auroc(scores, is_out)
    interval = bootstrap_ci(auroc, scores, is_out, n_boot=n_boot, confidence=confidence, rng=rng)
    out = claim("above", measured, interval=interval, null=0.5, name="auroc")
    ref = paper_table1().get(method)
    out.update(
        {
            "method": method,
            "n_clean": int(clean.size),
            "n_out": int(corrupt.size),
            "confidence": confidence,
            "published": ref["auroc_mean"] / 100.0 if ref else None,
        }
    )
    return out
