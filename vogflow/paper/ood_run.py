"""The OoD experiment's model side: corrupt clean test images, score both with every method.

Corruptions in the style of MNIST-C (or the published MNIST-C files) are applied to a seeded
subset of the clean test split; VoG is computed in ``pred`` mode (no labels needed) and compared
with the baseline detectors of :mod:`vogflow.paper.ood`. Higher score = more out-of-distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vogflow.config.paper import OodConfig
from vogflow.data import Dataset
from vogflow.errors import ConfigError
from vogflow.scoring.extract import run_extraction
from vogflow.scoring.options import ExtractionOptions
from vogflow.scoring.vog import class_normalise

MAX_DETECTOR_TRAIN = 1000  # detectors are fit on at most this many clean training examples


def corrupted_sets(dataset: Dataset, cfg: OodConfig, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised corrupted copies of ``dataset.test.x[idx]``, one per corruption."""
    from vogflow.paper.corruptions import corrupt, load_mnist_c

    clean01 = dataset.denormalise(dataset.test.x[idx])
    mean = np.asarray(dataset.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(dataset.std, dtype=np.float32).reshape(1, -1, 1, 1)
    out = {}
    for i, name in enumerate(cfg.corruptions):
        if cfg.mnist_c_path and dataset.name == "mnist":
            images, _ = load_mnist_c(cfg.mnist_c_path, name, split="test")
            images = images[idx]
        else:
            images = corrupt(clean01, name, rng=np.random.default_rng([cfg.seed, i]))
        out[name] = ((images - mean) / std).astype(np.float32)
    return out


def score_all(
    models: Sequence[nn.Module],
    dataset: Dataset,
    cfg: OodConfig,
    *,
    window_size: int,
    normalise: str,
    device: str = "auto",
    batch_size: int = 256,
    echo=print,
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``scores[corruption][method] = (clean_scores, corrupted_scores)``, higher = more OoD."""
    from vogflow.models.architectures import penultimate_features
    from vogflow.paper.ood import fit_score

    if len(dataset.input_shape) != 3:
        raise ConfigError(
            f"ood: corruptions need images, but {dataset.name} is {dataset.input_shape}"
        )
    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.n_examples, len(dataset.test))
    idx = np.sort(rng.choice(len(dataset.test), size=n, replace=False))
    clean_x, clean_y = dataset.test.x[idx], dataset.test.y[idx]
    corrupted = corrupted_sets(dataset, cfg, idx)

    options = ExtractionOptions(
        windows=(cfg.window,),
        window_size=window_size,
        label_modes=("pred",),
        normalise=normalise,
        batch_size=batch_size,
        device=device,
        progress=False,
    )

    def vog_and_msp(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Labels feed only the per-checkpoint statistics; pred-mode VoG never sees them.
        ex = run_extraction(models, (x, clean_y), options)
        # MSP baseline: the final model's max softmax probability, negated (higher = more OoD).
        return ex.vog_raw[f"{cfg.window}_pred"], ex.pred, -ex.stats["msp"][-1]

    clean_raw, clean_pred, clean_msp = vog_and_msp(clean_x)
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, x in corrupted.items():
        raw, pred, msp = vog_and_msp(x)
        # Class normalisation over the evaluated set (clean and corrupted together), by the
        # predicted class: no labels are used.
        both_raw = np.concatenate([clean_raw, raw])
        both_pred = np.concatenate([clean_pred, pred])
        per = {}
        if "vog" in cfg.detectors:
            # The configured normalisation, with |z| and raw beside it (the paper is ambiguous).
            methods = (("vog", options.normalise), ("vog_abs", "abs"), ("vog_raw", "none"))
            for method, norm in methods:
                s = class_normalise(both_raw, both_pred, method=norm)
                per[method] = (s[:n], s[n:])
        if "msp" in cfg.detectors:
            per["msp"] = (clean_msp, msp)
        scores[name] = per
        echo(f"ood: {name}: scored {n} clean and {n} corrupted examples")

    feature_methods = [d for d in cfg.detectors if d not in ("vog", "msp")]
    if feature_methods:
        pick = rng.choice(
            len(dataset.train), size=min(MAX_DETECTOR_TRAIN, len(dataset.train)), replace=False
        )
        train_x, train_y = dataset.train.x[np.sort(pick)], dataset.train.y[np.sort(pick)]
        final = models[-1]
        evaluated = [clean_x, *corrupted.values()]
        spaces = {
            "pixels": (
                train_x.reshape(len(train_x), -1),
                np.concatenate([x.reshape(len(x), -1) for x in evaluated]),
            ),
            "features": (
                penultimate_features(final, torch.from_numpy(train_x)).numpy(),
                np.concatenate(
                    [penultimate_features(final, torch.from_numpy(x)).numpy() for x in evaluated]
                ),
            ),
        }
        for method in feature_methods:
            # Mahalanobis is defined on the model's features; the others on the inputs.
            train_f, test_f = spaces["features" if method == "gaussian" else "pixels"]
            s = fit_score(
                method, train_f, test_f, rng=np.random.default_rng(cfg.seed), train_labels=train_y
            )
            for i, name in enumerate(corrupted):
                scores[name][method] = (s[:n], s[(i + 1) * n : (i + 2) * n])
            echo(f"ood: {method}: fit on {len(train_f)} training examples")
    return scores
