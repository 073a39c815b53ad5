"""The fifteen MNIST-C corruptions (Mu & Gilmer 2019), for the out-of-distribution experiment.

``corrupt(images, name, rng=..., severity=...)`` applies one corruption to a batch of images in
``[0, 1]``, shaped ``(N, H, W)`` or ``(N, C, H, W)`` with ``C`` 1 or 3, and returns float32 of the
same shape in ``[0, 1]``. The recipes follow the published MNIST-C generator at its chosen
severities (``severity=1.0`` here); lengths measured in pixels on 28x28 MNIST are rescaled to the
image size, so an 8x8 digit is visibly corrupted rather than wiped out and a 32x32 colour image
gets the same relative geometry. Every random draw comes from the ``rng`` passed in, so a seed
fixes the output. ``load_mnist_c`` reads the published MNIST-C arrays instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vogflow.config.paper import CORRUPTIONS as CORRUPTION_NAMES
from vogflow.errors import ConfigError, DataError

# The MNIST-C corruptions are defined on 28x28 images; pixel lengths are quoted at that size.
_REFERENCE = 28.0

# The published MNIST-C folders; ours carry the same names, plus the uncorrupted "identity".
MNIST_C_NAMES = ("identity", *CORRUPTION_NAMES)
MNIST_C_SPLITS = ("train", "test")

Corruption = Callable[..., np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {}


# ----------------------------------------------------------------------------- plumbing


def _as_nchw(images: np.ndarray) -> np.ndarray:
    """Validate a batch and return it as float64 (N, C, H, W) in [0, 1]."""
    # Clipped so that slightly out-of-range inputs (e.g. after interpolation) stay valid.
    x = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"images must be shaped (N, H, W) or (N, C, H, W) with C in (1, 3); got {x.shape}"
        )
    if min(x.shape[2:]) < 8:
        raise DataError(f"images must be at least 8x8 pixels; got {x.shape[2]}x{x.shape[3]}")
    return x


def _register(name: str) -> Callable[[Callable], Corruption]:
    """Wrap a kernel into a public corruption and add it to the registry.

    The kernel sees validated float64 ``(N, C, H, W)`` images, the generator and the severity; the
    public function takes ``(images, *, rng, severity=1.0)`` in any accepted shape and returns
    float32 of that shape, clipped to [0, 1].
    """

    def decorate(kernel: Callable[[np.ndarray, np.random.Generator, float], np.ndarray]):
        def corruption(
            images: np.ndarray, *, rng: np.random.Generator, severity: float = 1.0
        ) -> np.ndarray:
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
            if not np.isfinite(severity) or severity <= 0:
                raise ConfigError(f"severity must be a finite number > 0; got {severity!r}")
            shape = np.shape(images)
            x = _as_nchw(images)
            if x.shape[0] == 0:
                return np.zeros(shape, dtype=np.float32)
            out = kernel(x, rng, float(severity))
            return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(shape)

        # Name and docstring of the kernel; the signature is the public one above.
        corruption.__name__ = corruption.__qualname__ = kernel.__name__
        corruption.__doc__ = kernel.__doc__
        CORRUPTIONS[name] = corruption
        return corruption

    return decorate


def corrupt(
    images: np.ndarray, name: str, *, rng: np.random.Generator, severity: float = 1.0
) -> np.ndarray:
    """Apply the corruption ``name`` to ``images``; float32 of the same shape, in [0, 1]."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](images, rng=rng, severity=severity)


def _unit(x: np.ndarray) -> float:
    """Pixels per MNIST pixel: lengths quoted at 28x28 are multiplied by this."""
    return min(x.shape[2:]) / _REFERENCE


def _affine_about_centre(h: int, w: int, **params: float) -> np.ndarray:
    """An AffineTransform matrix whose linear part leaves the image centre where it is."""
    from skimage.transform import AffineTransform

    matrix = AffineTransform(**params).params.copy()
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    matrix[:2, 2] = centre - matrix[:2, :2] @ centre
    return matrix


