"""Device choice and reproducible seeding shared by training and extraction."""

from __future__ import annotations

import hashlib

import torch

from vogflow.config import ConfigError


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
