"""Typed, validated parameters: one frozen dataclass per section of ``params.yaml``.

Every error names the key, the bad value and what is allowed, and is raised before any work.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vogflow.config.names import BASELINES, LABEL_MODES, NORMALISATIONS, WINDOWS, window_problem
from vogflow.errors import ConfigError

DATASETS = (
    "digits",
    "toy",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "imagefolder",
    "npz",
)
# Sources read example by example from disk (data.stream).
STREAMABLE = ("imagefolder", "npz")
MODELS = ("mlp", "lenet", "resnet18", "resnet50")
CORRUPTIONS = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)
DETECTORS = (
    "vog",
    "msp",
    "kde",
    "pca",
    "kpca",
    "svdd",
    "mve",
    "gaussian",
    "ae",
)
SPLITS = ("train", "test")
# `auto`: the scorecard picks the variant that measured best on this data (resolved later).
RANKINGS = (*(f"{w}_{m}" for w in WINDOWS for m in LABEL_MODES), "auto")
# Any score of the scorecard can rank the audit: a VoG variant (the configured normalisation,
# |z| or raw), a baseline from the same checkpoints, each alone or averaged over the seed runs.
SCORE_NAMES = frozenset(
    [f"{w}_{m}" for w in WINDOWS for m in LABEL_MODES]
    + [
        f"vog_{w}_{m}{kind}{mean}"
        for w in WINDOWS
        for m in LABEL_MODES
        for kind in ("", "_abs", "_raw")
        for mean in ("", "_seedmean")
    ]
    + [f"hard_{b}{mean}" for b in BASELINES for mean in ("", "_seedmean")]
)
RANK_BY_FORMS = (
    "'auto', <window>_<mode> (e.g. late_label), vog_<window>_<mode>[_abs|_raw][_seedmean] "
    f"(windows {'/'.join(WINDOWS)}, modes {'/'.join(LABEL_MODES)}) or "
    f"hard_<baseline>[_seedmean] (baselines {'/'.join(BASELINES)})"
)


def _choice(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected {allowed}")


def _positive(key: str, value: float) -> None:
    # `.inf` and `.nan` are valid YAML floats: a learning rate of inf passes `> 0`.
    _check(math.isfinite(value) and value > 0, key, value, "a finite number > 0")


# torch's generators take a 64-bit seed and the seeds derived per epoch are 63-bit; numpy's
# generators refuse negative ones. Past either bound a stage fails after its outputs are gone.
MAX_SEED = 2**63 - 1
# Far above any CPU's core count, far below the operating system's thread limit, past which
# OpenMP crashes the process without a message.
MAX_THREADS = 1024
# Files one run may save: VoG reads each of them for every example.
MAX_CHECKPOINTS = 100_000
# Bytes per parameter while training: weights, gradients, momentum and the checkpoint's copy.
TRAIN_BYTES_PER_PARAM = 16


def _seed(key: str, value: int) -> None:
    _check(0 <= value <= MAX_SEED, key, value, f"an integer in [0, 2**63 - 1] ({MAX_SEED})")


# The data.path of the built-in datasets in params.yaml: they read no file, but dvc.yaml makes
# data.path a dependency of every stage that reads data, and DVC refuses an empty one.
BUILTIN_DATA_PATH = ".vogflow/builtin-data"


@dataclass(frozen=True)
class DataConfig:
    name: str = field(default="digits", metadata=_choice(*DATASETS))
    root: str = "data"  # downloads for torchvision datasets, relative to the project root
    path: str = BUILTIN_DATA_PATH  # the file (npz) or folder (imagefolder) to read
    test_fraction: float = 0.2  # digits/toy: share held out for test, stratified
    split_seed: int = 0
    image_size: int = 0  # imagefolder: resize to this square size (0 = keep)
    augment: str = field(default="auto", metadata=_choice("auto", "none", "crop_flip"))
    # imagefolder/npz: read examples from disk batch by batch instead of holding the splits in
    # memory; `auto` streams only data that would not comfortably fit (the bits are the same).
    stream: bool | str = "auto"
    workers: int = 2  # loader processes that decode streamed examples (0 = in the main process)

    def validate(self, prefix: str) -> None:
        _check(
            isinstance(self.stream, bool) or self.stream == "auto",
            f"{prefix}.stream",
            self.stream,
            "auto, true or false",
        )
        _check(
            self.workers >= 0,
            f"{prefix}.workers",
            self.workers,
            "an integer >= 0 (0 decodes in the main process)",
        )
        if self.stream is True and self.name not in STREAMABLE:
            raise ConfigError(
                f"{prefix}.stream: true is not allowed with {prefix}.name {self.name!r}; only "
                f"{' and '.join(STREAMABLE)} data streams from disk: set {prefix}.stream to auto "
                "or false"
            )
        _check(
            0.0 < self.test_fraction < 1.0,
            f"{prefix}.test_fraction",
            self.test_fraction,
            "a number strictly between 0 and 1",
        )
        _check(self.image_size >= 0, f"{prefix}.image_size", self.image_size, "an integer >= 0")
        _seed(f"{prefix}.split_seed", self.split_seed)
        if self.name in ("npz", "imagefolder"):
            _check(
                bool(self.path) and self.path != BUILTIN_DATA_PATH,
                f"{prefix}.path",
                self.path,
                f"the path to the {self.name} data when {prefix}.name is {self.name!r}",
            )


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="lenet", metadata=_choice(*MODELS))
    hidden: int = 64  # mlp: hidden units

    def validate(self, prefix: str) -> None:
        _check(self.hidden >= 1, f"{prefix}.hidden", self.hidden, "an integer >= 1")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (24, 28)  # epochs after which lr is multiplied by gamma
    gamma: float = 0.1
    seed: int = 0
    label_noise: float = 0.0  # share of training labels replaced by a shuffle of those labels
    noise_seed: int = 0
    device: str = "auto"
    # CPU kernels split their sums by thread: each count trains other bits. A fixed count keeps
    # the same params giving the same checkpoints on machines with any number of cores.
    threads: int = 1
    # Processes that train the run together with DDP (one per GPU on a GPU machine): the train
    # stage starts them with torchrun. Each count sums gradients in another order.
    processes: int = 1

    def validate(self, prefix: str) -> None:
        _check(self.epochs >= 1, f"{prefix}.epochs", self.epochs, "an integer >= 1")
        _check(
            1 <= self.threads <= MAX_THREADS,
            f"{prefix}.threads",
            self.threads,
            f"an integer in [1, {MAX_THREADS}] (more threads than cores only slows training)",
        )
        _check(self.processes >= 1, f"{prefix}.processes", self.processes, "an integer >= 1")
        _check(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, "an integer >= 1")
        _positive(f"{prefix}.lr", self.lr)
        _check(0 <= self.momentum < 1, f"{prefix}.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, "a number >= 0")
        _check(0 < self.gamma <= 1, f"{prefix}.gamma", self.gamma, "a number in (0, 1]")
        _check(
            list(self.milestones) == sorted(set(self.milestones))
            and all(0 < m <= self.epochs for m in self.milestones),
            f"{prefix}.milestones",
            list(self.milestones),
            f"increasing epochs between 1 and {prefix}.epochs ({self.epochs})",
        )
        _check(
            0 <= self.label_noise < 1,
            f"{prefix}.label_noise",
            self.label_noise,
            "a share in [0, 1)",
        )
        _seed(f"{prefix}.seed", self.seed)
        _seed(f"{prefix}.noise_seed", self.noise_seed)
        _check_device(f"{prefix}.device", self.device)


RUN_OVERRIDES = ("seed", "batch_size", "label_noise", "noise_seed", "epochs", "lr", "milestones")


@dataclass(frozen=True)
class CheckpointConfig:
    early: int = 3  # every epoch of the first `early` epochs
    every: int = 5  # then every `every` epochs
    late: int = 3  # and every epoch of the last `late` epochs

    def validate(self, prefix: str) -> None:
        for key in ("early", "every", "late"):
            value = getattr(self, key)
            _check(value >= 1, f"{prefix}.{key}", value, "an integer >= 1")


@dataclass(frozen=True)
class GradientsConfig:
    splits: tuple[str, ...] = ("train", "test")
    batch_size: int = 256
    device: str = "auto"
    label_modes: tuple[str, ...] = LABEL_MODES
    precision: str = field(default="fp32", metadata=_choice("fp32", "tf32", "bf16"))
    channels_last: bool = False
    # Processes sharing each split's extraction under torchrun (contiguous row ranges).
    processes: int = 1

    def validate(self, prefix: str) -> None:
        _check(self.processes >= 1, f"{prefix}.processes", self.processes, "an integer >= 1")
        _check_subset(f"{prefix}.splits", self.splits, SPLITS)
        _check_subset(f"{prefix}.label_modes", self.label_modes, LABEL_MODES)
        _check(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, "an integer >= 1")
        _check_device(f"{prefix}.device", self.device)


@dataclass(frozen=True)
class VogConfig:
    window_size: int = 3  # checkpoints in the early and late windows
    normalise: str = field(default="z", metadata=_choice(*NORMALISATIONS))
    rank_by: str = "auto"  # auto | <window>_<mode> | a scorecard score (see params.yaml)
    bins: int = 10  # VoG buckets for error-per-bucket curves (10 = deciles)
    top_k: int = 25  # rows of the human-readable top/bottom table
    bootstrap: int = 1000  # resamples for confidence intervals
    confidence: float = 0.95
    seed: int = 0  # seed of the bootstrap

    def validate(self, prefix: str) -> None:
        _check(self.window_size >= 2, f"{prefix}.window_size", self.window_size, "an integer >= 2")
        if self.rank_by != "auto" and self.rank_by not in SCORE_NAMES:
            import difflib

            near = difflib.get_close_matches(self.rank_by, sorted(SCORE_NAMES), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(
                f"{prefix}.rank_by: {self.rank_by!r} is not allowed; {hint}expected {RANK_BY_FORMS}"
            )
        _check(self.bins >= 2, f"{prefix}.bins", self.bins, "an integer >= 2")
        _check(self.top_k >= 1, f"{prefix}.top_k", self.top_k, "an integer >= 1")
        _check(self.bootstrap >= 0, f"{prefix}.bootstrap", self.bootstrap, "an integer >= 0")
        _check(
            0 < self.confidence < 1,
            f"{prefix}.confidence",
            self.confidence,
            "a number strictly between 0 and 1",
        )
        _seed(f"{prefix}.seed", self.seed)


@dataclass(frozen=True)
class ToyConfig:
    n_points: int = 400
    separation: float = 3.0  # distance between the two cluster centres, in cluster stds
    hidden: int = 16
    epochs: int = 15
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0

    def validate(self, prefix: str) -> None:
        _check(self.n_points >= 10, f"{prefix}.n_points", self.n_points, "an integer >= 10")
        _positive(f"{prefix}.separation", self.separation)
        _check(self.hidden >= 1, f"{prefix}.hidden", self.hidden, "an integer >= 1")
        # A checkpoint per epoch, and VoG is a spread over checkpoints.
        _check(self.epochs >= 2, f"{prefix}.epochs", self.epochs, "an integer >= 2")
        _check(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, "an integer >= 1")
        _positive(f"{prefix}.lr", self.lr)
        _seed(f"{prefix}.seed", self.seed)


@dataclass(frozen=True)
class StabilityConfig:
    seed_runs: tuple[str, ...] = ("main", "seed1", "seed2", "seed3", "seed4")
    batch_runs: tuple[str, ...] = ("main", "bs32", "bs128", "bs256", "bs512")
    split: str = field(default="test", metadata=_choice(*SPLITS))
    window: str = field(default="late", metadata=_choice(*WINDOWS))
    top_fraction: float = 0.1

    def validate(self, prefix: str) -> None:
        for key in ("seed_runs", "batch_runs"):
            runs = getattr(self, key)
            # Stability is an agreement between runs: one run has nothing to agree with, and a
            # run listed twice agrees with itself perfectly.
            _check(
                len(runs) >= 2 and len(set(runs)) == len(runs),
                f"{prefix}.{key}",
                list(runs),
                "at least 2 different run names",
            )
        _check(
            0 < self.top_fraction < 1,
            f"{prefix}.top_fraction",
            self.top_fraction,
            "a share strictly between 0 and 1",
        )


@dataclass(frozen=True)
class MemorizationConfig:
    run: str = "shuffled"
    window: str = field(default="all", metadata=_choice(*WINDOWS))

    def validate(self, prefix: str) -> None:
        pass


@dataclass(frozen=True)
class OodConfig:
    run: str = "main"
    corruptions: tuple[str, ...] = CORRUPTIONS
    detectors: tuple[str, ...] = DETECTORS
    n_examples: int = 300  # clean test examples (and as many corrupted) per corruption
    window: str = field(default="late", metadata=_choice(*WINDOWS))
    seed: int = 0
    mnist_c_path: str = ""  # optional folder in the published MNIST-C layout

    def validate(self, prefix: str) -> None:
        _check_subset(f"{prefix}.corruptions", self.corruptions, CORRUPTIONS)
        _check_subset(f"{prefix}.detectors", self.detectors, DETECTORS)
        _check(self.n_examples >= 10, f"{prefix}.n_examples", self.n_examples, "an integer >= 10")
        _seed(f"{prefix}.seed", self.seed)


@dataclass(frozen=True)
class FiguresConfig:
    grid: int = 5  # images per side of the lowest/highest grids
    dpi: int = 100
    classes: int = 2  # classes shown in the per-class grids

    def validate(self, prefix: str) -> None:
        # matplotlib refuses an image over 2**16 pixels a side: 30 tiles of ~1.2 inches at 1200
        # dpi stay under it.
        _check(1 <= self.grid <= 30, f"{prefix}.grid", self.grid, "an integer in [1, 30]")
        _check(30 <= self.dpi <= 1200, f"{prefix}.dpi", self.dpi, "an integer in [30, 1200]")
        _check(self.classes >= 1, f"{prefix}.classes", self.classes, "an integer >= 1")


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "vogflow"
    model_name: str = "vogflow-main"
    register_run: str = "main"  # the run whose final model becomes a new registered version

    def validate(self, prefix: str) -> None:
        _check(bool(self.experiment), f"{prefix}.experiment", self.experiment, "a non-empty name")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "checkpoints": CheckpointConfig,
    "gradients": GradientsConfig,
    "vog": VogConfig,
    "toy": ToyConfig,
    "stability": StabilityConfig,
    "memorization": MemorizationConfig,
    "ood": OodConfig,
    "figures": FiguresConfig,
    "tracking": TrackingConfig,
}


@dataclass(frozen=True)
class Params:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    runs: dict[str, dict[str, Any]]
    checkpoints: CheckpointConfig
    gradients: GradientsConfig
    vog: VogConfig
    toy: ToyConfig
    stability: StabilityConfig
    memorization: MemorizationConfig
    ood: OodConfig
    figures: FiguresConfig
    tracking: TrackingConfig

    def run_train(self, run: str) -> TrainConfig:
        """The training recipe of a named run: ``train`` with the run's overrides applied."""
        if run not in self.runs:
            raise ConfigError(f"runs: no run named {run!r}; defined: {', '.join(self.runs)}")
        merged = {**dataclasses.asdict(self.train), **self.runs[run]}
        return build_section(TrainConfig, merged, f"runs.{run}")


