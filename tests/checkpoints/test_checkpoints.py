"""Checkpoint files: safe loading, integrity, saved layouts, mismatches, and the model builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vogflow.checkpoints import files as ck
from vogflow.common.atomic import read_json, write_json
from vogflow.config.schema import CheckpointConfig, DataConfig, ModelConfig, TrainConfig
from vogflow.data import RawSplits, normalise
from vogflow.errors import ConfigError
from vogflow.models.architectures import MLP, LeNet, build_model
from vogflow.training.train import train_run

# Loading a pickled object calls its __setstate__; a refused load must leave this empty.
CODE_RAN: list[str] = []


class Payload:
    """A custom class: pickling it stores a reference to code, which weights_only must refuse."""

    def __init__(self) -> None:
        self.weights = torch.ones(3)

    def __setstate__(self, state: dict) -> None:
        CODE_RAN.append("Payload.__setstate__")
        self.__dict__.update(state)


def points_dataset(n: int = 60, seed: int = 0):
    """Two classes of 2-D points, built in memory: a run trains in well under a second."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.standard_normal((n, 2)) + 2.0 * y[:, None]).astype(np.float32)
    raw = RawSplits(x[:40], y[:40], x[40:], y[40:], ("a", "b"))
    return normalise(DataConfig(name="toy"), raw)


@pytest.fixture
def trained_run(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=3, batch_size=16, milestones=(), device="cpu")
    manifest = train_run(
        points_dataset(),
        ModelConfig(name="mlp", hidden=8),
        cfg,
        CheckpointConfig(early=3, every=1, late=1),
        out,
        echo=lambda _: None,
    )
    assert len(manifest["checkpoints"]) == 3
    return out, manifest


# --- weights_only loading ---------------------------------------------------------------------


def test_file_with_pickled_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Payload()}, path)
    CODE_RAN.clear()
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_file(path)
    message = str(err.value)
    assert str(path) in message
    assert "needs pickled code" in message
    assert "torch.save(model.state_dict(), path)" in message
    assert CODE_RAN == []
    # The check is real: a permissive load does run the class's code.
    torch.load(path, weights_only=False)
    assert CODE_RAN == ["Payload.__setstate__"]


def test_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(MLP((2,), 2, hidden=4), path)
    with pytest.raises(ck.CheckpointError, match="needs pickled code"):
        ck.load_file(path)


def test_plain_state_dict_loads_and_missing_file_is_named(tmp_path):
    state = MLP((2,), 3, hidden=4).state_dict()
    path = tmp_path / "ok.pt"
    digest = ck.save_state_dict(path, state)
    loaded = ck.load_file(path, sha256=digest)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    # Same tensors, same bytes: the hash does not depend on the (random) temp file name.
    assert ck.save_state_dict(tmp_path / "again.pt", state) == digest
    with pytest.raises(ck.CheckpointError, match=r"checkpoint .*nope\.pt not found"):
        ck.load_file(tmp_path / "nope.pt")


def test_sha256_mismatch_is_refused(trained_run):
    out, manifest = trained_run
    assert len(ck.load_run_models(out)[0]) == 3  # intact: loads
    entry = manifest["checkpoints"][1]
    # Replace the file with other, still loadable weights: only the hash can tell.
    state = ck.load_file(out / entry["file"])
    ck.save_state_dict(out / entry["file"], {k: v + 1 for k, v in state.items()})
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_run_models(out)
    assert entry["file"] in str(err.value)
    assert "does not match the sha256 in its manifest" in str(err.value)
    with pytest.raises(ck.CheckpointError, match="sha256"):
        ck.load_file(out / entry["file"], sha256=entry["sha256"])


def test_incomplete_run_is_refused(trained_run):
    out, _ = trained_run
    manifest = read_json(out / ck.MANIFEST)
    manifest["complete"] = False
    write_json(out / ck.MANIFEST, manifest)
    with pytest.raises(ck.CheckpointError, match=r"training did not finish \(3 saved\)"):
        ck.load_run_models(out)


