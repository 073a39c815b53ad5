"""``vogflow.audit`` on a user's model: every checkpoint layout and data form gives one table."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from numerics import assert_arrays_close, assert_tables_close
from torch.utils.data import DataLoader, TensorDataset
from vog_reference import SmallCNN, direct_gradients, direct_vog, models_from

from vogflow.api import audit
from vogflow.errors import CheckpointError, ConfigError, DataError

COLUMNS = ["index", "label", "true_label", "noisy", "pred", "correct"] + [
    f"vog_{w}_{m}{suffix}"
    for w in ("early", "late", "all")
    for m in ("label", "pred")
    for suffix in ("_raw", "")
]

LAYOUTS = {
    "bare": lambda sd: sd,
    "model": lambda sd: {"model": sd, "epoch": 3},
    "state_dict": lambda sd: {"state_dict": sd},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {}},
    "module_prefix": lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
}


def run_audit(model, checkpoints, data, **kw):
    kw = {"progress": False, "device": "cpu", "batch_size": 8, **kw}
    return audit(model, checkpoints, data, **kw)


def class_z(raw: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class normalisation written out: population z-score per class, 0 for a lone member."""
    out = np.zeros_like(raw)
    for c in set(classes.tolist()):
        idx = [i for i in range(len(raw)) if classes[i] == c]
        values = raw[idx]
        mean = sum(values) / len(values)
        std = np.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if len(values) > 1 and std > 0:
            out[idx] = (values - mean) / std
    return out


@pytest.fixture
def reference(small_cnn_setup):
    """The table the direct re-implementation predicts for the ``all`` window, label mode."""
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    with torch.no_grad():
        pred = models[-1].eval()(x).argmax(1).numpy()
    raw = direct_vog(direct_gradients(models, x, y))
    return {"raw": raw, "z": class_z(raw, y.numpy()), "pred": pred}


def test_every_layout_and_data_form_gives_the_direct_answer(small_cnn_setup, reference, tmp_path):
    factory, states, x, y = small_cnn_setup
    model = factory()
    model.train()  # a user's model may arrive in training mode; the audit must not care
    own_weights = {k: v.clone() for k, v in model.state_dict().items()}

    tables = {}
    for name, wrap in LAYOUTS.items():
        paths = []
        for t, state in enumerate(states):
            path = tmp_path / name / f"epoch_{t + 1}.pt"
            path.parent.mkdir(exist_ok=True)
            torch.save(wrap(state), path)
            paths.append(path)
        tables[f"files:{name}"] = run_audit(model, paths, (x, y))
        tables[f"memory:{name}"] = run_audit(model, [wrap(s) for s in states], (x, y))
    str_paths = [str(p) for p in sorted((tmp_path / "bare").iterdir())]
    tables["files:str"] = run_audit(model, str_paths, (x, y))
    dataset = TensorDataset(x, y)
    tables["dataset"] = run_audit(model, states, dataset)
    tables["loader"] = run_audit(model, states, DataLoader(dataset, batch_size=5, shuffle=False))
    tables["numpy_pair"] = run_audit(model, states, (x.numpy(), y.numpy()))

    first = tables["files:bare"]
    # The contract only grows: later columns (baselines, flags) follow these.
    assert list(first.columns)[: len(COLUMNS)] == COLUMNS
    for name, table in tables.items():
        assert_tables_close(table, first, obj=name)

    # The audited model itself is untouched: weights and mode.
    assert model.training
    assert all(torch.equal(v, own_weights[k]) for k, v in model.state_dict().items())

    np.testing.assert_array_equal(first["index"], np.arange(len(y)))
    np.testing.assert_array_equal(first["label"], y.numpy())
    np.testing.assert_array_equal(first["true_label"], y.numpy())
    assert not first["noisy"].any()
    np.testing.assert_array_equal(first["pred"], reference["pred"])
    np.testing.assert_array_equal(first["correct"], reference["pred"] == y.numpy())
    assert_arrays_close(first["vog_all_label_raw"], reference["raw"])
    np.testing.assert_allclose(first["vog_all_label"], reference["z"], rtol=1e-3, atol=1e-4)
    # The z-scores are not the raw values, and the early/late windows are genuinely other subsets.
    assert not np.allclose(first["vog_all_label"], first["vog_all_label_raw"])
    assert not np.allclose(first["vog_early_label_raw"], first["vog_late_label_raw"])
    for window in ("early", "late", "all"):
        for mode in ("label", "pred"):
            assert first[f"vog_{window}_{mode}_raw"].dtype == np.float64
            assert (first[f"vog_{window}_{mode}_raw"] > 0).all()


def test_normalise_option_reaches_the_table(small_cnn_setup, reference):
    factory, states, x, y = small_cnn_setup
    raw = run_audit(
        factory(), states, (x, y), normalise="none", label_modes=("label",), windows=("all",)
    )
    assert list(raw.columns)[:8] == COLUMNS[:6] + ["vog_all_label_raw", "vog_all_label"]
    assert not any(c.startswith("vog_") for c in list(raw.columns)[8:])
    np.testing.assert_array_equal(raw["vog_all_label"], raw["vog_all_label_raw"])
    absolute = run_audit(factory(), states, (x, y), normalise="abs", windows=("all",))
    np.testing.assert_allclose(absolute["vog_all_label"], np.abs(reference["z"]), atol=1e-4)


