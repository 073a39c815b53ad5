"""Streamed image folders and .npz archives: the same rows, statistics, checkpoints and scores as
in memory, bit for bit; memory-mapped npz members; clear refusals."""

from __future__ import annotations

import hashlib
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from numerics import assert_arrays_close, assert_tables_close

from vogflow.config.schema import CheckpointConfig, DataConfig, ModelConfig, TrainConfig
from vogflow.data import disk, load_dataset, npzmap, stream
from vogflow.data.loaders import extraction_input, index_batches, sequential
from vogflow.errors import ConfigError
from vogflow.models.architectures import build_model
from vogflow.rankings.table import build, contract_columns, top_bottom
from vogflow.scoring.extract import load_checkpoints, run_extraction
from vogflow.training.labels import data_fingerprint
from vogflow.training.train import train_run

ROOT = Path(__file__).resolve().parents[2]


def image_folder(root: Path, *, n_train: int = 24, n_test: int = 9, size: int = 8) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            folder = root / "images" / split / f"class{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            # Class-dependent brightness, so a few epochs learn something.
            pixels = rng.integers(0, 160, (size, size, 3)) + 40 * (i % 3)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return root / "images"


def npz_file(path: Path, *, compressed: bool = False, channels_last: bool = True) -> dict:
    rng = np.random.default_rng(1)
    shape = (20, 6, 6, 3) if channels_last else (20, 3, 6, 6)
    arrays = {
        "x_train": rng.integers(0, 256, shape, dtype=np.uint8),
        "y_train": np.arange(20) % 4,
        "x_test": rng.random((8, *shape[1:]), dtype=np.float32),
        "y_test": np.arange(8) % 4,
    }
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def folder_cfg(**kw) -> DataConfig:
    return DataConfig(name="imagefolder", path="images", **kw)


# ---------------------------------------------------------------------------------------------
# rows, statistics, fingerprints


