"""The paper's figures (Figs. 1, 5, 6, memorization, Table 1 as bars) and the catalogue of every
figure the ``figures`` stage draws for an audit: numpy arrays and tables in, figures out.

A leaf like :mod:`vogflow.figures`: no statistics and no files (the stage reads and saves).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vogflow.figures.curves import error_curves, plot_curves
from vogflow.figures.grids import lowest_highest, per_class_lowest_highest


def early_late(
    curves_early: Mapping[str, Mapping[str, Any]],
    curves_late: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "",
) -> Figure:
    """Early- and late-stage error per VoG decile side by side (Figs. 5, 8); curve format as in
    :func:`error_curves`. The paper's finding: high VoG flips from easy (early) to hard (late)."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, curves, name in zip(
        axes, (curves_early, curves_late), ("(a) Early", "(b) Late"), strict=True
    ):
        plot_curves(ax, list(curves.items()), "decile of the curve's VoG score (0 = lowest)")
        ax.set_title(f"{name}-stage VoG")
    axes[1].set_ylabel("")  # the y axis is shared; one label is enough
    if title:
        fig.suptitle(title)
    return fig


def histograms(
    scores_by_name: Mapping[str, np.ndarray],
    groups: np.ndarray,
    *,
    group_names: tuple[str, str] = ("clean", "shuffled"),
    title: str = "",
) -> Figure:
    """Overlaid density histograms of two groups, one panel per score (memorization, Sec. 4.1).

    scores_by_name: name -> (N,) scores (higher VoG = harder); groups (N,) bool, True = the
    second group (e.g. shuffled labels). Both groups share the bins of their panel.
    """
    groups = np.asarray(groups, dtype=bool)
    n = max(1, len(scores_by_name))
    fig = Figure(figsize=(3.2 * n, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    for ax, (name, scores) in zip(axes, scores_by_name.items(), strict=False):
        scores = np.asarray(scores, dtype=float)
        ok = np.isfinite(scores)
        edges = np.histogram_bin_edges(scores[ok], bins=30) if ok.any() else 30
        for member, label in zip((False, True), group_names, strict=True):
            vals = scores[ok & (groups == member)]
            if vals.size:
                ax.hist(vals, bins=edges, density=True, alpha=0.5, label=f"{label} (n={vals.size})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("score")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("density")
    if title:
        fig.suptitle(title)
    return fig


def toy(
    points: np.ndarray,
    labels: np.ndarray,
    vog: np.ndarray,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    grid_margin: np.ndarray,
    distance: np.ndarray,
    *,
    title: str = "",
) -> Figure:
    """The 2-D toy problem (Fig. 1): VoG per point with the boundary, and VoG vs distance.

    points (N,2), labels (N,), vog (N,) (higher = harder), distance (N,) to the boundary.
    grid_margin (Gy,Gx) is the model's margin with ``grid_margin[i, j]`` at
    ``(grid_x[j], grid_y[i])`` (``np.meshgrid`` order); its zero contour is the boundary.
    """
    points = np.asarray(points, dtype=float)
    labels = np.asarray(labels)
    margin = np.asarray(grid_margin, dtype=float)
    vog = np.asarray(vog, dtype=float)
    distance = np.asarray(distance, dtype=float)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)  # room between the colour bar and the right panel
    left, right = fig.subplots(1, 2)
    markers = "os^vD<>p*h"
    for i, c in enumerate(np.unique(labels)):
        m = labels == c
        sc = left.scatter(
            points[m, 0],
            points[m, 1],
            c=vog[m],
            cmap="viridis",
            vmin=np.nanmin(vog),
            vmax=np.nanmax(vog),
            s=18,
            marker=markers[i % len(markers)],
            edgecolors="none",
            label=f"class {c}",
        )
    # Without a sign change there is no zero level; matplotlib would only warn.
    if np.nanmin(margin) < 0 < np.nanmax(margin):
        left.contour(grid_x, grid_y, margin, levels=[0.0], colors="k", linewidths=1.5)
    if len(points):
        fig.colorbar(sc, ax=left, label="VoG (higher = harder)")
        # Colour encodes VoG, so the legend keys must show marker shape only.
        for handle in left.legend(fontsize=8, loc="best").legend_handles:
            handle.set_array(None)  # drop the colour mapping, or it overrides the grey
            handle.set_color("0.4")
    left.set_title("VoG per point; black line = decision boundary", fontsize=10)
    left.set_aspect("equal", adjustable="datalim")
    for i, c in enumerate(np.unique(labels)):
        m = labels == c
        right.scatter(
            distance[m],
            vog[m],
            s=12,
            alpha=0.7,
            marker=markers[i % len(markers)],
            label=f"class {c}",
        )
    right.set_xlabel("distance to decision boundary")
    right.set_ylabel("VoG (higher = harder)")
    right.set_title("VoG vs distance to the boundary", fontsize=10)
    right.grid(alpha=0.3)
    if len(points):
        right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def bars_with_errors(
    table: Mapping[str, tuple[float, float]],
    *,
    title: str = "",
    ylabel: str = "AUROC (%)",
    reference: Mapping[str, float] | None = None,
) -> Figure:
    """Horizontal bars of mean +- std per method (OoD table), top to bottom in ``table`` order.

    ``ylabel`` names the value axis, which is horizontal here. ``reference`` maps method names
    to published values, drawn as diamonds; names not in ``table`` are ignored.
    """
    names = list(table)
    means = np.array([table[n][0] for n in names], dtype=float)
    stds = np.array([table[n][1] for n in names], dtype=float)
    y = np.arange(len(names))
    fig = Figure(figsize=(6.5, 0.45 * len(names) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(y, means, xerr=np.nan_to_num(stds), color="tab:blue", alpha=0.75, capsize=3)
    for yi, m, s in zip(y, means, stds, strict=True):
        # Written inside the bar's left end so it never collides with the error bar or marker.
        ax.annotate(
            f"{m:.1f} ± {s:.1f}",
            (0, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color="white",
        )
    ref = [(i, reference[n]) for i, n in enumerate(names) if reference and n in reference]
    if ref:
        ri, rv = zip(*ref, strict=True)
        ax.plot(rv, ri, "D", color="tab:red", label="published", zorder=3)
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(ylabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def _curve(c: Mapping[str, Any]) -> dict[str, np.ndarray]:
    lo, hi = np.asarray(c["error_interval"], dtype=float).T
    return {"error": np.asarray(c["error"], dtype=float), "lo": lo, "hi": hi}


def audit_figures(
    dataset: Any,
    tables: Mapping[str, Any],
    deciles: Mapping[str, Any],
    stability: Mapping[str, Any],
    memorization: Any,
    ood: Any,
    published: Mapping[str, Mapping[str, float]],
    *,
    grid: int,
    classes: int,
    rankings: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str, Figure]]:
    """Every figure of the paper's kinds for one audited run, as ``(name, figure)``, one at a time
    so the caller saves and frees each before the next is drawn.

    ``tables``: split -> rankings table (splits without one are skipped); ``deciles``: the score
    stage's decile report; ``stability``: the stability report; ``memorization``: the memorization
    scores table (``index``, ``noisy`` and one column per score); ``ood``: the OoD summary table
    (one row per method); ``published``: the paper's Table 1 (``ood_table.paper_table1``). ``grid``:
    tiles per side of a grid; ``classes``: classes drawn per class. ``rankings``: split -> the
    audit's ranking (``vogflow.rankings.choice.Ranking``) of that split's table; each gets the first
    grids, ``audit_ranking_<split>`` (whole split) and ``audit_ranking_per_class_<split>``, ahead
    of the paper's VoG grids. Every tile names its example's index (``#<index>``).
    """
    k = grid**2
    rankings = rankings or {}
    # Grids need images; a 1-D (toy, tabular) dataset has none to show.
    for split, table in tables.items() if len(dataset.input_shape) == 3 else ():
        x = dataset.split(split).x
        images = dataset.denormalise(x) if x.ndim == 4 else x
        ids = table["index"].to_numpy()
        ranking = rankings.get(split)
        if ranking is not None:
            sides = (f"easiest by {ranking.name}", f"hardest by {ranking.name}")
            yield (
                f"audit_ranking_{split}",
                lowest_highest(
                    images,
                    ranking.values,
                    k=k,
                    labels=table["label"].to_numpy(),
                    class_names=dataset.classes,
                    ids=ids,
                    sides=sides,
                    title=f"{split}: ranked by {ranking.name}",
                    subtitle=f"({ranking.reason})",
                ),
            )
            yield (
                f"audit_ranking_per_class_{split}",
                per_class_lowest_highest(
                    images,
                    ranking.values,
                    table["label"].to_numpy(),
                    class_ids=list(range(min(classes, dataset.num_classes))),
                    class_names=dataset.classes,
                    k=k,
                    ids=ids,
                    sides=sides,
                    title=f"{split}: per class, ranked by {ranking.name}",
                    subtitle=f"({ranking.reason})",
                ),
            )
        for window in ("early", "late"):
            for mode in ("label", "pred"):
                col = f"vog_{window}_{mode}"
                labels = table["label" if mode == "label" else "pred"].to_numpy()
                yield (
                    f"grid_{split}_{window}_{mode}",
                    lowest_highest(
                        images,
                        table[col].to_numpy(),
                        k=k,
                        labels=labels,
                        class_names=dataset.classes,
                        ids=ids,
                        title=f"{split}: lowest and highest VoG ({window} window, {mode} mode)",
                    ),
                )
            yield (
                f"per_class_{split}_{window}",
                per_class_lowest_highest(
                    images,
                    table[f"vog_{window}_label"].to_numpy(),
                    table["label"].to_numpy(),
                    class_ids=list(range(min(classes, dataset.num_classes))),
                    class_names=dataset.classes,
                    k=k,
                    ids=ids,
                    title=f"{split}: per class, {window} window",
                ),
            )

    curves = deciles["curves"]
    if curves:  # empty when the score stage had no test split
        yield (
            "deciles_test",
            error_curves(
                # Each curve named after the rankings column it buckets.
                {
                    f"vog_{w}_{m}": _curve(curves[f"{w}_{m}"])
                    for w in ("all", "late")
                    for m in ("label", "pred")
                },
                title="Does test error rise with VoG? (final model)",
                xlabel="decile of the curve's VoG score (0 = lowest)",
            ),
        )
        yield (
            "early_late_test",
            early_late(
                {f"vog_early_{m}": _curve(curves[f"early_{m}"]) for m in ("label", "pred")},
                {f"vog_late_{m}": _curve(curves[f"late_{m}"]) for m in ("label", "pred")},
                title="Does high VoG flip from easy (early) to hard (late)? Test error per decile",
            ),
        )

    # The score and split the stability stage bucketed (its report names them).
    score, split = stability.get("score", "VoG"), stability.get("split", "test")
    for kind in ("seed", "batch_size"):
        yield (
            f"stability_{kind}",
            error_curves(
                {run: _curve(c) for run, c in stability[kind]["curves"].items()},
                title=f"Same curve across {kind.replace('_', ' ')}s? "
                f"(mean Spearman {stability[kind]['spearman']['mean']:.2f})",
                xlabel=f"decile of {score} on the {split} split (0 = lowest)",
            ),
        )

    scores = memorization.drop(columns=["noisy", "index"])
    yield (
        "memorization",
        histograms(
            {c: scores[c].to_numpy() for c in scores.columns},
            memorization["noisy"].to_numpy(),
            title="memorization: clean vs shuffled labels",
        ),
    )

    yield (
        "ood_auroc",
        bars_with_errors(
            {m: (r["auroc_mean"], r["auroc_std"]) for m, r in ood.iterrows()},
            reference={m: v["auroc_mean"] for m, v in published.items() if "auroc_mean" in v},
            title="OoD detection over corruptions (marks: published)",
        ),
    )
