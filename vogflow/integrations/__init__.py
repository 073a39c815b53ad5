"""Callbacks that record vogflow checkpoints from a training framework's own loop.

:mod:`vogflow.integrations.lightning` (a Lightning ``Callback``) and
:mod:`vogflow.integrations.hf` (a Hugging Face ``TrainerCallback``) map the framework's epoch
events onto :class:`vogflow.checkpoints.recorder.CheckpointRecorder`. Each module imports its
framework, so only the one a loop uses is ever imported; a missing framework is one line naming the
extra.
"""

from __future__ import annotations

from vogflow.errors import ConfigError


def missing(framework: str, extra: str) -> ConfigError:
    """The error for a callback whose ``framework`` is not installed, naming its extra."""
    return ConfigError(
        f"vogflow.integrations.{extra} needs {framework}, which is not installed: "
        f'pip install "vogflow[{extra}]"'
    )