def _warp_groups(x: np.ndarray, matrices: list[np.ndarray], group: np.ndarray) -> np.ndarray:
    """Warp image ``i`` by ``matrices[group[i]]`` (an inverse map, as in skimage's ``warp``)."""
    from skimage.transform import AffineTransform, warp

    n, c, h, w = x.shape
    out = np.zeros_like(x)
    for g, matrix in enumerate(matrices):
        idx = np.flatnonzero(group == g)
        if idx.size == 0:
            continue
        # One warp call per distinct transform: images and channels ride along as channels.
        stack = x[idx].transpose(2, 3, 0, 1).reshape(h, w, idx.size * c)
        warped = warp(stack, AffineTransform(matrix=matrix), order=1, mode="constant", cval=0.0)
        out[idx] = warped.reshape(h, w, idx.size, c).transpose(2, 3, 0, 1)
    return out


def _line_from_points(
    c0: np.ndarray, r0: np.ndarray, c1: np.ndarray, r1: np.ndarray, h: int, w: int, width: float
) -> np.ndarray:
    """Anti-aliased straight strokes, one per image, (N, H, W) in [0, 1].

    MNIST-C's profile: intensity ``log(1 - d / width) + 1`` at vertical distance ``d`` from the
    line, drawn only over the columns the segment spans.
    """
    # Order the ends left to right so that a stroke drawn backwards is not masked away.
    swap = c1 < c0
    c0, c1 = np.where(swap, c1, c0), np.where(swap, c0, c1)
    r0, r1 = np.where(swap, r1, r0), np.where(swap, r0, r1)
    dc = c1 - c0
    slope = (r1 - r0) / np.where(dc == 0, 1.0, dc)
    cc = np.arange(w, dtype=np.float64)[None, None, :]
    rr = np.arange(h, dtype=np.float64)[None, :, None]
    row = slope[:, None, None] * (cc - c0[:, None, None]) + r0[:, None, None]
    dist = np.clip(np.abs(rr - row), 0.0, width * (1 - 1e-10))
    stroke = np.clip(np.log1p(-dist / width) + 1.0, 0.0, 1.0)
    spans = (cc >= np.floor(c0)[:, None, None]) & (cc < np.ceil(c1)[:, None, None])
    return np.where(spans & (dc != 0)[:, None, None], stroke, 0.0)


def _stroke_width(x: np.ndarray, severity: float) -> float:
    """MNIST-C's stroke half-width (2.3 px at 28x28), kept wide enough to hit pixel centres."""
    return 2.3 * max(_unit(x), 0.5) * severity


def _reference_shape(h: int, w: int) -> tuple[int, int]:
    """The grid on which a random pattern is drawn: the image, but no smaller than 28 pixels."""
    factor = max(1.0, _REFERENCE / min(h, w))
    return round(h * factor), round(w * factor)


# ----------------------------------------------------------------------------- corruptions


