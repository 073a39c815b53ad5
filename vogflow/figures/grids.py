"""Image grids of the audit: the lowest- and highest-VoG examples, overall, per class and the
movers between two runs.

A leaf module: numpy and matplotlib only, no statistics and no files. Every figure is a
free-standing ``Figure`` (never pyplot), so figures do not leak global state between calls or
threads. Throughout, **higher VoG = harder example**.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure, SubFigure

# Tile-grid geometry in inches: a 1-inch tile is 100 px at the default dpi, big enough to read an
# 8x8 digit and a fair thumbnail of a 224x224 image.
_TILE_IN = 1.0
_GAP_IN = 0.08
_CAPTION_LINE_IN = 0.14
_TITLE_IN = 0.4
_SUBTITLE_LINE_IN = 0.16
_CAPTION_PT = 7
# Blank share of a grid's width on each side, wider than the gap between tiles, so the two grids
# of a side-by-side pair read as two.
_SIDE_MARGIN = 0.02
_SIDE_TITLES = ("lowest VoG (easiest)", "highest VoG (hardest)")


# ---------------------------------------------------------------------------------------------
# selection (pure, testable)


def lowest_highest_indices(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` lowest and ``k`` highest finite ``scores`` (N,).

    Returns ``(lowest, highest)``: ``lowest`` in ascending score order (easiest first),
    ``highest`` in descending order (hardest first). Ties keep index order. NaN scores are never
    selected; with fewer than ``k`` finite scores both hold all of them, so the two sets overlap
    whenever fewer than ``2k`` exist.
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(scores[finite], kind="stable")]
    k = max(0, min(int(k), order.size // 2))
    # Sort negated scores (not the reversed ascending order) so ties stay in index order.
    desc = finite[np.argsort(-scores[finite], kind="stable")]
    return order[:k], desc[:k]


# ---------------------------------------------------------------------------------------------
# tile grids


def _to_hwc(images: np.ndarray) -> np.ndarray:
    """(n,C,H,W) with C in {1,3}, (n,H,W,C) or (n,H,W) -> (n,H,W) grey or (n,H,W,3), in [0,1]."""
    images = np.asarray(images, dtype=float)
    if images.ndim == 4 and images.shape[1] in (1, 3):
        images = np.moveaxis(images, 1, -1)
    elif not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise ValueError(
            f"images must be (n,C,H,W) with C in {{1,3}} or (n,H,W); got {images.shape}"
        )
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return np.clip(np.nan_to_num(images), 0.0, 1.0)


def _name(label: Any, class_names: Sequence[str] | Mapping[Any, str] | None) -> str:
    if class_names is None:
        return str(label)
    try:
        return str(class_names[label])
    except (IndexError, KeyError, TypeError):
        return str(label)


def _captions(
    idx: np.ndarray,
    scores: np.ndarray | None,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    ids: np.ndarray | None = None,
) -> list[str]:
    """Per tile: ``#<id>`` (where ``ids`` is given: the example's index, to find it again) and
    its label name on one line, then its score."""
    out = []
    for i in idx:
        parts = []
        head = [] if ids is None else [f"#{np.asarray(ids)[i].item()}"]
        if labels is not None:
            head.append(_name(np.asarray(labels)[i].item(), class_names))
        if head:
            parts.append(" ".join(head))
        if scores is not None:
            parts.append(f"{float(scores[i]):.3g}")
        out.append("\n".join(parts))
    return out


def _grid_inches(n_tiles: int, ncols: int, caption_lines: int) -> tuple[int, float, float]:
    """(nrows, width, height) in inches of one tile grid including its title strip."""
    nrows = max(1, math.ceil(n_tiles / ncols))
    cell_h = _TILE_IN + _GAP_IN + caption_lines * _CAPTION_LINE_IN
    return nrows, ncols * (_TILE_IN + _GAP_IN), nrows * cell_h + _TITLE_IN


def _draw_tiles(
    host: Figure | SubFigure,
    images: np.ndarray,
    captions: Sequence[str] | None,
    *,
    ncols: int,
    title: str,
    caption_lines: int,
    height_in: float,
) -> None:
    """Fill ``host`` (a figure or subfigure ``height_in`` tall) with an image grid and a title.

    Tiles sit at fixed offsets in inches from the top of ``host``, so a short grid (fewer rows
    than ``height_in`` holds) keeps the tile size and spacing of its full-size neighbours.
    """
    cap_in = caption_lines * _CAPTION_LINE_IN
    width_in = ncols * (_TILE_IN + _GAP_IN)
    # The side margins are taken from tiles and gaps alike, never added: a one-column grid, whose
    # margins fit in its gap, keeps its tile size and is centred instead.
    span = ncols * _TILE_IN + (ncols - 1) * _GAP_IN
    scale = min(1.0, (1 - 2 * _SIDE_MARGIN) * width_in / span)
    tile, pitch_x = scale * _TILE_IN, scale * (_TILE_IN + _GAP_IN)
    pitch_y = _TILE_IN + _GAP_IN + cap_in
    x0 = (width_in - scale * span) / 2
    # One Axes per grid with inches as data units: an Axes per tile (its ticks and title layout)
    # made the tile grids the slowest part of the figures stage.
    ax = host.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    # Fixed limits before any imshow, or each extent would autoscale the view to that one tile.
    ax.set_xlim(0.0, width_in)
    ax.set_ylim(0.0, height_in)
    ax.set_aspect("equal")
    # A 2-point gap keeps a caption off its tile yet inside the caption strip.
    pad_in = 2 / 72
    for j, img in enumerate(images):
        row, col = divmod(j, ncols)
        left = x0 + col * pitch_x
        # A shrunk tile sits in the middle of its full-size slot, as the rows are not shrunk.
        top = height_in - _TITLE_IN - cap_in - row * pitch_y - (_TILE_IN - tile) / 2
        ax.imshow(
            img,
            cmap="gray" if img.ndim == 2 else None,
            vmin=0.0,
            vmax=1.0,
            extent=(left, left + tile, top - tile, top),
        )
        if captions is not None and captions[j]:
            ax.text(
                left + tile / 2,
                top + pad_in,
                captions[j],
                fontsize=_CAPTION_PT,
                ha="center",
                va="bottom",
                linespacing=1.0,
            )
    if title:
        host.suptitle(title, fontsize=10, y=1.0 - 0.05 / height_in, va="top")


def image_grid(
    images: np.ndarray,
    *,
    ncols: int = 5,
    titles: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """Plain grid of ``images`` (n,C,H,W) with C in {1,3}, or (n,H,W); values in [0,1].

    One-channel images use a grey colour map; ``titles`` (n,) caption the tiles.
    """
    hwc = _to_hwc(images)
    ncols = max(1, min(ncols, len(hwc)))
    lines = max((t.count("\n") + 1 for t in titles or [] if t), default=0)
    _, w, h = _grid_inches(len(hwc), ncols, lines)
    fig = Figure(figsize=(w, h))
    _draw_tiles(fig, hwc, titles, ncols=ncols, title=title, caption_lines=lines, height_in=h)
    return fig


def _titled(
    width_in: float, body_in: float, title: str, subtitle: str = ""
) -> tuple[Figure, Figure | SubFigure]:
    """A figure ``body_in`` tall plus, when titled, a title strip above (and under the title a
    smaller ``subtitle``, wrapped to the width); returns (fig, body)."""
    if not title:
        fig = Figure(figsize=(width_in, body_in))
        return fig, fig
    # About 15 characters of the 8-point subtitle per inch of width.
    lines = textwrap.wrap(subtitle, width=max(20, int(width_in * 15))) if subtitle else []
    head_in = _TITLE_IN + len(lines) * _SUBTITLE_LINE_IN
    fig = Figure(figsize=(width_in, body_in + head_in))
    # The title gets its own strip so it can never overlap the grid titles below it.
    head, body = fig.subfigures(2, 1, height_ratios=[head_in, body_in])
    head.suptitle(title, fontsize=12, y=1 - 0.5 * _TITLE_IN / head_in, va="center")
    if lines:
        head.text(
            0.5,
            0.5 * _SUBTITLE_LINE_IN / head_in,
            "\n".join(lines),
            fontsize=8,
            ha="center",
            va="bottom",
        )
    return fig, body


def _paired_grids(
    fig: Figure,
    rows: list[tuple[str, np.ndarray, list[str], np.ndarray, list[str]]],
    *,
    ncols: int,
    caption_lines: int,
    grid_h: float,
    sides: tuple[str, str] = _SIDE_TITLES,
) -> None:
    """One row of subfigures per ``(row_title, low_imgs, low_caps, high_imgs, high_caps)``;
    ``sides`` titles the low and the high grid."""
    subs = fig.subfigures(len(rows), 2, squeeze=False)
    for (row_title, lo_img, lo_cap, hi_img, hi_cap), pair in zip(rows, subs, strict=True):
        prefix = f"{row_title}: " if row_title else ""
        for sub, img, cap, side in zip(
            pair, (lo_img, hi_img), (lo_cap, hi_cap), sides, strict=True
        ):
            _draw_tiles(
                sub,
                img,
                cap,
                ncols=ncols,
                title=prefix + side,
                caption_lines=caption_lines,
                height_in=grid_h,
            )


def lowest_highest(
    images: np.ndarray,
    scores: np.ndarray,
    *,
    k: int = 25,
    title: str = "",
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    ids: np.ndarray | None = None,
    sides: tuple[str, str] = _SIDE_TITLES,
    subtitle: str = "",
) -> Figure:
    """The ``k`` lowest- and ``k`` highest-VoG examples of the whole set, side by side (Fig. 7).

    images (N,C,H,W) or (N,H,W) in [0,1] (only the rows shown are read: a lazy view of a streamed
    split will do); scores (N,), higher VoG = harder; labels (N,) optional
    class ids named through ``class_names``. Grids are ``ceil(sqrt(k))`` wide (5x5 for k=25);
    each tile is captioned with ``#<id>`` (``ids`` (N,), the examples' indices, if given), its
    label name (if given) and score. With N < k each grid shows all N. ``sides``: the two grids'
    titles (any score, not only VoG, can be shown); ``subtitle``: smaller text under the title
    (why this score).
    """
    lo, hi = lowest_highest_indices(scores, k)
    ncols = max(1, math.ceil(math.sqrt(k)))
    lines = 1 + (labels is not None or ids is not None)
    _, w, h = _grid_inches(len(lo), ncols, lines)
    fig, host = _titled(2 * w, h, title, subtitle)
    _paired_grids(
        host,
        [
            (
                "",
                _to_hwc(images[lo]),
                _captions(lo, scores, labels, class_names, ids),
                _to_hwc(images[hi]),
                _captions(hi, scores, labels, class_names, ids),
            )
        ],
        ncols=ncols,
        caption_lines=lines,
        grid_h=h,
        sides=sides,
    )
    return fig


def per_class_lowest_highest(
    images: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    *,
    class_ids: Sequence[int],
    class_names: Sequence[str] | Mapping[Any, str],
    k: int = 25,
    title: str = "",
    ids: np.ndarray | None = None,
    sides: tuple[str, str] = _SIDE_TITLES,
    subtitle: str = "",
) -> Figure:
    """One row per class in ``class_ids``: its ``k`` lowest and ``k`` highest VoG (Figs. 2, 3).

    images (N,C,H,W) or (N,H,W) in [0,1]; scores (N,), higher VoG = harder; classes (N,) the
    class id of each example; ``class_names[c]`` names class ``c``. Tiles carry the score, and
    ``#<id>`` where ``ids`` (N,) is given; ``sides`` titles the two grids of a row.
    """
    lines = 1 + (ids is not None)
    scores = np.asarray(scores, dtype=float)
    classes = np.asarray(classes)
    ncols = max(1, math.ceil(math.sqrt(k)))
    rows = []
    for c in class_ids:
        members = np.flatnonzero(classes == c)
        lo, hi = (members[i] for i in lowest_highest_indices(scores[members], k))
        name = _name(c, class_names)
        rows.append(
            (
                name,
                _to_hwc(images[lo]),
                _captions(lo, scores, ids=ids),
                _to_hwc(images[hi]),
                _captions(hi, scores, ids=ids),
            )
        )
    # All rows share the height of the fullest grid so they line up; no taller than needed.
    slots = max((len(r[1]) for r in rows), default=1)
    _, w, h = _grid_inches(slots, ncols, lines)
    fig, host = _titled(2 * w, h * max(1, len(rows)), title, subtitle)
    if rows:
        _paired_grids(host, rows, ncols=ncols, caption_lines=lines, grid_h=h, sides=sides)
    return fig


def movers_grid(
    images: np.ndarray,
    rank_a: np.ndarray,
    rank_b: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    title: str = "",
) -> Figure:
    """Examples whose rank moved between two rankings, captioned ``"rank_a -> rank_b"``.

    images (n,C,H,W) or (n,H,W) in [0,1], already the selected movers; rank_a, rank_b (n,)
    their ranks under each ranking (a higher VoG rank = harder); labels (n,) optional class ids.
    """
    idx = np.arange(len(images))
    names = _captions(idx, None, labels, class_names) if labels is not None else [""] * len(idx)
    moves = [f"{int(a)} -> {int(b)}" for a, b in zip(rank_a, rank_b, strict=True)]
    titles = [f"{n}\n{m}" if n else m for n, m in zip(names, moves, strict=True)]
    return image_grid(images, ncols=5, titles=titles, title=title)
