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

from vogflow.config import (
    CheckpointConfig,
    ConfigError,
    check_pipeline,
    checkpoint_count,
    checkpoint_epochs,
    load_params,
    parse_params,
)

ROOT = Path(__file__).resolve().parents[1]


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
