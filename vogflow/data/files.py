"""What the user's own files share, whichever their kind (:mod:`vogflow.data.imagefolder`,
:mod:`vogflow.data.npz`): where ``data.path`` points, and both splits as stream sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vogflow.config.schema import DataConfig


def resolve(cfg: DataConfig, root: Path) -> Path:
    """``data.path``, relative to ``root`` unless absolute."""
    path = Path(cfg.path)
    return path if path.is_absolute() else Path(root) / path


@dataclass(frozen=True)
class FileStreams:
    """Both splits of a file dataset as stream sources, with what is small enough to hold."""

    train: Any  # vogflow.data.stream.Source
    y_train: np.ndarray
    test: Any
    y_test: np.ndarray
    classes: tuple[str, ...]
    train_paths: tuple[str, ...] | None
    test_paths: tuple[str, ...] | None
    identity: dict[str, Any]  # what the files are, for caching a pass over them


def stamp(path: Path) -> list[int]:
    """A file's size and modification time: as DVC judges it unchanged (a cache key part)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]
