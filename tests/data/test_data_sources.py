"""Loaders for torchvision sets, image folders and .npz files, fed tiny files in real formats."""

from __future__ import annotations

import hashlib
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from numerics import assert_arrays_close

from vogflow.config.schema import DataConfig
from vogflow.data import load_dataset
from vogflow.data.imagefolder import load_imagefolder
from vogflow.data.npz import load_npz
from vogflow.data.torchvision_sets import (
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_mnist,
)
from vogflow.errors import ConfigError, DataError, VogflowError

tv_datasets = pytest.importorskip("torchvision.datasets")


# ---------------------------------------------------------------------------------------------
# helpers


def _idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an idx-ubyte file: magic 0x08 (uint8) + ndim, big-endian dims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_mnist(raw: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {
        "train_x": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "train_y": np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        "test_x": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "test_y": np.array([9, 2, 6], dtype=np.uint8),
    }
    # The names torchvision looks for: its resource names without the .gz suffix.
    _idx(raw / "train-images-idx3-ubyte", arrays["train_x"])
    _idx(raw / "train-labels-idx1-ubyte", arrays["train_y"])
    _idx(raw / "t10k-images-idx3-ubyte", arrays["test_x"])
    _idx(raw / "t10k-labels-idx1-ubyte", arrays["test_y"])
    return arrays


def _pickle(path: Path, obj: object) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _closed_port_url() -> str:
    # A loopback port nobody listens on: a download attempt is refused at once, whatever
    # network the machine running the tests has.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _forbid_download(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    def fail(self: object) -> None:
        raise AssertionError("the loader tried to download although the files were present")

    monkeypatch.setattr(cls, "download", fail)


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST


@pytest.mark.parametrize(
    ("loader", "cls_name", "mean", "std"),
    [
        (load_mnist, "MNIST", (0.1307,), (0.3081,)),
        (load_fashion_mnist, "FashionMNIST", (0.2860,), (0.3530,)),
    ],
)
def test_mnist_like_reads_idx_files(monkeypatch, tmp_path, loader, cls_name, mean, std):
    cls = getattr(tv_datasets, cls_name)
    _forbid_download(monkeypatch, cls)
    arrays = _write_mnist(tmp_path / "data" / cls_name / "raw", np.random.default_rng(0))

    raw = loader(DataConfig(name="mnist", root="data"), tmp_path)

    assert raw.x_train.shape == (5, 1, 28, 28) and raw.x_test.shape == (3, 1, 28, 28)
    assert raw.x_train.dtype == np.float32 and raw.y_train.dtype == np.int64
    np.testing.assert_array_equal(raw.x_train[:, 0], arrays["train_x"].astype(np.float32) / 255)
    np.testing.assert_array_equal(raw.x_test[:, 0], arrays["test_x"].astype(np.float32) / 255)
    np.testing.assert_array_equal(raw.y_train, [3, 1, 4, 1, 5])
    np.testing.assert_array_equal(raw.y_test, [9, 2, 6])
    assert raw.classes == tuple(cls.classes) and len(raw.classes) == 10
    assert raw.mean == mean and raw.std == std


# ---------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100


def test_cifar10_reads_python_batches(monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    names = [f"class{i}" for i in range(10)]
    batches, train_list = [], []
    for b in range(1, 6):
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        labels = [(2 * b) % 10, (2 * b + 1) % 10]
        batches.append((data, labels))
        md5 = _pickle(folder / f"data_batch_{b}", {"data": data, "labels": labels})
        train_list.append([f"data_batch_{b}", md5])
    test_data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    test_md5 = _pickle(folder / "test_batch", {"data": test_data, "labels": [7, 0, 3]})
    meta_md5 = _pickle(folder / "batches.meta", {"label_names": names})

    # torchvision checks every CIFAR file against the md5 of the published archive, which these
    # tiny stand-ins cannot match; registering their own checksums keeps that check (and all of
    # torchvision's reading code) running unchanged over the files written above.
    cls = tv_datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", [["test_batch", test_md5]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    _forbid_download(monkeypatch, cls)

    raw = load_cifar10(DataConfig(name="cifar10", root="data"), tmp_path)

    assert raw.x_train.shape == (10, 3, 32, 32) and raw.x_test.shape == (3, 3, 32, 32)
    assert raw.x_train.dtype == np.float32 and raw.y_train.dtype == np.int64
    # A CIFAR row is the red plane, then green, then blue: exactly CHW once reshaped.
    expected = np.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32) / np.float32(255)
    np.testing.assert_array_equal(raw.x_train, expected.astype(np.float32))
    np.testing.assert_array_equal(
        raw.x_test, (test_data.reshape(-1, 3, 32, 32) / np.float32(255)).astype(np.float32)
    )
    np.testing.assert_array_equal(raw.y_train, [y for _, ls in batches for y in ls])
    np.testing.assert_array_equal(raw.y_test, [7, 0, 3])
    assert raw.classes == tuple(names)
    assert raw.mean == (0.4914, 0.4822, 0.4465) and raw.std == (0.2470, 0.2435, 0.2616)


def test_cifar100_reads_fine_labels(monkeypatch, tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "data" / "cifar-100-python"
    names = [f"fine{i:02d}" for i in range(100)]
    train = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
    train_md5 = _pickle(
        folder / "train", {"data": train, "fine_labels": [99, 0, 42, 7], "coarse_labels": [1] * 4}
    )
    test_md5 = _pickle(
        folder / "test", {"data": test, "fine_labels": [5, 64], "coarse_labels": [2] * 2}
    )
    meta_md5 = _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["c"]})

    # Same reason as for CIFAR-10: the published checksums cannot match tiny stand-in files.
    cls = tv_datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", train_md5]])
    monkeypatch.setattr(cls, "test_list", [["test", test_md5]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    _forbid_download(monkeypatch, cls)

    raw = load_cifar100(DataConfig(name="cifar100", root="data"), tmp_path)

    assert raw.x_train.shape == (4, 3, 32, 32) and raw.x_test.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(
        raw.x_train, (train.reshape(-1, 3, 32, 32) / np.float32(255)).astype(np.float32)
    )
    np.testing.assert_array_equal(raw.y_train, [99, 0, 42, 7])
    np.testing.assert_array_equal(raw.y_test, [5, 64])
    assert raw.classes == tuple(names) and len(raw.classes) == 100
    assert raw.mean == (0.5071, 0.4865, 0.4409) and raw.std == (0.2673, 0.2564, 0.2762)


# ---------------------------------------------------------------------------------------------
# Missing files and no way to download them


@pytest.mark.parametrize(
    ("loader", "cls_name", "attr"),
    [
        (load_mnist, "MNIST", "mirrors"),
        (load_fashion_mnist, "FashionMNIST", "mirrors"),
        (load_cifar10, "CIFAR10", "url"),
        (load_cifar100, "CIFAR100", "url"),
    ],
)
def test_missing_files_raise_dataset_unavailable(monkeypatch, tmp_path, loader, cls_name, attr):
    cls = getattr(tv_datasets, cls_name)
    base = _closed_port_url()
    # Point the real download at a refused loopback address: the download code runs for real
    # and fails at once, without reaching (or waiting on) the internet.
    if attr == "mirrors":
        monkeypatch.setattr(cls, "mirrors", [base])
    else:
        monkeypatch.setattr(cls, "url", base + cls.filename)

    with pytest.raises(DataError) as info:
        loader(DataConfig(name="mnist", root="nowhere"), tmp_path)

    message = str(info.value)
    assert isinstance(info.value, VogflowError)
    assert cls_name in message
    assert str(tmp_path / "nowhere") in message
    assert "failed" in message and "network access" in message and "copy" in message
    # Names where the files belong, so that they can be copied there by hand.
    subfolder = getattr(cls, "base_folder", f"{cls_name}/raw")
    assert str(tmp_path / "nowhere" / subfolder) in message
    assert info.value.__cause__ is not None


# ---------------------------------------------------------------------------------------------
# Image folders


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb_folder(base: Path, rng: np.random.Generator, test_name: str = "test") -> dict:
    images = {}
    layout = {
        "train/cat/b.png": (6, 5),
        "train/cat/a.png": (6, 5),
        "train/dog/sub/z.png": (6, 5),
        "train/dog/c.png": (6, 5),
        f"{test_name}/cat/x.png": (6, 5),
        f"{test_name}/dog/y.png": (6, 5),
    }
    for rel, (h, w) in layout.items():
        images[rel] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        _png(base / rel, images[rel])
    return images


def test_imagefolder_rgb_keeps_size_and_sorted_order(tmp_path):
    images = _rgb_folder(tmp_path / "imgs", np.random.default_rng(3))

    raw = load_imagefolder(DataConfig(name="imagefolder", path="imgs"), tmp_path)

    assert raw.classes == ("cat", "dog")
    assert raw.x_train.shape == (4, 3, 6, 5) and raw.x_train.dtype == np.float32
    assert raw.mean is None and raw.std is None
    # Classes in sorted order, files by relative path within each class.
    order = ["train/cat/a.png", "train/cat/b.png", "train/dog/c.png", "train/dog/sub/z.png"]
    for i, rel in enumerate(order):
        np.testing.assert_array_equal(
            raw.x_train[i], images[rel].transpose(2, 0, 1).astype(np.float32) / 255
        )
    np.testing.assert_array_equal(raw.y_train, [0, 0, 1, 1])
    np.testing.assert_array_equal(raw.y_test, [0, 1])
    np.testing.assert_array_equal(
        raw.x_test[1], images["test/dog/y.png"].transpose(2, 0, 1).astype(np.float32) / 255
    )


def test_imagefolder_resizes_bilinear_and_accepts_val(tmp_path):
    from PIL import Image

    images = _rgb_folder(tmp_path / "imgs", np.random.default_rng(4), test_name="val")

    raw = load_imagefolder(DataConfig(name="imagefolder", path="imgs", image_size=4), tmp_path)

    assert raw.x_train.shape == (4, 3, 4, 4) and raw.x_test.shape == (2, 3, 4, 4)
    expected = Image.fromarray(images["val/cat/x.png"]).resize((4, 4), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(
        raw.x_test[0], np.asarray(expected).transpose(2, 0, 1).astype(np.float32) / 255
    )


def test_imagefolder_all_grey_loads_one_channel(tmp_path):
    rng = np.random.default_rng(5)
    grey = {
        "train/0/a.png": rng.integers(0, 256, size=(4, 4), dtype=np.uint8),
        "train/1/a.png": rng.integers(0, 256, size=(4, 4), dtype=np.uint8),
        "test/0/a.png": rng.integers(0, 256, size=(4, 4), dtype=np.uint8),
        "test/1/a.png": rng.integers(0, 256, size=(4, 4), dtype=np.uint8),
    }
    for rel, array in grey.items():
        _png(tmp_path / "g" / rel, array)

    raw = load_imagefolder(DataConfig(name="imagefolder", path=str(tmp_path / "g")), Path("/"))

    assert raw.x_train.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(raw.x_train[1, 0], grey["train/1/a.png"] / np.float32(255))
    np.testing.assert_array_equal(raw.x_test[0, 0], grey["test/0/a.png"] / np.float32(255))


def test_imagefolder_grey_mixed_with_rgb_becomes_rgb(tmp_path):
    rng = np.random.default_rng(6)
    grey = rng.integers(0, 256, size=(4, 4), dtype=np.uint8)
    _png(tmp_path / "m/train/a/g.png", grey)
    _png(tmp_path / "m/test/a/c.png", rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))

    raw = load_imagefolder(DataConfig(name="imagefolder", path="m"), tmp_path)

    assert raw.x_train.shape == (1, 3, 4, 4)
    for c in range(3):
        np.testing.assert_array_equal(raw.x_train[0, c], grey / np.float32(255))


def test_imagefolder_class_sets_must_match(tmp_path):
    rng = np.random.default_rng(7)
    for rel in ("train/cat/a.png", "train/dog/a.png", "test/cat/a.png", "test/emu/a.png"):
        _png(tmp_path / "d" / rel, rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))

    with pytest.raises(ConfigError) as info:
        load_imagefolder(DataConfig(name="imagefolder", path="d"), tmp_path)

    message = str(info.value)
    assert "only in train: ['dog']" in message and "only in test: ['emu']" in message


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    rng = np.random.default_rng(8)
    _png(tmp_path / "d/train/a/1.png", rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))
    _png(tmp_path / "d/train/a/2.png", rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8))
    _png(tmp_path / "d/test/a/1.png", rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))

    with pytest.raises(ConfigError) as info:
        load_imagefolder(DataConfig(name="imagefolder", path="d"), tmp_path)

    message = str(info.value)
    assert "2.png" in message and "4x5" in message and "data.image_size" in message
    # The same folder loads once a size is given.
    raw = load_imagefolder(DataConfig(name="imagefolder", path="d", image_size=3), tmp_path)
    assert raw.x_train.shape == (2, 3, 3, 3)


