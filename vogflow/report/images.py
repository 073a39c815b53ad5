"""The examples' pictures as inline PNG data URIs: the page and the Label Studio tasks carry
their images, so nothing has to be served or fetched.

Only the rows asked for are read (a streamed image folder stays on disk); tabular rows, which
have no picture, give none.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vogflow.figures.grids import _to_hwc

IMAGE_KINDS = ("npz", "imagefolder", "params")


def png_data_uri(image: np.ndarray) -> str:
    """One image, ``(C, H, W)``, ``(H, W, C)`` or ``(H, W)`` in [0, 1], as a PNG data URI."""
    from matplotlib.image import imsave

    hwc = _to_hwc(np.asarray(image)[None])[0]
    buffer = io.BytesIO()
    imsave(buffer, hwc, format="png", cmap="gray" if hwc.ndim == 2 else None, vmin=0, vmax=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def is_image_row(shape: Sequence[int]) -> bool:
    """``(C, H, W)`` with 1 or 3 channels: a picture; ``(D,)`` features are not."""
    return len(shape) == 3 and shape[0] in (1, 3)


@dataclass
class ImageSource:
    """Pictures of one split, by example index (row ``i`` = the table's ``index`` ``i``)."""

    rows: Any  # indexable by an int array -> (n, C, H, W) in [0, 1]
    n: int
    class_names: tuple[str, ...] | None
    described: str

    def uris(self, indices: Sequence[int]) -> dict[int, str]:
        wanted = sorted({int(i) for i in indices if 0 <= int(i) < self.n})
        if not wanted:
            return {}
        pictures = self.rows[np.asarray(wanted, dtype=np.int64)]
        return {i: png_data_uri(p) for i, p in zip(wanted, pictures, strict=True)}


def from_dataset(dataset: Any, split: str, described: str) -> ImageSource | None:
    """A pipeline dataset (:func:`vogflow.data.load_dataset`): its images, back in [0, 1]."""
    part = dataset.split(split)
    if not is_image_row(part.x.shape[1:]):
        return None
    return ImageSource(dataset.denormalise(part.x), len(part), tuple(dataset.classes), described)


def load(kind: str, path: str, split: str, *, root: Path | None = None) -> ImageSource | None:
    """The pictures of ``split`` of ``npz:PATH``, ``imagefolder:PATH`` (as ``vogflow audit``
    loads them: in [0, 1]) or ``params:PATH`` (the dataset a pipeline's params file names);
    None for tabular data."""
    if kind == "params":
        from vogflow.config.schema import load_params
        from vogflow.data import load_dataset

        params = load_params(path)
        base = root if root is not None else Path(path).resolve().parent
        return from_dataset(load_dataset(params.data, base), split, f"{params.data.name}")
    from vogflow.data.user_split import load_user_split

    data = load_user_split(kind, path, split, root=root)
    if not is_image_row(data.input_shape):
        return None
    return ImageSource(data.x, len(data.y), None, f"{kind}:{path}")


def fetcher(source: ImageSource | None) -> Callable[[Sequence[int]], Mapping[int, str]] | None:
    return None if source is None else source.uris