def _check_device(key: str, value: str) -> None:
    ok = value in ("auto", "cpu", "cuda") or value.startswith("cuda:")
    _check(ok, key, value, "'auto', 'cpu', 'cuda' or 'cuda:N'")


def _check_subset(key: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in allowed]
    _check(
        not bad and len(values) > 0,
        key,
        list(values),
        f"a non-empty list drawn from: {', '.join(allowed)}",
    )


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected a list")
        return tuple(_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value))
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected an integer")
        return value
    if annotation is bool:
        # YAML reads `yes`/`no` as booleans too; a quoted "true" or a 1 is refused, not guessed.
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected true or false")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected a string")
        return value
    return value


def build_section(cls: type, raw: dict[str, Any] | None, prefix: str) -> Any:
    """Build and validate one section; unknown keys and bad values raise :class:`ConfigError`."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown key; valid keys of {prefix}: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}"
        kwargs[name] = _coerce(key, value, hints[name])
        choices = fields[name].metadata.get("choices")
        if choices and kwargs[name] not in choices:
            raise ConfigError(f"{key}: {value!r} is not allowed; valid: {', '.join(choices)}")
    obj = cls(**kwargs)
    obj.validate(prefix)
    return obj


def _build_runs(raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {"main": {}}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"runs: {raw!r} is not allowed; expected a mapping of run names")
    runs = {}
    for name, overrides in raw.items():
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"runs.{name}: {overrides!r} is not allowed; expected a mapping")
        bad = sorted(set(overrides) - set(RUN_OVERRIDES))
        if bad:
            raise ConfigError(
                f"runs.{name}.{bad[0]}: unknown key; a run may override: {', '.join(RUN_OVERRIDES)}"
            )
        runs[str(name)] = dict(overrides)
    return runs


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate a whole ``params.yaml`` mapping. Every run's recipe is checked too."""
    if not isinstance(raw, dict):
        raise ConfigError(f"params: expected a mapping of sections, got {type(raw).__name__}")
    known = set(SECTIONS) | {"runs"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; valid: {', '.join(sorted(known))}")
    sections = {name: build_section(cls, raw.get(name), name) for name, cls in SECTIONS.items()}
    params = Params(runs=_build_runs(raw.get("runs")), **sections)
    for run in params.runs:
        params.run_train(run)
    _check_run_refs(params)
    return params


def _check_run_refs(params: Params) -> None:
    refs = {
        "stability.seed_runs": params.stability.seed_runs,
        "stability.batch_runs": params.stability.batch_runs,
        "memorization.run": (params.memorization.run,),
        "ood.run": (params.ood.run,),
        "tracking.register_run": (params.tracking.register_run,),
    }
    for key, names in refs.items():
        missing = [n for n in names if n not in params.runs]
        if missing:
            raise ConfigError(
                f"{key}: {missing[0]!r} is not a run; defined runs: {', '.join(params.runs)}"
            )


def checkpoint_epochs(epochs: int, checkpoints: CheckpointConfig) -> list[int]:
    """The epochs at which :func:`vogflow.checkpoints.files.schedule` saves, without importing
    torch.

    :func:`check_pipeline` runs at the start of every ``dvc repro``, where torch would cost
    seconds; a test pins this rule to the schedule the train stage uses. It lists every saved
    epoch: count them with :func:`checkpoint_count`, which holds for any number of epochs.
    """
    chosen = set(range(1, min(checkpoints.early, epochs) + 1))
    chosen |= set(range(checkpoints.every, epochs + 1, checkpoints.every))
    chosen |= set(range(max(epochs - checkpoints.late + 1, 1), epochs + 1))
    return sorted(chosen)


def checkpoint_count(epochs: int, checkpoints: CheckpointConfig) -> int:
    """``len(checkpoint_epochs(...))`` in constant time and memory (epochs may be 10**12)."""
    first = min(checkpoints.early, epochs)  # epochs 1..first
    last = max(epochs - checkpoints.late + 1, 1)  # epochs last..epochs
    if last <= first + 1:
        return epochs
    every = checkpoints.every
    between = (last - 1) // every - first // every  # multiples of `every` in first+1..last-1
    return first + (epochs - last + 1) + between


# Input shape and class count of the datasets whose size is known without reading them.
KNOWN_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "toy": ((2,), 2),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}
# Examples in both splits of the datasets whose size is known without reading them.
KNOWN_SIZES = {
    "digits": 1797,
    "toy": 1000,
    "mnist": 70000,
    "fashion_mnist": 70000,
    "cifar10": 60000,
    "cifar100": 60000,
}