def test_imagefolder_missing_folders(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        load_imagefolder(DataConfig(name="imagefolder", path="absent"), tmp_path)
    (tmp_path / "only_train/train/a").mkdir(parents=True)
    with pytest.raises(ConfigError, match="has no 'val' folder"):
        load_imagefolder(DataConfig(name="imagefolder", path="only_train"), tmp_path)
    (tmp_path / "only_train/test/a").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds no images"):
        load_imagefolder(DataConfig(name="imagefolder", path="only_train"), tmp_path)


# ---------------------------------------------------------------------------------------------
# .npz archives


def _npz(path: Path, **arrays: np.ndarray) -> DataConfig:
    np.savez(path, **arrays)
    return DataConfig(name="npz", path=path.name)


def test_npz_nhw_uint8(tmp_path):
    x_train = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4)
    x_test = np.full((1, 3, 4), 255, dtype=np.uint8)
    cfg = _npz(
        tmp_path / "d.npz",
        x_train=x_train,
        y_train=np.array([0, 4, 2, 1, 3]),
        x_test=x_test,
        y_test=np.array([2]),
    )

    raw = load_npz(cfg, tmp_path)

    assert raw.x_train.shape == (5, 1, 3, 4) and raw.x_train.dtype == np.float32
    np.testing.assert_array_equal(raw.x_train[:, 0], x_train / np.float32(255))
    np.testing.assert_array_equal(raw.x_test, np.ones((1, 1, 3, 4), np.float32))
    assert raw.y_train.dtype == np.int64
    np.testing.assert_array_equal(raw.y_train, [0, 4, 2, 1, 3])
    assert raw.classes == ("0", "1", "2", "3", "4")
    assert raw.mean is None and raw.std is None


