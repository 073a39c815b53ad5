"""Figures: every plot renders to a valid PNG and shows the examples, curves and marks it claims."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure, SubFigure
from matplotlib.image import AxesImage
from matplotlib.text import Text

from vogflow import figures as F
from vogflow.figures import curves as C
from vogflow.figures import grids as G
from vogflow.paper import figures as P

N, K_CLASSES = 30, 3
NAMES = ["zero", "one", "two"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.random((N, 1, 8, 8)),
        # Distinct scores spanning several decades, like real VoG, so the order is unambiguous.
        "scores": rng.permutation(np.logspace(-6, -2, N)),
        "classes": np.arange(N) % K_CLASSES,
    }


def _curve(slope: float, bins: int = 10) -> dict[str, np.ndarray]:
    err = np.clip(0.1 + slope * np.linspace(0, 0.5, bins), 0, 1)
    return {"error": err, "lo": err - 0.05, "hi": err + 0.05}


# ---------------------------------------------------------------------------------------------
# helpers


def _save_and_check(fig: Figure, tmp_path: Path, name: str = "fig.png", dpi: int = 100) -> Path:
    """Save through ``F.save``; assert a real PNG of exactly the figure's size appeared."""
    want = tuple(int(round(v * dpi)) for v in fig.get_size_inches())
    path = F.save(fig, tmp_path / "out" / name, dpi=dpi)
    assert path == tmp_path / "out" / name
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    size = struct.unpack(">II", data[16:24])
    assert size == want
    assert 100 <= min(size) and max(size) <= 5000
    # The atomic write leaves no temporary file beside the PNG.
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return path


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def _subfigs(fig: Figure | SubFigure) -> list[SubFigure]:
    out = []
    for sub in fig.subfigs:
        out += [sub, *_subfigs(sub)]
    return out


def _grid(fig: Figure, heading: str) -> Axes:
    """The one Axes of the one subfigure whose title contains ``heading``."""
    [sub] = [s for s in _subfigs(fig) if any(heading in t.get_text() for t in s.texts)]
    [ax] = sub.axes
    return ax


def _tiles(ax: Axes) -> list[tuple[AxesImage, str]]:
    """Each tile of a grid Axes with the caption centred just above it ("" if none), in reading
    order by position (top row first, left to right), not by the order they were drawn in."""
    images = sorted(ax.images, key=lambda im: (-im.get_extent()[3], im.get_extent()[0]))
    captions = {id(im): [] for im in images}
    for text in ax.texts:
        x, y = text.get_position()
        [im] = [
            im
            for im in images
            if np.isclose(x, np.mean(im.get_extent()[:2]))
            and 0 < y - im.get_extent()[3] < G._CAPTION_LINE_IN
        ]
        captions[id(im)].append(text.get_text())
    assert all(len(c) <= 1 for c in captions.values())  # one caption per tile at most
    return [(im, "".join(captions[id(im)])) for im in images]


def _shown(tiles: list[tuple[AxesImage, str]]) -> np.ndarray:
    return np.stack([np.asarray(im.get_array()) for im, _ in tiles])


def _captions(tiles: list[tuple[AxesImage, str]]) -> list[str]:
    return [caption for _, caption in tiles]


# ---------------------------------------------------------------------------------------------
# selection


def test_lowest_highest_indices_match_argsort(data):
    scores = data["scores"]
    lo, hi = G.lowest_highest_indices(scores, 7)
    np.testing.assert_array_equal(lo, np.argsort(scores)[:7])
    np.testing.assert_array_equal(hi, np.argsort(scores)[::-1][:7])
    assert scores[lo].max() < scores[hi].min()


def test_lowest_highest_indices_short_nan_and_ties():
    # Three finite scores for two grids of 25: one each, never the same example in both.
    lo, hi = G.lowest_highest_indices(np.array([3.0, np.nan, 1.0, 2.0]), 25)
    np.testing.assert_array_equal(lo, [2])
    np.testing.assert_array_equal(hi, [0])
    lo, hi = G.lowest_highest_indices(np.arange(36.0), 25)
    assert len(lo) == len(hi) == 18 and not set(lo) & set(hi)
    # Ties keep index order on both ends.
    lo, hi = G.lowest_highest_indices(np.array([1.0, 1.0, 0.0, 2.0, 2.0]), 2)
    np.testing.assert_array_equal(lo, [2, 0])
    np.testing.assert_array_equal(hi, [3, 4])
    lo, hi = G.lowest_highest_indices(np.array([]), 5)
    assert lo.size == 0 and hi.size == 0


# ---------------------------------------------------------------------------------------------
# tile grids


