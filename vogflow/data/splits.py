"""What datasets are made of: the raw splits a loader returns, and the normalised ``Dataset``.

A loader returns raw images in ``[0, 1]`` (float32, NCHW) and integer labels; :func:`normalise`
applies the dataset's normalisation so every caller sees the same inputs. Row ``i`` of a split is
example ``i`` of that split, in the order the source defines, for ever: rankings are keyed by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vogflow.config.schema import STREAMABLE, DataConfig
from vogflow.data.stream import MappedRows, array_chunks, channel_stats
from vogflow.errors import ConfigError


@dataclass(frozen=True)
class RawSplits:
    """What a loader returns: images in [0, 1] as float32 NCHW (or (N, D) for points)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    # Fixed per-channel statistics (the published ones); None = computed on the training split.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # Each example's file relative to data.path (image folders), for a person to find it.
    train_paths: tuple[str, ...] | None = None
    test_paths: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Split:
    # (N, *input_shape) float32, normalised: an array, or a StreamedImages read from disk on
    # demand (index the rows needed; vogflow.data.loaders iterates it in batches).
    x: Any
    y: np.ndarray  # (N,) int64
    paths: tuple[str, ...] | None = None

    @property
    def streamed(self) -> bool:
        return not isinstance(self.x, np.ndarray)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # "none" or "crop_flip"; applied only while training
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "test"):
            raise ConfigError(f"split: {name!r} is not allowed; valid: train, test")
        return self.train if name == "train" else self.test

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        """Back to [0, 1] images for display. ``(N, C, H, W) -> (N, C, H, W)``.

        A streamed split comes back as a view that converts only the rows indexed.
        """
        if not isinstance(x, np.ndarray):
            return MappedRows(x, self.denormalise)
        if x.ndim != 4:
            return x
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return np.clip(x * std + mean, 0.0, 1.0)


AUGMENT_DEFAULT = {"cifar10": "crop_flip", "cifar100": "crop_flip"}


def normalise(cfg: DataConfig, raw: RawSplits) -> Dataset:
    x_train = np.asarray(raw.x_train, dtype=np.float32)
    x_test = np.asarray(raw.x_test, dtype=np.float32)
    if x_train.ndim == 4 and cfg.name in STREAMABLE and raw.mean is None:
        # The pass a streamed split makes, so both modes normalise with the same bits.
        mean, std = channel_stats(array_chunks(x_train))
        m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    elif x_train.ndim == 4:
        axes = (0, 2, 3)
        mean = raw.mean or tuple(float(v) for v in x_train.mean(axis=axes))
        std = raw.std or tuple(float(max(v, 1e-6)) for v in x_train.std(axis=axes))
        m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    else:
        mean = raw.mean or tuple(float(v) for v in x_train.mean(axis=0))
        std = raw.std or tuple(float(max(v, 1e-6)) for v in x_train.std(axis=0))
        m = np.asarray(mean, dtype=np.float32)
        s = np.asarray(std, dtype=np.float32)
    augment = cfg.augment if cfg.augment != "auto" else AUGMENT_DEFAULT.get(cfg.name, "none")
    return Dataset(
        name=cfg.name,
        train=Split(
            ((x_train - m) / s).astype(np.float32),
            np.asarray(raw.y_train, np.int64),
            raw.train_paths,
        ),
        test=Split(
            ((x_test - m) / s).astype(np.float32), np.asarray(raw.y_test, np.int64), raw.test_paths
        ),
        classes=tuple(raw.classes),
        mean=tuple(mean),
        std=tuple(std),
        augment=augment,
    )


def shuffle_labels(y: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace a seeded ``fraction`` of labels by a shuffle of those same labels (Zhang et al.).

    Returns ``(noisy_labels, noisy_mask)``; ``noisy_mask`` marks the chosen examples (a shuffled
    label may land on its own value by chance; the mask still marks it: it was not learned from
    its own label by construction, and the analyses say so). ``fraction=0`` returns a copy and an
    all-false mask.
    """
    y = np.asarray(y, dtype=np.int64)
    mask = np.zeros(y.shape, dtype=bool)
    if fraction <= 0:
        return y.copy(), mask
    rng = np.random.default_rng(seed)
    chosen = rng.choice(y.size, size=int(round(fraction * y.size)), replace=False)
    noisy = y.copy()
    noisy[chosen] = y[chosen][rng.permutation(chosen.size)]
    mask[chosen] = True
    return noisy, mask
