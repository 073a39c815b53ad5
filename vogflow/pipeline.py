"""Glue shared by the pipeline stages: the data a run was trained on, and stage file layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vogflow.config import DataConfig


def load_run_data(
    data_cfg: DataConfig, root: Path, run_dir: str | Path, manifest: dict[str, Any]
) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Per split: the inputs and ``label``/``true_label``/``noisy`` exactly as the run saw them.

    Fails if the data changed since the run was trained (its fingerprint is in the manifest).
    """
    from vogflow.checkpoints import CheckpointError
    from vogflow.data import load_dataset
    from vogflow.io import read_npz
    from vogflow.train import LABELS, data_fingerprint

    dataset = load_dataset(data_cfg, root)
    if data_fingerprint(dataset) != manifest["data_fingerprint"]:
        raise CheckpointError(
            f"{run_dir}: the dataset differs from the one this run was trained on "
            "(data params or files changed); retrain the run"
        )
    train_labels = read_npz(Path(run_dir) / LABELS)
    test_y = dataset.test.y
    return {
        "train": (dataset.train.x, train_labels),
        "test": (dataset.test.x, {"label": test_y, "true_label": test_y,
                                  "noisy": np.zeros(len(test_y), dtype=bool)}),
    }  # fmt: skip


def load_extraction(path: str | Path) -> tuple[Any, dict[str, np.ndarray]]:
    """A gradients-stage ``.npz``: the :class:`Extraction` and ``true_label``/``noisy``."""
    from vogflow.gradients import Extraction
    from vogflow.io import read_npz

    arrays = read_npz(path)
    extra = {k: arrays.pop(k) for k in ("true_label", "noisy")}
    return Extraction.from_arrays(arrays), extra


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
