"""Typed, validated parameters: one frozen dataclass per section of ``params.yaml``.

Every error names the key, the bad value and what is allowed, and is raised before any work.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vogflow.config.bounds import (
    MAX_THREADS,
    RANK_BY_FORMS,
    SCORE_NAMES,
    check,
    check_device,
    check_positive,
    check_seed,
    check_subset,
    choice,
)
from vogflow.config.names import LABEL_MODES, MODELS, NORMALISATIONS, PRECISIONS, SPLITS, WINDOWS
from vogflow.config.paper import MemorizationConfig, OodConfig, StabilityConfig, ToyConfig
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
# `auto`: the scorecard picks the variant that measured best on this data (resolved later).
RANKINGS = (*(f"{w}_{m}" for w in WINDOWS for m in LABEL_MODES), "auto")

# The data.path of the built-in datasets in params.yaml: they read no file, but dvc.yaml makes
# data.path a dependency of every stage that reads data, and DVC refuses an empty one.
BUILTIN_DATA_PATH = ".vogflow/builtin-data"


@dataclass(frozen=True)
class DataConfig:
    name: str = field(default="digits", metadata=choice(*DATASETS))
    root: str = "data"  # downloads for torchvision datasets, relative to the project root
    path: str = BUILTIN_DATA_PATH  # the file (npz) or folder (imagefolder) to read
    test_fraction: float = 0.2  # digits/toy: share held out for test, stratified
    split_seed: int = 0
    image_size: int = 0  # imagefolder: resize to this square size (0 = keep)
    augment: str = field(default="auto", metadata=choice("auto", "none", "crop_flip"))
    # imagefolder/npz: read examples from disk batch by batch instead of holding the splits in
    # memory; `auto` streams only data that would not comfortably fit (the bits are the same).
    stream: bool | str = "auto"
    workers: int = 2  # loader processes that decode streamed examples (0 = in the main process)

    def validate(self, prefix: str) -> None:
        check(
            isinstance(self.stream, bool) or self.stream == "auto",
            f"{prefix}.stream",
            self.stream,
            "auto, true or false",
        )
        check(
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
        check(
            0.0 < self.test_fraction < 1.0,
            f"{prefix}.test_fraction",
            self.test_fraction,
            "a number strictly between 0 and 1",
        )
        check(self.image_size >= 0, f"{prefix}.image_size", self.image_size, "an integer >= 0")
        check_seed(f"{prefix}.split_seed", self.split_seed)
        if self.name in ("npz", "imagefolder"):
            check(
                bool(self.path) and self.path != BUILTIN_DATA_PATH,
                f"{prefix}.path",
                self.path,
                f"the path to the {self.name} data when {prefix}.name is {self.name!r}",
            )


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="lenet", metadata=choice(*MODELS))
    hidden: int = 64  # mlp: hidden units

    def validate(self, prefix: str) -> None:
        check(self.hidden >= 1, f"{prefix}.hidden", self.hidden, "an integer >= 1")


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
        check(self.epochs >= 1, f"{prefix}.epochs", self.epochs, "an integer >= 1")
        check(
            1 <= self.threads <= MAX_THREADS,
            f"{prefix}.threads",
            self.threads,
            f"an integer in [1, {MAX_THREADS}] (more threads than cores only slows training)",
        )
        check(self.processes >= 1, f"{prefix}.processes", self.processes, "an integer >= 1")
        check(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, "an integer >= 1")
        check_positive(f"{prefix}.lr", self.lr)
        check(0 <= self.momentum < 1, f"{prefix}.momentum", self.momentum, "a number in [0, 1)")
        check(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, "a number >= 0")
        check(0 < self.gamma <= 1, f"{prefix}.gamma", self.gamma, "a number in (0, 1]")
        check(
            list(self.milestones) == sorted(set(self.milestones))
            and all(0 < m <= self.epochs for m in self.milestones),
            f"{prefix}.milestones",
            list(self.milestones),
            f"increasing epochs between 1 and {prefix}.epochs ({self.epochs})",
        )
        check(
            0 <= self.label_noise < 1,
            f"{prefix}.label_noise",
            self.label_noise,
            "a share in [0, 1)",
        )
        check_seed(f"{prefix}.seed", self.seed)
        check_seed(f"{prefix}.noise_seed", self.noise_seed)
        check_device(f"{prefix}.device", self.device)


RUN_OVERRIDES = ("seed", "batch_size", "label_noise", "noise_seed", "epochs", "lr", "milestones")


@dataclass(frozen=True)
class CheckpointConfig:
    early: int = 3  # every epoch of the first `early` epochs
    every: int = 5  # then every `every` epochs
    late: int = 3  # and every epoch of the last `late` epochs

    def validate(self, prefix: str) -> None:
        for key in ("early", "every", "late"):
            value = getattr(self, key)
            check(value >= 1, f"{prefix}.{key}", value, "an integer >= 1")


@dataclass(frozen=True)
class GradientsConfig:
    splits: tuple[str, ...] = ("train", "test")
    batch_size: int = 256
    device: str = "auto"
    label_modes: tuple[str, ...] = LABEL_MODES
    precision: str = field(default="fp32", metadata=choice(*PRECISIONS))
    channels_last: bool = False
    # Processes sharing each split's extraction under torchrun (contiguous row ranges).
    processes: int = 1

    def validate(self, prefix: str) -> None:
        check(self.processes >= 1, f"{prefix}.processes", self.processes, "an integer >= 1")
        check_subset(f"{prefix}.splits", self.splits, SPLITS)
        check_subset(f"{prefix}.label_modes", self.label_modes, LABEL_MODES)
        check(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, "an integer >= 1")
        check_device(f"{prefix}.device", self.device)


@dataclass(frozen=True)
class VogConfig:
    window_size: int = 3  # checkpoints in the early and late windows
    normalise: str = field(default="z", metadata=choice(*NORMALISATIONS))
    rank_by: str = "auto"  # auto | <window>_<mode> | a scorecard score (see params.yaml)
    bins: int = 10  # VoG buckets for error-per-bucket curves (10 = deciles)
    top_k: int = 25  # rows of the human-readable top/bottom table
    bootstrap: int = 1000  # resamples for confidence intervals
    confidence: float = 0.95
    seed: int = 0  # seed of the bootstrap

    def validate(self, prefix: str) -> None:
        check(self.window_size >= 2, f"{prefix}.window_size", self.window_size, "an integer >= 2")
        if self.rank_by != "auto" and self.rank_by not in SCORE_NAMES:
            import difflib

            near = difflib.get_close_matches(self.rank_by, sorted(SCORE_NAMES), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(
                f"{prefix}.rank_by: {self.rank_by!r} is not allowed; {hint}expected {RANK_BY_FORMS}"
            )
        check(self.bins >= 2, f"{prefix}.bins", self.bins, "an integer >= 2")
        check(self.top_k >= 1, f"{prefix}.top_k", self.top_k, "an integer >= 1")
        check(self.bootstrap >= 0, f"{prefix}.bootstrap", self.bootstrap, "an integer >= 0")
        check(
            0 < self.confidence < 1,
            f"{prefix}.confidence",
            self.confidence,
            "a number strictly between 0 and 1",
        )
        check_seed(f"{prefix}.seed", self.seed)


@dataclass(frozen=True)
class FiguresConfig:
    grid: int = 5  # images per side of the lowest/highest grids
    dpi: int = 100
    classes: int = 2  # classes shown in the per-class grids

    def validate(self, prefix: str) -> None:
        # matplotlib refuses an image over 2**16 pixels a side: 30 tiles of ~1.2 inches at 1200
        # dpi stay under it.
        check(1 <= self.grid <= 30, f"{prefix}.grid", self.grid, "an integer in [1, 30]")
        check(30 <= self.dpi <= 1200, f"{prefix}.dpi", self.dpi, "an integer in [30, 1200]")
        check(self.classes >= 1, f"{prefix}.classes", self.classes, "an integer >= 1")


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "vogflow"
    model_name: str = "vogflow-main"
    register_run: str = "main"  # the run whose final model becomes a new registered version

    def validate(self, prefix: str) -> None:
        check(bool(self.experiment), f"{prefix}.experiment", self.experiment, "a non-empty name")


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
    check_run_refs(params)
    return params


def check_run_refs(params: Params) -> None:
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