def test_image_grid_grey_and_rgb(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.random((7, 8, 8))
    fig = G.image_grid(grey, ncols=3, titles=[f"t{i}" for i in range(7)], title="digits")
    [ax] = fig.axes
    tiles = _tiles(ax)
    assert len(tiles) == 7
    assert all(im.get_cmap().name == "gray" for im, _ in tiles)
    assert not any(ax.axison for ax in fig.axes)  # no ticks or frames on any tile
    np.testing.assert_allclose(_shown(tiles), grey)
    assert _captions(tiles) == [f"t{i}" for i in range(7)]
    assert "digits" in _texts(fig)
    _save_and_check(fig, tmp_path)

    rgb = rng.random((2, 3, 224, 224))
    fig = G.image_grid(rgb)
    [ax] = fig.axes
    np.testing.assert_allclose(_shown(_tiles(ax)), np.moveaxis(rgb, 1, -1))
    _save_and_check(fig, tmp_path, "rgb.png")


def test_image_grid_rejects_bad_shape():
    with pytest.raises(ValueError, match="images must be"):
        G.image_grid(np.zeros((2, 5, 8, 8)))


def test_lowest_highest_shows_exactly_the_extremes(data, tmp_path):
    images, scores, classes = data["images"], data["scores"], data["classes"]
    fig = G.lowest_highest(images, scores, k=9, labels=classes, class_names=NAMES, title="Whole")
    order = np.argsort(scores)
    for heading, idx in (("lowest", order[:9]), ("highest", order[::-1][:9])):
        tiles = _tiles(_grid(fig, heading))
        np.testing.assert_allclose(_shown(tiles), images[idx, 0])
        assert _captions(tiles) == [f"{NAMES[classes[i]]}\n{scores[i]:.3g}" for i in idx]
    assert "Whole" in _texts(fig)
    _save_and_check(fig, tmp_path)


def test_a_ranking_grid_names_each_example_and_why_the_score(data, tmp_path):
    images, scores, classes = data["images"], data["scores"], data["classes"]
    ids = np.arange(len(scores)) + 100  # indices need not be row positions
    fig = G.lowest_highest(
        images,
        scores,
        k=4,
        labels=classes,
        class_names=NAMES,
        ids=ids,
        sides=("easiest by hard_aum", "hardest by hard_aum"),
        title="test: ranked by hard_aum",
        subtitle="(the single-run default: " + "measured on three datasets " * 6 + ")",
    )
    order = np.argsort(scores)
    for heading, idx in (("easiest by hard_aum", order[:4]), ("hardest by", order[::-1][:4])):
        tiles = _tiles(_grid(fig, heading))
        np.testing.assert_allclose(_shown(tiles), images[idx, 0])
        want = [f"#{ids[i]} {NAMES[classes[i]]}\n{scores[i]:.3g}" for i in idx]
        assert _captions(tiles) == want
    texts = _texts(fig)
    assert "test: ranked by hard_aum" in texts
    # The reason is wrapped to the figure's width, not cut off.
    [why] = [t for t in texts if t.startswith("(the single-run default")]
    assert why.count("\n") >= 1 and why.replace("\n", " ").count("measured") == 6
    _save_and_check(fig, tmp_path)


def test_lowest_highest_fewer_than_k(data, tmp_path):
    fig = G.lowest_highest(data["images"][:7], data["scores"][:7], k=25)
    # Seven examples: three easiest and three hardest, the middle one in neither.
    assert len(_tiles(_grid(fig, "lowest"))) == 3 and len(_tiles(_grid(fig, "highest"))) == 3
    _save_and_check(fig, tmp_path)


def test_per_class_rows_hold_that_class_extremes(data, tmp_path):
    images, scores, classes = data["images"], data["scores"], data["classes"]
    fig = G.per_class_lowest_highest(
        images, scores, classes, class_ids=[2, 0], class_names=NAMES, k=4, title="Per class"
    )
    for c in (2, 0):
        members = np.flatnonzero(classes == c)
        order = members[np.argsort(scores[members])]
        for heading, idx in (("lowest", order[:4]), ("highest", order[::-1][:4])):
            tiles = _tiles(_grid(fig, f"{NAMES[c]}: {heading}"))
            np.testing.assert_allclose(_shown(tiles), images[idx, 0])
    assert not any(NAMES[1] in t for t in _texts(fig))
    assert "Per class" in _texts(fig)
    _save_and_check(fig, tmp_path)


def test_tile_grids_keep_tile_size_and_captions_clear(data):
    # Class 0 has 20 members and class 1 only 5, so class 1's grids are short (two each: the
    # easiest and the hardest never share an example).
    classes = np.r_[np.zeros(20, int), np.ones(5, int), np.full(5, 2)]
    fig = G.per_class_lowest_highest(
        data["images"], data["scores"], classes, class_ids=[0, 1], class_names=NAMES, k=9
    )
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    grids = {}
    for name in ("zero: lowest", "zero: highest", "one: lowest"):
        [sub] = [s for s in _subfigs(fig) if any(name in t.get_text() for t in s.texts)]
        ax = _grid(fig, name)
        tiles = [im.get_window_extent(renderer) for im, _ in _tiles(ax)]
        caps = [t.get_window_extent(renderer) for t in ax.texts]
        [title] = [t.get_window_extent(renderer) for t in sub.texts]
        grids[name] = (sub, tiles)
        assert len(tiles) == len(caps) == (2 if name.startswith("one") else 9)
        # Square tiles of about the nominal size, never overlapping.
        for box in tiles:
            assert box.width == pytest.approx(box.height, abs=1)
            assert 0.95 * G._TILE_IN <= box.width / fig.dpi <= G._TILE_IN
        assert not any(a.overlaps(b) for i, a in enumerate(tiles) for b in tiles[i + 1 :])
        # Captions sit inside the figure, off every tile, off each other and below the title.
        assert not any(c.overlaps(box) for c in caps for box in tiles)
        assert not any(a.overlaps(b) for i, a in enumerate(caps) for b in caps[i + 1 :])
        assert not any(c.overlaps(title) for c in caps)
        assert all(fig.bbox.contains(c.x0, c.y0) and fig.bbox.contains(c.x1, c.y1) for c in caps)

    def first(name):
        sub, tiles = grids[name]
        return tiles[0], sub.bbox.y1 - tiles[0].y1

    # A short grid keeps the tile size and offset below its title of a full one.
    (full, full_top), (short, short_top) = first("zero: lowest"), first("one: lowest")
    assert (short.width, short_top) == pytest.approx((full.width, full_top), abs=1)
    # The two grids of a pair are further apart than tiles within a grid, so they read as two.
    low, high = grids["zero: lowest"][1], grids["zero: highest"][1]
    assert high[0].x0 - low[2].x1 > 1.5 * (low[1].x0 - low[0].x1)


def test_movers_grid_captions(data, tmp_path):
    fig = G.movers_grid(
        data["images"][:3],
        np.array([1, 5, 9]),
        np.array([20, 2, 9]),
        labels=np.array([0, 2, 1]),
        class_names=NAMES,
        title="Movers",
    )
    [ax] = fig.axes
    assert _captions(_tiles(ax)) == ["zero\n1 -> 20", "two\n5 -> 2", "one\n9 -> 9"]
    assert "Movers" in _texts(fig)
    _save_and_check(fig, tmp_path)


# ---------------------------------------------------------------------------------------------
# curves and plots


def test_error_curves_lines_bands_legend(tmp_path):
    nan_band = {**_curve(0.5), "lo": np.full(10, np.nan), "hi": np.full(10, np.nan)}
    curves = {"all": _curve(1.0), "last 3": {**_curve(0.8), "style": "s--"}, "no band": nan_band}
    fig = C.error_curves(curves, title="Error by decile")
    [ax] = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == list(curves)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), curves["all"]["error"])
    assert ax.get_lines()[1].get_linestyle() == "--"
    # One shaded band per curve with finite bounds; the all-NaN curve gets none.
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
    assert ax.get_ylim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    assert ax.get_title() == "Error by decile"
    assert ax.get_xlabel() == "VoG decile (0 = lowest)"
    _save_and_check(fig, tmp_path)


