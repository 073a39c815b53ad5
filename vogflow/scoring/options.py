"""The extraction options, declared once and checked once.

:func:`vogflow.audit`, :func:`vogflow.scoring.extract.run_extraction`, the streaming engine
(:mod:`vogflow.scoring.stream`), the pipeline's gradients stage and the paper's runs all take one
:class:`ExtractionOptions`. Building it refuses a bad option with a one-line
:class:`~vogflow.errors.ConfigError`; what depends on the checkpoints or the device is refused by
its methods (:meth:`ExtractionOptions.window_positions`, :meth:`ExtractionOptions.precision_on`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vogflow.config.names import LABEL_MODES, NORMALISATIONS, PRECISIONS, WINDOWS
from vogflow.errors import ConfigError
from vogflow.scoring.vog import check_checkpoint_count, check_window_size, window_indices

if TYPE_CHECKING:
    import torch


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice_list(name: str, values: Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    """``values`` as a tuple; refused when empty, repeated or not drawn from ``valid``."""
    bad = [v for v in values if v not in valid]
    if bad or not values or len(set(values)) != len(values):
        raise ConfigError(
            f"{name}: {list(values)!r} is not allowed; pass a non-empty list without repeats "
            f"drawn from: {', '.join(valid)}"
        )
    return tuple(values)


@dataclass(frozen=True)
class ExtractionOptions:
    """How to extract: every option of :func:`vogflow.audit` but the data, the checkpoints and
    tracking.

    Attributes:
        windows: which checkpoints each score spans (``early``, ``late``, ``all``).
        window_size: how many checkpoints an ``early`` or ``late`` window holds (>= 2).
        label_modes: ``label`` (the given label's logit) and/or ``pred`` (the class the final
            checkpoint predicts).
        normalise: the class normalisation of the rankings table (``z``, ``none``, ``abs``).
        batch_size: examples per batch (>= 1).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda[:N]`` or a ``torch.device``.
        precision: ``fp32``, ``tf32`` or ``bf16`` (see :meth:`precision_on`).
        channels_last: run image models and batches in the channels-last memory layout.
        progress: show a progress bar.
    """

    windows: Sequence[str] = WINDOWS
    window_size: int = 3
    label_modes: Sequence[str] = LABEL_MODES
    normalise: str = "z"
    batch_size: int = 256
    device: str | torch.device = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", _choice_list("windows", self.windows, WINDOWS))
        if not _is_int(self.window_size):
            raise ConfigError(
                f"window_size: {self.window_size!r} is not allowed; pass an integer >= 2"
            )
        check_window_size(self.window_size, error=ConfigError)
        modes = _choice_list("label_modes", self.label_modes, LABEL_MODES)
        object.__setattr__(self, "label_modes", modes)
        if self.normalise not in NORMALISATIONS:
            raise ConfigError(
                f"normalise: {self.normalise!r} is not allowed; valid: {', '.join(NORMALISATIONS)}"
            )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(
                f"batch_size: {self.batch_size!r} is not allowed; pass an integer >= 1"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision: {self.precision!r} is unknown; valid: {', '.join(PRECISIONS)}"
            )

    @classmethod
    def of(cls, options: ExtractionOptions | None = None, **changes: Any) -> ExtractionOptions:
        """``options`` (the defaults when None) with ``changes``: each field by keyword."""
        if options is None:
            return cls(**changes)
        return replace(options, **changes) if changes else options

    def window_positions(self, k: int, *, error: type[Exception] = ConfigError) -> dict:
        """Each window's checkpoint positions (0-based) among ``k``: refused when ``k < 2``
        (with ``error``) or when a window does not fit (see ``vog.window_indices``)."""
        check_checkpoint_count(k, error=error)
        try:
            return {w: window_indices(k, w, size=self.window_size).tolist() for w in self.windows}
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def precision_on(self, device: torch.device) -> str:
        """The precision extraction will run at on ``device``; bf16 off a GPU is refused.

        ``tf32`` is a GPU matmul mode: on the CPU it runs fp32 anyway, said with a warning.
        """
        if device.type == "cuda" or self.precision == "fp32":
            return self.precision
        if self.precision == "bf16":
            raise ConfigError(
                f"precision: 'bf16' is refused on the {device.type} device (it rounds every "
                "gradient and gains no speed there); use precision='fp32' on the CPU, or a CUDA "
                "device"
            )
        warnings.warn(
            f"precision 'tf32' has no effect on the {device.type} device; running fp32",
            stacklevel=3,
        )
        return "fp32"


__all__ = ["ExtractionOptions"]