@pytest.mark.parametrize("channels", [1, 3])
def test_npz_nhwc_uint8_is_transposed(tmp_path, channels):
    rng = np.random.default_rng(9)
    x_train = rng.integers(0, 256, size=(3, 5, 6, channels), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(2, 5, 6, channels), dtype=np.uint8)
    cfg = _npz(
        tmp_path / "d.npz",
        x_train=x_train,
        y_train=np.array([1, 0, 1], dtype=np.uint8),
        x_test=x_test,
        y_test=np.array([0, 0]),
    )

    raw = load_npz(cfg, tmp_path)

    assert raw.x_train.shape == (3, channels, 5, 6)
    np.testing.assert_array_equal(raw.x_train, x_train.transpose(0, 3, 1, 2) / np.float32(255))
    np.testing.assert_array_equal(raw.x_test, x_test.transpose(0, 3, 1, 2) / np.float32(255))
    assert raw.classes == ("0", "1")


def test_npz_nchw_float_kept_as_is(tmp_path):
    rng = np.random.default_rng(10)
    x_train = rng.random((4, 3, 5, 5))  # float64 on purpose
    x_test = rng.random((2, 3, 5, 5)).astype(np.float32)
    cfg = _npz(
        tmp_path / "d.npz",
        x_train=x_train,
        y_train=np.array([0.0, 1.0, 2.0, 1.0]),  # whole-number floats count as integers
        x_test=x_test,
        y_test=np.array([[2], [0]]),  # a column of labels is accepted too
    )

    raw = load_npz(cfg, tmp_path)

    assert raw.x_train.shape == (4, 3, 5, 5) and raw.x_train.dtype == np.float32
    np.testing.assert_allclose(raw.x_train, x_train, rtol=1e-7)
    np.testing.assert_array_equal(raw.x_test, x_test)
    np.testing.assert_array_equal(raw.y_train, [0, 1, 2, 1])
    np.testing.assert_array_equal(raw.y_test, [2, 0])
    assert raw.y_train.dtype == np.int64 and raw.classes == ("0", "1", "2")


