"""The MNIST-C corruptions: shapes, ranges, seeding, what each does, and reading MNIST-C files."""

from __future__ import annotations

import numpy as np
import pytest

from vogflow.config import paper as config
from vogflow.errors import ConfigError, DataError
from vogflow.paper.corruptions import CORRUPTIONS, MNIST_C_NAMES, corrupt, load_mnist_c

# Corruptions that draw nothing at random; the rest must depend on the seed.
DETERMINISTIC = {"scale", "brightness", "stripe", "canny_edges"}
RANDOM = sorted(set(config.CORRUPTIONS) - DETERMINISTIC)
N = 12


def _digits8() -> np.ndarray:
    """sklearn's 8x8 digits in [0, 1], as (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:N] / 16.0)[:, None]


def _mnist28() -> np.ndarray:
    """MNIST-like (N, 28, 28): the 8x8 digits enlarged to 20x20 and centred on a black field."""
    from skimage.transform import resize

    digits = _digits8()[:, 0]
    out = np.zeros((N, 28, 28))
    out[:, 4:24, 4:24] = np.clip(resize(digits, (N, 20, 20), order=1), 0.0, 1.0)
    return out


def _rgb32() -> np.ndarray:
    """(N, 3, 32, 32) colour scenes: a gradient background with a coloured disc and square."""
    yy, xx = np.mgrid[:32, :32] / 31.0
    out = np.empty((N, 3, 32, 32))
    for i in range(N):
        disc = (xx - 0.3 - 0.03 * i) ** 2 + (yy - 0.6) ** 2 < (0.1 + 0.01 * i) ** 2
        square = (np.abs(xx - 0.7) < 0.12) & (np.abs(yy - 0.3 + 0.02 * i) < 0.12)
        out[i, 0] = np.where(disc, 0.9, 0.2 + 0.5 * xx)
        out[i, 1] = np.where(square, 0.95, 0.1 + 0.4 * yy)
        out[i, 2] = np.where(disc | square, 0.1, 0.5)
    return out


IMAGES = {"digits8": _digits8(), "mnist28": _mnist28(), "rgb32": _rgb32()}


def _run(images: np.ndarray, name: str, seed: int = 0, **kwargs) -> np.ndarray:
    return corrupt(images, name, rng=np.random.default_rng(seed), **kwargs)


@pytest.mark.parametrize("kind", sorted(IMAGES))
@pytest.mark.parametrize("name", config.CORRUPTIONS)
def test_changes_image_and_keeps_shape_dtype_range(name: str, kind: str) -> None:
    x = IMAGES[kind]
    y = _run(x, name)
    assert y.shape == x.shape
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.abs(y - x).mean() > 0.01, f"{name} barely changes {kind}"
    # Most images of the batch are changed, not just one of them.
    changed = np.abs(y - x).reshape(N, -1).max(axis=1) > 0.05
    assert changed.mean() >= 0.75


@pytest.mark.parametrize("name", config.CORRUPTIONS)
def test_same_seed_same_output_whatever_the_global_state(name: str) -> None:
    x = IMAGES["mnist28"]
    np.random.seed(1)
    first = _run(x, name, seed=7)
    np.random.seed(2)
    second = _run(x, name, seed=7)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("kind", sorted(IMAGES))
@pytest.mark.parametrize("name", RANDOM)
def test_different_seed_different_output(name: str, kind: str) -> None:
    x = IMAGES[kind]
    assert not np.array_equal(_run(x, name, seed=0), _run(x, name, seed=1))


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_corruptions_ignore_the_seed(name: str) -> None:
    x = IMAGES["rgb32"]
    np.testing.assert_array_equal(_run(x, name, seed=0), _run(x, name, seed=1))


def test_registry_matches_config() -> None:
    assert tuple(CORRUPTIONS) == config.CORRUPTIONS
    assert set(config.CORRUPTIONS) <= set(MNIST_C_NAMES)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown corruption 'blur'") as err:
        _run(IMAGES["mnist28"], "blur")
    for name in config.CORRUPTIONS:
        assert name in str(err.value)


def test_bad_inputs_are_refused() -> None:
    x = IMAGES["mnist28"]
    with pytest.raises(DataError, match="C in"):
        _run(np.zeros((2, 2, 28, 28)), "fog")
    with pytest.raises(DataError, match="at least 8x8"):
        _run(np.zeros((2, 4, 4)), "fog")
    with pytest.raises(ConfigError, match="severity"):
        _run(x, "fog", severity=0.0)
    with pytest.raises(TypeError, match="Generator"):
        corrupt(x, "fog", rng=0)  # type: ignore[arg-type]


def test_empty_batch_keeps_its_shape() -> None:
    y = _run(np.zeros((0, 1, 28, 28)), "rotate")
    assert y.shape == (0, 1, 28, 28) and y.dtype == np.float32


# ----------------------------------------------------------------------------- what each does


def test_shot_noise_counts_photons() -> None:
    y = _run(IMAGES["mnist28"], "shot_noise").astype(np.float64)
    # Three expected photons at full intensity: every output is a count over 3.
    np.testing.assert_allclose(y * 3, np.round(y * 3), atol=1e-5)


def test_impulse_noise_sets_pixels_to_black_or_white() -> None:
    x = IMAGES["rgb32"]
    y = _run(x, "impulse_noise")
    hit = ~np.isclose(y, x, atol=1e-6)
    assert 0.08 < hit.mean() < 0.2
    assert np.all(np.isclose(y[hit], 0.0) | np.isclose(y[hit], 1.0))


@pytest.mark.parametrize("name", ["glass_blur", "motion_blur"])
def test_blurs_keep_the_ink(name: str) -> None:
    # The digits sit on a black field, so blurring moves ink around without losing it.
    x = IMAGES["mnist28"]
    y = _run(x, name)
    np.testing.assert_allclose(y.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=0.05)
    assert y.std() < x.std()


def test_rotate_matches_a_rotation_by_0_4_radians() -> None:
    from skimage.transform import rotate

    x = IMAGES["mnist28"]
    y = _run(x, "rotate")
    degrees = np.rad2deg(0.4)
    for image, out in zip(x, y, strict=True):
        errors = [np.abs(rotate(image, s * degrees) - out).max() for s in (-1, 1)]
        assert min(errors) < 1e-5


def test_shear_slants_but_keeps_rows() -> None:
    # A horizontal shear moves pixels along their row: each row keeps its ink.
    x = IMAGES["mnist28"]
    y = _run(x, "shear")
    np.testing.assert_allclose(y.sum(axis=2), x.sum(axis=2), atol=0.05)
    assert np.abs(y - x).mean() > 0.05


def test_scale_shrinks_about_the_centre() -> None:
    x = IMAGES["mnist28"]
    y = _run(x, "scale")
    # Ink scales with area: 0.7 ** 2 of the original.
    np.testing.assert_allclose(y.sum(axis=(1, 2)) / x.sum(axis=(1, 2)), 0.49, atol=0.05)
    rows = np.nonzero(y.max(axis=(0, 2)) > 0.05)[0]
    assert rows.min() >= 7 and rows.max() <= 20


def test_translate_shifts_three_pixels_diagonally() -> None:
    x = IMAGES["mnist28"]
    y = _run(x, "translate")
    shifts = [(dy, dx) for dy in (-3, 3) for dx in (-3, 3)]
    for image, out in zip(x, y, strict=True):
        # The digits have a 4-pixel black border, so a 3-pixel roll loses nothing.
        errors = [np.abs(np.roll(image, s, axis=(0, 1)) - out).max() for s in shifts]
        assert min(errors) < 1e-6


def test_brightness_lifts_grey_by_half() -> None:
    x = IMAGES["digits8"]
    np.testing.assert_allclose(_run(x, "brightness"), np.clip(x + 0.5, 0, 1), atol=1e-6)


def test_brightness_keeps_hue_of_colour_images() -> None:
    from skimage.color import rgb2hsv

    x = IMAGES["rgb32"]
    y = _run(x, "brightness")
    before, after = (rgb2hsv(a.transpose(0, 2, 3, 1)) for a in (x, y))
    np.testing.assert_allclose(after[..., 2], np.clip(before[..., 2] + 0.5, 0, 1), atol=1e-5)
    np.testing.assert_allclose(after[..., 0], before[..., 0], atol=1e-4)


def test_stripe_inverts_the_outer_quarters() -> None:
    x = IMAGES["mnist28"]
    y = _run(x, "stripe")
    np.testing.assert_allclose(y[..., :7], 1 - x[..., :7], atol=1e-6)
    np.testing.assert_allclose(y[..., 21:], 1 - x[..., 21:], atol=1e-6)
    np.testing.assert_allclose(y[..., 7:21], x[..., 7:21], atol=1e-6)


def test_fog_lowers_contrast_under_a_haze() -> None:
    x = IMAGES["mnist28"]
    y = _run(x, "fog")
    # A haze in [0, 1] of weight 3 is added and the sum scaled by peak / (peak + 3) = 1 / 4.
    peak = x.max(axis=(1, 2), keepdims=True)
    assert np.all(y >= x * peak / (peak + 3) - 1e-6)
    assert np.all(y <= (x + 3) * peak / (peak + 3) + 1e-6)
    assert (y.std(axis=(1, 2)) < 0.5 * x.std(axis=(1, 2))).all()
    assert (y[:, :4, :].mean(axis=(1, 2)) > 0.01).all()  # the black border is fogged too


def test_spatter_paints_dark_grey_mud() -> None:
    x = IMAGES["mnist28"]
    y = _run(x, "spatter")
    mud = 63 / 255
    hit = ~np.isclose(y, x, atol=1e-6)
    assert 0.01 < hit.mean() < 0.5
    # Mud pulls a pixel towards its grey, never past it.
    lo, hi = np.minimum(x, mud), np.maximum(x, mud)
    assert np.all((y[hit] >= lo[hit] - 1e-6) & (y[hit] <= hi[hit] + 1e-6))


@pytest.mark.parametrize("name", ["dotted_line", "zigzag"])
def test_strokes_only_add_ink(name: str) -> None:
    x = IMAGES["mnist28"]
    y = _run(x, name)
    assert np.all(y >= x - 1e-6)
    assert (np.abs(y - x).reshape(N, -1).max(axis=1) > 0.5).all()


def test_dotted_line_is_dashed() -> None:
    y = _run(np.zeros((N, 28, 28)), "dotted_line")
    ink = y.max(axis=1)  # (N, W): which columns carry the line
    assert (ink[:, 0::4] == 0).all() and (ink[:, 1::4] == 0).all()
    assert (ink[:, 2:26:4] > 0.3).all()


def test_canny_edges_is_a_binary_outline() -> None:
    x = IMAGES["mnist28"]
    y = _run(x, "canny_edges")
    assert set(np.unique(y)) <= {0.0, 1.0}
    # Edges lie around the strokes, never on the empty border.
    assert y[:, :2, :].max() == 0 and y.mean() > 0.02


@pytest.mark.parametrize("name", ["impulse_noise", "brightness", "stripe", "scale", "rotate"])
def test_severity_scales_strength(name: str) -> None:
    x = IMAGES["mnist28"]
    diffs = [np.abs(_run(x, name, severity=s) - x).mean() for s in (0.5, 1.0, 1.5)]
    assert diffs[0] < diffs[1] < diffs[2]


# ----------------------------------------------------------------------------- MNIST-C files


def _write_mnist_c(root, name: str, split: str, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    (root / name).mkdir(parents=True, exist_ok=True)
    np.save(root / name / f"{split}_images.npy", images)
    np.save(root / name / f"{split}_labels.npy", labels)
    return images, labels


@pytest.mark.parametrize("name", ["fog", "identity"])
def test_load_mnist_c_round_trips(tmp_path, name: str) -> None:
    images, labels = _write_mnist_c(tmp_path, name, "test")
    x, y = load_mnist_c(tmp_path, name)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0], images[..., 0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_c_reads_the_requested_split(tmp_path) -> None:
    images, _ = _write_mnist_c(tmp_path, "zigzag", "train", n=3)
    x, _ = load_mnist_c(tmp_path, "zigzag", split="train")
    assert x.shape[0] == 3
    np.testing.assert_allclose(x[:, 0], images[..., 0] / 255.0, atol=1e-7)


def test_load_mnist_c_missing_file_names_it_and_the_layout(tmp_path) -> None:
    _write_mnist_c(tmp_path, "fog", "test")
    (tmp_path / "fog" / "test_labels.npy").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_mnist_c(tmp_path, "fog")
    message = str(err.value)
    assert str(tmp_path / "fog" / "test_labels.npy") in message
    assert "<root>/<corruption>/<split>_images.npy" in message


def test_load_mnist_c_refuses_unknown_names(tmp_path) -> None:
    with pytest.raises(ConfigError, match="canny_edges"):
        load_mnist_c(tmp_path, "blur")
    with pytest.raises(ConfigError, match="train, test"):
        load_mnist_c(tmp_path, "fog", split="val")


def test_load_mnist_c_refuses_mismatched_labels(tmp_path) -> None:
    _write_mnist_c(tmp_path, "fog", "test")
    np.save(tmp_path / "fog" / "test_labels.npy", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="4 labels for 5 images"):
        load_mnist_c(tmp_path, "fog")
