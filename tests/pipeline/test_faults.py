"""Bad inputs as a user meets them: each ends in one line naming the value and the fix, before
any work, or in a correct result."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vogflow.config.checks import check_pipeline
from vogflow.config.schema import CheckpointConfig, load_params, parse_params
from vogflow.config.sizes import checkpoint_count, checkpoint_epochs
from vogflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_(raw: dict, **changes) -> dict:
    raw = copy.deepcopy(raw)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    return raw


def refusal(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        check_pipeline(parse_params(raw))
    return str(err.value)


# Each case: what the user set, and how the one-line refusal starts.
PARAM_CASES = {
    "epochs beyond any disk": (
        {"train__epochs": 10**12},
        "train.epochs: 1000000000000 is not allowed; run 'main' would save 200000000005 "
        "checkpoints",
    ),
    "checkpoints beyond the disk": (
        {
            "model__name": "resnet50",
            "train__epochs": 90000,
            "checkpoints__every": 1,
            "train__milestones": [],
        },
        "train.epochs: 90000 is not allowed; run 'main' would save 90000 checkpoints of 94.1 MB "
        "each",
    ),
    "seed past torch's 64 bits": (
        {"train__seed": 2**70},
        "train.seed: 1180591620717411303424 is not allowed; expected an integer in [0, 2**63 - 1]",
    ),
    "threads past the OS limit": (
        {"train__threads": 100000},
        "train.threads: 100000 is not allowed; expected an integer in [1, 1024]",
    ),
    "an MLP wider than memory": (
        {"model__name": "mlp", "model__hidden": 10**9},
        "model.hidden: the mlp (hidden=1000000000) model for inputs (1, 8, 8) and 10 classes "
        "has 7.5e+10 parameters",
    ),
    "a toy model wider than memory": (
        {"toy__hidden": 10**10},
        "toy.hidden: the mlp (hidden=10000000000) model for inputs (2,) and 2 classes",
    ),
    "a missing npz": (
        {"data__name": "npz", "data__path": "nope.npz"},
        "data.path: 'nope.npz' is not allowed; expected an existing npz file",
    ),
    "a missing image folder": (
        {"data__name": "imagefolder", "data__path": "nope"},
        "data.path: 'nope' is not allowed; expected an existing imagefolder folder",
    ),
    "a misspelt rank_by": (
        {"vog__rank_by": "hard_lose"},
        "vog.rank_by: 'hard_lose' is not allowed; did you mean 'hard_loss'?",
    ),
    "bootstrap beyond memory": (
        {"vog__bootstrap": 10**9},
        "vog.bootstrap: 1000000000 is not allowed; resampling 1797 examples that often takes",
    ),
    "a figure past matplotlib's pixel limit": (
        {"figures__dpi": 10**6},
        "figures.dpi: 1000000 is not allowed; expected an integer in [30, 1200]",
    ),
    "a grid of a million images": (
        {"figures__grid": 1000},
        "figures.grid: 1000 is not allowed; expected an integer in [1, 30]",
    ),
    "BatchNorm under DDP on the CPU": (
        {"train__processes": 2, "model__name": "resnet18", "train__device": "cpu"},
        "train.processes: 2 is not allowed with model.name 'resnet18' on the CPU",
    ),
}


@pytest.mark.parametrize("case", list(PARAM_CASES))
def test_params_the_machine_or_libraries_cannot_hold_are_refused_at_validate(shipped, case):
    changes, start = PARAM_CASES[case]
    message = refusal(with_(shipped, **changes))
    assert message.startswith(start), message
    assert "\n" not in message


def test_the_checkpoint_count_is_the_schedule_length_without_listing_it():
    for epochs in range(1, 45):
        for early in (1, 2, 3, 5):
            for every in (1, 2, 5, 7, 100):
                for late in (1, 3, 6):
                    ckpt = CheckpointConfig(early=early, every=every, late=late)
                    assert checkpoint_count(epochs, ckpt) == len(checkpoint_epochs(epochs, ckpt))
    start = time.perf_counter()
    assert checkpoint_count(10**12, CheckpointConfig()) == 200_000_000_005
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    "name, shape, classes, options",
    [
        ("mlp", (1, 8, 8), 10, {"hidden": 64}),
        ("mlp", (2,), 2, {"hidden": 16}),
        ("lenet", (1, 8, 8), 10, {}),
        ("lenet", (3, 32, 32), 100, {}),
        ("resnet18", (3, 32, 32), 10, {}),
        ("resnet18", (1, 28, 28), 7, {}),
        ("resnet50", (3, 32, 32), 100, {}),
        ("resnet50", (1, 28, 28), 7, {}),
    ],
)
def test_the_parameter_arithmetic_counts_what_torch_builds(name, shape, classes, options):
    from vogflow.config.sizes import parameter_count
    from vogflow.models.architectures import build_model

    model = build_model(name, shape, classes, **options)
    assert parameter_count(name, shape, classes, **options) == sum(
        p.numel() for p in model.parameters()
    )


def test_a_manifest_asking_for_a_billion_unit_mlp_is_refused_before_allocating():
    from vogflow.checkpoints.files import build_from_manifest

    manifest = {
        "architecture": "mlp",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "model_options": {"hidden": 10**9},
    }
    with pytest.raises(ConfigError) as err:
        build_from_manifest(manifest)
    assert str(err.value).startswith(
        "model.hidden: the mlp (hidden=1000000000) model for inputs (1, 8, 8) and 10 classes has "
        "7.5e+10 parameters, about 1.2e+03 GB to train, more than this machine's"
    )


def test_a_recorder_for_a_trillion_epochs_is_refused_before_listing_them(tmp_path):
    from torch import nn

    from vogflow.checkpoints.recorder import CheckpointRecorder
    from vogflow.errors import CheckpointError

    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        CheckpointRecorder(tmp_path / "c", model=nn.Linear(2, 2), epochs=10**12)
    assert str(err.value) == (
        "epochs: 1000000000000 with a checkpoint every 5 epochs would save 200000000005 "
        "checkpoints, more than 100000; lower the epochs or raise every"
    )
    assert time.perf_counter() - start < 1


def test_ood_n_examples_beyond_the_test_split_is_a_request(shipped):
    # Accepted: the stage uses the whole test split, says so and records how many it used.
    check_pipeline(parse_params(with_(shipped, ood__n_examples=10**9)))
    source = (ROOT / "stages" / "ood.py").read_text()
    assert '"n_examples": {"requested": cfg.n_examples, "used": used}' in source


def test_a_tab_in_params_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  name: digits\ntrain:\n\tepochs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == (
        f"{path}:4:1: not valid YAML: found character '\\t' that cannot start any token in "
        "'epochs: 3' (YAML indents with spaces, never tabs); fix that line"
    )


@pytest.mark.integration
def test_validate_stage_refuses_a_trillion_epochs_in_one_line_and_little_memory(tmp_path):
    raw = with_(yaml.safe_load((ROOT / "params.yaml").read_text()), train__epochs=10**12)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "validate.py"),
            "--out",
            "ok",
            "--params",
            "params.yaml",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "VOGFLOW_TRACKING": "off", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "train.epochs: 1000000000000 is not allowed" in lines[0], lines
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "ok").exists()


# ---------------------------------------------------------------------------------------------
# checkpoints: non-finite weights, windows that collapse


def _linear_checkpoints(folder: Path, k: int, *, bad: float | None = None) -> list[Path]:
    """``k`` checkpoints of ``Linear(16, 3)`` (under ``lin.``); the third holds ``bad``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    paths = []
    for epoch in range(1, k + 1):
        state = {"lin.weight": torch.randn(3, 16, generator=gen), "lin.bias": torch.zeros(3)}
        if bad is not None and epoch == 3:
            state["lin.weight"][1, 2] = bad
        paths.append(folder / f"epoch_{epoch}.pt")
        torch.save(state, paths[-1])
    return paths


