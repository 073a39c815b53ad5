"""Checkpoints as MLflow logged models: ``models:/`` URIs and ``runs:/`` give the files' table.

Real MLflow (a SQLite store in tmp_path), real files; nothing mocked.
"""

from __future__ import annotations

import io
import json
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from numerics import assert_tables_close
from test_sources import states, tiny, xy

from vogflow import tracking
from vogflow.api import audit
from vogflow.checkpoints import sources
from vogflow.checkpoints.recorder import CheckpointRecorder
from vogflow.cli import main as cli
from vogflow.errors import CheckpointError
from vogflow.rankings.table import read


def run_audit(model, checkpoints, data=None, **kw):
    # Windows of 2: three checkpoints are then an early, a late and an all window of their own.
    kw.setdefault("window_size", 2)
    return audit(model, checkpoints, data or xy(), progress=False, device="cpu", batch_size=8, **kw)


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One SQLite store for the module: creating one takes seconds (schema migrations)."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = client.create_experiment("train", artifact_location=(folder / "art").as_uri())
    return uri, client, experiment


@pytest.fixture
def store(store_uri):
    """``(uri, client, experiment id, run id)``: a new training run in the module's store."""
    uri, client, experiment = store_uri
    return uri, client, experiment, client.create_run(experiment).info.run_id


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "tiny_models_factory.py").write_text(
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
    return "tiny_models_factory:build"


def test_logged_checkpoints_audit_like_the_files_by_model_uri_and_by_run(
    tmp_path, store, factory_module, monkeypatch
):
    uri, client, experiment, run_id = store
    recorder = CheckpointRecorder(
        tmp_path / "ckpts",
        model=tiny(),
        epochs=4,
        early=4,
        input_shape=(1, 8, 8),
        classes=["a", "b", "c"],
        mlflow_run_id=run_id,
        tracking_uri=uri,
        log_models=True,
    )
    for epoch, state in enumerate(states(4), 1):
        recorder.epoch_end(epoch, state)
    files = run_audit(tiny(), recorder.checkpoints)

    # Each checkpoint is a logged model of the run (its weights and a manifest naming only
    # them), the epoch its param and the step of the run's output; nothing else in the run.
    assert client.list_artifacts(run_id) == []
    outputs = sorted(client.get_run(run_id).outputs.model_outputs, key=lambda o: o.step)
    assert [o.step for o in outputs] == [1, 2, 3, 4]
    ids = [o.model_id for o in outputs]
    logged = [client.get_logged_model(i) for i in ids]
    assert [m.name for m in logged] == [f"epoch_000{e}" for e in (1, 2, 3, 4)]
    assert [m.params["epoch"] for m in logged] == ["1", "2", "3", "4"]
    assert {a.path for a in client.list_logged_model_artifacts(ids[0])} == {
        "epoch_0001.pt",
        "manifest.json",
    }

    with sources.resolve(f"runs:/{run_id}", tracking_uri=uri) as source:
        assert source.kind == "models" and [c.epoch for c in source.checkpoints] == [1, 2, 3, 4]
        assert source.manifest["classes"] == ["a", "b", "c"] and source.complete
        downloaded = source.checkpoints[0].path
        assert_tables_close(run_audit(tiny(), source.for_audit()), files)
    assert not downloaded.exists()  # the temporary download is gone

    by_id = [f"models:/{i}" for i in ids]
    with sources.resolve(by_id, tracking_uri=uri) as source:
        assert source.names[0] == f"models:/{ids[0]} (epoch_0001.pt)"
        assert_tables_close(run_audit(tiny(), source.load()), files)

    # Registered versions and an alias name the same checkpoints. (MLflow's registry looks the
    # logged model up in the default store, so the store is set as a user's loop sets it.)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client.create_registered_model("net")
    for model_id in ids:
        client.create_model_version("net", f"models:/{model_id}", run_id=run_id, model_id=model_id)
    client.set_registered_model_alias("net", "final", "4")
    registered = ["models:/net/1", "models:/net/2", "models:/net/3", "models:/net@final"]
    assert_tables_close(run_audit(tiny(), registered), files)

    x, y = xy()
    np.savez(tmp_path / "mine.npz", x_train=x[:3], y_train=np.arange(3), x_test=x, y_test=y)
    args = ["audit", "--model", factory_module, "--checkpoints", *registered]
    args += ["--data", f"npz:{tmp_path / 'mine.npz'}", "--out", str(tmp_path / "r.parquet")]
    args += ["--window-size", "2"]
    assert cli.main([*args, "--quiet", "--device", "cpu", "--batch-size", "8"]) == 0
    assert_tables_close(read(tmp_path / "r.parquet"), files)

    with pytest.raises(tracking.TrackingError, match="no such registered model version.*1, 2"):
        sources.resolve(["models:/net/9", "models:/net/1"], tracking_uri=uri)
    with pytest.raises(tracking.TrackingError, match="no logged model 'm-0123'"):
        sources.resolve("models:/m-0123", tracking_uri=uri)
    with pytest.raises(CheckpointError, match="takes only models:/ URIs"):
        sources.resolve(["models:/net/1", str(recorder.checkpoints[1])], tracking_uri=uri)
    with pytest.raises(ValueError, match="needs mlflow_run_id"):
        CheckpointRecorder(tmp_path / "other", model=tiny(), epochs=2, log_models=True)


def test_a_run_replaying_an_epoch_reads_its_latest_checkpoint(tmp_path, store):
    uri, _, _, run_id = store
    options = dict(model=tiny(), epochs=3, early=3, mlflow_run_id=run_id, tracking_uri=uri)
    first, replayed = states(3), states(2, seed=1)
    recorder = CheckpointRecorder(tmp_path / "ckpts", **options, log_models=True)
    for epoch, state in enumerate(first, 1):
        recorder.epoch_end(epoch, state)
    # A new process resumes after epoch 1: epochs 2 and 3 are trained (and logged) again.
    resumed = CheckpointRecorder(tmp_path / "ckpts", **options, log_models=True)
    for epoch, state in enumerate(replayed, 2):
        resumed.epoch_end(epoch, state)
    with sources.resolve(f"runs:/{run_id}", tracking_uri=uri) as source:
        assert [c.epoch for c in source.checkpoints] == [1, 2, 3]
        table = run_audit(tiny(), source.for_audit())
    assert_tables_close(table, run_audit(tiny(), [first[0], *replayed]))
    assert_tables_close(table, run_audit(tiny(), resumed.checkpoints))

    # Resumed after epoch 1 once more, it stops after epoch 2: the run's checkpoints are epochs
    # 1 and 2 of this attempt, never mixed with the earlier attempt's epoch 3 (as on disk).
    again = CheckpointRecorder(tmp_path / "ckpts", **options, log_models=True)
    again.epoch_end(2, first[2])
    with sources.resolve(f"runs:/{run_id}", tracking_uri=uri) as source:
        assert [c.epoch for c in source.checkpoints] == [1, 2]
        # Two checkpoints: early = late = all, so only the all window is scored.
        table = run_audit(tiny(), source.for_audit(), windows=("all",))
    assert_tables_close(table, run_audit(tiny(), [first[0], first[2]], windows=("all",)))


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).write_text('ran')",)