def test_early_late_two_panels(tmp_path):
    fig = P.early_late({"s0": _curve(-1.0)}, {"s0": _curve(1.0), "s1": _curve(0.9)}, title="EL")
    early, late = fig.axes
    assert "Early" in early.get_title() and "Late" in late.get_title()
    assert len(early.get_lines()) == 1 and len(late.get_lines()) == 2
    # Early: high VoG is easy (falling); late: high VoG is hard (rising).
    assert early.get_lines()[0].get_ydata()[-1] < early.get_lines()[0].get_ydata()[0]
    assert "EL" in _texts(fig)
    _save_and_check(fig, tmp_path)


def test_compare_curves_keeps_both_even_with_equal_names(tmp_path):
    fig = C.compare_curves(_curve(1.0), _curve(0.5), names=("same", "same"), title="Cmp")
    [ax] = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["same", "same"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), _curve(0.5)["error"])
    _save_and_check(fig, tmp_path)


def test_histograms_one_panel_per_score_densities(tmp_path):
    rng = np.random.default_rng(2)
    shuffled = rng.random(200) < 0.2
    scores = {"VoG": rng.normal(size=200) + 2 * shuffled, "loss": rng.normal(size=200)}
    fig = P.histograms(scores, shuffled, title="Memorization")
    assert [ax.get_title() for ax in fig.axes] == ["VoG", "loss"]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"clean (n={(~shuffled).sum()})", f"shuffled (n={shuffled.sum()})"]
    # Each group's bars integrate to 1 (density), and both groups share the same bins.
    bars = [ax.containers[0].patches, ax.containers[1].patches]
    for patches in bars:
        assert sum(p.get_height() * p.get_width() for p in patches) == pytest.approx(1.0)
    assert [p.get_x() for p in bars[0]] == [p.get_x() for p in bars[1]]
    assert "Memorization" in _texts(fig)
    _save_and_check(fig, tmp_path)


