"""Out-of-distribution detection, the detector half: the baselines of Table 1 (paper §4.2).

One job: the baseline detectors VoG is compared with, as "fit on in-distribution training
features, score test points" functions (:func:`get_detector`, :func:`fit_score`); every score this
module produces is **higher = more out-of-distribution**. Turning scores into the paper's metrics
and Table 1 is :mod:`vogflow.paper.ood_table`.

Arrays in, arrays out: numpy, scipy and scikit-learn only, no files, no plots.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from vogflow.errors import ConfigError, DataError

# A detector: fit on in-distribution ``train`` (N, D), return one score per row of ``test`` (M, D),
# higher = more out-of-distribution.
Detector = Callable[..., np.ndarray]

__all__ = [
    "DETECTOR_FUNCS",
    "FEATURE_DETECTORS",
    "MODEL_SCORES",
    "Detector",
    "ae_score",
    "fit_score",
    "gaussian_score",
    "get_detector",
    "kde_score",
    "kpca_score",
    "mve_score",
    "pca_score",
    "svdd_score",
]

# Detectors that need no fitting on features: scored from the trained model itself.
MODEL_SCORES = ("vog", "msp")


# --------------------------------------------------------------------------------------------
# Input checks and shared helpers


def _features(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if train.ndim != 2 or test.ndim != 2:
        raise DataError(
            f"features must be 2-D (rows, features); got train {train.shape}, test {test.shape}"
        )
    if train.shape[1] != test.shape[1]:
        raise DataError(
            f"train has {train.shape[1]} features but test has {test.shape[1]}; they must match"
        )
    if train.shape[0] < 2:
        raise DataError(f"need at least 2 training rows to fit a detector; got {train.shape[0]}")
    if not (np.isfinite(train).all() and np.isfinite(test).all()):
        raise DataError("features contain NaN or infinite values")
    return train, test


def _standardised(
    train: np.ndarray, test: np.ndarray, standardise: bool
) -> tuple[np.ndarray, np.ndarray]:
    # The scaler sees only the training rows: fitting it on test rows would leak the very
    # outliers being scored into the reference distribution.
    if not standardise:
        return train, test
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def _seed(rng: np.random.Generator) -> int:
    # scikit-learn estimators take an int seed; draw it from the caller's generator so one
    # Generator seeds the whole comparison.
    return int(rng.integers(0, 2**31 - 1))


def _sq_residual(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    return np.sum((x - x_hat) ** 2, axis=1)


# --------------------------------------------------------------------------------------------
# Baseline detectors


def kde_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    bandwidth: float | str = "scott",
    standardise: bool = True,
) -> np.ndarray:
    """Gaussian kernel density estimate (Parzen/Rosenblatt); score = -log density, shape (M,).

    ``bandwidth`` is a number (in standardised units), ``"scott"``, ``"silverman"`` (rules of thumb
    for unit-variance data) or ``"cv"`` (5-fold likelihood search around Scott's rule, folds
    drawn from ``rng``). ``train_labels`` is accepted and ignored.
    """
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KernelDensity

    train, test = _standardised(*_features(train, test), standardise)
    n, d = train.shape
    scott = n ** (-1.0 / (d + 4))
    if isinstance(bandwidth, str):
        if bandwidth == "scott":
            h = scott
        elif bandwidth == "silverman":
            h = (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        elif bandwidth == "cv":
            grid = {"bandwidth": scott * np.array([0.25, 0.5, 1.0, 2.0, 4.0])}
            folds = KFold(n_splits=min(5, n), shuffle=True, random_state=_seed(rng))
            search = GridSearchCV(KernelDensity(kernel="gaussian"), grid, cv=folds).fit(train)
            h = float(search.best_params_["bandwidth"])
        else:
            raise ConfigError(
                f"kde bandwidth {bandwidth!r} is not allowed; use a number, 'scott', "
                "'silverman' or 'cv'"
            )
    else:
        h = float(bandwidth)
        if not h > 0:
            raise ConfigError(f"kde bandwidth must be > 0; got {bandwidth!r}")
    kde = KernelDensity(kernel="gaussian", bandwidth=h).fit(train)
    return -kde.score_samples(test)


def pca_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    variance: float = 0.9,
    standardise: bool = True,
) -> np.ndarray:
    """PCA reconstruction error; keeps the components explaining ``variance`` of the train variance.

    Score = squared distance from each test row to the principal subspace, shape (M,).
    ``rng`` and ``train_labels`` are accepted and ignored (the full SVD is deterministic).
    """
    from sklearn.decomposition import PCA

    if not 0.0 < variance < 1.0:
        raise ConfigError(f"pca variance must be strictly between 0 and 1; got {variance!r}")
    train, test = _standardised(*_features(train, test), standardise)
    pca = PCA(n_components=variance, svd_solver="full").fit(train)
    return _sq_residual(test, pca.inverse_transform(pca.transform(test)))


def kpca_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    variance: float = 0.9,
    gamma: float | None = None,
    max_train: int = 1000,
    space: str = "feature",
    alpha: float = 1.0,
    standardise: bool = True,
) -> np.ndarray:
    """Kernel PCA (RBF) reconstruction error, shape (M,).

    Keeps the kernel components explaining ``variance`` of the centred kernel's spectrum.
    ``space="input"``: squared distance between a row and its pre-image reconstruction (learned by
    kernel ridge with strength ``alpha``). ``space="feature"``: squared distance in the kernel's
    feature space between the centred image of a row and its projection (exact, no pre-image).
    The default is the feature-space error of Hoffmann (2007), the kPCA novelty detector the paper
    cites; the pre-image variant measured weaker on shifted blobs.
    ``gamma`` defaults to 1/D on standardised features. The training rows are subsampled to
    ``max_train`` with ``rng``, since the fit is cubic in them.
    """
    from sklearn.decomposition import KernelPCA
    from sklearn.metrics.pairwise import rbf_kernel
    from sklearn.preprocessing import KernelCenterer

    if not 0.0 < variance < 1.0:
        raise ConfigError(f"kpca variance must be strictly between 0 and 1; got {variance!r}")
    if space not in ("input", "feature"):
        raise ConfigError(f"kpca space {space!r} is not allowed; use 'input' or 'feature'")
    train, test = _standardised(*_features(train, test), standardise)
    if train.shape[0] > max_train:
        train = train[np.sort(rng.choice(train.shape[0], size=max_train, replace=False))]
    gamma = 1.0 / train.shape[1] if gamma is None else float(gamma)

    # Choose the number of components from the centred kernel's eigenvalues, as PCA does from
    # the covariance's; one dense eigendecomposition of an n x n matrix is cheap at n <= 1000.
    kernel = KernelCenterer().fit_transform(rbf_kernel(train, gamma=gamma))
    eig = np.clip(np.linalg.eigvalsh(kernel)[::-1], 0.0, None)
    if eig.sum() <= 0:
        raise DataError("kpca: the kernel matrix of the training rows is constant")
    k = int(np.searchsorted(np.cumsum(eig) / eig.sum(), variance) + 1)
    k = min(k, int((eig > 1e-12 * eig[0]).sum()))

    kpca = KernelPCA(
        n_components=k,
        kernel="rbf",
        gamma=gamma,
        fit_inverse_transform=(space == "input"),
        alpha=alpha,
        eigen_solver="dense",
    ).fit(train)
    coords = kpca.transform(test)
    if space == "input":
        return _sq_residual(test, kpca.inverse_transform(coords))
    # ||phi(x) - mean phi||^2 = k(x, x) - 2 mean_i k(x, x_i) + mean_ij k(x_i, x_j), with k(x, x) = 1
    # for the RBF kernel; the projection's squared norm is the squared norm of the coordinates.
    k_test = rbf_kernel(test, train, gamma=gamma)
    centred_norm = 1.0 - 2.0 * k_test.mean(axis=1) + rbf_kernel(train, gamma=gamma).mean()
    return np.clip(centred_norm - np.sum(coords**2, axis=1), 0.0, None)


def svdd_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    nu: float = 0.1,
    gamma: float | str = "scale",
    standardise: bool = True,
) -> np.ndarray:
    """Support vector data description, as the RBF one-class SVM (equivalent for RBF kernels).

    Score = -decision_function, shape (M,): positive outside the learned boundary.
    ``rng`` and ``train_labels`` are accepted and ignored (the solver is deterministic).
    """
    from sklearn.svm import OneClassSVM

    train, test = _standardised(*_features(train, test), standardise)
    model = OneClassSVM(kernel="rbf", nu=nu, gamma=gamma).fit(train)
    return -model.decision_function(test)


def mve_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    max_dims: int = 10,
    standardise: bool = True,
) -> np.ndarray:
    """Robust (minimum covariance determinant) ellipsoid; score = robust Mahalanobis distance (M,).

    The robust fit needs many more rows than dimensions, so features are first projected onto
    their top ``max_dims`` principal components (fewer when rows are scarce).
    """
    from sklearn.covariance import MinCovDet
    from sklearn.decomposition import PCA

    train, test = _standardised(*_features(train, test), standardise)
    n, d = train.shape
    dims = max(1, min(max_dims, d, n // 5))
    if dims < d:
        pca = PCA(n_components=dims, svd_solver="full").fit(train)
        train, test = pca.transform(train), pca.transform(test)
    with warnings.catch_warnings():
        # A singular robust covariance is reported as a warning; the distances remain usable.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        mcd = MinCovDet(random_state=_seed(rng)).fit(train)
    return np.sqrt(np.clip(mcd.mahalanobis(test), 0.0, None))


def ae_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    bottleneck: int | None = None,
    width: int | None = None,
    max_iter: int = 200,
    standardise: bool = True,
) -> np.ndarray:
    """Autoencoder (fully connected, width-bottleneck-width); score = mean squared error (M,).

    ``bottleneck`` defaults to max(2, min(32, D // 4)) units and ``width`` to min(128, 2 * D);
    the network's initialisation and batch order are seeded from ``rng``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    train, test = _standardised(*_features(train, test), standardise)
    d = train.shape[1]
    bottleneck = max(2, min(32, d // 4)) if bottleneck is None else int(bottleneck)
    width = min(128, 2 * d) if width is None else int(width)
    model = MLPRegressor(
        hidden_layer_sizes=(width, bottleneck, width),
        max_iter=max_iter,
        random_state=_seed(rng),
    )
    with warnings.catch_warnings():
        # Stopping at max_iter is a deliberate time budget, not a failure.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train, train)
    return _sq_residual(test, model.predict(test)) / d


def gaussian_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    ridge: float = 1e-3,
    standardise: bool = False,
) -> np.ndarray:
    """Class-conditional Gaussians with one shared covariance (Lee et al. 2018, "Mahalanobis").

    Needs ``train_labels`` (N,). Score = min over classes of the Mahalanobis distance to the
    class mean, shape (M,). ``ridge`` times the mean variance is added to the covariance's
    diagonal so that singular covariances (more features than rows, constant pixels) still
    invert. The test rows' labels are never used. ``rng`` is accepted and ignored.
    """
    train, test = _standardised(*_features(train, test), standardise)
    if train_labels is None:
        raise ConfigError("the 'gaussian' detector needs train_labels (one class per train row)")
    labels = np.asarray(train_labels)
    if labels.shape != (train.shape[0],):
        raise DataError(
            f"train_labels has shape {labels.shape}; expected ({train.shape[0]},), one per row"
        )
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centred = train - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / train.shape[0]
    scale = float(np.trace(cov)) / cov.shape[0]
    cov[np.diag_indices_from(cov)] += ridge * (scale if scale > 0 else 1.0)
    # Whitening by the eigendecomposition turns every Mahalanobis distance into a Euclidean one.
    eigval, eigvec = np.linalg.eigh(cov)
    whiten = eigvec / np.sqrt(eigval)
    test_w = test @ whiten
    means_w = means @ whiten
    sq = (
        np.sum(test_w**2, axis=1)[:, None]
        - 2.0 * test_w @ means_w.T
        + np.sum(means_w**2, axis=1)[None, :]
    )
    return np.sqrt(np.clip(sq.min(axis=1), 0.0, None))


DETECTOR_FUNCS: dict[str, Detector] = {
    "kde": kde_score,
    "pca": pca_score,
    "kpca": kpca_score,
    "svdd": svdd_score,
    "mve": mve_score,
    "gaussian": gaussian_score,
    "ae": ae_score,
}
FEATURE_DETECTORS = tuple(DETECTOR_FUNCS)


def get_detector(name: str) -> Detector:
    """The feature detector called ``name``; ConfigError naming the valid ones otherwise."""
    if name not in DETECTOR_FUNCS:
        note = ""
        if name in MODEL_SCORES:
            note = f"; {name!r} is scored from the trained model, not fit on features"
        raise ConfigError(f"unknown detector {name!r}; valid: {', '.join(FEATURE_DETECTORS)}{note}")
    return DETECTOR_FUNCS[name]


def fit_score(
    name: str,
    train: np.ndarray,
    test: np.ndarray,
    *,
    rng: np.random.Generator,
    train_labels: np.ndarray | None = None,
    **kw: Any,
) -> np.ndarray:
    """Fit detector ``name`` on ``train`` (N, D) and score ``test`` (M, D): (M,), higher = more OoD.

    ``train_labels`` (N,) is passed to every detector (only ``gaussian`` uses it); ``kw`` are the
    detector's own options (Python's TypeError names one it does not have).
    """
    detector = get_detector(name)
    return np.asarray(detector(train, test, rng=rng, train_labels=train_labels, **kw), float)