@_register("shot_noise")
def shot_noise(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Poisson photon noise with 3 expected photons at full intensity."""
    photons = 3.0 / severity
    return rng.poisson(x * photons) / photons


@_register("impulse_noise")
def impulse_noise(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Salt-and-pepper noise on 17% of the pixel values."""
    from skimage.util import random_noise

    amount = min(0.17 * severity, 1.0)
    return random_noise(x, mode="s&p", amount=amount, rng=rng)


@_register("glass_blur")
def glass_blur(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Gaussian blur, local pixel swaps (two sweeps), blur again: frosted glass."""
    from skimage.filters import gaussian

    n, c, h, w = x.shape
    # A sigma of 0.7 px at 28x28; below ~0.35 px a blur no longer mixes neighbours at all.
    sigma = max(0.7 * _unit(x), 0.35) * severity
    delta = max(1, round(_unit(x) * severity))
    blur = (0, 0, sigma, sigma)
    # Swap in (N, H, W, C) so one fancy index moves all channels of a pixel together.
    y = gaussian(x, sigma=blur).transpose(0, 2, 3, 1).copy()
    rows = np.arange(h - delta, delta, -1)
    cols = np.arange(w - delta, delta, -1)
    every = np.arange(n)
    for _ in range(2):
        # MNIST-C visits pixels bottom-right to top-left and swaps each with probability 1/2
        # with a neighbour up to ``delta`` away; the draws are made up front, per image.
        shape = (rows.size, cols.size, n)
        swap = rng.random(shape) < 0.5
        dy = np.where(swap, rng.integers(-delta, delta, shape), 0)
        dx = np.where(swap, rng.integers(-delta, delta, shape), 0)
        for i, r in enumerate(rows):
            for j, col in enumerate(cols):
                rp, cp = r + dy[i, j], col + dx[i, j]
                here, there = y[every, r, col], y[every, rp, cp]
                y[every, r, col], y[every, rp, cp] = there, here
    return gaussian(y.transpose(0, 3, 1, 2), sigma=blur)


@_register("motion_blur")
def motion_blur(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """One-sided Gaussian smear (sigma 3 px) along a random direction within 45 degrees."""
    from scipy.fft import irfft2, rfft2

    n, c, h, w = x.shape
    sigma = max(3.0 * _unit(x), 0.75) * severity
    radius = int(np.ceil(3 * sigma))
    taps = np.arange(radius + 1, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    angle = np.deg2rad(rng.uniform(-45.0, 45.0, n))
    # A trailing kernel as in the image library MNIST-C used: each pixel averages the pixels
    # behind it along the motion, so strokes leave a tail on one side only. Each image's taps
    # are splatted bilinearly into its own kernel, and all images convolve in one FFT call.
    size = 2 * radius + 2
    rows = radius + taps[None, :] * np.sin(angle)[:, None]
    cols = radius + taps[None, :] * np.cos(angle)[:, None]
    kernel = np.zeros((n, size, size))
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    image = np.broadcast_to(np.arange(n)[:, None], rows.shape)
    for dr, dc, share in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        np.add.at(kernel, (image, r0 + dr, c0 + dc), share * weights)
    # Edge padding stands in for the pixels beyond the border. A circular convolution over the
    # padded size wraps only into rows and columns that are cropped away afterwards.
    padded = np.pad(x, ((0, 0), (0, 0), (radius + 1, radius), (radius + 1, radius)), mode="edge")
    shape = padded.shape[2:]
    spectrum = rfft2(padded.astype(np.float32)) * rfft2(kernel[:, None].astype(np.float32), s=shape)
    return irfft2(spectrum, s=shape)[..., size - 1 :, size - 1 :]


@_register("shear")
def shear(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Horizontal shear of 0.4 rad about the centre, direction drawn per image."""
    h, w = x.shape[2:]
    angle = 0.4 * severity
    matrices = [_affine_about_centre(h, w, shear=s * angle) for s in (-1.0, 1.0)]
    return _warp_groups(x, matrices, rng.integers(0, 2, x.shape[0]))


@_register("scale")
def scale(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Shrink to 70% about the centre (deterministic, as in MNIST-C)."""
    h, w = x.shape[2:]
    factor = max(1.0 - 0.3 * severity, 0.1)
    # The warp takes the inverse map: sampling at 1/0.7 times the distance shrinks the digit.
    matrix = _affine_about_centre(h, w, scale=(1.0 / factor, 1.0 / factor))
    return _warp_groups(x, [matrix], np.zeros(x.shape[0], dtype=np.int64))


@_register("rotate")
def rotate(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Rotation by 0.4 rad (about 23 degrees) about the centre, direction drawn per image."""
    h, w = x.shape[2:]
    angle = 0.4 * severity
    matrices = [_affine_about_centre(h, w, rotation=s * angle) for s in (-1.0, 1.0)]
    return _warp_groups(x, matrices, rng.integers(0, 2, x.shape[0]))


@_register("brightness")
def brightness(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Add 0.5 to the HSV value channel (deterministic)."""
    from skimage.color import hsv2rgb, rgb2hsv

    lift = 0.5 * severity
    if x.shape[1] == 1:
        # A grey pixel's HSV value is the pixel itself (hue and saturation 0), so MNIST-C's
        # grey -> RGB -> HSV -> RGB -> grey round trip reduces to adding the lift.
        return x + lift
    hsv = rgb2hsv(x.transpose(0, 2, 3, 1))
    hsv[..., 2] = np.clip(hsv[..., 2] + lift, 0.0, 1.0)
    return hsv2rgb(hsv).transpose(0, 3, 1, 2)


@_register("translate")
def translate(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Shift by 3/28 of the size along both axes (whole pixels), signs drawn per image."""
    from skimage.transform import AffineTransform

    h, w = x.shape[2:]
    dx = max(1, round(3.0 * w / _REFERENCE * severity))
    dy = max(1, round(3.0 * h / _REFERENCE * severity))
    signs = [(sx, sy) for sx in (-1, 1) for sy in (-1, 1)]
    matrices = [AffineTransform(translation=(sx * dx, sy * dy)).params for sx, sy in signs]
    return _warp_groups(x, matrices, rng.integers(0, 4, x.shape[0]))


@_register("stripe")
def stripe(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Invert the left and right quarters of the image (deterministic)."""
    w = x.shape[3]
    band = int(np.clip(round(0.25 * w * severity), 1, w // 2))
    out = x.copy()
    out[..., :band] = 1.0 - out[..., :band]
    out[..., w - band :] = 1.0 - x[..., w - band :]
    return out


def _plasma_fractal(n: int, mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height maps, (n, mapsize, mapsize) in [0, 1]; MNIST-C's fog texture."""
    grid = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2

        def wibbled(a: np.ndarray, wibble: float = wibble) -> np.ndarray:
            return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

        corners = grid[:, ::step, ::step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        grid[:, half::step, half::step] = wibbled(squares)
        centres = grid[:, half::step, half::step]
        corners = grid[:, ::step, ::step]
        sums = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        grid[:, ::step, half::step] = wibbled(sums)
        sums = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        grid[:, half::step, ::step] = wibbled(sums)
        step //= 2
        wibble /= decay
    grid -= grid.min(axis=(1, 2), keepdims=True)
    return grid / np.maximum(grid.max(axis=(1, 2), keepdims=True), 1e-12)


@_register("fog")
def fog(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Add a plasma-fractal haze of weight 3, then rescale: contrast drops to about a quarter."""
    n, c, h, w = x.shape
    side = 1 << int(np.ceil(np.log2(max(h, w))))
    # MNIST-C crops 28x28 out of a 256x256 map, so the haze varies slowly across a digit; a
    # map four times the image (capped at 256) keeps that look at a fraction of the memory.
    mapsize = max(side, min(4 * side, 256))
    haze = _plasma_fractal(n, mapsize, 1.4, rng)[:, None, :h, :w]
    weight = 3.0 * severity
    # As in MNIST-C the result is scaled to the image's own peak: a blank image stays blank.
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + weight * haze) * peak / (peak + weight)


@_register("spatter")
def spatter(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Mud splashes: thresholded smooth noise painted over the image in dark grey."""
    from skimage.filters import gaussian
    from skimage.transform import resize

    n, c, h, w = x.shape
    # The splash pattern is drawn on a grid of at least 28 pixels (blobs need a few pixels to
    # form) with MNIST-C's blur widths scaled to it, then resized to the image.
    rh, rw = _reference_shape(h, w)
    unit = min(rh, rw) / _REFERENCE
    liquid = rng.normal(0.65, 0.3, (n, rh, rw))
    liquid = gaussian(liquid, sigma=(0, unit, unit))
    wet = (liquid > 0.65).astype(np.float64)
    mud = gaussian(wet, sigma=(0, 1.5 * unit, 1.5 * unit))
    mud[mud < 0.8] = 0.0
    if (rh, rw) != (h, w):
        mud = resize(mud, (n, h, w), order=1, anti_aliasing=True)
    mud = np.clip(mud * severity, 0.0, 1.0)[:, None]
    return x * (1.0 - mud) + (63.0 / 255.0) * mud


@_register("dotted_line")
def dotted_line(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """A dashed bright line from the left edge to the right edge at random heights."""
    n, c, h, w = x.shape
    r0, r1 = rng.integers(0, h - 1, size=(2, n)).astype(np.float64)
    left, right = np.zeros(n), np.full(n, w - 1.0)
    line = _line_from_points(left, r0, right, r1, h, w, _stroke_width(x, severity))
    # Dashes of 2 px at 28x28, starting with a gap; never shorter than one pixel.
    dash = max(1, round(2 * _unit(x)))
    gap = (np.arange(w) // dash) % 2 == 0
    line[:, :, gap] = 0.0
    return x + line[:, None]


@_register("zigzag")
def zigzag(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """A bright zigzag stroke across the image along a random, gently sloped axis."""
    n, c, h, w = x.shape
    unit = _unit(x)
    # Teeth 2 px long and 2 px high at 28x28, never below one pixel.
    length = max(1.0, 2.0 * unit)
    height = max(1.0, 2.0 * unit) * severity
    c0, c1 = 2.0 * w / _REFERENCE, (w - 1) - 2.0 * w / _REFERENCE
    r0 = rng.integers(0, h - 1, n).astype(np.float64)
    tilt = max(1, round(5 * h / _REFERENCE))
    r1 = r0 + rng.integers(-tilt, tilt, n)
    theta = np.arctan((r1 - r0) / (c1 - c0))
    span = (c1 - c0) / np.cos(theta)
    # The teeth in the frame of the axis: start, alternating tips, end on the axis.
    teeth = int((c1 - c0 - length) // (2 * length)) + 1
    along = np.concatenate([[0.0], (2 * np.arange(teeth) + 1) * length])
    across = np.concatenate([[0.0], height * (-1.0) ** np.arange(teeth)])
    along = np.concatenate([np.broadcast_to(along, (n, teeth + 1)), span[:, None]], axis=1)
    across = np.concatenate([np.broadcast_to(across, (n, teeth + 1)), np.zeros((n, 1))], axis=1)
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    cols = c0 + cos * along - sin * across
    rows = r0[:, None] + sin * along + cos * across
    width = _stroke_width(x, 1.0)
    strokes = np.zeros((n, h, w))
    for k in range(cols.shape[1] - 1):
        strokes += _line_from_points(
            cols[:, k], rows[:, k], cols[:, k + 1], rows[:, k + 1], h, w, width
        )
    return x + strokes[:, None]


@_register("canny_edges")
def canny_edges(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Replace the image by its Canny edge map (deterministic); severity < 1 blends it in."""
    from skimage.feature import canny

    n, c, h, w = x.shape
    # Luminance for colour images, so the result is one white-on-black edge drawing.
    luma = x[:, 0] if c == 1 else np.tensordot(x, [0.2125, 0.7154, 0.0721], axes=([1], [0]))
    # skimage's default sigma of 1 px at 28x28, scaled; smaller than 0.5 px finds only noise.
    sigma = max(_unit(x), 0.5)
    edges = np.stack([canny(image, sigma=sigma) for image in luma]).astype(np.float64)
    alpha = min(severity, 1.0)
    return (1.0 - alpha) * x + alpha * edges[:, None]


# ----------------------------------------------------------------------------- MNIST-C files


def load_mnist_c(
    root: str | Path, name: str, *, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Read one published MNIST-C corruption: float32 images (N, 1, 28, 28) in [0, 1], int64 labels.

    The published layout is ``<root>/<corruption>/<split>_images.npy`` (uint8, (N, 28, 28, 1))
    beside ``<root>/<corruption>/<split>_labels.npy``; ``name`` may also be ``"identity"``.
    """
    if name not in MNIST_C_NAMES:
        raise ConfigError(f"unknown MNIST-C corruption {name!r}; valid: {', '.join(MNIST_C_NAMES)}")
    if split not in MNIST_C_SPLITS:
        raise ConfigError(f"unknown MNIST-C split {split!r}; valid: {', '.join(MNIST_C_SPLITS)}")
    folder = Path(root) / name
    layout = (
        "<root>/<corruption>/<split>_images.npy (uint8, (N, 28, 28, 1)) and "
        "<root>/<corruption>/<split>_labels.npy"
    )
    paths = {kind: folder / f"{split}_{kind}.npy" for kind in ("images", "labels")}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"MNIST-C file {path} not found; expected the layout {layout}")
    images = np.load(paths["images"], allow_pickle=False)
    labels = np.load(paths["labels"], allow_pickle=False)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DataError(
            f"{paths['images']}: expected images shaped (N, 28, 28, 1), got {images.shape}"
        )
    labels = labels.reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{paths['labels']}: {labels.shape[0]} labels for {images.shape[0]} images")
    x = images.astype(np.float32)
    # The published arrays are uint8 0..255; rescale anything not already in [0, 1].
    if np.issubdtype(images.dtype, np.integer) or (x.size and x.max() > 1.0):
        x /= 255.0
    return np.clip(x, 0.0, 1.0)[:, None], labels.astype(np.int64)