NETS = """import os
import signal

from torch import nn


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 3)

    def forward(self, x):
        if os.environ.get("KILL_RANK") == os.environ.get("RANK", "0"):
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("EXIT_RANK") == os.environ.get("RANK", "0"):
            os._exit(3)
        return self.lin(x.flatten(1))


def linear():
    return Linear()
"""


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    """A user's folder: a model module and an npz of 4x4 greyscale images, 3 classes."""
    import numpy as np

    (tmp_path / "fault_nets.py").write_text(NETS)
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.random((24, 1, 4, 4), dtype=np.float32),
        y_train=np.arange(24) % 3,
        x_test=rng.random((12, 1, 4, 4), dtype=np.float32),
        y_test=np.arange(12) % 3,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _data():
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    return torch.as_tensor(rng.random((12, 16), dtype=np.float32)), torch.arange(12) % 3


@pytest.mark.parametrize("bad, kind", [(float("inf"), "infinite"), (float("nan"), "NaN")])
def test_api_refuses_a_non_finite_checkpoint_naming_file_and_tensor(tmp_path, bad, kind):
    import vogflow
    from vogflow.errors import CheckpointError

    sys.path.insert(0, str(tmp_path))
    (tmp_path / "fault_nets.py").write_text(NETS)
    try:
        import fault_nets as nets
    finally:
        sys.path.remove(str(tmp_path))
    paths = _linear_checkpoints(tmp_path / "ckpts", 5, bad=bad)
    with pytest.raises(CheckpointError) as err:
        vogflow.audit(nets.linear(), paths, _data(), progress=False)
    assert str(err.value).startswith(
        f"{paths[2]}: tensor 'lin.weight' holds 1 {kind} value(s) of 48 (a diverged training"
    )


