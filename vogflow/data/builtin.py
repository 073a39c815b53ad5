"""The offline datasets: scikit-learn's bundled digits and the paper's two-Gaussian toy problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vogflow.config import DataConfig
from vogflow.data import RawSplits


def _stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(y.size)
    train, test = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=y, shuffle=True
    )
    # Sorted so that an example's index follows the source order, whatever the split seed.
    return np.sort(train), np.sort(test)


def load_digits(cfg: DataConfig, root: Path) -> RawSplits:
    """8x8 grey digits (1797 images, 10 classes), shipped with scikit-learn: no download."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    train, test = _stratified_split(y, cfg.test_fraction, cfg.split_seed)
    return RawSplits(x[train], y[train], x[test], y[test], tuple(str(c) for c in range(10)))


def toy_points(n: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two isotropic unit-variance 2-D Gaussians, ``separation`` apart along the diagonal."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    centre = separation / (2 * np.sqrt(2.0))
    centres = np.where(y[:, None] == 1, centre, -centre)
    x = centres + rng.standard_normal((n, 2))
    return x.astype(np.float32), y.astype(np.int64)


def load_toy(cfg: DataConfig, root: Path) -> RawSplits:
    x, y = toy_points(1000, 3.0, cfg.split_seed)
    train, test = _stratified_split(y, cfg.test_fraction, cfg.split_seed)
    return RawSplits(x[train], y[train], x[test], y[test], ("0", "1"))
