"""Small rankings tables and datasets for the report and export tests: every column of the
contract a report reads, the label-issue estimate included, with known values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def rankings(
    n: int = 48, classes: int = 4, *, seed: int = 0, issues: bool = True, ranked: bool = False
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < 0.2, (label + 1) % classes, label)
    table = pd.DataFrame(
        {
            "index": np.arange(n),
            "label": label,
            "true_label": label,
            "noisy": np.zeros(n, dtype=bool),
            "pred": pred,
            "correct": pred == label,
            "vog_late_label_raw": rng.exponential(size=n),
            "vog_late_label": rng.normal(size=n),
            "vog_late_pred": rng.normal(size=n),
            "hard_loss": rng.exponential(size=n),
        }
    )
    if issues:
        flagged = rng.random(n) < 0.25
        table["label_issue"] = flagged
        table["suggested_label"] = np.where(flagged, (label + 2) % classes, label)
        table["suggested_label_prob"] = np.where(flagged, rng.uniform(0.5, 1, n), 0.0)
        table["label_prob"] = np.where(flagged, rng.uniform(0, 0.3, n), rng.uniform(0.6, 1, n))
        table.loc[flagged, "suggested_label_prob"] = rng.uniform(0.5, 1, int(flagged.sum()))
    if ranked:
        table["rank_by"] = "hard_loss_seedmean"
        table["rank_score"] = table["hard_loss"] + rng.normal(scale=0.1, size=n)
        table["rank"] = table["rank_score"].rank(ascending=False, method="first").astype(int)
    return table


def npz_images(path: Path, n_test: int = 48, classes: int = 4, seed: int = 0) -> Path:
    """An ``.npz`` of 8x8 grey uint8 images, as ``vogflow audit --data npz:`` reads it."""
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8),
        y_train=rng.integers(0, classes, 16),
        x_test=rng.integers(0, 256, (n_test, 1, 8, 8), dtype=np.uint8),
        y_test=rng.integers(0, classes, n_test),
    )
    return path
