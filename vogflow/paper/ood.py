"""Out-of-distribution detection: baseline detectors and the Table 1 comparison (paper §4.2).

One job: turn "scores on clean examples" and "scores on corrupted examples" into the paper's
detection metrics, for VoG and for the baselines it is compared with. The baselines live here as
"fit on in-distribution training features, score test points" functions; every score this module
produces or accepts is **higher = more out-of-distribution**.

Arrays in, arrays and tables out: numpy, scipy, scikit-learn and pandas only, no files, no plots.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from vogflow.analysis.stats import auroc, bootstrap_ci, claim, detection_metrics

# A detector: fit on in-distribution ``train`` (N, D), return one score per row of ``test`` (M, D),
# higher = more out-of-distribution.
Detector = Callable[..., np.ndarray]

METRICS = ("auroc", "aupr_in", "aupr_out")

# Detectors that need no fitting on features: scored from the trained model itself.
MODEL_SCORES = ("vog", "msp")


# --------------------------------------------------------------------------------------------
# Input checks and shared helpers


def _features(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if train.ndim != 2 or test.ndim != 2:
        raise ValueError(
            f"features must be 2-D (rows, features); got train {train.shape}, test {test.shape}"
        )
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train has {train.shape[1]} features but test has {test.shape[1]}; they must match"
        )
    if train.shape[0] < 2:
        raise ValueError(f"need at least 2 training rows to fit a detector; got {train.shape[0]}")
    if not (np.isfinite(train).all() and np.isfinite(test).all()):
        raise ValueError("features contain NaN or infinite values")
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
            raise ValueError(
                f"kde bandwidth {bandwidth!r} is not allowed; use a number, 'scott', "
                "'silverman' or 'cv'"
            )
    else:
        h = float(bandwidth)
        if not h > 0:
            raise ValueError(f"kde bandwidth must be > 0; got {bandwidth!r}")
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
        raise ValueError(f"pca variance must be strictly between 0 and 1; got {variance!r}")
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
        raise ValueError(f"kpca variance must be strictly between 0 and 1; got {variance!r}")
    if space not in ("input", "feature"):
        raise ValueError(f"kpca space {space!r} is not allowed; use 'input' or 'feature'")
    train, test = _standardised(*_features(train, test), standardise)
    if train.shape[0] > max_train:
        train = train[np.sort(rng.choice(train.shape[0], size=max_train, replace=False))]
    gamma = 1.0 / train.shape[1] if gamma is None else float(gamma)

    # Choose the number of components from the centred kernel's eigenvalues, as PCA does from
    # the covariance's; one dense eigendecomposition of an n x n matrix is cheap at n <= 1000.
    kernel = KernelCenterer().fit_transform(rbf_kernel(train, gamma=gamma))
    eig = np.clip(np.linalg.eigvalsh(kernel)[::-1], 0.0, None)
    if eig.sum() <= 0:
        raise ValueError("kpca: the kernel matrix of the training rows is constant")
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
        raise ValueError("the 'gaussian' detector needs train_labels (one class per train row)")
    labels = np.asarray(train_labels)
    if labels.shape != (train.shape[0],):
        raise ValueError(
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
    """The feature detector called ``name``; ValueError naming the valid ones otherwise."""
    if name not in DETECTOR_FUNCS:
        note = ""
        if name in MODEL_SCORES:
            note = f"; {name!r} is scored from the trained model, not fit on features"
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(FEATURE_DETECTORS)}{note}")
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


def corruption_metrics(clean_scores: np.ndarray, corrupt_scores: np.ndarray) -> dict[str, float]:
    """Detection metrics for one corruption: ``clean_scores`` (N,) vs ``corrupt_scores`` (M,).

    Scores are higher = more OoD; the corrupted examples are the outliers. Returns ``auroc``,
    ``aupr_in``, ``aupr_out`` as fractions in [0, 1], plus ``n_clean`` and ``n_out``.
    """
    clean = np.asarray(clean_scores, dtype=np.float64).ravel()
    corrupt = np.asarray(corrupt_scores, dtype=np.float64).ravel()
    scores = np.concatenate([clean, corrupt])
    is_out = np.concatenate([np.zeros(clean.size, bool), np.ones(corrupt.size, bool)])
    out: dict[str, float] = dict(detection_metrics(scores, is_out))
    out["n_clean"] = int(clean.size)
    out["n_out"] = int(corrupt.size)
    return out


def evaluate(
    scores: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
) -> pd.DataFrame:
    """Metrics for every (corruption, method) pair.

    ``scores[corruption][method] = (clean_scores, corrupt_scores)``, each 1-D, higher = more OoD.
    Returns a long table with columns ``corruption, method, auroc, aupr_in, aupr_out, n_clean,
    n_out`` (metrics as fractions), one row per pair, in input order.
    """
    rows = []
    for corruption, by_method in scores.items():
        for method, (clean, corrupt) in by_method.items():
            rows.append(
                {"corruption": corruption, "method": method, **corruption_metrics(clean, corrupt)}
            )
    columns = ["corruption", "method", *METRICS, "n_clean", "n_out"]
    return pd.DataFrame(rows, columns=columns)


def summary_table(
    rows: pd.DataFrame | Iterable[Mapping[str, Any]], *, ddof: int = 1
) -> pd.DataFrame:
    """Table 1: per method, mean and std over corruptions of each metric, in percent.

    ``rows``: the output of :func:`evaluate` (or records with ``corruption``, ``method`` and the
    metrics as fractions). Returns one row per method (index ``method``) with columns
    ``auroc_mean, auroc_std, aupr_in_mean, aupr_in_std, aupr_out_mean, aupr_out_std,
    n_corruptions``, sorted by ``auroc_mean`` ascending as the paper lists them. ``ddof=1`` is the
    sample std across corruptions (the paper does not say which it used); one corruption gives NaN.
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in ("corruption", "method", *METRICS) if c not in frame.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {', '.join(missing)}")
    if frame.duplicated(["corruption", "method"]).any():
        raise ValueError("rows hold the same (corruption, method) pair more than once")
    out = {}
    for method, group in frame.groupby("method", sort=False):
        entry: dict[str, float] = {}
        for metric in METRICS:
            values = 100.0 * group[metric].to_numpy(dtype=np.float64)
            entry[f"{metric}_mean"] = float(values.mean())
            entry[f"{metric}_std"] = (
                float(values.std(ddof=ddof)) if values.size > ddof else float("nan")
            )
        entry["n_corruptions"] = int(group["corruption"].nunique())
        out[method] = entry
    columns = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")] + ["n_corruptions"]
    table = pd.DataFrame.from_dict(out, orient="index", columns=columns)
    table.index.name = "method"
    table["n_corruptions"] = table["n_corruptions"].astype(int)
    return table.sort_values("auroc_mean", kind="stable")


