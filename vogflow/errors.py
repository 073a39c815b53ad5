"""The one base of every error a user can cause: the CLI and the stages show it as one line.

Each part of vogflow raises its own subclass (config, data, checkpoints, gradients, tracking,
comparison); anything else (a bug, CUDA out of memory) keeps its traceback.
"""

from __future__ import annotations


class VogflowError(Exception):
    """A bad input, file, parameter or store: the message names it and the fix."""