@pytest.mark.parametrize("bad, kind", [(float("inf"), "infinite"), (float("nan"), "NaN")])
def test_cli_refuses_a_non_finite_checkpoint_before_scoring(user_project, capsys, bad, kind):
    from vogflow.cli import main as cli

    paths = _linear_checkpoints(user_project / "ckpts", 5, bad=bad)
    args = ["audit", "--model", "fault_nets:linear", "--checkpoints", *map(str, paths)]
    args += ["--data", "npz:d.npz", "--out", "o.parquet", "--quiet", "--show", "0"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vogflow audit: error: {paths[2]}: tensor 'lin.weight' holds 1 {kind}")
    assert "\n" not in err
    assert not (user_project / "o.parquet").exists()


def test_pipeline_refuses_a_diverged_run_where_it_loads_the_checkpoints(tmp_path):
    import numpy as np
    import torch

    from vogflow.checkpoints import files as ck
    from vogflow.common.atomic import read_json, sha256_file, write_json
    from vogflow.config.schema import DataConfig, ModelConfig, TrainConfig
    from vogflow.data import RawSplits, normalise
    from vogflow.training.train import train_run

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = (rng.standard_normal((60, 2)) + 2.0 * y[:, None]).astype(np.float32)
    data = normalise(DataConfig(name="toy"), RawSplits(x[:40], y[:40], x[40:], y[40:], ("a", "b")))
    out = tmp_path / "runs" / "main" / "checkpoints"
    cfg = TrainConfig(epochs=4, batch_size=16, milestones=(), device="cpu")
    train_run(
        data,
        ModelConfig(name="mlp", hidden=8),
        cfg,
        CheckpointConfig(4, 1, 1),
        out,
        echo=lambda _: None,
    )
    # What a diverged training leaves: an infinite weight in a file its manifest vouches for.
    manifest = read_json(out / "manifest.json")
    entry = manifest["checkpoints"][-1]
    state = torch.load(out / entry["file"], weights_only=True)
    state["net.3.bias"][0] = float("-inf")
    torch.save(state, out / entry["file"])
    entry["sha256"] = sha256_file(out / entry["file"])
    write_json(out / "manifest.json", manifest)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_run_models(out)
    assert str(err.value).startswith(
        f"{out / entry['file']}: tensor 'net.3.bias' holds 1 infinite value(s) of 2"
    )


def test_a_stopped_run_whose_windows_collapse_is_refused_alike_by_api_and_cli(user_project, capsys):
    # A run stopped at epoch 4 of 8 saved epochs 1-3: windows of 3 are all three checkpoints.
    import vogflow
    from vogflow.cli import main as cli
    from vogflow.errors import ConfigError

    paths = _linear_checkpoints(user_project / "stopped", 3)
    import fault_nets as nets

    with pytest.raises(ConfigError) as err:
        vogflow.audit(nets.linear(), paths, _data(), progress=False)
    rule = "the early, late and all windows would be the same checkpoints"
    assert str(err.value).startswith("window 'early' of size 3 over 3 checkpoints") and rule in str(
        err.value
    )
    args = ["audit", "--model", "fault_nets:linear", "--checkpoints", *map(str, paths)]
    args += ["--data", "npz:d.npz", "--out", "o.parquet", "--quiet", "--show", "0"]
    assert cli.main(args) == 2
    said = capsys.readouterr().err
    assert said.startswith("vogflow audit: error: window 'early' of size 3 over 3") and rule in said
    # The all window alone, or a smaller window, still audits.
    table = vogflow.audit(nets.linear(), paths, _data(), windows=("all",), progress=False)
    assert "vog_all_label" in table.columns
    assert cli.main([*args, "--window-size", "2"]) == 0


def test_api_names_the_inputs_when_the_model_does_not_fit_them(tmp_path):
    import torch
    from torch import nn

    import vogflow
    from vogflow.errors import RunError

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    states = [{k: v + i for k, v in model.state_dict().items()} for i in range(4)]
    x, y = torch.zeros(12, 17), torch.arange(12) % 3
    with pytest.raises(RunError) as err:
        vogflow.audit(model, states, (x, y), window_size=2, progress=False)
    assert str(err.value) == (
        "the model failed on inputs of shape (12, 17) (mat1 and mat2 shapes cannot be multiplied "
        "(12x17 and 16x3)); check that the model is the architecture the checkpoints and the "
        "data were made for"
    )


# ---------------------------------------------------------------------------------------------
# CLI: outputs checked before work, loader workers and killed ranks in one line


def test_compare_out_naming_a_file_is_refused_before_any_work(tmp_path, capsys):
    from vogflow.cli import main as cli

    existing = tmp_path / "dvc.yaml"
    existing.write_text("stages: {}\n")
    # The audits named do not exist: the refusal comes before anything looks them up.
    assert cli.main(["compare", "runs:/nope", "runs:/nope2", "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"vogflow compare: error: --out {str(existing)!r} is a file, not a folder; name a folder "
        "for compare.json, movers.csv and figures/ (it is created if missing)"
    )
    assert existing.read_text() == "stages: {}\n"


@pytest.mark.integration  # loader worker processes
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_truncated_png_streamed_by_workers_is_one_line_naming_it(user_project, capsys, workers):
    import numpy as np
    from PIL import Image

    from vogflow.cli import main as cli

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 6)):
        for i in range(n):
            folder = user_project / "images" / split / f"c{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (4, 4), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    victim = user_project / "images" / "test" / "c1" / "4.png"
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    paths = _linear_checkpoints(user_project / "ckpts", 5)
    args = ["audit", "--model", "fault_nets:linear", "--checkpoints", *map(str, paths)]
    args += ["--data", "imagefolder:images", "--out", "o.parquet", "--quiet", "--show", "0"]
    assert cli.main([*args, "--stream", "true", "--workers", workers]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"vogflow audit: error: data.path: image {str(victim)!r} cannot be read (OSError: image "
        "file is truncated); it is corrupted, truncated or not an image: replace or delete it"
    )