def test_missing_manifest_and_other_version_are_refused(tmp_path, trained_run):
    with pytest.raises(ck.CheckpointError, match="not a training run"):
        ck.read_manifest(tmp_path / "empty")
    out, _ = trained_run
    manifest = read_json(out / ck.MANIFEST)
    write_json(out / ck.MANIFEST, {**manifest, "version": 99})
    with pytest.raises(ck.CheckpointError, match="unsupported manifest version 99"):
        ck.load_run_models(out)


# --- damaged files: one line naming the file and the fix -----------------------------------------


def damaged(data: bytes, how: str) -> bytes:
    if how == "zero_bytes":
        return b""
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "header":
        return b"\x00" * 16 + data[16:]
    if how == "tensor_bytes":  # torch.load itself would return wrong weights without complaint
        mid = bytearray(data)
        for i in range(len(data) // 2, len(data) // 2 + 8):
            mid[i] ^= 0xFF
        return bytes(mid)
    if how == "tail":  # the zip's central directory
        return data[:-40] + bytes(b ^ 0xFF for b in data[-40:])
    if how == "not_torch":
        return b"hello, this is a text file\n" * 20
    raise AssertionError(how)


DAMAGES = ["zero_bytes", "truncated", "header", "tensor_bytes", "tail", "not_torch"]
# The legacy (pre-zip) format has no checksums: flipped tensor bytes there only a sha256 can tell.
LEGACY_DAMAGES = ["zero_bytes", "truncated", "header", "not_torch"]


@pytest.mark.parametrize(
    ("how", "legacy"), [(h, False) for h in DAMAGES] + [(h, True) for h in LEGACY_DAMAGES]
)
def test_damaged_file_is_one_line_naming_it_and_the_fix(tmp_path, how, legacy):
    state = MLP((2,), 3, hidden=64).state_dict()
    path = tmp_path / "good.pt"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert ck.load_file(path).keys() == state.keys()
    path.write_bytes(damaged(path.read_bytes(), how))
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_file(path)
    message = str(err.value)
    assert message.startswith(f"checkpoint {path} ")
    assert "\n" not in message
    assert "re-save it" in message
    # Damage is not mistaken for a file that needs pickled code.
    assert "pickled code" not in message
    with pytest.raises(ck.CheckpointError, match="fix: retrain"):
        ck.load_file(path, fix="fix: retrain")


def test_damaged_run_checkpoint_names_the_stage_to_rerun(tmp_path):
    out = tmp_path / "runs" / "seed2" / "checkpoints"
    cfg = TrainConfig(epochs=2, batch_size=16, milestones=(), device="cpu")
    manifest = train_run(
        points_dataset(),
        ModelConfig(name="mlp", hidden=8),
        cfg,
        CheckpointConfig(early=2, every=1, late=1),
        out,
        echo=lambda _: None,
    )
    path = out / manifest["checkpoints"][0]["file"]
    path.write_bytes(damaged(path.read_bytes(), "tensor_bytes"))
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_run_models(out)
    message = str(err.value)
    assert str(path) in message and "sha256" in message
    assert "rerun `dvc repro train@seed2`" in message
    path.write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match=r"is empty \(0 bytes.*dvc repro train@seed2"):
        ck.load_run_models(out)


def test_legacy_file_with_pickled_code_is_still_refused_without_running_it(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"extra": Payload()}, path, _use_new_zipfile_serialization=False)
    CODE_RAN.clear()
    with pytest.raises(ck.CheckpointError, match="needs pickled code"):
        ck.load_file(path)
    assert CODE_RAN == []


# --- layouts and mismatches -------------------------------------------------------------------


@pytest.fixture
def lenet_state():
    torch.manual_seed(0)
    return LeNet((1, 8, 8), 10).state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "epoch": 7, "optimizer": {"lr": 0.1}},
        lambda sd: {"state_dict": sd, "epoch": 7},
        lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}},
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
        lambda sd: {"module." + k: v for k, v in sd.items()},
    ],
    ids=["bare", "model", "state_dict", "model_state_dict", "module_prefix", "bare_module"],
)
def test_extract_state_dict_layouts(wrap, lenet_state):
    got = ck.extract_state_dict(wrap(lenet_state))
    assert same(got, lenet_state)
    model = LeNet((1, 8, 8), 10)
    ck.load_into(model, got, source="x")
    assert same(model.state_dict(), lenet_state)


