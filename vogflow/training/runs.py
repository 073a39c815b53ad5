"""What the stages read back from a run: the data it was trained on, its gradients file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vogflow.config.schema import DataConfig


def load_run_dataset(
    data_cfg: DataConfig, root: Path, run_dir: str | Path, manifest: dict[str, Any]
) -> Any:
    """The dataset a run was trained on; fails if the data changed since (its fingerprint is in
    the manifest), so no stage scores a run on other data than it saw."""
    from vogflow.data import load_dataset
    from vogflow.errors import CheckpointError
    from vogflow.training.labels import data_fingerprint

    dataset = load_dataset(data_cfg, root)
    if data_fingerprint(dataset) != manifest["data_fingerprint"]:
        raise CheckpointError(
            f"{run_dir}: the dataset differs from the one this run was trained on "
            "(data params or files changed); retrain the run"
        )
    return dataset


def load_run_data(
    data_cfg: DataConfig, root: Path, run_dir: str | Path, manifest: dict[str, Any]
) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Per split: the inputs (an array, or a stream read on demand) and
    ``label``/``true_label``/``noisy`` exactly as the run saw them, with ``path`` (each example's
    file relative to ``data.path``) for image folders."""
    from vogflow.common.atomic import read_npz
    from vogflow.training.labels import LABELS

    dataset = load_run_dataset(data_cfg, root, run_dir, manifest)
    train_labels = read_npz(Path(run_dir) / LABELS)
    test_y = dataset.test.y
    test_labels = {
        "label": test_y,
        "true_label": test_y,
        "noisy": np.zeros(len(test_y), dtype=bool),
    }
    for labels, split in ((train_labels, dataset.train), (test_labels, dataset.test)):
        if split.paths is not None:
            labels["path"] = np.asarray(split.paths, dtype=str)
    return {"train": (dataset.train.x, train_labels), "test": (dataset.test.x, test_labels)}
