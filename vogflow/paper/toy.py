"""Distance to a small ReLU network's decision boundary, and VoG against it (paper §2.1, Fig. 1).

One job: for a one-hidden-layer ReLU MLP on 2-D points, ``f(x) = W2 relu(W1 x + b1) + b2``, find
each point's Euclidean distance to the learned boundary ``{x: f1(x) = f0(x)}``, and test the
paper's toy claim that points close to the boundary get high VoG.

The margin ``g = f1 - f0`` is affine inside each linear region (fixed on/off pattern of the hidden
units), so the distance is computed exactly: the nearest boundary point is either the foot of the
perpendicular onto one region's boundary line (kept only if the foot lies in that region), or a
kink of the boundary where it crosses a hidden unit's hyperplane. A ray search (exact along each
ray, since ``g`` is piecewise linear there) adds candidates for degenerate networks; every
candidate is a true boundary point, so the minimum over them is the distance.

Arrays in, arrays and plain JSON-able dicts out; numpy and scipy only.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from vogflow.analysis.ranks import spearman
from vogflow.analysis.stats import bootstrap_ci, claim
from vogflow.errors import DataError
from vogflow.scoring.vog import deciles

PAPER = "Fig. 1b: VoG ranks highest the points closest to the decision boundary"
_EPS = 1e-12
_REL_TOL = 1e-9
_MAX_AMBIGUOUS = 6  # units meeting at one kink whose on/off combinations are all tried


def _margin_net(
    w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    w1 = np.asarray(w1, dtype=np.float64)
    b1 = np.asarray(b1, dtype=np.float64)
    w2 = np.asarray(w2, dtype=np.float64)
    b2 = np.asarray(b2, dtype=np.float64)
    h = w1.shape[0]
    if w1.shape != (h, 2) or b1.shape != (h,) or w2.shape != (2, h) or b2.shape != (2,):
        raise DataError(
            "expected W1 (H, 2), b1 (H,), W2 (2, H), b2 (2,); got "
            f"{w1.shape}, {b1.shape}, {w2.shape}, {b2.shape}"
        )
    return w1, b1, w2[1] - w2[0], float(b2[1] - b2[0])


def margin(
    points: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray
) -> np.ndarray:
    """``g(x) = f1(x) - f0(x)`` for ``(N, 2)`` points: ``(N,)``; the boundary is ``g = 0``."""
    w1, b1, w, c = _margin_net(w1, b1, w2, b2)
    return np.maximum(np.asarray(points, dtype=np.float64) @ w1.T + b1, 0.0) @ w + c


def _kinks(
    w1: np.ndarray, b1: np.ndarray, w: np.ndarray, c: float
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float, float]], list[np.ndarray]]:
    """Boundary points on the hidden units' hyperplanes, boundary pieces lying along them, and
    the on/off patterns of the regions meeting at each such point."""
    h = w1.shape[0]
    vertices: list[np.ndarray] = []
    segments: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    patterns: list[np.ndarray] = []
    norms = np.linalg.norm(w1, axis=1)

    def g_at(x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ w1.T + b1, 0.0) @ w + c

    for j in range(h):
        if norms[j] < _EPS:
            continue
        x0 = -b1[j] * w1[j] / norms[j] ** 2
        direction = np.array([-w1[j, 1], w1[j, 0]]) / norms[j]
        z0 = w1 @ x0 + b1
        rate = w1 @ direction
        moving = np.abs(rate) > _EPS * np.maximum(norms, 1.0)
        moving[j] = False
        ts = np.unique(-z0[moving] / rate[moving])
        # g along the line is affine between consecutive breakpoints and beyond the outer ones;
        # one extra sample past each end pins down the outer pieces.
        span = 1.0 + (np.abs(ts).max() if ts.size else 0.0)
        t = np.concatenate(
            [[ts[0] - span if ts.size else -span], ts, [ts[-1] + span if ts.size else span]]
        )
        gv = g_at(x0[None, :] + t[:, None] * direction[None, :])
        tol = _REL_TOL * (1.0 + np.abs(gv).max())
        zero = np.abs(gv) <= tol
        roots: list[float] = [float(v) for v in t[zero]]
        for i in range(len(t) - 1):
            ga, gb = gv[i], gv[i + 1]
            lo, hi = t[i], t[i + 1]
            if i == 0:
                lo = -np.inf
            if i == len(t) - 2:
                hi = np.inf
            if zero[i] and zero[i + 1]:
                segments.append((x0, direction, float(lo), float(hi)))
                continue
            if ga * gb < 0 and not (zero[i] or zero[i + 1]):
                roots.append(float(t[i] + (t[i + 1] - t[i]) * ga / (ga - gb)))
            elif i in (0, len(t) - 2) and not (zero[i] and zero[i + 1]):
                # A root beyond the outermost sample, on the unbounded affine piece.
                slope = (gb - ga) / (t[i + 1] - t[i])
                if abs(slope) > _EPS:
                    r = t[i] - ga / slope
                    if (i == 0 and r < t[0]) or (i == len(t) - 2 and r > t[-1]):
                        roots.append(float(r))
        for r in roots:
            v = x0 + r * direction
            vertices.append(v)
            z = w1 @ v + b1
            near = np.abs(z) <= _REL_TOL * (norms * (1.0 + np.abs(v).sum()) + np.abs(b1) + 1.0)
            others = [k for k in np.flatnonzero(near) if k != j]
            ambiguous = np.array([j, *others][:_MAX_AMBIGUOUS], dtype=np.int64)
            base = z > 0
            for combo in itertools.product((False, True), repeat=ambiguous.size):
                p = base.copy()
                p[ambiguous] = combo
                patterns.append(p)
    verts = np.array(vertices, dtype=np.float64).reshape(-1, 2)
    return verts, segments, patterns


def _foot_distances(
    pts: np.ndarray,
    pats: np.ndarray,
    w1: np.ndarray,
    b1: np.ndarray,
    w: np.ndarray,
    c: float,
) -> np.ndarray:
    """Distance to each region's boundary line where the perpendicular foot lies in the region."""
    weights = pats * w[None, :]
    a = weights @ w1
    d = weights @ b1 + c
    a2 = (a**2).sum(axis=1)
    keep = a2 > _EPS
    if not keep.any():
        return np.full(pts.shape[0], np.inf)
    a, d, a2, pats = a[keep], d[keep], a2[keep], pats[keep]
    val = pts @ a.T + d
    foot = pts[:, None, :] - (val / a2)[:, :, None] * a[None, :, :]
    z = foot @ w1.T + b1
    tol = _REL_TOL * (
        np.linalg.norm(w1, axis=1) * (1.0 + np.linalg.norm(foot, axis=2))[..., None]
        + np.abs(b1)
        + 1.0
    )
    inside = np.where(pats[None, :, :], z >= -tol, z <= tol).all(axis=2)
    dist = np.where(inside, np.abs(val) / np.sqrt(a2), np.inf)
    return dist.min(axis=1)