def log_model_files(client, experiment: str, run_id: str, files: dict[str, bytes], tmp) -> str:
    """A logged model holding ``files`` (path in the model -> bytes); returns its id."""
    model_id = client.create_logged_model(experiment, source_run_id=run_id).model_id
    for path, data in files.items():
        local = tmp / model_id / path
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        folder = str(local.parent.relative_to(tmp / model_id))
        client.log_model_artifact(model_id, str(local), None if folder == "." else folder)
    client.finalize_logged_model(model_id, "READY")
    return model_id


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def planted_pt2(marker) -> bytes:
    """A ``torch.export.save`` archive of a tiny model, one weight swapped for a pickle that
    writes ``marker``, flagged as a pickled weight (as the archive does for tensor subclasses)."""
    exported = torch.export.export(tiny(), (torch.zeros(2, 1, 8, 8),))
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as good, zipfile.ZipFile(out, "w") as bad:
        config_name = next(n for n in good.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(good.read(config_name))
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        for name in good.namelist():
            data = good.read(name)
            if name == config_name:
                data = json.dumps(config).encode()
            elif name.endswith(f"/weights/{first['path_name']}"):
                data = saved(Payload(str(marker)))
            bad.writestr(name, data)
    return out.getvalue()


def test_models_that_need_pickled_code_are_refused_and_never_run(tmp_path, store, monkeypatch):
    uri, client, experiment, run_id = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tmp = tmp_path / "made"
    good = log_model_files(client, experiment, run_id, {"w.pt": saved(states(1)[0])}, tmp)

    marker = tmp_path / "payload_ran"
    payload = {"data/model.pth": saved({"state_dict": states(1)[0], "h": Payload(str(marker))})}
    pickled = log_model_files(client, experiment, run_id, payload, tmp)
    with pytest.raises(CheckpointError, match="needs pickled code"):
        run_audit(tiny(), [f"models:/{good}", f"models:/{pickled}"], windows=("all",))
    with sources.resolve([f"models:/{good}", f"models:/{pickled}"], tracking_uri=uri) as source:
        with pytest.raises(CheckpointError, match="needs pickled code"):
            source.load()
    assert not marker.exists()

    # torch.export.load unpickles an archive's pickled weights with weights_only=False: the
    # planted code runs (the control), so an exported (.pt2) model is refused unopened.
    control, exported_marker = tmp_path / "control_ran", tmp_path / "exported_ran"
    (tmp_path / "control.pt2").write_bytes(planted_pt2(control))
    with pytest.raises(Exception):  # noqa: B017 - it fails after running the code
        torch.export.load(tmp_path / "control.pt2")
    assert control.read_text() == "ran"
    exported = log_model_files(
        client, experiment, run_id, {"data/model.pt2": planted_pt2(exported_marker)}, tmp
    )
    client.create_registered_model("exported")
    client.create_model_version("exported", f"models:/{exported}", run_id=run_id, model_id=exported)
    with pytest.raises(CheckpointError, match=r"exported program \(data/model.pt2\)"):
        sources.resolve(["models:/exported/1", f"models:/{good}"], tracking_uri=uri)
    assert not exported_marker.exists()