def test_module_prefix_kept_when_not_on_every_key():
    state = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    assert list(ck.extract_state_dict(state)) == ["module.a", "b"]


def test_extract_state_dict_without_tensors_explains():
    with pytest.raises(ck.CheckpointError) as err:
        ck.extract_state_dict({"epoch": 3, "notes": "x"}, source="my.pt")
    message = str(err.value)
    assert message.startswith("my.pt: no tensors found (top-level keys: epoch, notes)")
    assert "state_dict, model_state_dict, model" in message
    with pytest.raises(ck.CheckpointError, match="expected a state_dict"):
        ck.extract_state_dict([torch.ones(1)], source="list.pt")


def test_load_into_wrong_class_count_names_key_and_both_shapes():
    three = LeNet((1, 8, 8), 3).state_dict()
    model = LeNet((1, 8, 8), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_into(model, three, source="ckpt.pt")
    message = str(err.value)
    assert message.startswith("ckpt.pt does not fit the model (LeNet)")
    assert "classifier.5.weight: checkpoint (3, 84) vs model (10, 84)" in message
    assert "classifier.5.bias: checkpoint (3,) vs model (10,)" in message
    assert "number of classes" in message
    assert same(model.state_dict(), before)  # nothing half-loaded


def test_load_into_lists_missing_and_unexpected_keys(lenet_state):
    state = dict(lenet_state)
    del state["features.0.bias"]
    state["head.weight"] = torch.zeros(2)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_into(LeNet((1, 8, 8), 10), state, source="s")
    message = str(err.value)
    assert "missing keys: features.0.bias" in message
    assert "unexpected keys: head.weight" in message


def test_natural_sort_orders_epoch_numbers():
    names = ["run/epoch_10.pt", "run/epoch_2.pt", "run/epoch_1.pt", "run/epoch_21.pt"]
    assert sorted(names)[:2] == ["run/epoch_1.pt", "run/epoch_10.pt"]  # the trap
    assert [p.name for p in ck.natural_sort(names)] == [
        "epoch_1.pt",
        "epoch_2.pt",
        "epoch_10.pt",
        "epoch_21.pt",
    ]


# --- model builders ---------------------------------------------------------------------------


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        build_model("vgg", (3, 32, 32), 10)
    assert (
        str(err.value) == "model.name: 'vgg' is not allowed; valid: mlp, lenet, resnet18, resnet50"
    )


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_lenet_fits_each_image_size(shape):
    model = build_model("lenet", shape, 7)
    assert isinstance(model, LeNet)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 7)
    assert model.classifier[1].in_features == 16 * (shape[1] // 4) * (shape[2] // 4)


def test_image_models_refuse_point_data():
    with pytest.raises(ConfigError, match="use 'mlp' for point data"):
        build_model("lenet", (2,), 2)
    with pytest.raises(ConfigError, match=r"expected \(D,\) points or \(C, H, W\) images"):
        build_model("mlp", (8, 8), 2)


def test_resnet18_has_the_cifar_stem():
    model = build_model("resnet18", (3, 32, 32), 10)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 3
    assert isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == 10
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    grey = build_model("resnet18", (1, 28, 28), 10)
    assert grey.conv1.in_channels == 1


def test_mlp_on_points_and_its_hidden_option():
    model = build_model("mlp", (2,), 2, hidden=5)
    assert model.net[1].in_features == 2 and model.net[1].out_features == 5
    assert model(torch.zeros(4, 2)).shape == (4, 2)
    assert build_model("mlp", (1, 8, 8), 10).net[1].in_features == 64


def test_manifest_options_rebuild_the_model(trained_run):
    out, manifest = trained_run
    assert manifest["model_options"] == {"hidden": 8}
    model = ck.build_from_manifest(manifest)
    assert isinstance(model, MLP) and model.net[1].out_features == 8
    lenet = {**manifest, "architecture": "lenet", "model_options": {}, "input_shape": [1, 8, 8]}
    assert isinstance(ck.build_from_manifest(lenet), LeNet)
