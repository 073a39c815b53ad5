"""Where checkpoints already are: MLflow runs, Lightning and Hugging Face files, torchvision models.

Real MLflow (a SQLite store in tmp_path), real files; nothing mocked but a missing package.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap

import numpy as np
import pytest
import torch
from numerics import assert_tables_close
from torch import nn

from vogflow import tracking
from vogflow.api import audit
from vogflow.checkpoints import sources
from vogflow.checkpoints.local import load_state
from vogflow.checkpoints.recorder import CheckpointRecorder
from vogflow.cli import main as cli
from vogflow.errors import CheckpointError
from vogflow.rankings.table import read


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))


def states(k: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    base = tiny().state_dict()
    return [
        {n: v + 0.3 * torch.randn(v.shape, generator=gen) for n, v in base.items()}
        for _ in range(k)
    ]


def xy(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def run_audit(model, checkpoints, data, **kw):
    # Windows of 2: three checkpoints are then an early, a late and an all window of their own.
    kw.setdefault("window_size", 2)
    return audit(model, checkpoints, data, progress=False, device="cpu", batch_size=8, **kw)


def one_line_error(capsys: pytest.CaptureFixture, command: str = "audit") -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"vogflow {command}: error: ")
    return err


def test_runs_uri_round_trip_gives_the_table_of_the_files(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = client.create_experiment("train", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(experiment).info.run_id
    # The recorder logs each file as it writes it, as during training.
    recorder = CheckpointRecorder(
        tmp_path / "ckpts",
        model=tiny(),
        epochs=4,
        early=4,
        mlflow_run_id=run_id,
        tracking_uri=uri,
    )
    for epoch, state in enumerate(states(4), 1):
        recorder.epoch_end(epoch, state)
    # A plain folder of state dicts logged by hand, named out of order.
    plain = tmp_path / "plain"
    plain.mkdir()
    for epoch, state in zip((2, 10, 1), states(3, seed=1), strict=True):
        torch.save({"model_state_dict": state}, plain / f"epoch_{epoch}.pt")
    client.log_artifacts(run_id, str(plain), "weights")

    x, y = xy()
    files = run_audit(tiny(), recorder.checkpoints, (x, y))
    with sources.resolve(f"runs:/{run_id}", tracking_uri=uri) as source:
        assert source.kind == "manifest" and source.complete
        assert source.names[0] == f"runs:/{run_id}/checkpoints/epoch_0001.pt"
        downloaded = source.checkpoints[0].path
        assert_tables_close(run_audit(tiny(), source.for_audit(), (x, y)), files)
    assert not downloaded.exists()  # the temporary download is gone

    by_number = [plain / f"epoch_{e}.pt" for e in (1, 2, 10)]
    with sources.resolve(f"runs:/{run_id}/weights", tracking_uri=uri) as source:
        assert [c.path.name for c in source.checkpoints] == [p.name for p in by_number]
        from_run = run_audit(tiny(), source.for_audit(), (x, y))
    assert_tables_close(from_run, run_audit(tiny(), by_number, (x, y)))

    with pytest.raises(tracking.TrackingError, match="no such run"):
        sources.resolve("runs:/0123456789abcdef/checkpoints", tracking_uri=uri)
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(tracking.TrackingError, match="does not exist"):
        sources.resolve(f"runs:/{run_id}", tracking_uri=missing)
    assert not (tmp_path / "none.db").exists()
    # A run in a list of files is one source too: refused before anything is downloaded.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    with pytest.raises(CheckpointError, match=rf"runs:/{run_id}: a checkpoint folder or run"):
        sources.resolve([str(by_number[0]), f"runs:/{run_id}"], tracking_uri=uri)
    assert not any(downloads.iterdir())


def test_lightning_ckpt_gives_its_state_dict_without_the_model_prefix(tmp_path):
    x, y = xy()
    paths = []
    for epoch, state in enumerate(states(3), 1):
        payload = {
            "epoch": epoch,
            "global_step": 10 * epoch,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1}]}],
        }
        paths.append(tmp_path / f"epoch={epoch}-step={10 * epoch}.ckpt")
        torch.save(payload, paths[-1])
    source = sources.resolve(str(tmp_path / "*.ckpt"))
    assert [c.path for c in source.checkpoints] == paths
    expected = run_audit(tiny(), states(3), (x, y))
    assert_tables_close(run_audit(tiny(), source.for_audit(), (x, y)), expected)


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).write_text('ran')",)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "tiny_sources_factory.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn


            def build():
                torch.manual_seed(0)
                return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tiny_sources_factory:build"


def write_npz(path, n_test: int = 12, shape=(1, 8, 8), classes: int = 3) -> tuple:
    rng = np.random.default_rng(0)
    x = rng.random((n_test, *shape), dtype=np.float32)
    y = np.arange(n_test) % classes
    np.savez(path, x_train=x[:4], y_train=y[:4], x_test=x, y_test=y)
    return x, y


def test_a_payload_that_needs_pickled_code_is_refused_and_never_runs(
    tmp_path, capsys, factory_module
):
    control, marker = tmp_path / "control_ran", tmp_path / "payload_ran"
    good = states(2)
    for name, target in (("control.ckpt", control), ("e1.ckpt", marker), ("e2.ckpt", marker)):
        payload = {"state_dict": good[0], "hyper_parameters": {"h": Payload(str(target))}}
        torch.save(payload, tmp_path / name)
    # The planted payload is live: a plain torch.load runs it.
    torch.load(tmp_path / "control.ckpt", weights_only=False)
    assert control.read_text() == "ran"

    with pytest.raises(CheckpointError, match="needs pickled code"):
        load_state(tmp_path / "e1.ckpt")
    with sources.resolve([tmp_path / "e1.ckpt", tmp_path / "e2.ckpt"]) as source:
        with pytest.raises(CheckpointError, match="needs pickled code"):
            source.for_audit()
    write_npz(tmp_path / "mine.npz")
    args = [
        "audit",
        "--model",
        factory_module,
        "--checkpoints",
        str(tmp_path / "e*.ckpt"),
        "--data",
        f"npz:{tmp_path / 'mine.npz'}",
        "--out",
        str(tmp_path / "r.parquet"),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 2
    assert "needs pickled code" in one_line_error(capsys)
    assert not marker.exists()


def hf_output(tmp_path, steps=(500, 1000, 1500)):
    out = tmp_path / "trainer_out"
    for step in steps:
        (out / f"checkpoint-{step}").mkdir(parents=True)
    return out


def test_hugging_face_folders_without_safetensors_are_one_line(tmp_path, capsys, monkeypatch):
    out = hf_output(tmp_path)
    for folder in out.iterdir():
        (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    # As on a machine without the package, whether or not this one has it.
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    source = sources.resolve(out)
    assert source.kind == "huggingface"
    assert [c.short for c in source.checkpoints] == [
        f"checkpoint-{s}/model.safetensors" for s in (500, 1000, 1500)
    ]
    assert sources.resolve(str(out / "checkpoint-*")).names == source.names
    with pytest.raises(CheckpointError, match="pip install safetensors"):
        source.for_audit()
    write_npz(tmp_path / "mine.npz")
    args = [
        "audit",
        "--model",
        "torchvision:resnet18",
        "--num-classes",
        "3",
        "--checkpoints",
        str(out),
        "--data",
        f"npz:{tmp_path / 'mine.npz'}",
        "--out",
        str(tmp_path / "r.parquet"),
        "--quiet",
    ]
    assert cli.main(args) == 2
    assert "safetensors package: pip install safetensors" in one_line_error(capsys)


def test_hugging_face_safetensors_round_trip(tmp_path):
    import safetensors.torch as st  # installed by the test extra

    out = hf_output(tmp_path)
    for step, state in zip((500, 1000, 1500), states(3), strict=True):
        st.save_file(state, str(out / f"checkpoint-{step}" / "model.safetensors"))
    x, y = xy()
    with sources.resolve(out) as source:
        table = run_audit(tiny(), source.for_audit(), (x, y))
    assert_tables_close(table, run_audit(tiny(), states(3), (x, y)))


def test_torchvision_model_by_name_builds_and_audits(tmp_path, capsys):
    from torchvision.models import get_model

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / "ckpts" / f"epoch_{seed + 1}.pt")
        paths[-1].parent.mkdir(exist_ok=True)
        torch.save(get_model("resnet18", weights=None, num_classes=10).state_dict(), paths[-1])
    x, y = write_npz(tmp_path / "mine.npz", n_test=4, shape=(3, 32, 32), classes=10)
    base = [
        "audit",
        "--checkpoints",
        str(tmp_path / "ckpts"),
        "--data",
        f"npz:{tmp_path / 'mine.npz'}",
        "--out",
        str(tmp_path / "r.parquet"),
        "--quiet",
        "--device",
        "cpu",
        "--windows",
        "all",
        "--show",
        "0",
    ]
    assert cli.main([*base, "--model", "torchvision:resnet18", "--num-classes", "10"]) == 0
    direct = run_audit(
        get_model("resnet18", weights=None, num_classes=10), paths, (x, y), windows=("all",)
    )
    assert_tables_close(read(tmp_path / "r.parquet"), direct)

    capsys.readouterr()
    for extra, message in (
        (["--model", "torchvision:resnet18"], "add --num-classes N"),
        (["--model", "torchvision:no_such_net", "--num-classes", "10"], "no classification"),
        (["--model", "mynets:build", "--num-classes", "10"], "--num-classes applies to"),
        ([], "--model is needed"),
    ):
        assert cli.main([*base, *extra]) == 2
        assert message in one_line_error(capsys)


def test_a_changed_file_in_a_checkpoint_folder_is_refused(tmp_path):
    recorder = CheckpointRecorder(tmp_path / "c", model=tiny(), epochs=3)
    for epoch, state in enumerate(states(3), 1):
        recorder.epoch_end(epoch, state)
    torch.save(states(1, seed=9)[0], recorder.checkpoints[1])
    with sources.resolve(tmp_path / "c") as source:
        with pytest.raises(CheckpointError, match="does not match the sha256"):
            source.for_audit()
        with pytest.raises(CheckpointError, match="does not match the sha256"):
            source.load()
        with pytest.raises(CheckpointError, match="not built in"):
            source.build_model()
