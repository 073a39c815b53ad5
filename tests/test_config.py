"""params.yaml: the shipped file parses; every unknown key or bad value fails naming key and fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from vogflow.config import (
    DATASETS,
    MODELS,
    RUN_OVERRIDES,
    ConfigError,
    TrainConfig,
    load_params,
    parse_params,
    section_dict,
)

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def broken(raw: dict, dotted: str, value) -> dict:
    """A deep copy of ``raw`` with ``dotted`` (e.g. ``runs.x.colour``) set to ``value``."""
    out = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    return str(err.value)


def test_shipped_params_parse(shipped):
    params = load_params(PARAMS)
    assert params.data.name == "digits"
    assert params.model.name == "lenet"
    assert params.train.epochs == shipped["train"]["epochs"]
    assert params.train.milestones == tuple(shipped["train"]["milestones"])
    assert isinstance(params.train.weight_decay, float)
    assert list(params.runs) == list(shipped["runs"])
    assert params.vog.normalise in ("z", "none", "abs")
    assert set(params.stability.seed_runs) <= set(params.runs)
    assert params.ood.corruptions == tuple(shipped["ood"]["corruptions"])
    # Every section a stage reads is there, as JSON-able values for manifests and logs.
    assert section_dict(params.train)["milestones"] == shipped["train"]["milestones"]


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"params file .*nothere\.yaml not found"):
        load_params(tmp_path / "nothere.yaml")


def test_omitted_sections_take_the_defaults():
    raw = {
        "runs": {"main": {}, "shuffled": {"label_noise": 0.2}},
        "stability": {"seed_runs": ["main"], "batch_runs": ["main"]},
    }
    params = parse_params(raw)
    assert params.train == TrainConfig()
    assert params.runs == raw["runs"]
    assert params.run_train("shuffled") == TrainConfig(label_noise=0.2)


@pytest.mark.parametrize(
    "dotted, value, expected",
    [
        # (key, bad value, message: the key, the value and what is allowed)
        ("vog.normalise", "zz", "vog.normalise: 'zz' is not allowed; valid: z, none, abs"),
        ("train.epochs", 0, "train.epochs: 0 is not allowed; expected an integer >= 1"),
        ("model.name", "vgg", f"model.name: 'vgg' is not allowed; valid: {', '.join(MODELS)}"),
        (
            "data.name",
            "imagenet",
            f"data.name: 'imagenet' is not allowed; valid: {', '.join(DATASETS)}",
        ),
        ("train.lr", "fast", "train.lr: 'fast' is not allowed; expected a number"),
        ("train.batch_size", 6.5, "train.batch_size: 6.5 is not allowed; expected an integer"),
        ("train.seed", True, "train.seed: True is not allowed; expected an integer"),
        ("train.milestones", 5, "train.milestones: 5 is not allowed; expected a list"),
        ("train.label_noise", 1.0, "train.label_noise: 1.0 is not allowed; expected a share in"),
        ("train.device", "tpu", "train.device: 'tpu' is not allowed; expected 'auto', 'cpu'"),
        ("vog.window_size", 1, "vog.window_size: 1 is not allowed; expected an integer >= 2"),
        ("data.test_fraction", 1.5, "data.test_fraction: 1.5 is not allowed; expected a number"),
        ("gradients.splits", ["val"], "gradients.splits: ['val'] is not allowed; expected a"),
        ("stability.window", "middle", "stability.window: 'middle' is not allowed; valid: early"),
    ],
)
def test_bad_value_names_key_value_and_allowed(shipped, dotted, value, expected):
    assert error_of(broken(shipped, dotted, value)).startswith(expected)


def test_milestones_must_fit_the_epochs(shipped):
    message = error_of(broken(shipped, "train.milestones", [26, 20]))
    assert message == (
        "train.milestones: [26, 20] is not allowed; expected increasing epochs between 1 and "
        "train.epochs (30)"
    )


def test_unknown_key_in_a_section_lists_the_valid_keys(shipped):
    message = error_of(broken(shipped, "train.epoch", 10))
    assert message.startswith("train.epoch: unknown key; valid keys of train: epochs, batch_size")
    assert "label_noise" in message and "device" in message


def test_unknown_section_lists_the_valid_sections(shipped):
    message = error_of({**shipped, "vogg": {"normalise": "z"}})
    assert message.startswith("vogg: unknown section; valid: ")
    for section in ("checkpoints", "data", "model", "runs", "train", "vog"):
        assert section in message


def test_unknown_run_override_lists_what_a_run_may_override(shipped):
    message = error_of(broken(shipped, "runs.x.colour", 1))
    assert message == f"runs.x.colour: unknown key; a run may override: {', '.join(RUN_OVERRIDES)}"


def test_run_overrides_are_validated_as_a_recipe(shipped):
    assert error_of(broken(shipped, "runs.main.epochs", 0)).startswith(
        "runs.main.epochs: 0 is not allowed; expected an integer >= 1"
    )
    # Fewer epochs than the shared milestones: caught for that run, before any training.
    assert error_of(broken(shipped, "runs.short", {"epochs": 10})).startswith(
        "runs.short.milestones: [20, 26] is not allowed; expected increasing epochs between 1 "
        "and runs.short.epochs (10)"
    )
    assert error_of(broken(shipped, "runs.main", [1])) == (
        "runs.main: [1] is not allowed; expected a mapping"
    )


def test_references_to_undefined_runs_are_refused(shipped):
    message = error_of(broken(shipped, "stability.seed_runs", ["main", "seed9"]))
    assert message.startswith("stability.seed_runs: 'seed9' is not a run; defined runs: main, ")
    assert "shuffled" in message
    message = error_of(broken(shipped, "memorization.run", "noisy"))
    assert message.startswith("memorization.run: 'noisy' is not a run; defined runs: main")
    message = error_of(broken(shipped, "ood.run", "other"))
    assert message.startswith("ood.run: 'other' is not a run")


def test_run_train_merges_overrides(shipped):
    params = parse_params(broken(shipped, "runs.mixed", {"seed": 9, "lr": 0.2, "epochs": 28}))
    base = params.train
    mixed = params.run_train("mixed")
    assert (mixed.seed, mixed.lr, mixed.epochs) == (9, 0.2, 28)
    assert isinstance(mixed.lr, float)
    # Everything not overridden comes from the train section.
    for key in ("batch_size", "momentum", "weight_decay", "milestones", "gamma", "label_noise"):
        assert getattr(mixed, key) == getattr(base, key), key
    shuffled = params.run_train("shuffled")
    assert shuffled.label_noise == 0.2 and shuffled.seed == base.seed
    assert params.run_train("bs32").batch_size == 32
    assert params.run_train("main") == base  # main overrides seed with the same value
    with pytest.raises(ConfigError) as err:
        params.run_train("nope")
    assert str(err.value).startswith("runs: no run named 'nope'; defined: main, seed1")
