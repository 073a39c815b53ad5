"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 read through torchvision, from local files first.

torchvision's own classes check and parse the files, so a folder prepared by any torchvision user
works as is; a download is attempted only when the files are absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vogflow.config.schema import DataConfig
from vogflow.data.splits import RawSplits
from vogflow.errors import DataError

# Published per-channel statistics of each training split, so that rankings do not depend on
# whichever subset happens to be loaded.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "MNIST": ((0.1307,), (0.3081,)),
    "FashionMNIST": ((0.2860,), (0.3530,)),
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _open(cls: type, name: str, directory: Path, train: bool) -> Any:
    try:
        # Files already there: torchvision finds them and never opens a connection.
        return cls(str(directory), train=train, download=False)
    except RuntimeError:
        pass
    try:
        return cls(str(directory), train=train, download=True)
    except Exception as err:
        # Whatever went wrong (no network, a proxy, a bad archive), the remedy is the same.
        files = directory / getattr(cls, "base_folder", f"{cls.__name__}/raw")
        raise DataError(
            f"{name}: no usable files in {files} (absent, or not matching torchvision's "
            f"checksums) and the download into {directory} failed: {str(err).strip()}. "
            f"Run once on a machine with network access, or copy the {name} files of a "
            f"torchvision data folder into {files}."
        ) from err


def _images(data: Any, channels_last: bool) -> np.ndarray:
    # .data holds the whole split as uint8; reading it directly avoids one PIL image per example.
    x = np.asarray(data, dtype=np.uint8)
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif channels_last:
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def _load(cls_name: str, cfg: DataConfig, root: Path, channels_last: bool) -> RawSplits:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, cls_name)
    directory = Path(root) / cfg.root
    train = _open(cls, cls_name, directory, train=True)
    test = _open(cls, cls_name, directory, train=False)
    mean, std = STATS[cls_name]
    return RawSplits(
        x_train=_images(train.data, channels_last),
        y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=_images(test.data, channels_last),
        y_test=np.asarray(test.targets, dtype=np.int64),
        classes=tuple(str(c) for c in train.classes),
        mean=mean,
        std=std,
    )


def load_mnist(cfg: DataConfig, root: Path) -> RawSplits:
    """MNIST digits, ``(N, 1, 28, 28)``: 60,000 train and 10,000 test images."""
    return _load("MNIST", cfg, root, channels_last=False)


def load_fashion_mnist(cfg: DataConfig, root: Path) -> RawSplits:
    """Fashion-MNIST clothing, ``(N, 1, 28, 28)``: 60,000 train and 10,000 test images."""
    return _load("FashionMNIST", cfg, root, channels_last=False)


def load_cifar10(cfg: DataConfig, root: Path) -> RawSplits:
    """CIFAR-10, ``(N, 3, 32, 32)``: 50,000 train and 10,000 test images, 10 classes."""
    return _load("CIFAR10", cfg, root, channels_last=True)


def load_cifar100(cfg: DataConfig, root: Path) -> RawSplits:
    """CIFAR-100 with its 100 fine labels, ``(N, 3, 32, 32)``: 50,000 train, 10,000 test."""
    return _load("CIFAR100", cfg, root, channels_last=True)
