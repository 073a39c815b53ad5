"""The pipeline's checks across sections: what each section accepts alone but the pipeline cannot
run (checkpoint counts, the model's size against this machine's memory and disk, paths that must
exist, the splits, label modes and runs each stage reads, the hardware asked for).

Every error names the key, the bad value and what is allowed, and is raised before any stage's
work (DVC removes a stage's outputs before running it).
"""

from __future__ import annotations

from pathlib import Path

from vogflow.config.bounds import check
from vogflow.config.names import LABEL_MODES, window_problem
from vogflow.config.schema import (
    DataConfig,
    Params,
    TrainConfig,
    check_run_refs,
)
from vogflow.config.sizes import (
    MAX_CHECKPOINTS,
    check_model_fits,
    checkpoint_count,
    checkpoint_epochs,
    machine_memory,
    size_text,
)
from vogflow.errors import ConfigError

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
    check_run_refs(params)
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
        check(
            found,
            "data.path",
            data.path,
            f"an existing {data.name} {kind} (relative to the project root, {Path.cwd()})",
        )
    if params.ood.mnist_c_path:
        check(
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
                f"{size_text(per_checkpoint)} each, {size_text(count * per_checkpoint)}, more than "
                f"this disk's {size_text(disk)}; lower {key} or raise checkpoints.every"
            )
    examples = KNOWN_SIZES.get(params.data.name)
    # Each confidence interval draws (bootstrap, examples) indices at once, then gathers them.
    boot = params.vog.bootstrap * (examples or 0) * 16
    if boot > machine_memory():
        raise ConfigError(
            f"vog.bootstrap: {params.vog.bootstrap} is not allowed; resampling {examples} "
            f"examples that often takes {size_text(boot)}, more than this machine's "
            f"{size_text(machine_memory())} of memory; lower vog.bootstrap (the default is 1000)"
        )
    toy = params.toy
    toy_params = check_model_fits("mlp", (2,), 2, key="toy.hidden", hidden=toy.hidden)
    # A checkpoint per epoch; each point keeps an input gradient per checkpoint and label mode.
    if toy.epochs * 4 * toy_params > disk:
        raise ConfigError(
            f"toy.epochs: {toy.epochs} is not allowed; a checkpoint per epoch would take "
            f"{size_text(toy.epochs * 4 * toy_params)}, more than this disk's {size_text(disk)}"
        )
    grads = toy.n_points * toy.epochs * 2 * 4 * len(LABEL_MODES) * 2
    if grads > machine_memory():
        raise ConfigError(
            f"toy.n_points: {toy.n_points} is not allowed; {toy.epochs} checkpoints of input "
            f"gradients for that many points take {size_text(grads)}, more than this machine's "
            f"{size_text(machine_memory())} of memory; lower toy.n_points or toy.epochs"
        )


def _check_schedules(params: Params) -> None:
    size, ckpt = params.vog.window_size, params.checkpoints
    for key in ("early", "late"):
        value = getattr(ckpt, key)
        # Fewer per-epoch checkpoints than the window: the window reaches into the sparse
        # every-N-epochs checkpoints and no longer measures the early (late) phase.
        check(
            value >= size,
            f"checkpoints.{key}",
            value,
            f"an integer >= vog.window_size ({size}) so the {key} window holds consecutive epochs",
        )
    for run, overrides in params.runs.items():
        recipe = params.run_train(run)
        key = f"runs.{run}.epochs" if "epochs" in overrides else "train.epochs"
        count = checkpoint_count(recipe.epochs, ckpt)
        check(
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
    check(
        params.stability.split in splits,
        "stability.split",
        params.stability.split,
        f"a split listed in gradients.splits ({', '.join(splits)})",
    )
    for split, why in SPLITS_NEEDED.items():
        check(split in splits, "gradients.splits", list(splits), f"a list with {split!r} ({why})")
    rank_by = params.vog.rank_by
    if rank_by != "auto" and not rank_by.startswith("hard_"):
        mode = next(m for m in LABEL_MODES if f"_{m}" in rank_by)
        check(
            mode in modes,
            "vog.rank_by",
            rank_by,
            f"'auto' or <window>_<mode> with a mode of gradients.label_modes ({', '.join(modes)})",
        )
    for mode, why in MODES_NEEDED.items():
        check(mode in modes, "gradients.label_modes", list(modes), f"a list with {mode!r} ({why})")


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
    check(
        params.run_train(run).label_noise > 0,
        "memorization.run",
        run,
        f"a run with label_noise > 0 (the stage compares shuffled with clean labels); set "
        f"runs.{run}.label_noise or name another run",
    )


def _check_ood_data(params: Params) -> None:
    # The ood stage corrupts images; the toy set is 2-D points.
    check(
        params.data.name != "toy",
        "data.name",
        params.data.name,
        "an image dataset for the pipeline (its ood stage corrupts images; the toy problem has "
        "its own stage)",
    )
    check(
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
        check(False, key, devices[key], "'auto' or 'cpu': CUDA is not available on this machine")
    raise ConfigError(
        "gradients.precision: 'bf16' is not allowed here: gradients.device 'auto' means the CPU "
        "(no CUDA on this machine); use fp32 on the CPU"
    )