def _cell(mean: float, std: float, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_markdown(table: pd.DataFrame, *, digits: int = 2, published: bool = True) -> str:
    """Render a :func:`summary_table` as a markdown table with "mean ± std" cells (percent).

    With ``published``, two more columns give the paper's AUROC and AUPR-Out for the same method
    ("–" where the paper has no such row), so measured and published sit side by side.
    """
    paper = paper_table1()
    header = ["Method", "AUROC", "AUPR-In", "AUPR-Out", "Corruptions"]
    if published:
        header += ["Paper AUROC", "Paper AUPR-Out"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for method, row in table.iterrows():
        label = paper[method]["label"] if method in paper else str(method)
        cells = [
            label,
            _cell(row["auroc_mean"], row["auroc_std"], digits),
            _cell(row["aupr_in_mean"], row["aupr_in_std"], digits),
            _cell(row["aupr_out_mean"], row["aupr_out_std"], digits),
            str(int(row["n_corruptions"])),
        ]
        if published:
            ref = paper.get(method)
            cells += (
                [
                    _cell(ref["auroc_mean"], ref["auroc_std"], digits),
                    _cell(ref["aupr_out_mean"], ref["aupr_out_std"], digits),
                ]
                if ref
                else ["–", "–"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paper_table1() -> dict[str, dict[str, Any]]:
    """The paper's Table 1 (MNIST-C, mean ± std over 15 corruptions, percent).

    Keys are this project's detector names (plus ``docc`` and ``aegan``, which it does not run);
    each value has ``label`` (the paper's name), ``auroc_mean``, ``auroc_std``, ``aupr_out_mean``
    and ``aupr_out_std``. The paper reports no AUPR-In and no MSP row.
    """
    rows = [
        ("kde", "KDE", 57.46, 32.09, 62.56, 24.16),
        ("mve", "MVE", 62.84, 21.92, 61.42, 19.1),
        ("docc", "DOCC", 69.16, 28.35, 70.37, 23.25),
        ("kpca", "kPCA", 72.12, 31.00, 75.39, 26.37),
        ("svdd", "SVDD", 74.01, 21.39, 73.33, 21.98),
        ("pca", "PCA", 77.71, 30.90, 80.86, 25.2),
        ("gaussian", "Gaussian", 80.57, 29.71, 84.51, 22.62),
        ("vog", "VoG", 85.42, 10.28, 84.96, 9.61),
        ("ae", "AE", 89.89, 18.52, 89.99, 18.19),
        ("aegan", "AEGAN", 95.93, 7.90, 95.40, 9.46),
    ]
    return {
        key: {
            "label": label,
            "auroc_mean": au_m,
            "auroc_std": au_s,
            "aupr_out_mean": out_m,
            "aupr_out_std": out_s,
        }
        for key, label, au_m, au_s, out_m, out_s in rows
    }


def auroc_claim(
    clean_scores: np.ndarray,
    corrupt_scores: np.ndarray,
    *,
    rng: np.random.Generator,
    method: str = "vog",
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The claim "``method`` detects corrupted examples better than chance": AUROC above 0.5.

    ``clean_scores`` (N,) and ``corrupt_scores`` (M,) are higher = more OoD (pool the corruptions
    first for one overall claim). Returns :func:`stats.claim`'s record (``expected``,
    ``measured``, ``holds``, ``interval``, ``confident``) with a percentile bootstrap interval
    over examples, plus ``method``, ``n_clean``, ``n_out`` and the paper's mean AUROC as a
    fraction under ``published`` (None where the paper has no such row).
    """
    clean = np.asarray(clean_scores, dtype=np.float64).ravel()
    corrupt = np.asarray(corrupt_scores, dtype=np.float64).ravel()
    scores = np.concatenate([clean, corrupt])
    is_out = np.concatenate([np.zeros(clean.size, bool), np.ones(corrupt.size, bool)])
    measured = auroc(scores, is_out)
    interval = bootstrap_ci(auroc, scores, is_out, n_boot=n_boot, confidence=confidence, rng=rng)
    out = claim("above", measured, interval=interval, null=0.5, name="auroc")
    ref = paper_table1().get(method)
    out.update(
        {
            "method": method,
            "n_clean": int(clean.size),
            "n_out": int(corrupt.size),
            "confidence": confidence,
            "published": ref["auroc_mean"] / 100.0 if ref else None,
        }
    )
    return out
