"""params.yaml: the shipped file parses; every unknown key or bad value fails naming key and fix."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vogflow.config.checks import check_pipeline
from vogflow.config.schema import (
    DATASETS,
    MODELS,
    RUN_OVERRIDES,
    SECTIONS,
    CheckpointConfig,
    TrainConfig,
    load_params,
    parse_params,
    section_dict,
)
from vogflow.config.sizes import checkpoint_epochs
from vogflow.errors import ConfigError

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


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


def pipeline_error_of(raw: dict) -> str:
    """The message of a configuration every section accepts but the pipeline refuses."""
    params = parse_params(raw)
    with pytest.raises(ConfigError) as err:
        check_pipeline(params)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_omitted_sections_take_the_defaults():
    raw = {
        "runs": {"main": {}, "seed1": {"seed": 1}, "shuffled": {"label_noise": 0.2}},
        "stability": {"seed_runs": ["main", "seed1"], "batch_runs": ["main", "seed1"]},
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
        "runs.short.milestones: [24, 28] is not allowed; expected increasing epochs between 1 "
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


def test_dataclass_defaults_are_the_shipped_params(shipped):
    # One source of truth: a section left out of params.yaml behaves as the shipped file says.
    for name, cls in SECTIONS.items():
        assert section_dict(cls()) == shipped[name], name


@pytest.mark.integration
def test_shipped_params_pass_the_pipeline_check_without_torch():
    code = (
        "import sys\n"
        "from vogflow.config.checks import check_pipeline\n"
        "from vogflow.config.schema import load_params\n"
        f"check_pipeline(load_params({str(PARAMS)!r}))\n"
        "assert 'torch' not in sys.modules, 'check_pipeline imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("early, every, late", [(3, 5, 3), (1, 1, 1), (2, 7, 4), (10, 3, 1)])
def test_checkpoint_count_follows_the_training_schedule(early, every, late):
    from vogflow.checkpoints.files import schedule

    cfg = CheckpointConfig(early=early, every=every, late=late)
    for epochs in range(1, 40):
        expected = schedule(epochs, early=early, every=every, late=late)
        assert checkpoint_epochs(epochs, cfg) == expected, epochs


def test_one_epoch_gives_one_checkpoint_and_is_refused(shipped):
    raw = broken(broken(shipped, "train.epochs", 1), "train.milestones", [])
    assert pipeline_error_of(raw).startswith(
        "train.epochs: 1 is not allowed; expected enough epochs for 2 checkpoints (run 'main' "
        "saves 1;"
    )
    # A run's own epochs are named under the run.
    raw = broken(shipped, "runs.short", {"epochs": 1, "milestones": []})
    assert pipeline_error_of(raw).startswith("runs.short.epochs: 1 is not allowed")


def test_fewer_checkpoints_than_the_window_are_refused(shipped):
    # epochs 4, early 3, every 5, late 3: epochs 1-4 are saved, 4 < window 5.
    raw = broken(shipped, "runs.short", {"epochs": 4, "milestones": []})
    raw = broken(raw, "vog.window_size", 5)
    raw = broken(broken(raw, "checkpoints.early", 5), "checkpoints.late", 5)
    message = pipeline_error_of(raw)
    assert message.startswith(
        "vog.window_size: 5 is not allowed; run 'short' saves only 4 checkpoints (epochs "
        "[1, 2, 3, 4]): the early and late windows of 5 checkpoints would each hold all 4, so "
        "the early, late and all windows would be the same checkpoints"
    )
    assert message.endswith("lower vog.window_size below 4 or raise runs.short.epochs")


def test_as_many_checkpoints_as_the_window_are_refused_too(shipped):
    # epochs 3 saves 1-3: windows of 3 are all three, early = late = all (a stopped run).
    raw = broken(shipped, "runs.short", {"epochs": 3, "milestones": []})
    message = pipeline_error_of(raw)
    assert message.startswith("vog.window_size: 3 is not allowed; run 'short' saves only 3")
    assert "would be the same checkpoints" in message


def test_per_epoch_checkpoints_must_cover_the_window(shipped):
    message = pipeline_error_of(broken(shipped, "checkpoints.late", 2))
    assert message.startswith(
        "checkpoints.late: 2 is not allowed; expected an integer >= vog.window_size (3)"
    )


@pytest.mark.parametrize(
    "modes, rank_by",
    [
        (["label", "pred"], "auto"),
        (["label", "pred"], "early_pred"),
        (["pred", "label"], "all_label"),
    ],
)
def test_rank_by_accepts_auto_and_window_mode(shipped, modes, rank_by):
    raw = broken(broken(shipped, "gradients.label_modes", modes), "vog.rank_by", rank_by)
    check_pipeline(parse_params(raw))


def test_rank_by_must_name_a_computed_mode(shipped):
    raw = broken(broken(shipped, "vog.rank_by", "late_pred"), "gradients.label_modes", ["label"])
    assert pipeline_error_of(raw) == (
        "vog.rank_by: 'late_pred' is not allowed; expected 'auto' or <window>_<mode> with a mode "
        "of gradients.label_modes (label)"
    )
    assert error_of(broken(shipped, "vog.rank_by", "zzz")).startswith(
        "vog.rank_by: 'zzz' is not allowed; expected 'auto', <window>_<mode> (e.g. late_label), "
        "vog_<window>_<mode>[_abs|_raw][_seedmean]"
    )
    # A misspelt baseline is refused at validate, with the names it could be.
    message = error_of(broken(shipped, "vog.rank_by", "hard_lose"))
    assert message.startswith("vog.rank_by: 'hard_lose' is not allowed; did you mean 'hard_loss'?")
    assert "hard_<baseline>[_seedmean] (baselines loss/margin/el2n/msp/forgetting/aum/" in message
    for fine in (
        "auto",
        "late_pred",
        "vog_all_label_abs",
        "hard_aum",
        "hard_aum_seedmean",
        "vog_early_pred_raw_seedmean",
    ):
        check_pipeline(parse_params(broken(shipped, "vog.rank_by", fine)))


@pytest.mark.parametrize(
    "splits, missing, reader",
    [(["test"], "train", "memorization"), (["train"], "test", "score stage")],
)
def test_splits_a_stage_reads_are_required(shipped, splits, missing, reader):
    # stability.split is kept among the splits, so the stage-level requirement is what fires.
    raw = broken(broken(shipped, "gradients.splits", splits), "stability.split", splits[0])
    message = pipeline_error_of(raw)
    assert message.startswith(
        f"gradients.splits: {splits!r} is not allowed; expected a list with {missing!r}"
    )
    assert reader in message


def test_stability_split_must_be_extracted(shipped):
    raw = broken(shipped, "gradients.splits", ["test"])
    assert pipeline_error_of(broken(raw, "stability.split", "train")) == (
        "stability.split: 'train' is not allowed; expected a split listed in gradients.splits "
        "(test)"
    )


def test_label_modes_the_stages_read_are_required(shipped):
    raw = broken(shipped, "gradients.label_modes", ["pred"])
    message = pipeline_error_of(broken(raw, "vog.rank_by", "late_pred"))
    assert message.startswith("gradients.label_modes: ['pred'] is not allowed; expected a list")
    assert "'label'" in message and "stability" in message
    message = pipeline_error_of(broken(shipped, "gradients.label_modes", ["label"]))
    assert "'pred'" in message and "figures" in message


@pytest.mark.parametrize("key", ["seed_runs", "batch_runs"])
@pytest.mark.parametrize("runs", [["main"], ["main", "main"], []])
def test_stability_needs_two_different_runs(shipped, key, runs):
    assert error_of(broken(shipped, f"stability.{key}", runs)) == (
        f"stability.{key}: {runs!r} is not allowed; expected at least 2 different run names"
    )


def test_stability_runs_with_the_same_recipe_are_refused(shipped):
    raw = broken(shipped, "runs.twin", {"seed": 0})  # the same recipe as main
    raw = broken(raw, "stability.seed_runs", ["main", "seed1", "twin"])
    assert pipeline_error_of(raw) == (
        "stability.seed_runs: ['main', 'seed1', 'twin'] is not allowed; runs 'main' and 'twin' "
        "train the same recipe (identical models agree by construction); give them different "
        "overrides under runs"
    )


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("stability.batch_runs", ["main", "bs1024"]),
        ("memorization.run", "noisy"),
        ("ood.run", "other"),
        ("tracking.register_run", "best"),
    ],
)
def test_pipeline_check_refuses_undefined_runs_of_built_params(shipped, dotted, value):
    # Params built in code (not through parse_params) get the same reference check.
    params = load_params(PARAMS)
    section, key = dotted.split(".")
    changed = dataclasses.replace(getattr(params, section), **{key: value})
    with pytest.raises(ConfigError) as err:
        check_pipeline(dataclasses.replace(params, **{section: changed}))
    assert str(err.value).startswith(f"{dotted}: ")
    assert "is not a run; defined runs: main, seed1" in str(err.value)


def test_memorization_run_needs_shuffled_labels(shipped):
    assert pipeline_error_of(broken(shipped, "memorization.run", "main")) == (
        "memorization.run: 'main' is not allowed; expected a run with label_noise > 0 (the stage "
        "compares shuffled with clean labels); set runs.main.label_noise or name another run"
    )


@pytest.mark.parametrize(
    "dotted",
    [
        "train.seed",
        "train.noise_seed",
        "data.split_seed",
        "vog.seed",
        "toy.seed",
        "ood.seed",
        "runs.seed1.seed",
        "runs.shuffled.noise_seed",
    ],
)
@pytest.mark.parametrize("seed", [-1, 2**63, 2**70])
def test_seeds_out_of_the_generators_range_are_named(shipped, dotted, seed):
    # torch takes 64-bit seeds: 2**70 failed in the train stage with "Overflow when unpacking".
    assert error_of(broken(shipped, dotted, seed)) == (
        f"{dotted}: {seed} is not allowed; expected an integer in [0, 2**63 - 1] "
        "(9223372036854775807)"
    )


def test_the_largest_seed_trains():
    import torch

    from vogflow.common.runtime import derived_seed

    torch.manual_seed(2**63 - 1)
    torch.Generator().manual_seed(derived_seed(2**63 - 1, 1))


@pytest.mark.parametrize(
    "dotted, value, allowed",
    [
        ("toy.n_points", 0, "an integer >= 10"),
        ("toy.separation", 0.0, "a finite number > 0"),
        ("toy.separation", float("inf"), "a finite number > 0"),
        ("toy.hidden", 0, "an integer >= 1"),
        ("toy.epochs", 1, "an integer >= 2"),
        ("toy.batch_size", 0, "an integer >= 1"),
        ("toy.lr", -0.1, "a finite number > 0"),
        ("train.lr", 0.0, "a finite number > 0"),
        ("train.lr", -0.05, "a finite number > 0"),
        ("train.lr", float("inf"), "a finite number > 0"),
        ("runs.main.lr", 0.0, "a finite number > 0"),
        ("figures.classes", 0, "an integer >= 1"),
    ],
)
def test_non_positive_sizes_and_rates_are_refused(shipped, dotted, value, allowed):
    assert error_of(broken(shipped, dotted, value)) == (
        f"{dotted}: {value!r} is not allowed; expected {allowed}"
    )


def test_nan_learning_rate_is_refused(shipped):
    assert error_of(broken(shipped, "train.lr", float("nan"))).startswith(
        "train.lr: nan is not allowed; expected a finite number > 0"
    )


@pytest.mark.parametrize("value", ["true", 1, None])
def test_a_switch_takes_true_or_false_only(shipped, value):
    assert error_of(broken(shipped, "gradients.channels_last", value)) == (
        f"gradients.channels_last: {value!r} is not allowed; expected true or false"
    )


def test_bf16_on_the_cpu_is_refused(shipped):
    raw = broken(broken(shipped, "gradients.precision", "bf16"), "gradients.device", "cpu")
    assert pipeline_error_of(raw) == (
        "gradients.precision: 'bf16' is not allowed with gradients.device 'cpu'; use fp32 on the "
        "CPU (bf16 is refused there: it rounds the gradients and is slow)"
    )


def test_cuda_settings_without_cuda_are_refused(shipped):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the settings are valid here")
    message = pipeline_error_of(broken(shipped, "gradients.precision", "bf16"))
    assert message.startswith("gradients.precision: 'bf16' is not allowed here: gradients.device")
    assert message.endswith("use fp32 on the CPU")
    assert pipeline_error_of(broken(shipped, "train.device", "cuda")) == (
        "train.device: 'cuda' is not allowed; expected 'auto' or 'cpu': CUDA is not available on "
        "this machine"
    )


def test_pipeline_data_must_be_images(shipped):
    assert pipeline_error_of(broken(shipped, "data.name", "toy")).startswith(
        "data.name: 'toy' is not allowed; expected an image dataset for the pipeline"
    )
    assert pipeline_error_of(broken(shipped, "ood.mnist_c_path", "mnist_c")).startswith(
        "ood.mnist_c_path: 'mnist_c' is not allowed; expected '' unless data.name is 'mnist'"
    )


@pytest.mark.parametrize("name", ["npz", "imagefolder"])
def test_file_data_left_on_the_builtin_placeholder_is_refused(shipped, name):
    from vogflow.config.schema import BUILTIN_DATA_PATH, DataConfig
    from vogflow.errors import ConfigError as Refused

    assert DataConfig().path == BUILTIN_DATA_PATH == shipped["data"]["path"]
    with pytest.raises(
        Refused,
        match=rf"data\.path: '\.vogflow/builtin-data' is not allowed; "
        rf"expected the path to the {name} data",
    ):
        DataConfig(name=name).validate("data")
