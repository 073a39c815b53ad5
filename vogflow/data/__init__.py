"""Datasets by name: each loads as in-memory, normalised ``(N, C, H, W)`` arrays, stable indices.

A loader returns raw images in ``[0, 1]`` (float32, NCHW) and integer labels; the dataset's
normalisation is applied so every caller sees the same inputs. Row ``i`` of a split is example
``i`` of that split, in the order the source defines, for ever: rankings are keyed by it.

The names live in :mod:`vogflow.data.splits` (what a dataset is made of) and
:mod:`vogflow.data.registry` (the loaders by name); they are re-exported here.
"""

from vogflow.data.registry import LOADERS, Loader, load_dataset, load_raw
from vogflow.data.splits import (
    AUGMENT_DEFAULT,
    Dataset,
    RawSplits,
    Split,
    normalise,
    shuffle_labels,
)

__all__ = [
    "AUGMENT_DEFAULT",
    "LOADERS",
    "Dataset",
    "Loader",
    "RawSplits",
    "Split",
    "load_dataset",
    "load_raw",
    "normalise",
    "shuffle_labels",
]
