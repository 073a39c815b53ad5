"""Datasets by name: each loads as normalised ``(N, C, H, W)`` arrays (or streamed rows) with
stable indices.

The loaders are found by name (:data:`LOADERS`) and imported on demand: importing this module
counts as importing all of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from vogflow.config.schema import DATASETS, STREAMABLE, DataConfig
from vogflow.data.disk import load_files
from vogflow.data.splits import Dataset, RawSplits, normalise
from vogflow.errors import ConfigError

Loader = Callable[[DataConfig, Path], RawSplits]


# name -> (module, function); modules are imported on demand so that a digits audit never
# imports torchvision.
LOADERS: dict[str, tuple[str, str]] = {
    "digits": ("vogflow.data.builtin", "load_digits"),
    "toy": ("vogflow.data.builtin", "load_toy"),
    "mnist": ("vogflow.data.torchvision_sets", "load_mnist"),
    "fashion_mnist": ("vogflow.data.torchvision_sets", "load_fashion_mnist"),
    "cifar10": ("vogflow.data.torchvision_sets", "load_cifar10"),
    "cifar100": ("vogflow.data.torchvision_sets", "load_cifar100"),
    "imagefolder": ("vogflow.data.imagefolder", "load_imagefolder"),
    "npz": ("vogflow.data.npz", "load_npz"),
}


def _loader(name: str) -> Loader:
    if name not in LOADERS:
        raise ConfigError(f"data.name: {name!r} is not allowed; valid: {', '.join(DATASETS)}")
    module, func = LOADERS[name]
    return getattr(importlib.import_module(module), func)


def load_raw(cfg: DataConfig, root: str | Path = ".") -> RawSplits:
    """The dataset ``cfg.name`` as its loader returns it: images in [0, 1], not standardised.

    What a user's own model was fed (``vogflow audit``); the pipeline's models train on
    :func:`load_dataset`'s standardised inputs instead.
    """
    return _loader(cfg.name)(cfg, Path(root))


def load_dataset(cfg: DataConfig, root: str | Path = ".") -> Dataset:
    """Load the dataset ``cfg.name`` (paths in ``cfg`` are relative to ``root``).

    Image folders and .npz archives stream from disk when ``cfg.stream`` says so
    (:func:`vogflow.data.disk.load_files`): their splits' ``x`` is then read on demand.
    """
    if cfg.name in STREAMABLE:
        return load_files(cfg, Path(root))
    return normalise(cfg, load_raw(cfg, root))
