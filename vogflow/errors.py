"""The errors a user can cause: five kinds under one base, each shown as one line by the CLI and
the stages.

The message names what is wrong and the fix; the kind says where to look. Anything else (a bug,
CUDA out of memory) is not a :class:`VogflowError` and keeps its traceback.
"""

from __future__ import annotations


class VogflowError(Exception):
    """A bad input, file, parameter or store: the message names it and the fix."""


class ConfigError(VogflowError, ValueError):
    """A parameter, option or command line that cannot work (params.yaml, the CLI, the API)."""


class DataError(VogflowError, ValueError):
    """Data that cannot be audited as given: files, labels, inputs, rankings tables."""


class CheckpointError(VogflowError, ValueError):
    """A checkpoint that cannot be found, trusted or loaded into the model."""


class TrackingError(VogflowError, RuntimeError):
    """The MLflow store cannot be reached, opened or written, or lacks what was asked for."""


class RunError(VogflowError, RuntimeError):
    """Work that started and could not finish: training diverged or stopped learning, a rank
    left, the model failed on the data.

    ``cause`` says which (``"diverged"``, ``"stalled"``, ``"peer"``, ``"model"``), so a caller can
    add the fix for its own setting; ``epoch``, ``reason`` and ``first`` (the model's own first
    line) carry the detail where there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        cause: str = "",
        epoch: int | None = None,
        reason: str = "",
        first: str = "",
    ) -> None:
        super().__init__(message)
        self.cause, self.epoch, self.reason, self.first = cause, epoch, reason, first


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "RunError",
    "TrackingError",
    "VogflowError",
]
