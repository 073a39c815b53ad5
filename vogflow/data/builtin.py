"""The offline datasets: scikit-learn's bundled digits and the paper's two-Gaussian toy problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vogflow.config.schema import DataConfig
from vogflow.data.splits import RawSplits


def _stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: ``round(test_fraction * n_c)`` test examples of each class ``c``.

    Both index arrays are sorted, so an example's index follows the source order whatever the seed.
    """
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        test.append(rng.permutation(members)[: int(round(test_fraction * members.size))])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(y.size), test_idx), test_idx


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (images 8x8 in 0..16, labels).

    Read straight from the file scikit-learn ships, because importing ``sklearn.datasets`` costs
    about a second in every stage process; falls back to the public loader if the file moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.exists():
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return bunch.images, bunch.target.astype(np.int64)


def load_digits(cfg: DataConfig, root: Path) -> RawSplits:
    """8x8 grey digits (1797 images, 10 classes), shipped with scikit-learn: no download."""
    images, y = _digits_arrays()
    x = (images / 16.0).astype(np.float32)[:, None, :, :]
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
