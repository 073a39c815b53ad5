"""vogflow: rank every example of a classification dataset by difficulty with Variance of Gradients.

The public entry point is :func:`vogflow.audit`; the pipeline stages live in ``stages/``. Heavy
libraries (torch, mlflow, pandas) are imported where they are used, so ``import vogflow`` is cheap.
"""

from __future__ import annotations

from typing import Any

from vogflow.common.version import __version__
from vogflow.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    RunError,
    TrackingError,
    VogflowError,
)

__all__ = [
    "CheckpointError",
    "CheckpointRecorder",
    "ConfigError",
    "DataError",
    "RunError",
    "TrackingError",
    "VogflowError",
    "__version__",
    "audit",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not pay for torch.
    if name == "audit":
        from vogflow.api import audit

        return audit
    if name == "CheckpointRecorder":
        from vogflow.checkpoints.recorder import CheckpointRecorder

        return CheckpointRecorder
    raise AttributeError(f"module 'vogflow' has no attribute {name!r}")