def test_npz_member_map_reads_what_np_load_reads(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {
        "u8": rng.integers(0, 256, (4, 5, 6), dtype=np.uint8),
        "f64_fortran": np.asfortranarray(rng.random((3, 7))),
        "big_endian": np.arange(12, dtype=">i4").reshape(3, 4),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    found = npzmap.members(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as loaded:
        for key in arrays:
            mapped = npzmap.locate(tmp_path / "a.npz", found[key]).open()
            assert mapped.dtype == loaded[key].dtype and mapped.shape == loaded[key].shape
            np.testing.assert_array_equal(mapped, loaded[key])
            if key != "empty":
                assert isinstance(mapped, np.memmap)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    info = npzmap.members(tmp_path / "c.npz")["u8"]
    assert npzmap.header(tmp_path / "c.npz", info)[:2] == ((4, 5, 6), np.dtype(np.uint8))
    with pytest.raises(npzmap.CompressedMember):
        npzmap.locate(tmp_path / "c.npz", info)


@pytest.mark.parametrize("channels_last", [True, False])
def test_streamed_npz_holds_the_in_memory_rows(tmp_path, channels_last):
    npz_file(tmp_path / "d.npz", channels_last=channels_last)
    memory = load_dataset(DataConfig(name="npz", path="d.npz", stream=False), tmp_path)
    streamed = load_dataset(DataConfig(name="npz", path="d.npz", stream=True), tmp_path)
    assert isinstance(streamed.train.x, stream.StreamedImages)
    assert isinstance(streamed.train.x.source.member, npzmap.Member)
    assert streamed.mean == memory.mean and streamed.std == memory.std
    assert streamed.input_shape == memory.input_shape == (3, 6, 6)
    for split in ("train", "test"):
        a, b = memory.split(split), streamed.split(split)
        np.testing.assert_array_equal(a.y, b.y)
        assert np.array_equal(a.x, b.x[:]) and a.x.tobytes() == b.x[:].tobytes()
    assert data_fingerprint(streamed) == data_fingerprint(memory)


def test_statistics_equal_the_in_memory_ones_to_float_tolerance(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_VALUES", 100)  # many chunks, merged
    x = np.random.default_rng(3).random((50, 3, 5, 5), dtype=np.float32) * 0.3 + 0.6
    mean, std = stream.channel_stats(stream.array_chunks(x))
    assert_arrays_close(mean, x.mean(axis=(0, 2, 3)))
    assert_arrays_close(std, x.std(axis=(0, 2, 3)))
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, exact.std(axis=(0, 2, 3)), rtol=1e-12)


def test_streamed_image_folder_rows_paths_and_cache(tmp_path, monkeypatch):
    image_folder(tmp_path)
    memory = load_dataset(folder_cfg(stream=False), tmp_path)
    streamed = load_dataset(folder_cfg(stream=True), tmp_path)
    assert streamed.mean == memory.mean and streamed.std == memory.std
    x = streamed.train.x
    np.testing.assert_array_equal(memory.train.x, x[:])
    idx = np.array([5, 0, 23, 5])
    np.testing.assert_array_equal(x[idx], memory.train.x[idx])
    np.testing.assert_array_equal(x[-1], memory.train.x[-1])
    mask = memory.train.y == 1
    np.testing.assert_array_equal(x[mask], memory.train.x[mask])
    with pytest.raises(TypeError, match="not converted to one array"):
        np.asarray(x)
    # Paths are relative to data.path, in row order, the same in both modes.
    assert streamed.train.paths == memory.train.paths
    assert streamed.test.paths[0] == "test/class0/img000.png"
    assert all(
        p.startswith(f"train/class{y}/")
        for p, y in zip(streamed.train.paths, memory.train.y, strict=True)
    )
    fingerprint = data_fingerprint(streamed)
    assert fingerprint == data_fingerprint(memory)

    # A second load reads the statistics and the fingerprint from the cache: no pass.
    def no_pass(*_):
        raise AssertionError("a full pass over the files ran again")

    monkeypatch.setattr(stream, "channel_stats", no_pass)
    monkeypatch.setattr(stream, "fingerprint", no_pass)
    again = load_dataset(folder_cfg(stream=True), tmp_path)
    assert again.mean == streamed.mean and data_fingerprint(again) == fingerprint
    # A changed file is a new dataset.
    first = tmp_path / "images" / streamed.train.paths[0]
    first.write_bytes((tmp_path / "images" / streamed.train.paths[1]).read_bytes())
    with pytest.raises(AssertionError, match="pass over the files"):
        load_dataset(folder_cfg(stream=True), tmp_path)


def test_auto_streams_only_what_would_not_fit(tmp_path, monkeypatch):
    image_folder(tmp_path)
    assert isinstance(load_dataset(folder_cfg(), tmp_path).train.x, np.ndarray)
    monkeypatch.setattr(stream, "available_memory", lambda: 1000)
    assert isinstance(load_dataset(folder_cfg(), tmp_path).train.x, stream.StreamedImages)


# ---------------------------------------------------------------------------------------------
# compressed archives and params


def test_a_compressed_npz_is_refused_for_streaming_and_loaded_under_auto(tmp_path, monkeypatch):
    arrays = npz_file(tmp_path / "c.npz", compressed=True)
    with pytest.raises(ConfigError) as err:
        load_dataset(DataConfig(name="npz", path="c.npz", stream=True), tmp_path)
    message = str(err.value)
    assert message.startswith("data.stream: x_train in ")
    assert "np.savez(" in message and "data.stream to false" in message
    # The fix the message gives works.
    with np.load(tmp_path / "c.npz") as a:
        np.savez(tmp_path / "stored.npz", **a)
    fixed = load_dataset(DataConfig(name="npz", path="stored.npz", stream=True), tmp_path)
    assert len(fixed.train) == len(arrays["y_train"])

    warnings = []
    monkeypatch.setattr(disk, "_stderr", warnings.append)
    monkeypatch.setattr(stream, "available_memory", lambda: 1000)
    loaded = load_dataset(DataConfig(name="npz", path="c.npz"), tmp_path)
    assert isinstance(loaded.train.x, np.ndarray)
    assert len(warnings) == 1 and "loading it into memory instead" in warnings[0]


def test_streamed_npz_refusals_say_what_is_wrong_not_corrupted(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = {"y_train": np.arange(10) % 2, "y_test": np.arange(4) % 2}
    np.savez(tmp_path / "i16.npz", x_train=np.zeros((10, 4, 4), np.int16),
             x_test=np.zeros((4, 4, 4), np.int16), **labels)  # fmt: skip
    np.savez(tmp_path / "tab.npz", x_train=rng.random((10, 5)), x_test=rng.random((4, 5)), **labels)
    for name, expected in (("i16.npz", "has dtype int16"), ("tab.npz", "holds tabular features")):
        with pytest.raises(ConfigError) as err:
            load_dataset(DataConfig(name="npz", path=name, stream=True), tmp_path)
        assert expected in str(err.value) and "corrupted" not in str(err.value)
    # Under auto, tabular features too large for the memory rule are read into memory.
    monkeypatch.setattr(disk, "_stderr", lambda line: None)
    monkeypatch.setattr(stream, "available_memory", lambda: 10)
    loaded = load_dataset(DataConfig(name="npz", path="tab.npz"), tmp_path)
    assert isinstance(loaded.train.x, np.ndarray) and loaded.train.x.shape == (10, 5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stream": "yes"}, "data.stream: 'yes' is not allowed; expected auto, true or false"),
        ({"stream": 1}, "data.stream: 1 is not allowed; expected auto, true or false"),
        ({"workers": -1}, "data.workers: -1 is not allowed; expected an integer >= 0"),
        ({"workers": 1.5}, "data.workers: 1.5 is not allowed; expected an integer"),
        (
            {"stream": True},
            "data.stream: true is not allowed with data.name 'digits'; only imagefolder and npz",
        ),
    ],
)
def test_bad_stream_params_name_key_value_and_fix(data, message):
    from vogflow.config.schema import parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(data)
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert str(err.value).startswith(message)


# ---------------------------------------------------------------------------------------------
# training and extraction


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_streamed_training_gives_the_in_memory_checkpoints(tmp_path):
    image_folder(tmp_path)
    cfg = TrainConfig(epochs=2, batch_size=10, milestones=())
    ckpts = CheckpointConfig(early=1, every=1, late=1)
    runs = {}
    for stream_mode, workers in ((False, 0), (True, 2)):
        data = load_dataset(
            folder_cfg(stream=stream_mode, workers=workers, augment="crop_flip"), tmp_path
        )
        out = tmp_path / f"run_{stream_mode}"
        manifest = train_run(data, ModelConfig(), cfg, ckpts, out, echo=lambda _: None)
        runs[stream_mode] = (
            [(c["file"], c["sha256"], _sha(out / c["file"])) for c in manifest["checkpoints"]],
            manifest["final"],
            manifest["config_hash"],
        )
    assert runs[True] == runs[False]


def test_streamed_batches_are_the_loop_index_lists(tmp_path):
    image_folder(tmp_path)
    data = load_dataset(folder_cfg(stream=True, workers=2), tmp_path)
    steps = list(torch.randperm(24, generator=torch.Generator().manual_seed(0)).split(7))
    # An empty list too: a DDP rank's share of a last batch smaller than the job.
    steps.insert(2, steps[0][:0])
    got = list(index_batches(data.train.x, steps))
    assert [len(b) for b in got] == [7, 7, 0, 7, 3]
    for idx, batch in zip(steps, got, strict=True):
        assert batch.shape[1:] == data.train.x.shape[1:]
        assert torch.equal(batch, torch.from_numpy(data.train.x[idx.numpy()]))


def test_streamed_extraction_and_rankings_equal_in_memory(tmp_path):
    image_folder(tmp_path)
    model = build_model("lenet", (3, 8, 8), 3)
    states = []
    for seed in range(4):
        torch.manual_seed(seed)
        states.append(build_model("lenet", (3, 8, 8), 3).state_dict())
    models = load_checkpoints(model, states)
    tables = {}
    for stream_mode in (False, True):
        data = load_dataset(folder_cfg(stream=stream_mode, workers=2), tmp_path)
        split = data.test
        inputs = extraction_input(split.x, split.y, batch_size=4)
        assert isinstance(inputs, tuple) != stream_mode
        ex = run_extraction(models, inputs, batch_size=4, progress=False)
        tables[stream_mode] = build(ex, path=np.asarray(split.paths))
    assert_tables_close(tables[True], tables[False])
    table = tables[True]
    assert list(table.columns) == contract_columns(path=True)
    assert table["path"].tolist()[:2] == ["test/class0/img000.png", "test/class0/img003.png"]
    top = top_bottom(table, "vog_all_label", 2)
    assert list(top.columns[:4]) == ["end", "rank", "index", "path"]
    assert (top["path"] == table["path"].to_numpy()[top["index"]]).all()


def test_sequential_loader_is_in_order_with_labels(tmp_path):
    image_folder(tmp_path)
    data = load_dataset(folder_cfg(stream=True, workers=2), tmp_path)
    xs, ys = zip(*sequential(data.test.x, data.test.y, batch_size=4), strict=True)
    np.testing.assert_array_equal(torch.cat(xs).numpy(), data.test.x[:])
    np.testing.assert_array_equal(torch.cat(ys).numpy(), data.test.y)


# ---------------------------------------------------------------------------------------------
# the pipeline's stages on streamed data


def _run_stage(script: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "stages" / script), run_name="__main__")


def test_train_gradients_and_score_stages_stream(tmp_path, monkeypatch):
    image_folder(tmp_path)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(name="imagefolder", path="images", stream=True, workers=2)
    params["train"].update(epochs=4, batch_size=8, milestones=[3])
    params["gradients"]["batch_size"] = 8
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)

    _run_stage(
        "train.py",
        "--run",
        "main",
        "--out",
        "runs/main/checkpoints",
        "--metrics",
        "runs/main/train.json",
        monkeypatch=monkeypatch,
    )
    _run_stage(
        "gradients.py",
        "--run",
        "main",
        "--checkpoints",
        "runs/main/checkpoints",
        "--out",
        "runs/main/gradients",
        "--metrics",
        "runs/main/gradients.json",
        monkeypatch=monkeypatch,
    )
    _run_stage(
        "score.py",
        "--run",
        "main",
        "--gradients",
        "runs/main/gradients",
        "--out",
        "runs/main/rankings",
        "--metrics",
        "runs/main/score.json",
        "--plots",
        "runs/main/plots",
        "--report",
        "runs/main/deciles.json",
        monkeypatch=monkeypatch,
    )
    table = pd.read_parquet("runs/main/rankings/train.parquet")
    data = load_dataset(folder_cfg(stream=False), tmp_path)
    assert table["path"].tolist() == list(data.train.paths)
    top = pd.read_csv("runs/main/rankings/test_top.csv")
    assert set(top["path"]) <= set(data.test.paths)


def test_figures_read_only_the_rows_they_show(tmp_path):
    from vogflow.figures.grids import lowest_highest, per_class_lowest_highest

    image_folder(tmp_path)
    data = load_dataset(folder_cfg(stream=True), tmp_path)
    read = []
    source = data.train.x.source
    rows = source.rows
    source.rows = lambda index: read.extend(index.tolist()) or rows(index)
    scores = np.linspace(0, 1, len(data.train))
    images = data.denormalise(data.train.x)
    lowest_highest(images, scores, k=4, labels=data.train.y)
    per_class_lowest_highest(
        images, scores, data.train.y, class_ids=[0], class_names=data.classes, k=1
    )
    assert len(read) == 8 + 2


# ---------------------------------------------------------------------------------------------
# vogflow audit on the user's own files


def test_vogflow_audit_streams_files_to_the_same_table_with_paths(tmp_path, monkeypatch, capsys):
    from vogflow.cli import main as cli
    from vogflow.rankings.table import read

    images = image_folder(tmp_path)
    npz_file(tmp_path / "d.npz", channels_last=False)
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n\n"
        "def imagefolder():\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))\n\n\n"
        "def npz():\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    for kind, features in (("imagefolder", 3 * 8 * 8), ("npz", 3 * 6 * 6)):
        for epoch in range(1, 5):
            weights = {
                "1.weight": torch.randn(4, features, generator=gen),
                "1.bias": torch.zeros(4),
            }
            torch.save(weights, tmp_path / f"{kind}_{epoch}.pt")
    tables = {}
    for kind, where in (("imagefolder", images), ("npz", tmp_path / "d.npz")):
        for mode, workers in (("false", "2"), ("true", "0"), ("true", "2")):
            out = tmp_path / f"{kind}_{mode}_{workers}.parquet"
            ckpts = [str(tmp_path / f"{kind}_{e}.pt") for e in range(1, 5)]
            args = ["audit", "--model", f"nets:{kind}", "--checkpoints", *ckpts]
            args += ["--data", f"{kind}:{where}", "--out", str(out), "--quiet", "--show", "0"]
            assert cli.main([*args, "--stream", mode, "--workers", workers]) == 0
            said = capsys.readouterr().out
            assert ("streaming" in said) == (mode == "true"), said
            tables[kind, mode, workers] = read(out)
    for kind in ("imagefolder", "npz"):
        want = tables[kind, "false", "2"]
        for key in (("true", "0"), ("true", "2")):
            assert_tables_close(tables[(kind, *key)], want)
    paths = tables["imagefolder", "false", "2"]["path"].tolist()
    on_disk = sorted(
        (p.relative_to(images).as_posix() for p in (images / "test").rglob("*.png")),
        key=lambda p: (p.split("/")[1], p),
    )
    assert paths == on_disk  # row i is the i-th file: classes in order, files sorted in each
    assert list(tables["imagefolder", "false", "2"].columns[:2]) == ["index", "path"]
    assert "path" not in tables["npz", "false", "2"].columns