@pytest.mark.integration  # loader worker processes
def test_training_on_a_streamed_folder_with_a_truncated_png_is_one_line(tmp_path):
    import numpy as np
    from PIL import Image

    from vogflow.config.schema import DataConfig, ModelConfig, TrainConfig
    from vogflow.data import load_dataset
    from vogflow.training.train import train_run

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for i in range(n):
            folder = tmp_path / "images" / split / f"c{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (4, 4), dtype=np.uint8)).save(folder / f"{i}.png")
    victim = tmp_path / "images" / "train" / "c2" / "5.png"
    # Cut in the pixel data: the header scan passes, decoding fails (the streamed train split's
    # normalisation statistics read it first, in the main process).
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    cfg = TrainConfig(epochs=4, batch_size=4, milestones=(), device="cpu")
    with pytest.raises(ConfigError) as err:
        data = load_dataset(
            DataConfig(name="imagefolder", path="images", stream=True, workers=2), tmp_path
        )
        train_run(
            data,
            ModelConfig(name="mlp", hidden=4),
            cfg,
            CheckpointConfig(),
            tmp_path / "r",
            echo=lambda _: None,
        )
    assert str(err.value).startswith(f"data.path: image {str(victim)!r} cannot be read (")
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.integration  # torchrun ranks
@pytest.mark.parametrize(
    "death, status, line",
    [
        (
            "KILL_RANK",
            1,
            "vogflow: rank 1 was killed by signal 9 (SIGKILL) (by hand, or the kernel's "
            "out-of-memory killer: see `dmesg`); the job stopped",
        ),
        (
            "EXIT_RANK",
            3,
            "vogflow: rank 1 exited with status 3 and no rank reported why (its own output "
            "above, if any, says more); the job stopped",
        ),
    ],
)
def test_a_rank_that_dies_without_a_word_is_named_by_the_launcher(
    user_project, death, status, line
):
    import os

    paths = _linear_checkpoints(user_project / "ckpts", 5)
    args = ["audit", "--model", "fault_nets:linear", "--checkpoints", *map(str, paths)]
    args += ["--data", "npz:d.npz", "--out", "o.parquet", "--quiet", "--show", "0"]
    env = {**os.environ, death: "1", "PYTHONPATH": f"{user_project}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-m", "vogflow.cli", *args, "--processes", "2", "--window-size", "2"],
        cwd=user_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == status
    assert [ln for ln in done.stderr.splitlines() if ln.strip()] == [line], done.stderr
    assert not (user_project / "o.parquet").exists()