def test_shuffled_loader_is_refused(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)
    with pytest.raises(ConfigError) as err:
        run_audit(factory(), states, loader)
    assert "not sequential" in str(err.value)
    assert "shuffle=False" in str(err.value)
    # Dropping the last partial batch would leave examples unscored: refused in one line too.
    loader = DataLoader(TensorDataset(x, y), batch_size=5, drop_last=True)
    with pytest.raises(ConfigError, match=r"drop_last=True\): those examples would get no"):
        run_audit(factory(), states, loader)


def test_fewer_than_two_checkpoints_are_refused(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    with pytest.raises(CheckpointError, match="at least 2 checkpoints, got 1"):
        run_audit(factory(), states[:1], (x, y))


def test_checkpoints_of_another_class_count_are_refused(small_cnn_setup, tmp_path):
    factory, states, x, y = small_cnn_setup
    three = SmallCNN(classes=3).state_dict()
    path = tmp_path / "three.pt"
    torch.save({"model_state_dict": three}, path)
    with pytest.raises(CheckpointError) as err:
        run_audit(factory(), [states[0], path], (x, y), windows=("all",))
    message = str(err.value)
    assert str(path) in message
    assert "fc.weight: checkpoint (3, 180) vs model (4, 180)" in message
    assert "fc.bias: checkpoint (3,) vs model (4,)" in message


def test_labels_beyond_the_model_classes_are_refused(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    bad = y.clone()
    bad[3] = 4  # SmallCNN has 4 classes: 0..3
    with pytest.raises(ConfigError, match=r"labels range over \[0, 4\] but the model has 4"):
        run_audit(factory(), states, (x, bad))


def test_mismatched_lengths_and_unknown_data_are_refused(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    with pytest.raises(ConfigError, match=r"inputs \(23\) and labels \(22\) differ"):
        run_audit(factory(), states, (x, y[:-1]))
    with pytest.raises(ConfigError, match="got dict"):
        run_audit(factory(), states, {"x": x, "y": y})


@pytest.mark.integration
def test_audit_is_a_lazy_attribute_of_the_package():
    code = (
        "import sys, vogflow\n"
        "assert 'torch' not in sys.modules and 'vogflow.api' not in sys.modules\n"
        "import vogflow.api\n"
        "assert vogflow.audit is vogflow.api.audit\n"
        "assert 'audit' in vogflow.__all__\n"
        "try:\n"
        "    vogflow.nothing\n"
        "except AttributeError as err:\n"
        "    assert 'nothing' in str(err)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import vogflow

    assert vogflow.audit is audit


MISSING = [f"/nonexistent/epoch_{e}.pt" for e in range(1, 6)]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"normalise": "zscore"}, "normalise: 'zscore' is not allowed; valid: z, none, abs"),
        ({"windows": ("middle",)}, "windows: ['middle'] is not allowed; pass a non-empty list"),
        ({"windows": ()}, "windows: [] is not allowed; pass a non-empty list"),
        ({"label_modes": ("softmax",)}, "label_modes: ['softmax'] is not allowed; pass a non"),
        ({"window_size": 1}, "window size must be at least 2 (VoG is a spread), got 1"),
        ({"window_size": 6}, "window 'early' of size 6 over 5 checkpoints: the early and"),
        ({"batch_size": 0}, "batch_size: 0 is not allowed; pass an integer >= 1"),
        ({"precision": "bf16"}, "precision: 'bf16' is refused on the cpu device"),
    ],
)
def test_bad_options_are_refused_before_any_checkpoint_is_read(small_cnn_setup, options, message):
    # The checkpoint paths do not exist: the option's message proves nothing was loaded first.
    factory, _, x, y = small_cnn_setup
    with pytest.raises(ConfigError) as err:
        run_audit(factory(), MISSING, (x, y), **options)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_an_unreachable_tracking_store_is_refused_first(small_cnn_setup, tmp_path, monkeypatch):
    from vogflow.errors import TrackingError

    factory, _, x, y = small_cnn_setup
    monkeypatch.delenv("VOGFLOW_TRACKING", raising=False)
    uri = f"sqlite:///{tmp_path}/no/such/folder/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingError) as err:
        run_audit(factory(), MISSING, (x, y), track=True)
    assert str(err.value).startswith(f"tracking store {uri}: folder ")
    # Without track, the store is not consulted: the missing checkpoint is what fails.
    with pytest.raises(CheckpointError, match="not found"):
        run_audit(factory(), MISSING, (x, y))


def test_the_same_checkpoint_file_twice_is_refused(small_cnn_setup, tmp_path):
    factory, states, x, y = small_cnn_setup
    paths = []
    for t, state in enumerate(states[:4]):
        paths.append(tmp_path / f"epoch_{t + 1}.pt")
        torch.save(state, paths[-1])
    with pytest.raises(ConfigError, match=r"^identical checkpoints #2 = #3 \(positions"):
        run_audit(factory(), [paths[0], paths[1], paths[1], paths[2], paths[3]], (x, y))


def test_fractional_labels_of_a_pair_are_refused_whole_ones_accepted(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    exact = run_audit(factory(), states, (x, y), windows=("all",))
    floats = run_audit(factory(), states, (x, y.numpy().astype(np.float32)), windows=("all",))
    # One computation: whole float labels become class indices before any float work.
    pd.testing.assert_frame_equal(floats, exact)
    bad = y.numpy().astype(np.float64)
    bad[[2, 19]] = [0.5, 3.25]
    # The whole label vector is checked at once (batch_size=8 would split these two).
    with pytest.raises(DataError) as err:
        run_audit(factory(), states, (x, bad))
    assert str(err.value) == (
        "labels must be whole class indices, found 2 that are not (index 2: 0.5, index 19: 3.25): "
        "pass integer labels (vogflow does not round or truncate them)"
    )
