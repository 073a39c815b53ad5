"""Per-example hardness baselines from one run's per-checkpoint statistics.

One job: turn the ``(K, N)`` statistics every extraction already has (``pred``, ``loss``,
``margin``, ``el2n``, ``msp``; see ``vogflow.scoring.results.STATS``) into the difficulty scores VoG
is compared with, every one oriented higher = harder (which labels are probably wrong is
``analysis.label_issues``). The statistics are taken against the label the run trained on
(shuffled ones included), so "hard" here means hard to fit that label.

Arrays in, arrays out; numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Every name :func:`baseline_scores` can return, in a fixed order (the rankings table's order);
# it lives in names.py, where the config checks vog.rank_by without the scoring math.
from vogflow.config.names import BASELINES


def _checkpoints(k: int, idx: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if idx is None:
        return np.arange(k)
    idx = np.asarray(idx, dtype=np.int64).ravel()
    if idx.size == 0:
        raise ValueError("no checkpoints selected")
    if idx.min() < -k or idx.max() >= k:
        raise ValueError(f"checkpoints {idx.tolist()} out of range for K = {k}")
    return idx


def _per_checkpoint(stat: np.ndarray, name: str) -> np.ndarray:
    stat = np.asarray(stat)
    if stat.ndim != 2:
        raise ValueError(f"per-checkpoint statistic {name!r} must be (K, N), got {stat.shape}")
    return stat


def mean_over_checkpoints(stat: np.ndarray, idx: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """Mean of a per-checkpoint statistic ``(K, N)`` over checkpoints ``idx`` (None = all): (N,)."""
    stat = _per_checkpoint(stat, "stat").astype(np.float64)
    return stat[_checkpoints(stat.shape[0], idx)].mean(axis=0)


def el2n_score(
    el2n: np.ndarray, *, checkpoints: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """EL2N (Paul et al. 2021): mean ``||softmax - onehot||_2`` early in training. Higher = harder.

    ``el2n``: ``(K, N)`` per checkpoint. ``checkpoints``: the checkpoints averaged; ``None`` =
    the first ``min(3, K)``, matching the default early window (the score is meant to be taken
    early in training).
    """
    el2n = _per_checkpoint(el2n, "el2n").astype(np.float64)
    if checkpoints is None:
        checkpoints = np.arange(min(3, el2n.shape[0]))
    return mean_over_checkpoints(el2n, checkpoints)


def forgetting_events(correct_per_checkpoint: np.ndarray) -> np.ndarray:
    """Forgetting events (Toneva et al. 2019): correct -> incorrect transitions between checkpoints.

    ``correct_per_checkpoint``: ``(K, N)`` bool, in training order. Returns ``(N,)`` int64, higher
    = more often forgotten (harder). An example never classified correctly at any checkpoint gets
    ``K``, above every learned example's count (at most ``K // 2``): Toneva et al. treat
    never-learned examples as the most forgotten ("unforgettable" is the opposite end), so they
    rank at the hard end rather than beside never-forgotten easy examples with 0 events.
    """
    c = np.asarray(correct_per_checkpoint).astype(bool)
    if c.ndim != 2:
        raise ValueError(f"correct_per_checkpoint must be (K, N), got {c.shape}")
    events = (c[:-1] & ~c[1:]).sum(axis=0).astype(np.int64)
    events[~c.any(axis=0)] = c.shape[0]
    return events


def area_under_margin(
    margin: np.ndarray, *, idx: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """AUM (Pleiss et al. 2020): the margin averaged over checkpoints ``idx`` (None = all).

    ``margin``: ``(K, N)`` trained-label logit minus the largest other logit. Returns ``(N,)``;
    LOW = hard (a negative AUM means another class won most of training: the paper's sign of a
    mislabeled example). :func:`baseline_scores` negates it.
    """
    return mean_over_checkpoints(margin, idx)


def data_map(
    loss: np.ndarray, *, idx: Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Data-map coordinates (Swayamdipta et al. 2020) over checkpoints ``idx`` (None = all).

    ``loss``: ``(K, N)`` cross-entropy on the trained label, so ``p(label) = exp(-loss)``.
    Returns ``(confidence, variability)``, each ``(N,)``: the mean and the population std
    (divide by the number of checkpoints, as the paper's code does) of ``p(label)``. Low
    confidence = hard; high variability = ambiguous (also hard to learn).
    """
    loss = _per_checkpoint(loss, "loss").astype(np.float64)
    p = np.exp(-loss[_checkpoints(loss.shape[0], idx)])
    return p.mean(axis=0), p.std(axis=0)