@pytest.mark.integration  # the real dvc
def test_dvc_keeps_a_persisted_metrics_file_when_its_stage_fails(tmp_path):
    # The layout train.json now has: DVC leaves the committed file alone through a failed rerun,
    # where a plain metrics output is deleted before the command runs.
    def dvc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=tmp_path, capture_output=True, text=True
        )

    assert dvc("init", "--no-scm", "-q").returncode == 0

    (tmp_path / "step.py").write_text(
        "import sys\n"
        "if open('fail').read() != '0':\n    sys.exit(1)\n"
        "open(sys.argv[1] + '.json', 'w').write('{\"acc\": 1}')\n"
    )

    def stage(name: str, **options: bool) -> dict:
        return {
            "cmd": f"{sys.executable} step.py {name}",
            "deps": ["fail", "step.py"],
            "metrics": [{f"{name}.json": {"cache": False, **options}}],
        }

    stages = {"kept": stage("kept", persist=True), "lost": stage("lost")}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (tmp_path / "fail").write_text("0")
    done = dvc("repro")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "lost.json").read_text() == '{"acc": 1}'
    (tmp_path / "fail").write_text("1")
    assert dvc("repro", "kept").returncode != 0
    assert dvc("repro", "lost").returncode != 0
    assert (tmp_path / "kept.json").read_text() == '{"acc": 1}'
    assert not (tmp_path / "lost.json").exists()


def test_train_metrics_survive_a_failed_rerun():
    # DVC deletes a stage's outputs before running it; a persisted metrics file is left alone,
    # so a failed train keeps the committed train.json (and its checkpoints) in the work tree.
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]
    outs = {name: spec for out in stage["outs"] for name, spec in out.items()}
    assert outs["runs/${key}/train.json"] == {"cache": False, "persist": True, "type": "metrics"}
