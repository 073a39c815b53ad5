"""One split of a user's image folder or ``.npz``, as their model was fed it (``vogflow audit``).

The images as loaded (in ``[0, 1]``), or standardised with the statistics a checkpoint manifest
records, in memory or streamed from disk: the same bits either way, so streaming only trades
speed for memory, as ``data.stream`` does in the pipeline. Image folders carry each example's
file path, for the rankings table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vogflow.config.schema import DataConfig
from vogflow.data import disk, files, stream


@dataclass(frozen=True)
class UserSplit:
    x: Any  # an array, or a StreamedImages read row by row
    y: np.ndarray
    paths: tuple[str, ...] | None  # image folders: each row's file, relative to the folder
    streamed: bool

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def load_user_split(
    kind: str,
    path: str,
    split: str,
    *,
    normalisation: dict[str, Any] | None = None,
    stream_mode: bool | str = "auto",
    workers: int = 2,
    root: Path | None = None,
) -> UserSplit:
    """``split`` of the ``kind`` (``npz``/``imagefolder``) dataset at ``path``.

    ``normalisation``: ``{"mean": [...], "std": [...]}`` per channel to standardise with (the
    manifest's), else the inputs stay as loaded. ``stream_mode``: as ``data.stream``.
    """
    cfg = DataConfig(name=kind, path=path, stream=stream_mode, workers=workers)
    cfg.validate("data")
    chosen = disk.sources_or_raw(cfg, Path.cwd() if root is None else root)
    train = split == "train"
    if not isinstance(chosen, files.FileStreams):
        x, y = (chosen.x_train, chosen.y_train) if train else (chosen.x_test, chosen.y_test)
        paths = chosen.train_paths if train else chosen.test_paths
        return UserSplit(standardised(x, normalisation), y, paths, streamed=False)
    source = chosen.train if train else chosen.test
    channels = source.item_shape[0]
    mean = tuple(normalisation["mean"]) if normalisation else (0.0,) * channels
    std = tuple(normalisation["std"]) if normalisation else (1.0,) * channels
    y = chosen.y_train if train else chosen.y_test
    paths = chosen.train_paths if train else chosen.test_paths
    # (raw - 0) / 1 is raw exactly: unstandardised rows are the loaded bits.
    x = stream.StreamedImages(source, mean, std, workers=workers)
    return UserSplit(x, y, paths, streamed=True)


def standardised(x: np.ndarray, normalisation: dict[str, Any] | None) -> np.ndarray:
    """``x`` standardised per channel (per feature for ``(N, D)``), or as it is without stats."""
    if not normalisation:
        return x
    x = np.asarray(x, dtype=np.float32)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    mean = np.asarray(normalisation["mean"], dtype=np.float32).reshape(shape)
    std = np.asarray(normalisation["std"], dtype=np.float32).reshape(shape)
    return (x - mean) / std
