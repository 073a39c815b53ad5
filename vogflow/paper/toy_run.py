"""The paper's toy problem (Fig. 1): train an MLP on two Gaussians, score VoG, find the boundary."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from vogflow.config.paper import ToyConfig
from vogflow.config.schema import CheckpointConfig, DataConfig, ModelConfig, TrainConfig
from vogflow.data import RawSplits, normalise
from vogflow.data.builtin import toy_points


def run_toy(cfg: ToyConfig, *, echo=print) -> dict[str, Any]:
    """Train with a checkpoint every epoch; return points, VoG, distances and the margin grid."""

    from vogflow.checkpoints.files import load_run_models
    from vogflow.paper.toy import boundary_distance, margin
    from vogflow.scoring.extract import run_extraction
    from vogflow.scoring.options import ExtractionOptions
    from vogflow.scoring.vog import class_normalise
    from vogflow.training.train import train_run

    x, y = toy_points(cfg.n_points, cfg.separation, cfg.seed)
    x_test, y_test = toy_points(max(cfg.n_points // 4, 10), cfg.separation, cfg.seed + 1)
    dataset = normalise(DataConfig(name="toy"), RawSplits(x, y, x_test, y_test, ("0", "1")))
    recipe = TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=0.0,
        milestones=(),
        seed=cfg.seed,
        device="cpu",
    )
    every_epoch = CheckpointConfig(early=cfg.epochs, every=1, late=cfg.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        train_run(
            dataset, ModelConfig(name="mlp", hidden=cfg.hidden), recipe, every_epoch, tmp, echo=echo
        )
        models, manifest = load_run_models(tmp)
    points, labels = dataset.train.x, dataset.train.y
    options = ExtractionOptions(
        windows=("all",), label_modes=("label",), batch_size=1024, device="cpu", progress=False
    )
    ex = run_extraction(models, (points, labels), options)
    raw = ex.vog_raw["all_label"]
    net = models[-1].net
    weights = [
        t.detach().numpy().astype(np.float64)
        for t in (net[1].weight, net[1].bias, net[3].weight, net[3].bias)
    ]
    distance = boundary_distance(points.astype(np.float64), *weights)
    lo, hi = points.min(0) - 0.5, points.max(0) + 0.5
    gx, gy = np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200)
    mesh = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    return {
        "points": points,
        "labels": labels,
        "vog_raw": raw,
        "vog": class_normalise(raw, labels, method="z"),
        "distance": distance,
        "grid_x": gx,
        "grid_y": gy,
        "grid_margin": margin(mesh, *weights).reshape(200, 200),
        "test_accuracy": manifest["final"]["test_accuracy"],
    }
