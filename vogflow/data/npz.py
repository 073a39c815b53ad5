"""Datasets from one ``.npz`` archive (``x_train, y_train, x_test, y_test``): read into memory, or
its images memory-mapped in place for :mod:`vogflow.data.stream` to read batch by batch."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vogflow.config.schema import DataConfig
from vogflow.data import npzmap
from vogflow.data.files import FileStreams, resolve, stamp
from vogflow.data.splits import RawSplits
from vogflow.data.stream import raw_chunks
from vogflow.errors import ConfigError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# What numpy's zip reader raises on damaged bytes (a bad CRC, a cut-off stream, a bad header).
NPZ_DAMAGE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
# Float images may be off [0, 1] by float rounding after the user's own conversions.
RANGE_SLACK = 1e-6


def _npz_features(key: str, x: np.ndarray, path: Path) -> np.ndarray:
    """Tabular features ``(N, D)``: any finite numbers (unlike images, they have no range)."""
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} has dtype {x.dtype}; tabular features must be "
            "numbers (encode categories as numbers before saving)"
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} holds NaN or infinite values; impute or drop "
            "them before saving"
        )
    return x


def _npz_images(key: str, x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 2:
        return _npz_features(key, x, path)
    _check_image_dtype(key, x.dtype, path)
    layout = _image_layout(key, x.shape, path)
    x = _scaled(x)
    if np.issubdtype(x.dtype, np.floating):
        finite = bool(np.isfinite(x).all())
        lo, hi = (float(x.min()), float(x.max())) if x.size and finite else (0.0, 0.0)
        _check_image_values(key, lo, hi, finite, path)
    return _laid_out(x, layout)


def _check_image_dtype(key: str, dtype: np.dtype, path: Path) -> None:
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} has dtype {dtype}; expected uint8 (0-255) "
            f"or float (values in [0, 1]); convert it before saving"
        )


def _check_image_values(key: str, lo: float, hi: float, finite: bool, path: Path) -> None:
    """Float images must be finite and in [0, 1] (``lo``, ``hi``: their extremes)."""
    if not finite:
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} holds NaN or infinite values; "
            f"replace them before saving"
        )
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
        fix = (
            "divide by 255 (or save uint8) before saving"
            if lo >= 0 and hi <= 255
            else "save the raw images scaled to [0, 1] (vogflow standardises them itself)"
        )
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} holds floats in [{lo:.4g}, {hi:.4g}]; float "
            f"images must lie in [0, 1]: {fix}"
        )


def _image_layout(key: str, shape: tuple[int, ...], path: Path) -> str:
    """How stored images become NCHW: ``nhw`` (add a channel), ``nhwc`` (move it) or ``nchw``."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) == 4:
        # Channels last when the last axis looks like channels and axis 1 does not.
        return "nhwc" if shape[-1] in (1, 3) and shape[1] not in (1, 3) else "nchw"
    raise ConfigError(
        f"data.path: {key} in {str(path)!r} has shape {shape} ({len(shape)} dimensions); "
        f"expected images as (N, H, W), (N, H, W, C) or (N, C, H, W), or features as (N, D)"
    )


