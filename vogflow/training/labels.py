"""What a run saw: the fingerprint of its data and the labels it trained on (``labels.npz``)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from vogflow.common.atomic import read_npz, sha256_bytes
from vogflow.data import Dataset

LABELS = "labels.npz"


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 over both splits' inputs and labels: the identity of the data a run saw."""
    if dataset.train.streamed or dataset.test.streamed:
        from vogflow.data.stream import dataset_fingerprint

        return dataset_fingerprint(dataset)
    parts = [dataset.train.x, dataset.train.y, dataset.test.x, dataset.test.y]
    return sha256_bytes(b"".join(np.ascontiguousarray(p).tobytes() for p in parts))


def labels_match(path: Path, labels: dict[str, np.ndarray]) -> bool:
    """Whether ``path`` holds exactly ``labels`` (``label``, ``true_label``, ``noisy``)."""
    try:
        saved = read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return False
    return all(k in saved and np.array_equal(saved[k], v) for k, v in labels.items())