def _toy_inputs(offset: float = 0.5):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(60, 2))
    labels = (points[:, 0] > offset).astype(int)
    distance = np.abs(points[:, 0] - offset)
    # Asymmetric grid (different x and y ranges and sizes) so a transposed margin would show.
    gx, gy = np.linspace(-3, 3, 41), np.linspace(-2, 4, 31)
    margin = np.meshgrid(gx, gy)[0] - offset
    return points, labels, np.exp(-distance), gx, gy, margin, distance


def test_toy_draws_boundary_where_margin_is_zero(tmp_path):
    points, labels, vog, gx, gy, margin, distance = _toy_inputs()
    fig = P.toy(points, labels, vog, gx, gy, margin, distance, title="Toy problem")
    left = fig.axes[0]
    [contour] = [c for c in left.collections if isinstance(c, ContourSet)]
    assert list(contour.levels) == [0.0]
    segs = np.concatenate(contour.allsegs[0])
    np.testing.assert_allclose(segs[:, 0], 0.5, atol=1e-9)  # the line x = 0.5
    assert np.ptp(segs[:, 1]) == pytest.approx(6.0)  # spanning the y grid
    right = fig.axes[1]  # fig.axes[-1] is the colour bar
    offsets = np.concatenate([c.get_offsets() for c in right.collections])
    assert offsets.shape == (60, 2)
    assert "Toy problem" in _texts(fig)
    _save_and_check(fig, tmp_path)


def test_toy_without_sign_change_draws_no_boundary():
    points, labels, vog, gx, gy, margin, distance = _toy_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = P.toy(points, labels, vog, gx, gy, np.abs(margin) + 1.0, distance)
    assert not any(isinstance(c, ContourSet) for c in fig.axes[0].collections)


def test_bars_with_errors_order_values_and_reference(tmp_path):
    table = {"VoG": (76.2, 1.3), "ODIN": (60.1, 2.0), "MSP": (55.0, 0.5)}
    fig = P.bars_with_errors(table, title="OoD", reference={"VoG": 77.0, "other": 1.0})
    [ax] = fig.axes
    [bars] = [c.patches for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_width() for b in bars] == [76.2, 60.1, 55.0]
    # Listed top to bottom: the first method sits highest on screen.
    assert ax.get_yticklabels()[0].get_text() == "VoG"
    assert ax.yaxis_inverted()
    [marker] = [line for line in ax.get_lines() if line.get_label() == "published"]
    np.testing.assert_allclose(marker.get_xydata(), [[77.0, 0.0]])
    assert ax.get_xlabel() == "AUROC (%)"
    assert {"OoD", "76.2 ± 1.3"} <= set(_texts(fig))
    _save_and_check(fig, tmp_path)


# ---------------------------------------------------------------------------------------------
# saving and module hygiene


def test_save_releases_figure_and_overwrites(tmp_path):
    fig = C.error_curves({"a": _curve(1.0)})
    path = _save_and_check(fig, tmp_path, dpi=50)
    assert fig.axes == []  # released once written
    _save_and_check(C.error_curves({"a": _curve(-1.0)}), tmp_path, dpi=80)
    assert path.exists()


@pytest.mark.integration
def test_module_imports_no_heavy_or_global_plotting_state():
    # A fresh interpreter: this test process may already have loaded these for other tests.
    code = (
        "import sys, vogflow.figures, vogflow.figures.curves, vogflow.figures.grids, "
        "vogflow.paper.figures; "
        "print([m for m in ('torch', 'mlflow', 'pandas', 'matplotlib.pyplot') if m in sys.modules])"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
