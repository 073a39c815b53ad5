"""Image folders and .npz archives as datasets: streamed from disk or read into memory, as
``data.stream`` says; either way the inputs are the same bits."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from vogflow.config.schema import DataConfig
from vogflow.data import imagefolder, npz, stream
from vogflow.data.files import FileStreams
from vogflow.data.splits import AUGMENT_DEFAULT, Dataset, RawSplits, Split, normalise
from vogflow.errors import ConfigError


def load_files(
    cfg: DataConfig, root: Path, *, warn: Callable[[str], None] | None = None
) -> Dataset:
    """An image folder or .npz as a :class:`~vogflow.data.splits.Dataset`, streamed or in memory
    (:func:`sources_or_raw` chooses); either way the inputs are the same bits."""
    chosen = sources_or_raw(cfg, root, warn=warn)
    if isinstance(chosen, FileStreams):
        return streamed(cfg, root, chosen)
    return normalise(cfg, chosen)


def sources_or_raw(
    cfg: DataConfig, root: Path, *, warn: Callable[[str], None] | None = None
) -> FileStreams | RawSplits:
    """What ``cfg.stream`` chooses for an image folder or .npz: its stream sources
    (:class:`~vogflow.data.files.FileStreams`), or the raw splits read into memory
    (:class:`~vogflow.data.splits.RawSplits`).

    ``cfg.stream``: true streams, false loads into memory, ``auto`` streams only when the decoded
    splits would not comfortably fit (:func:`~vogflow.data.stream.fits_in_memory`). A compressed
    .npz, or one of tabular features, does not stream: refused when streaming was asked for,
    loaded into memory under ``auto`` (with a warning).
    """
    warn = warn or _stderr

    def wanted(values: int) -> bool:
        return cfg.stream is True or (cfg.stream == "auto" and not stream.fits_in_memory(values))

    if cfg.name == "imagefolder":
        folder = imagefolder.scan_imagefolder(cfg, root)
        n = len(folder.train_files) + len(folder.test_files)
        channels = 1 if folder.grey else 3
        if not wanted(n * channels * folder.size[0] * folder.size[1]):
            return imagefolder.read_imagefolder(folder, cfg)
        return imagefolder.stream_imagefolder(folder, cfg)
    if not wanted(npz.npz_values(cfg, root)):
        return npz.load_npz(cfg, root)
    try:
        return npz.stream_npz(cfg, root)
    except npz.NotStreamable as err:
        if cfg.stream is True:
            raise ConfigError(str(err)) from None
        warn(f"warning: {err}; loading it into memory instead")
        return npz.load_npz(cfg, root)


def streamed(cfg: DataConfig, root: Path, streams: FileStreams) -> Dataset:
    """The dataset of ``streams`` (:class:`~vogflow.data.files.FileStreams`), read on demand."""
    cache = stream.PassCache(Path(root) / ".vogflow" / "data", stream.cache_key(streams.identity))
    mean, std = cache.get(
        "stats", lambda: [list(v) for v in stream.channel_stats(stream.raw_chunks(streams.train))]
    )
    mean, std = tuple(mean), tuple(std)
    augment = cfg.augment if cfg.augment != "auto" else AUGMENT_DEFAULT.get(cfg.name, "none")
    return Dataset(
        name=cfg.name,
        train=Split(
            stream.StreamedImages(streams.train, mean, std, workers=cfg.workers),
            streams.y_train,
            streams.train_paths,
        ),
        test=Split(
            stream.StreamedImages(streams.test, mean, std, workers=cfg.workers),
            streams.y_test,
            streams.test_paths,
        ),
        classes=streams.classes,
        mean=mean,
        std=std,
        augment=augment,
        info={"pass_cache": cache},
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
