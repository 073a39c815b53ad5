"""``CheckpointRecorder`` in a user's own training loop: its folder audits like the state dicts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from numerics import assert_tables_close
from torch import nn

from vogflow.api import audit
from vogflow.checkpoints import sources
from vogflow.checkpoints.files import read_manifest, schedule
from vogflow.checkpoints.recorder import CheckpointRecorder, fingerprint
from vogflow.cli import main as cli
from vogflow.common.atomic import sha256_file
from vogflow.errors import CheckpointError
from vogflow.models.architectures import LeNet
from vogflow.rankings.table import read


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def train(model: nn.Module, recorder: CheckpointRecorder, epochs: int) -> dict[int, dict]:
    """A plain loop, as a team writes it; returns what the model was after each epoch."""
    x, y = data(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = {}
    for epoch in range(epochs):
        for i in range(0, len(y), 12):  # two steps an epoch
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 12]), y[i : i + 12]).backward()
            optimizer.step()
        recorder.epoch_end(epoch + 1, model)
        seen[epoch + 1] = copy.deepcopy(model.state_dict())
    return seen


def run_audit(model, checkpoints, x, y, **kw):
    # Windows of 2: three checkpoints are then an early, a late and an all window of their own.
    kw.setdefault("window_size", 2)
    return audit(model, checkpoints, (x, y), progress=False, device="cpu", batch_size=8, **kw)


def test_recorded_folder_audits_to_the_table_of_the_state_dicts(tmp_path):
    torch.manual_seed(0)
    model = Net()
    x_train, y_train = data(seed=1)
    recorder = CheckpointRecorder(
        tmp_path / "ckpts",
        model=model,
        epochs=6,
        early=2,
        every=3,
        late=2,
        input_shape=(1, 8, 8),
        classes=["a", "b", "c"],
        data_fingerprint=fingerprint(x_train, y_train),
    )
    seen = train(model, recorder, epochs=6)

    saved = schedule(6, early=2, every=3, late=2)
    assert saved == [1, 2, 3, 5, 6]
    manifest = read_manifest(tmp_path / "ckpts")
    assert manifest["complete"] and recorder.complete
    assert manifest["architecture"] == manifest["model_class"] == f"{__name__}.Net"
    assert manifest["classes"] == ["a", "b", "c"] and manifest["num_classes"] == 3
    assert manifest["input_shape"] == [1, 8, 8]
    assert manifest["data_fingerprint"] == fingerprint(x_train.numpy(), y_train.numpy())
    assert [e["epoch"] for e in manifest["checkpoints"]] == saved
    for entry in manifest["checkpoints"]:
        assert entry["sha256"] == sha256_file(tmp_path / "ckpts" / entry["file"])

    x, y = data(seed=2)
    with sources.resolve(tmp_path / "ckpts") as source:
        assert source.kind == "manifest" and source.builtin_architecture() is None
        assert [c.path for c in source.checkpoints] == recorder.checkpoints
        from_folder = run_audit(Net(), source.for_audit(), x, y)
        loaded = run_audit(Net(), source.load(), x, y)
    direct = run_audit(Net(), [seen[e] for e in saved], x, y)
    assert_tables_close(from_folder, direct)
    assert_tables_close(loaded, direct)
    # The check can fail: another epoch's weights give another table.
    other = run_audit(Net(), [seen[e] for e in (1, 2, 3, 4, 6)], x, y)
    assert not np.allclose(other["vog_all_label_raw"], direct["vog_all_label_raw"])


def test_builtin_manifest_rebuilds_lenet_and_the_cli_needs_no_model(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = LeNet((1, 8, 8), 3)
    norm = {"mean": [0.5], "std": [0.25]}
    recorder = CheckpointRecorder(
        tmp_path / "ckpts",
        model=model,
        epochs=3,
        architecture="lenet",
        input_shape=(1, 8, 8),
        classes=["a", "b", "c"],
        normalisation=norm,
    )
    seen = train(model, recorder, epochs=3)
    with sources.resolve(tmp_path / "ckpts") as source:
        rebuilt = source.build_model()
    assert isinstance(rebuilt, LeNet) and rebuilt.classifier[-1].out_features == 3

    x, y = data(n=20, seed=3)
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "mine.npz",
        x_train=rng.random((6, 1, 8, 8), dtype=np.float32),
        y_train=np.arange(6) % 3,
        x_test=x.numpy(),
        y_test=y.numpy(),
    )
    monkeypatch.chdir(tmp_path)
    args = [
        "audit",
        "--checkpoints",
        str(tmp_path / "ckpts"),
        "--data",
        "npz:mine.npz",
        "--out",
        "r.parquet",
        "--quiet",
        "--device",
        "cpu",
        "--window-size",
        "2",
        "--show",
        "0",
    ]
    assert cli.main(args) == 0
    # The inputs are standardised as the manifest records: what the model was trained on.
    direct = run_audit(LeNet((1, 8, 8), 3), [seen[e] for e in (1, 2, 3)], (x - 0.5) / 0.25, y)
    assert_tables_close(read(tmp_path / "r.parquet"), direct)
    # The API takes the folder too, and rebuilds the model from its manifest.
    from_folder = run_audit(None, tmp_path / "ckpts", (x - 0.5) / 0.25, y)
    assert_tables_close(from_folder, direct)


def test_a_builtin_name_that_does_not_rebuild_the_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not fit the model"):
        CheckpointRecorder(
            tmp_path / "c",
            model=Net(),
            epochs=3,
            architecture="lenet",
            input_shape=(1, 8, 8),
            num_classes=3,
        )
    with pytest.raises(ValueError, match="pass input_shape"):
        CheckpointRecorder(tmp_path / "c", model=Net(), epochs=3, architecture="mlp")


def test_epochs_are_one_based_and_a_resumed_loop_continues(tmp_path):
    torch.manual_seed(0)
    model = Net()
    recorder = CheckpointRecorder(tmp_path / "c", model=model, epochs=4, early=4)
    with pytest.raises(ValueError, match="1-based"):
        recorder.epoch_end(0, model)
    recorder.epoch_end(1, model)
    recorder.epoch_end(2, model.state_dict())
    # A new process resumes after epoch 1: epoch 2 is replayed and recorded again.
    again = CheckpointRecorder(tmp_path / "c", model=model, epochs=4, early=4)
    assert [p.name for p in again.checkpoints] == ["epoch_0001.pt", "epoch_0002.pt"]
    again.epoch_end(2, model)
    assert [p.name for p in again.checkpoints] == ["epoch_0001.pt", "epoch_0002.pt"]
    with pytest.raises(CheckpointError, match="another run's checkpoints.*schedule"):
        CheckpointRecorder(tmp_path / "c", model=model, epochs=9)
