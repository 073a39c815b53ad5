"""The audit's figures: numpy arrays in, ``matplotlib.figure.Figure`` out, and a PNG ``save``.

``grids`` draws image grids, ``curves`` curves and the scorecard chart; :func:`save` writes any
of them. Leaf modules: numpy and matplotlib only, no statistics, no files other than the PNG
``save`` writes. Every figure is a free-standing ``Figure`` (never pyplot), so figures do not
leak global state between calls or threads.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from vogflow.common.atomic import write_with

__all__ = ["save"]


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically, then release it; returns ``path``."""
    # The temporary file ends in ".tmp", so the format must be explicit.
    out = write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    _close(fig)
    return out


def _close(fig: Figure) -> None:
    # A pyplot-managed figure must be closed through pyplot or its registry keeps it alive; ours
    # have no manager, so clearing the artists is enough to free them.
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    else:
        fig.clear()
