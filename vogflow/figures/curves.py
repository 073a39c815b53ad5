"""Curves of the audit: error by VoG bin, two runs compared, and the scorecard chart.

A leaf module: numpy and matplotlib only, no statistics and no files. Every figure is a
free-standing ``Figure`` (never pyplot). Throughout, **higher VoG = harder example**.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

# ---------------------------------------------------------------------------------------------
# curves and plots


def plot_curves(ax: Any, curves: Sequence[tuple[str, Mapping[str, Any]]], xlabel: str) -> None:
    """Error per bucket for each ``(name, {"error","lo","hi"[,"style"]})`` with a shaded band."""
    n_buckets = 0
    for name, curve in curves:
        err = np.asarray(curve["error"], dtype=float)
        x = np.arange(err.size)
        n_buckets = max(n_buckets, err.size)
        style = curve.get("style")
        # ``style`` is either a format string ("o--") or a dict of line keyword arguments.
        if isinstance(style, str):
            fmt, kw = style, {}
        else:
            fmt, kw = "", {"marker": "o", **dict(style or {})}
        (line,) = ax.plot(x, err, fmt, label=name, **kw)
        lo, hi = curve.get("lo"), curve.get("hi")
        if lo is not None and hi is not None:
            lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(x, lo, hi, where=ok, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("error rate")
    if 0 < n_buckets <= 20:
        ax.set_xticks(np.arange(n_buckets))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)


def error_curves(
    curves: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "",
    xlabel: str = "VoG decile (0 = lowest)",
) -> Figure:
    """Error per VoG bucket for several curves (windows, label modes or seeds; Figs. 4, 6).

    Each curve: ``error`` (B,), ``lo``/``hi`` (B,) interval bounds (NaN = no band), optional
    ``style`` (format string or dict of line options). Bucket 0 holds the lowest (easiest) VoG.
    """
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    plot_curves(ax, list(curves.items()), xlabel)
    if title:
        ax.set_title(title)
    return fig


def compare_curves(
    curve_a: Mapping[str, Any],
    curve_b: Mapping[str, Any],
    *,
    names: tuple[str, str] = ("A", "B"),
    title: str = "",
) -> Figure:
    """Two error-per-decile curves overlaid (e.g. true vs predicted label, Fig. 12a)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    # A list, not a dict, so two curves with the same name are both drawn.
    plot_curves(ax, [(names[0], curve_a), (names[1], curve_b)], "VoG decile (0 = lowest)")
    if title:
        ax.set_title(title)
    return fig


def scorecard(
    rows: Mapping[str, Mapping[str, float]],
    *,
    panels: Sequence[tuple[str, str, float]],
    groups: Mapping[str, str] | None = None,
    marks: Mapping[str, str] | None = None,
    title: str = "",
) -> Figure:
    """Which score to trust: one row per score, top to bottom in ``rows`` order, one panel of
    horizontal bars per ``(key, axis label, reference)`` in ``panels``.

    ``rows``: name -> values; ``rows[name][key]`` is drawn as a bar with its value beside it (NaN =
    no bar, "n/a"), ``reference`` as a dashed line (chance or null). ``groups``: name -> group,
    one colour per group (in sorted order, with a legend; ``<group>, seed mean`` shares
    ``<group>``'s colour, hatched). ``marks``: name -> a note shown after the name (e.g.
    ``chosen``); a row whose note starts with ``chosen`` is bold.
    """
    names = list(rows)
    groups = dict(groups or {})
    marks = dict(marks or {})
    # Sorted, so colours and legend do not change with which score happens to rank first.
    order = sorted({groups.get(n, "") for n in names})
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    # A seed mean shares its single-run group's colour, so the pair reads as one family.
    family = list(dict.fromkeys(g.replace(", seed mean", "") for g in order))
    colour = {g: palette[family.index(g.replace(", seed mean", "")) % len(palette)] for g in order}
    y = np.arange(len(names))
    fig = Figure(figsize=(4.2 * len(panels) + 2.6, 0.24 * len(names) + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    for ax, (key, label, reference) in zip(axes, panels, strict=True):
        values = np.array([rows[n].get(key, np.nan) for n in names], dtype=float)
        for g in order:
            member = np.array([groups.get(n, "") == g for n in names])
            ax.barh(
                y[member],
                np.nan_to_num(values[member]),
                color=colour[g],
                alpha=0.8,
                hatch="//" if "seed mean" in g else None,
                edgecolor="white",
                lw=0,
                label=g or None,
            )
        for yi, v in zip(y, values, strict=True):
            text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
            # Beside the bar's end, on the side away from zero, so negative bars stay readable.
            left = not v < 0
            ax.annotate(
                text,
                (v if np.isfinite(v) else 0.0, yi),
                xytext=(3 if left else -3, 0),
                textcoords="offset points",
                va="center",
                ha="left" if left else "right",
                fontsize=6,
                color="0.3",
            )
        ax.axvline(reference, color="k", ls="--", lw=0.8)
        finite = values[np.isfinite(values)]
        lo = min(0.0, reference, finite.min(initial=0.0)) - 0.12
        ax.set_xlim(lo, max(1.0, finite.max(initial=0.0)) + 0.12)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    tick = [f"{n}  [{marks[n]}]" if n in marks else n for n in names]
    axes[0].set_yticks(y, tick, fontsize=7)
    for text, name in zip(axes[0].get_yticklabels(), names, strict=True):
        if marks.get(name, "").startswith("chosen"):
            text.set_fontweight("bold")
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # best (first) at the top
    if any(order):
        # Outside the panels: inside, it would hide the bars of whichever scores sort last.
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(order), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