def data_shape(data: DataConfig) -> tuple[tuple[int, ...], int]:
    """The input shape and class count of ``data``, or a lower bound of them (files unread)."""
    if data.name in KNOWN_SHAPES:
        return KNOWN_SHAPES[data.name]
    side = data.image_size or 1
    return (1, side, side), 2


def parameter_count(
    name: str, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64
) -> int:
    """Parameters of a built-in model, from arithmetic alone (nothing is allocated)."""
    channels = input_shape[0] if len(input_shape) == 3 else 1
    if name == "mlp":
        features = math.prod(input_shape)
        return features * hidden + hidden + hidden * num_classes + num_classes
    if name == "lenet":
        height, width = input_shape[-2:] if len(input_shape) == 3 else (1, 1)
        flat = 16 * (height // 4) * (width // 4)
        return (channels * 6 * 25 + 6 + 6 * 16 * 25 + 16 + flat * 120 + 120 + 120 * 84 + 84) + (
            84 * num_classes + num_classes
        )
    if name == "resnet18":  # the CIFAR stem: a 3x3 first convolution
        return 11_167_104 + channels * 64 * 9 + 513 * num_classes
    if name == "resnet50":
        return 23_498_624 + channels * 64 * 49 + 2049 * num_classes
    raise ConfigError(f"model.name: {name!r} is not allowed; valid: {', '.join(MODELS)}")


def machine_memory() -> int:
    """This machine's physical memory in bytes (a very large number where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**62


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def check_model_fits(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, key: str, **options: Any
) -> int:
    """Refuse, before anything is allocated, a model that this machine's memory cannot train or
    hold; its parameter count otherwise. ``key`` names the setting to lower."""
    params = parameter_count(name, input_shape, num_classes, **options)
    need, have = params * TRAIN_BYTES_PER_PARAM, machine_memory()
    if need > have:
        spec = f"{name} ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else name
        raise ConfigError(
            f"{key}: the {spec} model for inputs {tuple(input_shape)} and {num_classes} classes "
            f"has {params:.3g} parameters, about {_gb(need)} to train, more than this machine's "
            f"{_gb(have)} of memory; lower {key}"
        )
    return params


# What the pipeline's stages read, and why: a missing one crashes that stage after DVC has
# already removed its outputs.
SPLITS_NEEDED = {
    "train": "the memorization stage scores the train split",
    "test": "the score stage's decile report and the stability stage read the test split",
}
MODES_NEEDED = {
    "label": "the stability and memorization stages read vog_<window>_label",
    "pred": "the figures stage draws vog_<window>_pred grids",
}


def check_pipeline(params: Params) -> None:
    """Refuse a configuration that the sections accept one by one but the pipeline cannot run.

    Call it before any stage's work (DVC removes a stage's outputs before running it). Raises
    :class:`ConfigError` naming the key, its value and the fix. Torch is imported only when a
    device or precision setting needs a CUDA check.
    """
    _check_run_refs(params)
    _check_schedules(params)
    _check_reads(params)
    _check_run_roles(params)
    _check_ood_data(params)
    _check_paths(params)
    _check_sizes(params)
    _check_hardware(params)


def _check_paths(params: Params) -> None:
    # Read relative to the project root, where every stage runs.
    data = params.data
    if data.name in ("npz", "imagefolder"):
        path = Path(data.path)
        kind = "file" if data.name == "npz" else "folder"
        found = path.is_file() if kind == "file" else path.is_dir()
        _check(
            found,
            "data.path",
            data.path,
            f"an existing {data.name} {kind} (relative to the project root, {Path.cwd()})",
        )
    if params.ood.mnist_c_path:
        _check(
            Path(params.ood.mnist_c_path).is_dir(),
            "ood.mnist_c_path",
            params.ood.mnist_c_path,
            "an existing folder of the MNIST-C .npy files, or ''",
        )


def _check_sizes(params: Params) -> None:
    """Refuse a model this machine cannot train, or checkpoints its disk cannot hold."""
    import shutil

    shape, classes = data_shape(params.data)
    options = {"hidden": params.model.hidden} if params.model.name == "mlp" else {}
    key = "model.hidden" if options else "model.name"
    per_checkpoint = 4 * check_model_fits(params.model.name, shape, classes, key=key, **options)
    disk = shutil.disk_usage(Path.cwd()).total
    for run, overrides in params.runs.items():
        epochs = params.run_train(run).epochs
        count = checkpoint_count(epochs, params.checkpoints)
        if count > MAX_CHECKPOINTS:
            key = f"runs.{run}.epochs" if "epochs" in overrides else "train.epochs"
            raise ConfigError(
                f"{key}: {epochs} is not allowed; run {run!r} would save {count} checkpoints, "
                f"more than {MAX_CHECKPOINTS}; lower {key} or raise checkpoints.every"
            )
        if count * per_checkpoint > disk:
            key = f"runs.{run}.epochs" if "epochs" in overrides else "train.epochs"
            raise ConfigError(
                f"{key}: {epochs} is not allowed; run {run!r} would save {count} checkpoints of "
                f"{_gb(per_checkpoint)} each, {_gb(count * per_checkpoint)}, more than this "
                f"disk's {_gb(disk)}; lower {key} or raise checkpoints.every"
            )
    examples = KNOWN_SIZES.get(params.data.name)
    # Each confidence interval draws (bootstrap, examples) indices at once, then gathers them.
    boot = params.vog.bootstrap * (examples or 0) * 16
    if boot > machine_memory():
        raise ConfigError(
            f"vog.bootstrap: {params.vog.bootstrap} is not allowed; resampling {examples} "
            f"examples that often takes {_gb(boot)}, more than this machine's "
            f"{_gb(machine_memory())} of memory; lower vog.bootstrap (the default is 1000)"
        )
    toy = params.toy
    toy_params = check_model_fits("mlp", (2,), 2, key="toy.hidden", hidden=toy.hidden)
    # A checkpoint per epoch; each point keeps an input gradient per checkpoint and label mode.
    if toy.epochs * 4 * toy_params > disk:
        raise ConfigError(
            f"toy.epochs: {toy.epochs} is not allowed; a checkpoint per epoch would take "
            f"{_gb(toy.epochs * 4 * toy_params)}, more than this disk's {_gb(disk)}"
        )
    grads = toy.n_points * toy.epochs * 2 * 4 * len(LABEL_MODES) * 2
    if grads > machine_memory():
        raise ConfigError(
            f"toy.n_points: {toy.n_points} is not allowed; {toy.epochs} checkpoints of input "
            f"gradients for that many points take {_gb(grads)}, more than this machine's "
            f"{_gb(machine_memory())} of memory; lower toy.n_points or toy.epochs"
        )


def _check_schedules(params: Params) -> None:
    size, ckpt = params.vog.window_size, params.checkpoints
    for key in ("early", "late"):
        value = getattr(ckpt, key)
        # Fewer per-epoch checkpoints than the window: the window reaches into the sparse
        # every-N-epochs checkpoints and no longer measures the early (late) phase.
        _check(
            value >= size,
            f"checkpoints.{key}",
            value,
            f"an integer >= vog.window_size ({size}) so the {key} window holds consecutive epochs",
        )
    for run, overrides in params.runs.items():
        recipe = params.run_train(run)
        key = f"runs.{run}.epochs" if "epochs" in overrides else "train.epochs"
        count = checkpoint_count(recipe.epochs, ckpt)
        _check(
            count >= 2,
            key,
            recipe.epochs,
            f"enough epochs for 2 checkpoints (run {run!r} saves {count}; VoG is a spread "
            "over checkpoints)",
        )
        problem = window_problem(count, size)
        if problem:
            saved = checkpoint_epochs(recipe.epochs, ckpt)  # a handful: count <= size
            raise ConfigError(
                f"vog.window_size: {size} is not allowed; run {run!r} saves only {count} "
                f"checkpoints (epochs {saved}): {problem}; lower vog.window_size below {count} "
                f"or raise {key}"
            )


def _check_reads(params: Params) -> None:
    splits, modes = params.gradients.splits, params.gradients.label_modes
    _check(
        params.stability.split in splits,
        "stability.split",
        params.stability.split,
        f"a split listed in gradients.splits ({', '.join(splits)})",
    )
    for split, why in SPLITS_NEEDED.items():
        _check(split in splits, "gradients.splits", list(splits), f"a list with {split!r} ({why})")
    rank_by = params.vog.rank_by
    if rank_by != "auto" and not rank_by.startswith("hard_"):
        mode = next(m for m in LABEL_MODES if f"_{m}" in rank_by)
        _check(
            mode in modes,
            "vog.rank_by",
            rank_by,
            f"'auto' or <window>_<mode> with a mode of gradients.label_modes ({', '.join(modes)})",
        )
    for mode, why in MODES_NEEDED.items():
        _check(mode in modes, "gradients.label_modes", list(modes), f"a list with {mode!r} ({why})")


def _check_run_roles(params: Params) -> None:
    for key in ("seed_runs", "batch_runs"):
        names = getattr(params.stability, key)
        seen: dict[TrainConfig, str] = {}
        for name in names:
            recipe = params.run_train(name)
            if recipe in seen:
                raise ConfigError(
                    f"stability.{key}: {list(names)!r} is not allowed; runs {seen[recipe]!r} and "
                    f"{name!r} train the same recipe (identical models agree by construction); "
                    f"give them different overrides under runs"
                )
            seen[recipe] = name
    run = params.memorization.run
    _check(
        params.run_train(run).label_noise > 0,
        "memorization.run",
        run,
        f"a run with label_noise > 0 (the stage compares shuffled with clean labels); set "
        f"runs.{run}.label_noise or name another run",
    )


def _check_ood_data(params: Params) -> None:
    # The ood stage corrupts images; the toy set is 2-D points.
    _check(
        params.data.name != "toy",
        "data.name",
        params.data.name,
        "an image dataset for the pipeline (its ood stage corrupts images; the toy problem has "
        "its own stage)",
    )
    _check(
        not params.ood.mnist_c_path or params.data.name == "mnist",
        "ood.mnist_c_path",
        params.ood.mnist_c_path,
        "'' unless data.name is 'mnist' (MNIST-C corrupts MNIST only)",
    )


def _check_hardware(params: Params) -> None:
    devices = {"train.device": params.train.device, "gradients.device": params.gradients.device}
    bf16 = params.gradients.precision == "bf16"
    needs_cuda = [k for k, v in devices.items() if v.startswith("cuda")]
    if bf16 and params.gradients.device == "cpu":
        raise ConfigError(
            "gradients.precision: 'bf16' is not allowed with gradients.device 'cpu'; use fp32 on "
            "the CPU (bf16 is refused there: it rounds the gradients and is slow)"
        )
    batchnorm = params.model.name in ("resnet18", "resnet50")
    ddp_on_cpu = (
        params.train.processes > 1 and batchnorm and not params.train.device.startswith("cuda")
    )
    if not needs_cuda and not ddp_on_cpu and not (bf16 and params.gradients.device == "auto"):
        return
    import torch  # only here: the default (auto, fp32, one process) needs no CUDA check

    if ddp_on_cpu and (params.train.device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError(
            f"train.processes: {params.train.processes} is not allowed with model.name "
            f"{params.model.name!r} on the CPU: its BatchNorm statistics would each be taken over "
            "one process's share of the batch (torch syncs them on GPUs only); set "
            "train.processes to 1, or train on GPUs"
        )

    if torch.cuda.is_available():
        return
    for key in needs_cuda:
        _check(False, key, devices[key], "'auto' or 'cpu': CUDA is not available on this machine")
    raise ConfigError(
        "gradients.precision: 'bf16' is not allowed here: gradients.device 'auto' means the CPU "
        "(no CUDA on this machine); use fp32 on the CPU"
    )


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the project root")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ConfigError(_yaml_problem(path, err)) from err
    return parse_params(raw or {})


def _yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    line = ""
    if mark is not None:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if mark.line < len(lines):
            line = f" in {lines[mark.line].strip()!r}"
    tab = " (YAML indents with spaces, never tabs)" if "\\t" in problem else ""
    return f"{where}: not valid YAML: {problem}{line}{tab}; fix that line"


def section_dict(section: Any) -> dict[str, Any]:
    """A section as plain JSON-able values (tuples become lists), for logging and manifests."""
    items = dataclasses.asdict(section).items()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}