def _scaled(x: np.ndarray) -> np.ndarray:
    """Stored images as float32 in [0, 1]: uint8 scaled by 1/255, floats kept as they are."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def _laid_out(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhw":
        return x[:, None, :, :]
    if layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _item_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "nhw":
        return (1, *shape[1:])
    if layout == "nhwc":
        return (shape[3], shape[1], shape[2])
    return tuple(shape[1:])


def _npz_labels(key: str, y: np.ndarray, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} has shape {y.shape}; expected one integer "
            f"class per example, shape (N,) (one-hot labels: save y.argmax(1))"
        )
    is_int = np.issubdtype(y.dtype, np.integer)
    # Float labels that are whole numbers (a common save format) are accepted as integers.
    if not is_int and not (
        np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()
    ):
        bad = y[: min(5, y.size)].tolist() if y.dtype.kind not in "fc" else _non_integers(y)
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} has dtype {y.dtype} with values such as {bad}; "
            f"expected integer class indices 0..K-1"
        )
    if y.size and y.min() < 0:
        raise ConfigError(
            f"data.path: {key} in {str(path)!r} holds the negative label {int(y.min())}; "
            f"expected integer class indices 0..K-1"
        )
    return y.astype(np.int64)


def _damaged_member(key: str, path: Path, err: BaseException) -> ConfigError:
    return ConfigError(
        f"data.path: {key} in {str(path)!r} is corrupted ({type(err).__name__}: {err}); save the "
        f"archive again with np.savez or np.savez_compressed"
    )


def _non_integers(y: np.ndarray) -> list[float]:
    bad = y[~(np.isfinite(y) & (y == np.round(y)))]
    return bad[:5].tolist()


def check_classes(y_train: np.ndarray, y_test: np.ndarray, *, source: str) -> int:
    """The class count ``K`` when the training labels are exactly ``0..K-1`` and test is within.

    A label no training example has would still build an output unit the model never learns,
    and shift every class count and metric: refused instead.
    """
    present = np.unique(y_train)
    k = int(present[-1]) + 1
    unseen = np.setdiff1d(np.unique(y_test), present)
    if unseen.size:
        shown = ", ".join(str(int(v)) for v in unseen[:5])
        raise ConfigError(
            f"{source}: y_test holds label(s) {shown} that no training example has (train "
            f"labels: {_span(present)}); labels must be 0..K-1 and every test class must occur "
            "in y_train: drop those test examples or fix their labels"
        )
    if present.size != k:
        absent = np.setdiff1d(np.arange(k), present)
        fix = (
            "they look 1-based: subtract 1 from y_train and y_test"
            if present[0] == 1 and present.size == k - 1
            else "renumber them 0..K-1 (e.g. np.unique(y, return_inverse=True))"
        )
        raise ConfigError(
            f"{source}: y_train has no example of class(es) "
            f"{', '.join(str(int(v)) for v in absent[:5])} (train labels: {_span(present)}); "
            f"labels must be the class indices 0..K-1 with every class in y_train: {fix}"
        )
    return k


def _span(values: np.ndarray) -> str:
    if values.size <= 6:
        return ", ".join(str(int(v)) for v in values)
    return f"{int(values[0])}..{int(values[-1])} ({values.size} distinct)"


def load_npz(cfg: DataConfig, root: Path) -> RawSplits:
    """One ``.npz`` with ``x_train, y_train, x_test, y_test``; classes are ``0..K-1``.

    Images: uint8 (scaled by 1/255) or float in [0, 1] (kept as is), laid out NHW, NHWC or NCHW;
    or tabular features ``(N, D)``: any finite numbers, kept as they are.
    Labels: integers (or whole-number floats) ``0..K-1``, each class present in ``y_train``.
    """
    path = _npz_path(cfg, root)
    arrays = _read_members(path, NPZ_KEYS)
    x_train = _npz_images("x_train", arrays["x_train"], path)
    x_test = _npz_images("x_test", arrays["x_test"], path)
    y_train = _npz_labels("y_train", arrays["y_train"], path)
    y_test = _npz_labels("y_test", arrays["y_test"], path)
    num_classes = _check_npz_splits(path, x_train.shape, x_test.shape, y_train, y_test)
    return RawSplits(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=tuple(str(c) for c in range(num_classes)),
    )


def _npz_path(cfg: DataConfig, root: Path) -> Path:
    """``data.path``, once it looks like an .npz archive (its first bytes)."""
    path = resolve(cfg, root)
    if not path.is_file():
        raise ConfigError(
            f"data.path: {str(path)!r} does not exist; expected an .npz file with the arrays "
            f"{', '.join(NPZ_KEYS)} (np.savez(path, x_train=..., y_train=..., ...))"
        )
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise ConfigError(
            f"data.path: {str(path)!r} holds a single array, not an .npz archive; save the "
            f"arrays {', '.join(NPZ_KEYS)} with np.savez"
        )
    if not head.startswith(b"PK"):
        # np.load would take such a file for a pickle and complain about pickled data.
        what = "is empty (0 bytes)" if not head else "is not an .npz (zip) archive"
        raise ConfigError(
            f"data.path: {str(path)!r} {what}: it is corrupted or in another format; save the "
            f"arrays {', '.join(NPZ_KEYS)} with np.savez or np.savez_compressed"
        )
    return path


def _read_members(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the archive, read whole (after checking that all four exist)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except NPZ_DAMAGE as err:
        raise ConfigError(
            f"data.path: {str(path)!r} cannot be read as an .npz archive ({err}); it is "
            f"corrupted or truncated: save it again with np.savez or np.savez_compressed"
        ) from err
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise ConfigError(
                f"data.path: {str(path)!r} lacks {', '.join(missing)} (it holds: "
                f"{', '.join(archive.files) or 'nothing'}); expected the arrays "
                f"{', '.join(NPZ_KEYS)}"
            )
        arrays = {}
        for key in keys:
            try:
                arrays[key] = archive[key]
            except ValueError as err:
                if "pickle" not in str(err):
                    raise _damaged_member(key, path, err) from err
                # Object arrays need pickle, which would run code from the file: refused.
                raise ConfigError(
                    f"data.path: {key} in {str(path)!r} cannot be loaded ({err}); save plain "
                    f"numeric arrays (uint8 or float images, integer labels)"
                ) from err
            except NPZ_DAMAGE as err:
                raise _damaged_member(key, path, err) from err
    return arrays


def _check_npz_splits(
    path: Path,
    x_train_shape: tuple[int, ...],
    x_test_shape: tuple[int, ...],
    y_train: np.ndarray,
    y_test: np.ndarray,
) -> int:
    """The class count, once both splits have one label per image and the same image shape."""
    for split, shape, y in (("train", x_train_shape, y_train), ("test", x_test_shape, y_test)):
        if shape[0] != len(y):
            raise ConfigError(
                f"data.path: x_{split} has {shape[0]} examples but y_{split} has {len(y)} "
                f"labels in {str(path)!r}; expected one label per image"
            )
        if shape[0] == 0:
            raise ConfigError(f"data.path: x_{split} in {str(path)!r} is empty")
    if tuple(x_train_shape[1:]) != tuple(x_test_shape[1:]):
        raise ConfigError(
            f"data.path: x_train images are {tuple(x_train_shape[1:])} (C, H, W) but x_test "
            f"images are {tuple(x_test_shape[1:])} in {str(path)!r}; both splits need the same "
            "image shape"
        )
    return check_classes(y_train, y_test, source=f"data.path: {str(path)!r}")


# Not a VogflowError: ``data.stream: auto`` catches it and loads the archive instead; asked to
# stream (``true``), the caller turns it into the user's ConfigError.
class NotStreamable(Exception):
    """An archive whose arrays cannot be read batch by batch from disk (``auto`` loads it)."""


class CompressedNpz(NotStreamable):
    """The archive's images are deflated (np.savez_compressed): they cannot be memory-mapped."""