def _segment_distances(
    pts: np.ndarray, segments: list[tuple[np.ndarray, np.ndarray, float, float]]
) -> np.ndarray:
    out = np.full(pts.shape[0], np.inf)
    for x0, direction, lo, hi in segments:
        t = np.clip((pts - x0) @ direction, lo, hi)
        out = np.minimum(out, np.linalg.norm(pts - (x0 + t[:, None] * direction), axis=1))
    return out


def _ray_distances(
    pts: np.ndarray, units: np.ndarray, w1: np.ndarray, b1: np.ndarray, w: np.ndarray, c: float
) -> np.ndarray:
    """Nearest boundary crossing along each ray, exact per ray (g is piecewise linear on it)."""
    z0 = pts @ w1.T + b1  # (n, H)
    rate = units @ w1.T  # (D, H)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = -z0[:, None, :] / rate[None, :, :]
    r = np.where(np.isfinite(r) & (r > 0), r, np.inf)
    r = np.sort(r, axis=2)  # (n, D, H)
    r = np.concatenate([np.zeros(r.shape[:2] + (1,)), r], axis=2)
    finite = np.isfinite(r)
    rr = np.where(finite, r, 0.0)
    pre = z0[:, None, None, :] + rr[..., None] * rate[None, :, None, :]
    g = np.maximum(pre, 0.0) @ w + c  # (n, D, H+1)
    g = np.where(finite, g, np.nan)
    ga, gb = g[..., :-1], g[..., 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        cross = (ga * gb < 0) | (gb == 0)
        frac = np.where(cross, ga / (ga - gb), np.nan)
        root = r[..., :-1] + (r[..., 1:] - r[..., :-1]) * frac
    root = np.where(cross & np.isfinite(root), root, np.inf)
    # Beyond the last breakpoint every unit keeps the sign of its rate: g has a fixed slope.
    last = np.where(finite, np.arange(r.shape[2]), -1).max(axis=2)
    r_last = np.take_along_axis(r, last[..., None], axis=2)[..., 0]
    g_last = np.take_along_axis(g, last[..., None], axis=2)[..., 0]
    slope = np.where(rate > 0, rate, 0.0) @ w  # (D,)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = r_last - g_last / slope[None, :]
    tail = np.where((g_last * slope[None, :] < 0) & np.isfinite(tail), tail, np.inf)
    at_zero = np.where(g[..., 0] == 0, 0.0, np.inf)
    best = np.minimum(np.minimum(root.min(axis=2), tail), at_zero)
    return best.min(axis=1)


def boundary_distance(
    points: np.ndarray,
    w1: np.ndarray,
    b1: np.ndarray,
    w2: np.ndarray,
    b2: np.ndarray,
    *,
    n_directions: int = 64,
    max_radius: float | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """Euclidean distance of each point to the network's decision boundary ``{f1 = f0}``.

    Args:
        points: ``(N, 2)`` inputs as fed to the network.
        w1, b1, w2, b2: ``W1 (H, 2)``, ``b1 (H,)``, ``W2 (2, H)``, ``b2 (2,)`` of
            ``f(x) = W2 relu(W1 x + b1) + b2`` (``nn.Linear`` weight layout).
        n_directions: rays per point of the backup search (0 turns it off). The exact region
            computation already finds the distance of any non-degenerate network; the rays only
            matter when all hidden hyperplanes run parallel to a boundary line, and cost
            ``N * n_directions * H^2``.
        max_radius: distances beyond it are reported as ``inf`` (None: no limit).
        chunk: points processed at once (memory ``chunk * max(patterns, n_directions) * H^2``).

    Returns:
        ``(N,)`` float64, ``inf`` where the network has no boundary (``g`` never changes sign).
        Small distance = close to the boundary = hard.
    """
    w1, b1, w, c = _margin_net(w1, b1, w2, b2)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise DataError(f"points must be (N, 2), got {pts.shape}")
    vertices, segments, patterns = _kinks(w1, b1, w, c)
    own = np.maximum(pts @ w1.T + b1, 0.0) > 0  # the points' own regions
    pats = np.unique(
        np.concatenate([np.array(patterns, bool).reshape(-1, w1.shape[0]), own]), axis=0
    )
    angles = np.linspace(0.0, 2 * np.pi, max(n_directions, 0), endpoint=False)
    units = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    out = np.empty(pts.shape[0])
    for start in range(0, pts.shape[0], chunk):
        p = pts[start : start + chunk]
        best = _foot_distances(p, pats, w1, b1, w, c)
        if vertices.size:
            gap = np.linalg.norm(p[:, None, :] - vertices[None, :, :], axis=2).min(axis=1)
            best = np.minimum(best, gap)
        if segments:
            best = np.minimum(best, _segment_distances(p, segments))
        if units.size:
            best = np.minimum(best, _ray_distances(p, units, w1, b1, w, c))
        out[start : start + chunk] = best
    if max_radius is not None:
        out[out > max_radius] = np.inf
    return out


def toy_report(
    vog: np.ndarray,
    distance: np.ndarray,
    *,
    bins: int = 10,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The toy claim: VoG falls as the distance to the decision boundary grows (paper Fig. 1b).

    Args:
        vog: ``(N,)`` VoG of each point, higher = harder.
        distance: ``(N,)`` distance to the boundary (:func:`boundary_distance`), small = harder.
        bins: VoG buckets for the mean distance per bucket (bucket 0 = lowest VoG).
        n_boot, confidence, rng: percentile bootstrap over points.

    Returns:
        ``n``, ``spearman`` (VoG vs distance) with ``interval`` and ``claim`` (expected
        ``negative``), ``distance_by_vog_bucket`` (mean finite distance per VoG bucket, NaN when
        none), ``paper``.
    """
    vog = np.asarray(vog, dtype=np.float64)
    distance = np.asarray(distance, dtype=np.float64)
    if vog.ndim != 1 or vog.shape != distance.shape:
        raise DataError(f"vog {vog.shape} and distance {distance.shape} must both be (N,)")
    rho = spearman(vog, distance)
    ci = bootstrap_ci(spearman, vog, distance, n_boot=n_boot, confidence=confidence, rng=rng)
    bucket = deciles(vog, n=bins)
    finite = np.isfinite(distance)
    nan = float("nan")
    by_bucket = [
        float(distance[(bucket == b) & finite].mean()) if ((bucket == b) & finite).any() else nan
        for b in range(bins)
    ]
    return {
        "n": int(vog.size),
        "spearman": rho,
        "interval": [float(ci[0]), float(ci[1])],
        "claim": claim("negative", rho, interval=ci, name="spearman(vog, distance)"),
        "distance_by_vog_bucket": by_bucket,
        "paper": PAPER,
        "n_boot": int(n_boot),
        "confidence": float(confidence),
    }
