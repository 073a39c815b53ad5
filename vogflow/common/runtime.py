"""Device choice, reproducible seeding and the platform record shared by training and extraction."""

from __future__ import annotations

import contextlib
import hashlib
import platform
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from vogflow.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an unavailable CUDA request fails clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: {name!r} is not a device; use 'auto', 'cpu' or 'cuda'") from err


def derived_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (e.g. run seed and epoch), the same on every machine."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads``, the caller's restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; elsewhere ``platform.processor()`` (may be
    ``""``): a label for people, so a coarse one off Linux is enough."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:  # not Linux
        pass
    return platform.processor()


def platform_record(device: torch.device, threads: int) -> dict[str, Any]:
    """What, besides the params, decides a training run's bits: library versions, the CPU kernels'
    instruction set, the thread count and the device. Two runs agree bit for bit only where all of
    these agree; no host name, time or path, so the record is the same on every rerun.
    """
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "torch_threads": threads,
        "device": str(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "byteorder": sys.byteorder,
    }
