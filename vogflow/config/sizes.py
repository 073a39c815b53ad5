"""What a run costs, from arithmetic alone (nothing allocated, no torch): the checkpoints a
schedule saves, a built-in model's parameters, and whether this machine's memory holds them.

Apart from the schema so that the checkpoint schedule and the model builder (below the params
layer's checks) share these rules without importing the params schema.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple, Protocol

from vogflow.config.names import MODELS
from vogflow.errors import ConfigError


class Schedule(Protocol):
    """The checkpoint schedule's three numbers (``CheckpointConfig`` has them)."""

    early: int
    every: int
    late: int


class Every(NamedTuple):
    """A schedule given by its numbers, where there is no ``CheckpointConfig``."""

    early: int
    every: int
    late: int


# Files one run may save: VoG reads each of them for every example.
MAX_CHECKPOINTS = 100_000
# Bytes per parameter while training: weights, gradients, momentum and the checkpoint's copy.
TRAIN_BYTES_PER_PARAM = 16


def checkpoint_epochs(epochs: int, checkpoints: Schedule) -> list[int]:
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


def checkpoint_count(epochs: int, checkpoints: Schedule) -> int:
    """``len(checkpoint_epochs(...))`` in constant time and memory (epochs may be 10**12)."""
    first = min(checkpoints.early, epochs)  # epochs 1..first
    last = max(epochs - checkpoints.late + 1, 1)  # epochs last..epochs
    if last <= first + 1:
        return epochs
    every = checkpoints.every
    between = (last - 1) // every - first // every  # multiples of `every` in first+1..last-1
    return first + (epochs - last + 1) + between


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


def size_text(n: float) -> str:
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
            f"has {params:.3g} parameters, about {size_text(need)} to train, more than this "
            f"machine's {size_text(have)} of memory; lower {key}"
        )
    return params
