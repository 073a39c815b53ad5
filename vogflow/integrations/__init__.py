"""Callbacks that record vogflow checkpoints from a training framework's own loop.

:mod:`vogflow.integrations.lightning` (a Lightning ``Callback``) and
:mod:`vogflow.integrations.hf` (a Hugging Face ``TrainerCallback``) map the framework's epoch
events onto :class:`vogflow.capture.CheckpointRecorder`. Each module imports its framework, so
only the one a loop uses is ever imported; a missing framework is one line naming the extra.
"""

from __future__ import annotations

from vogflow.errors import VogflowError


class IntegrationError(VogflowError, ImportError):
    """A callback's framework is not installed (the message names the pip extra)."""


def missing(framework: str, extra: str) -> IntegrationError:
    """The error for a callback whose ``framework`` is not installed, naming its extra."""
    return IntegrationError(
        f"vogflow.integrations.{extra} needs {framework}, which is not installed: "
        f'pip install "vogflow[{extra}]"'
    )