def test_npz_tabular_features_load_as_they_are(tmp_path):
    # (N, D) is a table, not an image: any scale, no division by 255, no channel axis added.
    x_train = np.array([[-3.5, 1e4], [0.0, 2.0], [7.0, -1.0]])
    x_test = np.array([[1, 250]], dtype=np.uint8)
    cfg = _npz(tmp_path / "t.npz", x_train=x_train, y_train=np.array([0, 1, 1]), x_test=x_test,
               y_test=np.array([1]))  # fmt: skip
    raw = load_npz(cfg, tmp_path)
    np.testing.assert_array_equal(raw.x_train, x_train.astype(np.float32))
    np.testing.assert_array_equal(raw.x_test, [[1.0, 250.0]])


def _good() -> dict[str, np.ndarray]:
    return {
        "x_train": np.zeros((3, 4, 4), np.uint8),
        "y_train": np.array([0, 1, 1]),
        "x_test": np.zeros((2, 4, 4), np.uint8),
        "y_test": np.array([1, 0]),
    }


def test_npz_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_npz(DataConfig(name="npz", path="nope.npz"), tmp_path)
    message = str(info.value)
    assert "data.path" in message and "nope.npz" in message and "does not exist" in message


def test_npz_missing_keys_lists_what_is_there(tmp_path):
    arrays = _good()
    arrays["images"] = arrays.pop("x_test")
    with pytest.raises(ConfigError) as info:
        load_npz(_npz(tmp_path / "d.npz", **arrays), tmp_path)
    message = str(info.value)
    assert "lacks x_test" in message
    assert "images" in message and "y_train" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("x_train", np.zeros(3, np.uint8), "1 dimensions"),
        ("x_train", np.full((3, 16), np.inf), "NaN or infinite"),
        ("x_test", np.zeros((2, 1, 1, 4, 4), np.uint8), "5 dimensions"),
        ("x_train", np.zeros((3, 4, 4), np.int32), "dtype int32"),
        ("y_train", np.array([0, 1]), "x_train has 3 examples but y_train has 2"),
        ("y_test", np.array([0.5, 1.0]), "0.5"),
        ("y_test", np.array([1, -2]), "negative label -2"),
        ("y_train", np.zeros((3, 2), np.int64), "shape (3, 2)"),
        ("x_test", np.zeros((2, 5, 5), np.uint8), "same image shape"),
        ("x_train", np.full((3, 4, 4), np.nan), "NaN"),
    ],
)
def test_npz_errors_name_key_and_value(tmp_path, key, value, expected):
    arrays = _good()
    arrays[key] = value
    with pytest.raises(ConfigError) as info:
        load_npz(_npz(tmp_path / "d.npz", **arrays), tmp_path)
    message = str(info.value)
    assert "data.path" in message and expected in message
    if "examples but" not in message and "same image shape" not in message:
        assert key in message