class TabularNpz(NotStreamable):
    """The archive holds ``(N, D)`` features: small per row, read into memory."""


class NpzImages:
    """One image array of an .npz as a stream source: a memory map of the stored member, each
    row converted when read as :func:`load_npz` converts the whole array."""

    def __init__(self, member: Any, layout: str) -> None:
        self.member, self.layout = member, layout
        self.item_shape = _item_shape(member.shape, layout)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.member.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        # A map pickles as a full copy of its data: loader processes map the file themselves.
        return {**self.__dict__, "_array": None}

    def rows(self, index: np.ndarray) -> np.ndarray:
        if self._array is None:
            self._array = self.member.open()
        return _laid_out(_scaled(np.asarray(self._array[index])), self.layout)


def stream_npz(cfg: DataConfig, root: Path) -> FileStreams:
    """The archive's images memory-mapped in place (labels are read whole: they are small).

    Validated as :func:`load_npz` validates, reading float images once in chunks for their range.
    Raises :class:`CompressedNpz` when an image array is compressed.
    """
    path = _npz_path(cfg, root)
    labels = _read_members(path, ("y_train", "y_test"))
    y_train = _npz_labels("y_train", labels["y_train"], path)
    y_test = _npz_labels("y_test", labels["y_test"], path)
    infos = npzmap.members(path)
    sources = {}
    for key in ("x_train", "x_test"):
        # Only the archive reads are damage: the checks below raise vogflow's own refusals, which
        # NPZ_DAMAGE (ValueError among them) would misreport as a corrupted file.
        try:
            shape, dtype, _ = npzmap.header(path, infos[key])
            member = npzmap.locate(path, infos[key])
        except npzmap.CompressedMember as err:
            raise CompressedNpz(
                f"data.stream: {key} in {str(path)!r} is compressed (np.savez_compressed), so it "
                "cannot be read from disk batch by batch; save it again uncompressed: "
                f"a = np.load({str(path)!r}); np.savez('stored.npz', **a) (and point data.path "
                "there), or set data.stream to false to load it into memory"
            ) from err
        except NPZ_DAMAGE as err:
            raise _damaged_member(key, path, err) from err
        if len(shape) == 2:
            raise TabularNpz(
                f"data.stream: {key} in {str(path)!r} holds tabular features {shape}, which are "
                "read into memory, not streamed; set data.stream to false"
            )
        _check_image_dtype(key, dtype, path)
        layout = _image_layout(key, shape, path)
        sources[key] = NpzImages(member, layout)
        if np.issubdtype(dtype, np.floating):
            _check_float_rows(key, sources[key], path)
    train, test = sources["x_train"], sources["x_test"]
    num_classes = _check_npz_splits(
        path, (len(train), *train.item_shape), (len(test), *test.item_shape), y_train, y_test
    )
    return FileStreams(
        train=train,
        y_train=y_train,
        test=test,
        y_test=y_test,
        classes=tuple(str(c) for c in range(num_classes)),
        train_paths=None,
        test_paths=None,
        identity={"kind": "npz", "path": str(path.resolve()), "file": stamp(path)},
    )


def _check_float_rows(key: str, source: NpzImages, path: Path) -> None:
    lo, hi, finite = np.inf, -np.inf, True
    for chunk in raw_chunks(source):
        if not np.isfinite(chunk).all():
            finite = False
            break
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if not np.isfinite(lo):
        lo = hi = 0.0
    _check_image_values(key, lo, hi, finite, path)


def npz_values(cfg: DataConfig, root: Path) -> int:
    """How many float32 values both image splits of the archive decode to (headers only)."""
    path = _npz_path(cfg, root)
    try:
        infos = npzmap.members(path)
    except NPZ_DAMAGE:
        return 0  # loading it reports the damage in its own words
    total = 0
    for key in ("x_train", "x_test"):
        if key in infos:
            shape, _, _ = npzmap.header(path, infos[key])
            total += int(np.prod(shape))
    return total