def baseline_scores(
    stats: Mapping[str, np.ndarray],
    label: np.ndarray,
    *,
    idx: Sequence[int] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The difficulty scores VoG is compared with, every one oriented higher = harder.

    Args:
        stats: per-checkpoint ``(K, N)`` arrays as in ``Extraction.stats`` (any subset of
            ``pred``, ``loss``, ``margin``, ``el2n``, ``msp``), checkpoints in training order.
        label: ``(N,)`` the labels the run trained on (every statistic is taken against them).
        idx: the checkpoints used, in training order (None = all); "final" is the last of them.

    Returns name -> ``(N,)`` float64, in :data:`BASELINES` order, only those whose statistic is
    present:

    - ``loss``: final cross-entropy on the label.
    - ``margin``: NEGATED final margin (label logit minus the largest other logit).
    - ``el2n``: :func:`el2n_score` over the first ``min(3, len(idx))`` selected checkpoints.
    - ``msp``: NEGATED final max softmax probability (low confidence = hard).
    - ``forgetting``: :func:`forgetting_events` of ``pred == label`` over the selected
      checkpoints (never learned = number of checkpoints).
    - ``aum``: NEGATED :func:`area_under_margin` (mean margin over the checkpoints).
    - ``datamap_confidence``: NEGATED mean ``p(label) = exp(-loss)`` (:func:`data_map`).
    - ``datamap_variability``: std of ``p(label)`` over the checkpoints (not negated: high
      variability = ambiguous = hard).
    - ``disagree``: 1.0 where the final prediction differs from the label, else 0.0.
    """
    label = np.asarray(label, dtype=np.int64)
    ks = {name: _per_checkpoint(v, name).shape for name, v in stats.items()}
    if len(set(ks.values())) > 1:
        raise ValueError(f"every statistic must have one (K, N) shape, got {ks}")
    if not ks:
        return {}
    k, n = next(iter(ks.values()))
    if label.shape != (n,):
        raise ValueError(f"label {label.shape} must be ({n},) like the statistics")
    idx = _checkpoints(k, idx)
    final = idx[-1]

    def stat(name: str) -> np.ndarray:
        return np.asarray(stats[name], dtype=np.float64)

    out: dict[str, np.ndarray] = {}
    if "loss" in stats:
        out["loss"] = stat("loss")[final]
    if "margin" in stats:
        out["margin"] = -stat("margin")[final]
    if "el2n" in stats:
        out["el2n"] = el2n_score(stat("el2n"), checkpoints=idx[:3])
    if "msp" in stats:
        out["msp"] = -stat("msp")[final]
    if "pred" in stats:
        correct = np.asarray(stats["pred"])[idx] == label[None, :]
        out["forgetting"] = forgetting_events(correct).astype(np.float64)
    if "margin" in stats:
        out["aum"] = -area_under_margin(stats["margin"], idx=idx)
    if "loss" in stats:
        confidence, variability = data_map(stats["loss"], idx=idx)
        out["datamap_confidence"] = -confidence
        out["datamap_variability"] = variability
    if "pred" in stats:
        out["disagree"] = (np.asarray(stats["pred"])[final] != label).astype(np.float64)
    return {name: out[name] for name in BASELINES if name in out}