# ---------------------------------------------------------------------------------------------
# End to end through the registry


def test_load_dataset_npz_is_normalised(tmp_path):
    rng = np.random.default_rng(11)
    x_train = rng.integers(0, 256, size=(20, 6, 6, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    y_train = np.arange(20) % 3
    np.savez(tmp_path / "set.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=[2] * 5)

    ds = load_dataset(DataConfig(name="npz", path="set.npz"), tmp_path)

    assert ds.name == "npz" and ds.classes == ("0", "1", "2") and ds.num_classes == 3
    assert ds.input_shape == (3, 6, 6) and len(ds.train) == 20 and len(ds.test) == 5
    assert ds.augment == "none"
    raw01 = x_train.transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert_arrays_close(ds.mean, raw01.mean(axis=(0, 2, 3)))
    # Statistics come from the training split, so it is standardised per channel.
    np.testing.assert_allclose(ds.train.x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train.x.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    np.testing.assert_allclose(ds.denormalise(ds.train.x), raw01, atol=1e-6)
    np.testing.assert_array_equal(ds.train.y, y_train)
    np.testing.assert_array_equal(ds.test.y, [2] * 5)


# ---------------------------------------------------------------------------------------------
# Damaged files and labels or values that would silently change the dataset


def _good_npz_bytes(tmp_path: Path, compressed: bool) -> bytes:
    path = tmp_path / "src.npz"
    rng = np.random.default_rng(14)  # random pixels: compressed, x_train stays most of the file
    arrays = {
        **_good(),
        "x_train": rng.integers(0, 256, size=(3, 16, 16), dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(2, 16, 16), dtype=np.uint8),
    }
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path.read_bytes()


def _flip_middle(data: bytes) -> bytes:
    mid = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 8):
        mid[i] ^= 0xFF
    return bytes(mid)


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
@pytest.mark.parametrize(
    "damage",
    [
        lambda d: b"",
        lambda d: d[: len(d) // 2],
        lambda d: b"\0" * 8 + d[8:],  # np.load would call this "pickled data"
        _flip_middle,  # inside x_train: only the zip's CRC tells
        lambda d: d[:-30] + bytes(b ^ 0xFF for b in d[-30:]),
    ],
    ids=["zero_bytes", "truncated", "header", "flipped", "tail"],
)
def test_npz_damaged_file_is_one_line_naming_it(tmp_path, compressed, damage):
    data = _good_npz_bytes(tmp_path, compressed)
    path = tmp_path / "d.npz"
    path.write_bytes(data)
    load_npz(DataConfig(name="npz", path="d.npz"), tmp_path)  # intact: loads
    path.write_bytes(damage(data))
    with pytest.raises(ConfigError) as info:
        load_npz(DataConfig(name="npz", path="d.npz"), tmp_path)
    message = str(info.value)
    assert "data.path" in message and str(path) in message and "\n" not in message
    assert "np.savez" in message
    assert "pickled" not in message


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: b"",
        lambda d: b"not an image at all" * 4,
        lambda d: d[: len(d) // 2],
        lambda d: d[:60] + bytes(b ^ 0xFF for b in d[60:70]) + d[70:],
    ],
    ids=["zero_bytes", "not_an_image", "truncated", "flipped"],
)
def test_imagefolder_damaged_image_is_one_line_naming_it(tmp_path, damage):
    _rgb_folder(tmp_path / "imgs", np.random.default_rng(12))
    bad = tmp_path / "imgs" / "train" / "dog" / "c.png"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(ConfigError) as info:
        load_imagefolder(DataConfig(name="imagefolder", path="imgs"), tmp_path)
    message = str(info.value)
    assert str(bad) in message and "\n" not in message
    assert "replace or delete it" in message


def test_imagefolder_class_without_training_images_is_refused(tmp_path):
    _rgb_folder(tmp_path / "imgs", np.random.default_rng(13))
    (tmp_path / "imgs" / "train" / "emu").mkdir()
    _png(tmp_path / "imgs" / "test" / "emu" / "e.png", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"'.*train/emu' holds no images; every class needs"):
        load_imagefolder(DataConfig(name="imagefolder", path="imgs"), tmp_path)


@pytest.mark.parametrize(
    ("y_train", "y_test", "expected"),
    [
        # A test label no training example has: it would become an 11th, never-trained class.
        (np.arange(30) % 10, np.array([3, 10]), "y_test holds label(s) 10 that no training"),
        (np.arange(30) % 10 + 1, np.array([1, 10]), "they look 1-based: subtract 1"),
        (np.arange(30) % 5 * 2, np.array([0, 2]), "no example of class(es) 1, 3, 5, 7"),
        (np.array([0, 1] * 14 + [10**6, 2]), np.array([0]), "renumber them 0..K-1"),
    ],
    ids=["test_only_label", "one_based", "gaps", "huge_label"],
)
def test_npz_labels_that_would_build_an_extra_class_are_refused(
    tmp_path, y_train, y_test, expected
):
    arrays = {
        "x_train": np.zeros((len(y_train), 4, 4), np.uint8),
        "y_train": y_train,
        "x_test": np.zeros((len(y_test), 4, 4), np.uint8),
        "y_test": y_test,
    }
    with pytest.raises(ConfigError) as info:
        load_npz(_npz(tmp_path / "d.npz", **arrays), tmp_path)
    message = str(info.value)
    assert expected in message and "d.npz" in message and "\n" not in message


def test_npz_float_labels_must_be_whole_numbers(tmp_path):
    arrays = {**_good(), "y_train": np.array([0.0, 1.7, 1.0])}
    with pytest.raises(ConfigError) as info:
        load_npz(_npz(tmp_path / "d.npz", **arrays), tmp_path)
    # Refused, not truncated to 1: the message shows the offending value.
    assert "y_train" in str(info.value) and "1.7" in str(info.value)


@pytest.mark.parametrize(
    ("lo", "hi", "fix"),
    [
        (0.0, 255.0, "divide by 255"),
        (-1.5, 2.0, "scaled to [0, 1]"),
        (0.0, 1.01, "divide by 255"),
    ],
)
def test_npz_float_images_outside_unit_range_are_refused(tmp_path, lo, hi, fix):
    x = np.linspace(lo, hi, 3 * 16, dtype=np.float32).reshape(3, 4, 4)
    arrays = {**_good(), "x_train": x}
    with pytest.raises(ConfigError) as info:
        load_npz(_npz(tmp_path / "d.npz", **arrays), tmp_path)
    message = str(info.value)
    assert "x_train" in message and f"{hi:.4g}" in message and fix in message
    # On the boundary (with float rounding) it loads.
    arrays["x_train"] = np.clip(x, 0, 1) * np.float32(1 + 1e-7)
    load_npz(_npz(tmp_path / "d.npz", **arrays), tmp_path)
