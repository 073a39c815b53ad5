"""Splits that stay on disk: lazy normalised rows, streaming statistics, the pass cache.

A :class:`StreamedImages` stands where an in-memory split's ``x`` array stands (``len``, ``shape``,
``x[i]``, ``x[idx]``, ``x[a:b]``) and reads only the rows asked for. Streamed and in-memory splits
of the same files hold the same bits: both normalise raw float32 rows with the same float32
operations, with statistics from the same chunked float64 pass (:func:`channel_stats`). The
stream-or-not choice is :mod:`vogflow.data.disk`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# Rows per chunk hold about this many values: the statistics of a stream and of an in-memory
# array walk the same chunks, so both modes sum in the same order (and get the same bits).
CHUNK_VALUES = 1 << 20
# `auto` streams when the decoded splits would take more than this share of available memory:
# loading holds them once, and the model, the outputs and other processes need the rest.
MEMORY_SHARE = 0.25
# Bump when what the cache holds is computed differently.
CACHE_VERSION = 1


class Source(Protocol):
    """Raw examples of one split: float32 images in [0, 1], ``(C, H, W)`` each."""

    item_shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Raw rows ``index`` (1-D ints, any order), stacked ``(len(index), C, H, W)``."""
        ...


def chunk_rows(item_shape: tuple[int, ...]) -> int:
    return max(1, CHUNK_VALUES // max(1, int(np.prod(item_shape))))


def raw_chunks(source: Source) -> Iterator[np.ndarray]:
    """The split's raw rows in order, a fixed number of rows at a time."""
    step = chunk_rows(source.item_shape)
    for start in range(0, len(source), step):
        yield source.rows(np.arange(start, min(start + step, len(source))))


def channel_stats(chunks: Iterator[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``(n, C, H, W)`` chunks, accumulated in float64.

    Chunks are merged with Chan et al.'s pairwise update, so the result does not depend on the
    data's scale the way a sum of squares would. A std below 1e-6 is raised to 1e-6 (a constant
    channel would divide by zero), as for in-memory data.
    """
    count, mean, m2 = 0, None, None
    for chunk in chunks:
        c = np.ascontiguousarray(chunk, dtype=np.float32)
        k = c.shape[0] * c.shape[2] * c.shape[3]
        if k == 0:
            continue
        c_mean = c.sum(axis=(0, 2, 3), dtype=np.float64) / k
        centred = c.astype(np.float64) - c_mean.reshape(1, -1, 1, 1)
        c_m2 = np.square(centred).sum(axis=(0, 2, 3))
        if mean is None:
            count, mean, m2 = k, c_mean, c_m2
            continue
        total = count + k
        delta = c_mean - mean
        mean = mean + delta * (k / total)
        m2 = m2 + c_m2 + np.square(delta) * (count * k / total)
        count = total
    if mean is None:
        raise ValueError("channel_stats: no examples")
    std = np.sqrt(m2 / count)
    return tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std)


def _scale(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return m, s


class StreamedImages:
    """A split's normalised inputs, read from ``source`` row by row when indexed.

    Row ``i`` is ``(raw_i - mean) / std`` in float32, exactly what the in-memory split holds.
    Converting the whole split to one array is refused: that is the copy streaming avoids.
    """

    dtype = np.dtype(np.float32)

    def __init__(
        self, source: Source, mean: tuple[float, ...], std: tuple[float, ...], *, workers: int = 0
    ) -> None:
        self.source = source
        self.workers = workers  # loader processes to read it with (data.workers)
        self.mean, self.std = mean, std
        self._m, self._s = _scale(mean, std)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.source), *self.source.item_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.source)

    def normalised(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self._m) / self._s

    def __getitem__(self, key: Any) -> np.ndarray:
        n = len(self)
        if isinstance(key, int | np.integer):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} is out of range for {n} examples")
            return self.normalised(self.source.rows(np.array([i])))[0]
        if isinstance(key, slice):
            index = np.arange(n)[key]
        else:
            index = np.asarray(key)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            index = np.where(index < 0, index + n, index).astype(np.int64)
            if index.size and (index.min() < 0 or index.max() >= n):
                raise IndexError(f"rows out of range for {n} examples")
        if index.size == 0:
            return np.empty((0, *self.source.item_shape), dtype=np.float32)
        return self.normalised(self.source.rows(index))

    def chunks(self) -> Iterator[np.ndarray]:
        """Every normalised row in order, in the chunks of :func:`raw_chunks`."""
        for raw in raw_chunks(self.source):
            yield self.normalised(raw)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(
            "a streamed split is not converted to one array (it may not fit in memory); index "
            "the rows needed, or iterate vogflow.data.loaders over it"
        )


class MappedRows:
    """``fn(base[key])`` for whichever rows are asked for (e.g. display images of a stream)."""

    def __init__(self, base: Any, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.base, self.fn = base, fn
        self.shape, self.ndim = base.shape, base.ndim

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.fn(self.base[key])


def array_chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    """Views of ``x`` in the chunks :func:`raw_chunks` reads from a source of the same rows."""
    step = chunk_rows(x.shape[1:])
    for start in range(0, len(x), step):
        yield x[start : start + step]


def fits_in_memory(values: int) -> bool:
    """Whether ``values`` float32 numbers take at most :data:`MEMORY_SHARE` of available memory."""
    available = available_memory()
    return available is None or values * 4 <= MEMORY_SHARE * available


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping; None where it does not say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------
# Cache of what a full pass over the files computes (statistics, fingerprint)


def cache_key(identity: dict[str, Any]) -> str:
    """A key for files described by ``identity`` (their names, sizes and modification times, as
    DVC judges a file unchanged)."""
    blob = json.dumps({"version": CACHE_VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class PassCache:
    """Values computed by a full pass over one dataset's files, kept in ``folder/<key>.json``.

    Every stage that loads a streamed dataset needs its statistics (and most its fingerprint);
    without the cache each would decode the whole dataset again. A value is recomputed when the
    files' names, sizes or modification times change. An unreadable cache file is recomputed.
    """

    def __init__(self, folder: Path | None, key: str) -> None:
        self.path = None if folder is None else Path(folder) / f"{key}.json"

    def _read(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, name: str, compute: Callable[[], Any]) -> Any:
        data = self._read()
        if name in data:
            return data[name]
        value = compute()
        if self.path is not None:
            from vogflow.common.atomic import write_json

            try:
                write_json(self.path, {**self._read(), name: value})
            except OSError:
                pass  # a read-only project still works, paying the pass each time
        return value


def dataset_fingerprint(dataset: Any) -> str:
    """``training.labels.data_fingerprint`` of a dataset with a streamed split: one pass over its
    files, cached beside the statistics."""
    parts = [dataset.train.x, dataset.train.y, dataset.test.x, dataset.test.y]
    cache = dataset.info.get("pass_cache")
    if cache is None:
        return fingerprint(parts)
    return cache.get("fingerprint", lambda: fingerprint(parts))


def fingerprint(parts: list[np.ndarray | StreamedImages]) -> str:
    """sha256 over the parts' bytes in order: the digest ``training.labels.data_fingerprint`` gives
    the same data in memory, read a chunk at a time."""
    digest = hashlib.sha256()
    for part in parts:
        chunks = part.chunks() if isinstance(part, StreamedImages) else [part]
        for chunk in chunks:
            digest.update(np.ascontiguousarray(chunk).tobytes())
    return digest.hexdigest()
