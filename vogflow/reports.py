"""Score-stage reports: every VoG variant side by side, error per decile, and its DVC plot file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def score_variants(table: Any, *, windows=None, modes=("label", "pred")) -> dict[str, np.ndarray]:
    """Every VoG score of a rankings table side by side: ``<w>_<m>`` (as configured), plus
    ``_abs`` (|z|) and ``_raw`` variants, since the paper leaves the normalisation ambiguous."""
    from vogflow.vog import WINDOWS, class_normalise

    out = {}
    for w in windows or WINDOWS:
        for m in modes:
            col = f"vog_{w}_{m}"
            if col not in table.columns:
                continue
            classes = table["label" if m == "label" else "pred"].to_numpy()
            raw = table[f"{col}_raw"].to_numpy()
            out[f"{w}_{m}"] = table[col].to_numpy()
            out[f"{w}_{m}_abs"] = class_normalise(raw, classes, method="abs")
            out[f"{w}_{m}_raw"] = raw
    return out


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


def write_curves(report: dict[str, Any], path: str | Path) -> None:
    """Error per bucket as one wide CSV (``bucket`` then a column per score): a DVC plot."""
    import pandas as pd

    from vogflow.io import write_text

    curves = report["curves"]
    table = pd.DataFrame({"bucket": np.arange(report["bins"])})
    for key, curve in curves.items():
        table[key] = curve["error"]
    write_text(path, table.to_csv(index=False, float_format="%.6g"))
