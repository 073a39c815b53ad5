"""Datasets from a folder of images per class (``PATH/{train,test}/<class>/*.png``): read into
memory, or listed for :mod:`vogflow.data.stream` to decode each image when it is read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vogflow.config.schema import DataConfig
from vogflow.data.files import FileStreams, resolve, stamp
from vogflow.data.splits import RawSplits
from vogflow.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Modes that carry one grey channel; a folder made only of these loads as (N, 1, H, W).
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# 16-bit greyscale (16-bit PNG) would be clipped to 255 by a plain conversion to 8 bits.
WIDE_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def _class_dirs(split_dir: Path) -> list[str]:
    # Hidden folders (editor or OS metadata) are not classes.
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    files = [
        p
        for p in class_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    # Sorted by relative path so that example i stays example i on every machine.
    return sorted(files, key=lambda p: p.relative_to(class_dir).as_posix())


def _split_files(
    split_dir: Path, classes: list[str], *, every_class: bool = False
) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _image_files(split_dir / name)
        if every_class and not found:
            # A class the model never sees in training would still get an output unit.
            raise ConfigError(
                f"data.path: the class folder {str(split_dir / name)!r} holds no images; every "
                f"class needs training images: add some or remove the folder from both splits"
            )
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise ConfigError(
            f"data.path: {str(split_dir)!r} holds no images; expected "
            f"{split_dir}/<class>/*.png (or .jpg, .jpeg)"
        )
    return files, np.asarray(labels, dtype=np.int64)


def _to_array(img: Any, grey: bool, size: int) -> np.ndarray:
    from PIL import Image

    if grey and img.mode in WIDE_GREY_MODES:
        img, scale = img.convert("F"), 65535.0
    elif grey and img.mode == "F":
        scale = 1.0
    else:
        img, scale = img.convert("L" if grey else "RGB"), 255.0
    if size > 0 and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / np.float32(scale)
    # Contiguous CHW: a stack of transposed views would be channels-last in memory, and conv
    # kernels take another path (other bits) on channels-last inputs than on the loaders' batches.
    return x[None, :, :] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))


def _image_damage() -> tuple[type[BaseException], ...]:
    from PIL import Image

    # PIL reports a damaged file as OSError (unidentified, truncated, broken stream), and a few
    # decoders as SyntaxError or ValueError; a bomb is a file, not a bug, too.
    return (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _unreadable(f: Path, err: BaseException) -> ConfigError:
    return ConfigError(
        f"data.path: image {str(f)!r} cannot be read ({type(err).__name__}: {err}); it is "
        "corrupted, truncated or not an image: replace or delete it"
    )


def _read_images(files: list[Path], grey: bool, size: int) -> np.ndarray:
    from PIL import Image

    damage = _image_damage()
    arrays = []
    for f in files:
        try:
            with Image.open(f) as img:
                arrays.append(_to_array(img, grey, size))
        except damage as err:
            raise _unreadable(f, err) from err
    return np.stack(arrays).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Folder:
    """An image folder as scanned: files and labels per split, and how to decode them."""

    path: Path
    classes: tuple[str, ...]
    train_files: list[Path]
    y_train: np.ndarray
    test_files: list[Path]
    y_test: np.ndarray
    grey: bool
    size: tuple[int, int]  # (H, W) of every decoded image

    def paths(self, files: list[Path]) -> tuple[str, ...]:
        """``files`` relative to the folder, as a person finds them (``train/cat/001.png``)."""
        return tuple(f.relative_to(self.path).as_posix() for f in files)


def scan_imagefolder(cfg: DataConfig, root: Path) -> Folder:
    """Check the layout of ``data.path`` and list its images, reading headers only."""
    from PIL import Image

    path = resolve(cfg, root)
    layout = "PATH/train/<class>/*.png and PATH/test/<class>/*.png (or val/ instead of test/)"
    if not path.is_dir():
        raise ConfigError(f"data.path: {str(path)!r} is not a folder; expected {layout}")
    train_dir = path / "train"
    test_dir = path / "test" if (path / "test").is_dir() else path / "val"
    for split_dir in (train_dir, test_dir):
        if not split_dir.is_dir():
            present = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise ConfigError(
                f"data.path: {str(path)!r} has no {split_dir.name!r} folder (folders there: "
                f"{present or 'none'}); expected {layout}"
            )

    classes = _class_dirs(train_dir)
    test_classes = _class_dirs(test_dir)
    if classes != test_classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise ConfigError(
            f"data.path: the class folders of {str(train_dir)!r} and {str(test_dir)!r} differ "
            f"(only in {train_dir.name}: {only_train or 'none'}; only in {test_dir.name}: "
            f"{only_test or 'none'}); both splits need the same class folders"
        )

    train_files, y_train = _split_files(train_dir, classes, every_class=True)
    test_files, y_test = _split_files(test_dir, classes)

    # One pass over the headers (cheap: no pixel data is decoded) to settle mode and size.
    grey = True
    first_size: tuple[int, int] | None = None
    damage = _image_damage()
    for f in train_files + test_files:
        try:
            img = Image.open(f)
        except damage as err:
            raise _unreadable(f, err) from err
        with img:
            grey = grey and img.mode in GREY_MODES
            if cfg.image_size > 0:
                continue
            if first_size is None:
                first_size, first_file = img.size, f
            elif img.size != first_size:
                raise ConfigError(
                    f"data.image_size: 0 keeps every image's size, but {str(f)!r} is "
                    f"{img.size[0]}x{img.size[1]} while {str(first_file)!r} is "
                    f"{first_size[0]}x{first_size[1]}; set data.image_size to a square size "
                    f"(e.g. {max(first_size)}) to resize all images"
                )
    # PIL sizes are (width, height); arrays are (H, W).
    size = (cfg.image_size,) * 2 if cfg.image_size > 0 else (first_size[1], first_size[0])
    return Folder(path, tuple(classes), train_files, y_train, test_files, y_test, grey, size)


def load_imagefolder(cfg: DataConfig, root: Path) -> RawSplits:
    """``PATH/{train,test}/<class>/*.png|jpg``; classes are the sorted folder names.

    ``val`` stands in for ``test`` when there is no ``test`` folder. Images are RGB, or grey when
    every image is grey; resized to ``data.image_size`` squares when it is > 0.
    """
    return read_imagefolder(scan_imagefolder(cfg, root), cfg)


def read_imagefolder(folder: Folder, cfg: DataConfig) -> RawSplits:
    """Decode every image of a scanned folder into memory."""
    return RawSplits(
        x_train=_read_images(folder.train_files, folder.grey, cfg.image_size),
        y_train=folder.y_train,
        x_test=_read_images(folder.test_files, folder.grey, cfg.image_size),
        y_test=folder.y_test,
        classes=folder.classes,
        train_paths=folder.paths(folder.train_files),
        test_paths=folder.paths(folder.test_files),
    )


class ImageFiles:
    """One split of an image folder as a stream :class:`~vogflow.data.stream.Source`: each row is
    decoded when read, exactly as :func:`load_imagefolder` decodes it."""

    def __init__(self, files: list[Path], grey: bool, image_size: int, size: tuple[int, int]):
        self.files, self.grey, self.image_size = files, grey, image_size
        self.item_shape = (1 if grey else 3, *size)

    def __len__(self) -> int:
        return len(self.files)

    def rows(self, index: np.ndarray) -> np.ndarray:
        return _read_images([self.files[i] for i in index], self.grey, self.image_size)


def stream_imagefolder(folder: Folder, cfg: DataConfig) -> FileStreams:
    """A scanned image folder as sources that decode each image when it is read."""
    listing = [
        [f.relative_to(folder.path).as_posix(), *stamp(f)]
        for f in folder.train_files + folder.test_files
    ]
    return FileStreams(
        train=ImageFiles(folder.train_files, folder.grey, cfg.image_size, folder.size),
        y_train=folder.y_train,
        test=ImageFiles(folder.test_files, folder.grey, cfg.image_size, folder.size),
        y_test=folder.y_test,
        classes=folder.classes,
        train_paths=folder.paths(folder.train_files),
        test_paths=folder.paths(folder.test_files),
        identity={
            "kind": "imagefolder",
            "path": str(folder.path.resolve()),
            "image_size": cfg.image_size,
            "files": listing,
        },
    )
