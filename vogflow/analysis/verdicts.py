"""Three-valued verdicts on the paper's claims that survive a rerun.

One job: judge a claim (an expected direction against a null value) from the main run's estimate,
its bootstrap interval over examples and the same statistic measured on each seed run, and say
``supported``, ``contradicted`` or ``inconclusive``; plus one- and two-sided p-values reported
together, so that a headline never shows a bare two-sided p (which is "significant" in either
direction).

Numbers in, plain JSON-able dicts out; numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vogflow.analysis.stats import DIRECTIONS, claim

VERDICTS = ("supported", "contradicted", "inconclusive")
_UP = ("increasing", "positive", "greater", "above")


def _direction(expected: str) -> bool:
    """True when the claim is ``measured > null``."""
    if expected not in DIRECTIONS:
        raise ValueError(f"unknown direction {expected!r}; valid: {', '.join(DIRECTIONS)}")
    return expected in _UP


def seed_interval(values: Sequence[float], *, confidence: float = 0.95) -> list[float] | None:
    """Where the statistic of another training run would fall, from the seed runs' values.

    With at least 3 finite values: the t prediction interval for one more run,
    ``mean +- t_{(1+c)/2, n-1} * sd * sqrt(1 + 1/n)`` (``sd`` with ddof 1). It is the spread of a
    single rerun, not the interval of the mean: the question is whether a rerun keeps the
    direction, and the interval of the mean shrinks past seeds that flip. With 2 values: their
    ``[min, max]``. With fewer: None.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    if v.size == 2:
        return [float(v.min()), float(v.max())]
    from scipy import stats as st

    n = v.size
    half = st.t.ppf((1 + confidence) / 2, n - 1) * v.std(ddof=1) * math.sqrt(1 + 1 / n)
    return [float(v.mean() - half), float(v.mean() + half)]


def _side(interval: Sequence[float] | None, null: float, up: bool) -> int:
    """+1 if the interval lies wholly on the expected side of ``null``, -1 if wholly on the
    opposite side, 0 if it touches or straddles the null or is missing/NaN."""
    if interval is None:
        return 0
    lo, hi = (float(x) for x in interval)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0
    if lo > null:
        return 1 if up else -1
    if hi < null:
        return -1 if up else 1
    return 0


def verdict(
    expected: str,
    measured: float,
    *,
    interval: Sequence[float] | None,
    per_seed: Mapping[str, float] | None = None,
    null: float = 0.0,
    confidence: float = 0.95,
    name: str = "",
) -> dict[str, Any]:
    """A paper claim judged against this data, training randomness included.

    Args:
        expected: the paper's direction (:data:`stats.DIRECTIONS`; ``increasing``, ``positive``,
            ``greater``, ``above`` mean ``> null``, the others ``< null``).
        measured: the statistic on the main run (or pooled over runs).
        interval: ``[lo, hi]`` bootstrap interval of ``measured`` over examples (None or NaN =
            unknown).
        per_seed: run name -> the same statistic measured on that training run (the main run
            included when it is one of them); empty or None = no seed runs.
        null, confidence, name: the null value, the seed interval's level, the statistic's name.

    The rule: ``supported`` only if the bootstrap interval lies wholly on the expected side of
    ``null`` AND, when there are at least 2 seed values, so does :func:`seed_interval` and every
    seed value; ``contradicted`` if all of them lie wholly on the opposite side; otherwise
    ``inconclusive`` (a claim that flips with the seed, or whose interval includes the null, is not
    decided by this data). With one seed value the bootstrap interval decides alone; without a
    usable bootstrap interval the verdict is ``inconclusive``.

    Returns :func:`stats.claim`'s record (``expected``, ``measured``, ``null``, ``holds``,
    ``statistic``, ``interval`` = the bootstrap interval, ``confident``) plus ``per_seed``,
    ``n_seeds``, ``seed_interval`` (None below 2 seeds), ``confidence``, ``verdict`` (one of
    :data:`VERDICTS`) and ``reason`` (one line).
    """
    up = _direction(expected)
    seeds = {str(k): float(v) for k, v in (per_seed or {}).items()}
    boot = None if interval is None else [float(interval[0]), float(interval[1])]
    out = claim(
        expected, measured, interval=None if boot is None else tuple(boot), null=null, name=name
    )
    out.setdefault("interval", None)
    spread = seed_interval(list(seeds.values()), confidence=confidence)
    finite = {run: v for run, v in seeds.items() if math.isfinite(v)}
    sides = {"bootstrap interval": _side(boot, null, up)}
    if spread is not None:
        sides["seed interval"] = _side(spread, null, up)
        sides.update({f"run {run}": _side([v, v], null, up) for run, v in finite.items()})

    if boot is None or not all(map(math.isfinite, boot)):
        decided, reason = "inconclusive", "no bootstrap interval"
    elif all(s == 1 for s in sides.values()):
        decided = "supported"
        reason = f"{' and '.join(_parts(sides))} on the expected side of {null:g}"
    elif all(s == -1 for s in sides.values()):
        decided = "contradicted"
        reason = f"{' and '.join(_parts(sides))} on the opposite side of {null:g}"
    else:
        decided = "inconclusive"
        against = [k for k, s in sides.items() if s == -1]
        straddle = [k for k, s in sides.items() if s == 0]
        parts = []
        if against:
            parts.append(f"{', '.join(against)} on the opposite side")
        if straddle:
            parts.append(f"{', '.join(straddle)} include(s) {null:g}")
        reason = "; ".join(parts)
    out.update(
        per_seed=seeds,
        n_seeds=len(finite),
        seed_interval=spread,
        confidence=float(confidence),
        verdict=decided,
        reason=reason,
    )
    return out


def _parts(sides: Mapping[str, int]) -> list[str]:
    parts = [k for k in sides if not k.startswith("run ")]
    runs = [k for k in sides if k.startswith("run ")]
    if runs:
        parts.append(f"all {len(runs)} seed runs")
    return parts


def p_values(t: float, dof: float, *, expected: str) -> dict[str, Any]:
    """One-sided (in the claimed direction) and two-sided p-values of a t statistic, together.

    ``t``: a statistic that is ``> 0`` when the estimate lies above the null (Welch's t of
    noisy minus clean, for instance); ``dof``: its degrees of freedom (``inf`` = a z statistic).
    ``expected``: the claimed direction (:data:`stats.DIRECTIONS`). Returns ``t``, ``dof``,
    ``alternative`` (``greater`` or ``less``), ``p_one_sided`` (the claim's alternative: small =
    evidence FOR the claimed direction; near 1 = the data lean the other way) and
    ``p_two_sided``; NaN p-values when ``t`` or ``dof`` is not usable.
    """
    up = _direction(expected)
    t, dof = float(t), float(dof)
    out: dict[str, Any] = {
        "t": t,
        "dof": dof,
        "alternative": "greater" if up else "less",
        "p_one_sided": float("nan"),
        "p_two_sided": float("nan"),
    }
    if math.isnan(t) or math.isnan(dof) or dof <= 0:
        return out
    from scipy import stats as st

    out["p_one_sided"] = float(st.t.sf(t, dof) if up else st.t.cdf(t, dof))
    out["p_two_sided"] = float(min(1.0, 2 * st.t.sf(abs(t), dof)))
    return out
