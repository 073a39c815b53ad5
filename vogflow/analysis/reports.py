"""Stage reports: every VoG variant side by side, error per decile, its DVC plot file, and the
scalar headline of a claim that metrics files carry (the detail stays in each stage's report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def score_variants(table: Any, *, windows=None, modes=("label", "pred")) -> dict[str, np.ndarray]:
    """Every VoG score of a rankings table side by side: ``<w>_<m>`` (as configured), plus
    ``_abs`` (|z|) and ``_raw`` variants, since the paper leaves the normalisation ambiguous."""
    from vogflow.config.names import WINDOWS
    from vogflow.scoring.vog import class_normalise

    out = {}
    for w in windows or WINDOWS:
        for m in modes:
            col = f"vog_{w}_{m}"
            if col not in table.columns or f"{col}_raw" not in table.columns:
                continue
            classes = table["label" if m == "label" else "pred"].to_numpy()
            raw = table[f"{col}_raw"].to_numpy()
            out[f"{w}_{m}"] = table[col].to_numpy()
            out[f"{w}_{m}_abs"] = class_normalise(raw, classes, method="abs")
            out[f"{w}_{m}_raw"] = raw
    return out


# The paper's score (Figs. 4, 5): late window, true label. A run's own outputs rank by it when
# `vog.rank_by` names no single-run VoG variant (auto, a baseline, a seed mean).
PAPER_SCORE = "late_label"


def run_score(rank_by: str) -> str:
    """The ``score_variants`` key a single run's top table and decile headline use for
    ``vog.rank_by``: the VoG variant it names, else the paper's score."""
    from vogflow.config.names import WINDOWS

    name = rank_by.removeprefix("vog_")
    if name.split("_", 1)[0] not in WINDOWS or name.endswith("_seedmean"):
        return PAPER_SCORE
    return name


def decile_analysis(table: Any, vog_cfg: Any) -> dict[str, Any]:
    """Error per VoG decile of the final model, for every score variant (paper Figs. 4, 5, 12a)."""
    from vogflow.analysis.deciles import decile_report

    return decile_report(
        score_variants(table),
        table["correct"].to_numpy(),
        bins=vog_cfg.bins,
        n_boot=vog_cfg.bootstrap,
        confidence=vog_cfg.confidence,
        rng=np.random.default_rng(vog_cfg.seed),
    )


def write_curves(report: dict[str, Any], key: str, path: str | Path) -> None:
    """Error per bucket of one score with its interval (``bucket, error, lo, hi``): a DVC plot."""
    import pandas as pd

    from vogflow.common.atomic import write_text

    curve = report["curves"][key]
    interval = np.asarray(curve["error_interval"], dtype=float)
    table = pd.DataFrame(
        {
            "bucket": np.arange(report["bins"]),
            "error": curve["error"],
            "lo": interval[:, 0],
            "hi": interval[:, 1],
        }
    )
    write_text(path, table.to_csv(index=False, float_format="%.6g"))


def verdict(claim: dict[str, Any]) -> str:
    """``supported`` / ``contradicted`` when the whole interval lies on one side of the null,
    else ``inconclusive`` (a point estimate alone never decides)."""
    lo, hi = claim.get("interval", (float("nan"), float("nan")))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    null = claim["null"]
    up = claim["expected"] in ("increasing", "positive", "greater", "above")
    if (lo > null and up) or (hi < null and not up):
        return "supported"
    if (hi < null and up) or (lo > null and not up):
        return "contradicted"
    return "inconclusive"


def headline(claim: dict[str, Any]) -> dict[str, Any]:
    """A claim as flat scalars for a DVC metrics file: the paper's direction, the measured value
    with its interval, and the verdict."""
    lo, hi = claim.get("interval", (float("nan"), float("nan")))
    return {
        "expected": claim["expected"],
        "measured": claim["measured"],
        "lo": lo,
        "hi": hi,
        "verdict": verdict(claim),
    }
