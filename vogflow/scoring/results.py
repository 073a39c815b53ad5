"""What one extraction pass yields: raw VoG per window and label mode, per-checkpoint statistics.

Numpy only, so that scoring and the analyses read extraction results (and the gradients stage's
``.npz``) without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STATS = ("pred", "loss", "margin", "el2n", "msp")


@dataclass
class Extraction:
    """Raw scores of ``N`` examples (rows in data order) from ``K`` checkpoints.

    ``vog_raw[f"{window}_{mode}"]``: ``(N,)`` float64 raw VoG (higher = harder).
    ``stats[name]``: ``(K, N)`` per-checkpoint ``pred`` (int), ``loss`` (cross-entropy on the given
    labels), ``margin`` (given-label logit minus the largest other logit; low = hard), ``el2n``
    (L2 norm of softmax minus one-hot; high = hard) and ``msp`` (max softmax probability).
    ``probs``: ``(N, C)`` float32 softmax probabilities averaged over the ``K`` checkpoints, the
    evidence behind the label-issue estimate (``analysis.label_issues``); None in extractions
    written before it was kept.
    """

    label: np.ndarray
    pred: np.ndarray
    vog_raw: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    windows: dict[str, list[int]] = field(default_factory=dict)
    probs: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array mapping, for one ``.npz`` file."""
        out = {"label": self.label, "pred": self.pred}
        out.update({f"vog_{k}_raw": v for k, v in self.vog_raw.items()})
        out.update({f"stat_{k}": v for k, v in self.stats.items()})
        out.update({f"window_{k}": np.asarray(v) for k, v in self.windows.items()})
        if self.probs is not None:
            out["probs"] = self.probs
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Extraction:
        def strip(prefix: str, suffix: str = "") -> dict[str, np.ndarray]:
            return {
                k[len(prefix) : len(k) - len(suffix)]: v
                for k, v in arrays.items()
                if k.startswith(prefix) and k.endswith(suffix)
            }

        return cls(
            label=arrays["label"],
            pred=arrays["pred"],
            vog_raw=strip("vog_", "_raw"),
            stats=strip("stat_"),
            windows={k: v.tolist() for k, v in strip("window_").items()},
            probs=arrays.get("probs"),
        )


def load_extraction(path: str | Path) -> tuple[Extraction, dict[str, np.ndarray]]:
    """A gradients-stage ``.npz``: the :class:`Extraction` and ``true_label``/``noisy`` (and
    ``path`` when the data is an image folder)."""
    from vogflow.common.atomic import read_npz

    arrays = read_npz(path)
    extra = {k: arrays.pop(k) for k in ("true_label", "noisy", "path") if k in arrays}
    return Extraction.from_arrays(arrays), extra
