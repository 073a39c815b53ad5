"""Train a model with a checkpoint schedule; resumable, and bit-for-bit reproducible on the CPU.

All randomness derives from ``(seed, epoch)``: the initial weights from the seed, each epoch's
shuffle, augmentation and dropout from a generator seeded with the pair. A run killed mid-training
therefore resumes from its last saved state and ends with the same weights as one never stopped,
and a damaged file of a finished run is rebuilt bit for bit instead of being trusted.
The loop reports through a plain callable and knows nothing of experiment tracking.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.checkpoints import files as ck
from vogflow.common.atomic import sha256_bytes
from vogflow.common.progress import format_seconds
from vogflow.common.runtime import pinned_threads, platform_record
from vogflow.config.schema import CheckpointConfig, ModelConfig, TrainConfig, section_dict
from vogflow.data import Dataset, shuffle_labels
from vogflow.models.architectures import build_model
from vogflow.parallel import ddp
from vogflow.training.health import check_finite, check_learning
from vogflow.training.labels import data_fingerprint
from vogflow.training.loop import as_input, predict, run_epoch
from vogflow.training.resume import RESUME, Folder, decide_start, save_resume

MetricsLogger = Callable[[dict[str, float], int], None]

__all__ = ["MetricsLogger", "train_run"]


def _run_config(
    dataset: Dataset, model_cfg: ModelConfig, cfg: TrainConfig, ckpt_cfg: CheckpointConfig
) -> dict[str, Any]:
    return {
        "data": {"name": dataset.name, "fingerprint": data_fingerprint(dataset)},
        "model": section_dict(model_cfg),
        # Where it runs, not what it computes: checkpoints differ there only in float order.
        "train": {k: v for k, v in section_dict(cfg).items() if k not in ("device", "processes")},
        "checkpoints": section_dict(ckpt_cfg),
    }


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _quiet(line: str) -> None:
    pass


def _save_resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int
) -> None:
    save_resume(path, model, optimizer, epoch, step)


def train_run(
    dataset: Dataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    ckpt_cfg: CheckpointConfig,
    out_dir: str | Path,
    *,
    log: MetricsLogger | None = None,
    echo: Callable[[str], None] = print,
    warn: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Train one run into ``out_dir`` (checkpoints, ``manifest.json``, ``labels.npz``).

    Runs with torch's intra-op thread count pinned to ``cfg.threads`` (the caller's count is
    restored afterwards): each count sums in another order, so the same params
    give the same bits on machines with any number of cores only at a fixed count. The manifest's
    ``platform`` entry records that count with everything else that decides the bits (versions,
    CPU capability, device); same params and same platform record, same bits.

    A previous attempt with the same configuration is verified before it is trusted: every
    listed checkpoint against its sha256, the resume state by loading it, the labels against the
    config. A complete, intact run is returned as is; an interrupted one resumes from its resume
    state. A bad file is reported through ``warn`` and rebuilt: training is deterministic, so it
    replays from the last state that is still good. A checkpoint holds no optimizer state, so
    that is the resume state when it precedes every bad checkpoint, and the start otherwise.
    Another configuration starts afresh (clearing ``out_dir``). Returns the manifest.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank calls it with the same arguments and the
    processes train the run together with DDP (:mod:`vogflow.parallel.ddp`): rank 0 alone reads and
    writes ``out_dir``, reports and logs the metrics summed over the ranks; every rank returns
    the manifest once rank 0 has written the complete run.
    """
    threads = cfg.threads
    with pinned_threads(threads):
        return _train_run(
            dataset,
            model_cfg,
            cfg,
            ckpt_cfg,
            Path(out_dir),
            log=log,
            echo=echo,
            warn=warn,
            threads=threads,
        )


def _fresh_manifest(
    dataset: Dataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    run_config: dict[str, Any],
    noisy_mask: np.ndarray,
    *,
    save_at: list[int],
    config_hash: str,
    platform: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a run started afresh: no checkpoints yet."""
    return {
        "architecture": model_cfg.name,
        "model_options": {"hidden": model_cfg.hidden} if model_cfg.name == "mlp" else {},
        "num_classes": dataset.num_classes,
        "classes": list(dataset.classes),
        "input_shape": list(dataset.input_shape),
        "dataset": dataset.name,
        "data_fingerprint": run_config["data"]["fingerprint"],
        "normalisation": {"mean": list(dataset.mean), "std": list(dataset.std)},
        "augment": dataset.augment,
        "label_noise": {
            "fraction": cfg.label_noise,
            "seed": cfg.noise_seed,
            "n_noisy": int(noisy_mask.sum()),
        },
        "train": run_config["train"],
        "schedule": save_at,
        "config_hash": config_hash,
        "platform": platform,
        "checkpoints": [],
        "complete": False,
    }


def _resume_into(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    resume: dict | None,
    manifest: dict[str, Any],
    out: Path,
    echo: Callable[[str], None],
) -> tuple[int, int]:
    """Load the resume state, if any, into ``model`` and ``optimizer``: (first epoch, step)."""
    if resume is None:
        return 1, 0
    ck.load_into(model, resume["model"], source=str(out / RESUME))
    optimizer.load_state_dict(resume["optimizer"])
    start_epoch, step = int(resume["epoch"]) + 1, int(resume["step"])
    # A kill between a checkpoint and its resume state leaves that checkpoint listed; the
    # replayed epoch lists it again, so forget entries past the resume point first.
    manifest["checkpoints"] = [c for c in manifest["checkpoints"] if c["epoch"] < start_epoch]
    echo(f"resuming {out} after epoch {start_epoch - 1}")
    return start_epoch, step


def _save_checkpoint(
    out: Path,
    manifest: dict[str, Any],
    model: nn.Module,
    x_test: Any,
    y_test: torch.Tensor,
    *,
    epoch: int,
    step: int,
    lr: float,
    metrics: dict[str, float],
) -> str:
    """Evaluate, save and list the checkpoint of ``epoch``; returns the words for its line."""
    test_acc = float((predict(model, x_test) == y_test).float().mean())
    metrics["test_accuracy"] = test_acc
    name = ck.checkpoint_name(epoch)
    digest = ck.save_state_dict(out / name, model.state_dict())
    manifest["checkpoints"].append(
        {
            "file": name,
            "epoch": epoch,
            "step": step,
            "sha256": digest,
            "test_accuracy": test_acc,
            "lr": lr,
        }
    )
    ck.write_manifest(out, manifest)
    return f"  test {test_acc:.3f}  [saved {name}]"


def _finish(
    out: Path,
    manifest: dict[str, Any],
    model: nn.Module,
    x_train: Any,
    y_train: torch.Tensor,
    y_clean: np.ndarray,
    *,
    previous: dict[str, str],
    device: torch.device,
    warn: Callable[[str], None],
) -> dict[str, Any]:
    train_pred = predict(model, x_train)
    manifest["final"] = {
        # On the labels it was trained on, noisy ones included: 1.0 means the noise was
        # memorised.
        "train_accuracy": float((train_pred == y_train).float().mean()),
        "train_accuracy_clean": float((train_pred == torch.from_numpy(y_clean)).float().mean()),
        "test_accuracy": manifest["checkpoints"][-1]["test_accuracy"],
    }
    manifest["complete"] = True
    ck.write_manifest(out, manifest)
    (out / RESUME).unlink(missing_ok=True)
    differ = [
        c["file"]
        for c in manifest["checkpoints"]
        if previous.get(c["file"], c["sha256"]) != c["sha256"]
    ]
    if differ:
        warn(
            f"warning: rebuilt {', '.join(differ)} in {out} differ from the recorded sha256: "
            f"training on {device} is not bit-reproducible, so later stages will see new "
            "weights"
        )
    return manifest


def _train_run(
    dataset: Dataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    ckpt_cfg: CheckpointConfig,
    out: Path,
    *,
    log: MetricsLogger | None,
    echo: Callable[[str], None],
    warn: Callable[[str], None],
    threads: int,
) -> dict[str, Any]:
    ranks, device = ddp.join(cfg.device)
    if not ranks.writer:  # rank 0 reports for the job
        log, echo, warn = None, _quiet, _quiet
    current_platform = platform_record(device, threads)
    if ranks.world > 1:
        # Absent for one process, so the records of runs trained before DDP still match.
        current_platform["world_size"] = ranks.world
    run_config = _run_config(dataset, model_cfg, cfg, ckpt_cfg)
    config_hash = sha256_bytes(json.dumps(run_config, sort_keys=True).encode())
    save_at = ck.schedule(
        cfg.epochs, early=ckpt_cfg.early, every=ckpt_cfg.every, late=ckpt_cfg.late
    )

    noisy, noisy_mask = shuffle_labels(dataset.train.y, cfg.label_noise, seed=cfg.noise_seed)
    folder = Folder(
        out=out,
        config_hash=config_hash,
        save_at=save_at,
        platform=current_platform,
        epochs=cfg.epochs,
        labels={"label": noisy, "true_label": dataset.train.y, "noisy": noisy_mask},
        fresh=partial(
            _fresh_manifest,
            dataset,
            model_cfg,
            cfg,
            run_config,
            noisy_mask,
            save_at=save_at,
            config_hash=config_hash,
            platform=current_platform,
        ),
        echo=echo,
        warn=warn,
    )

    if ranks.world > 1:  # before rank 0 touches the folder
        ranks.check(build_model(model_cfg.name, dataset.input_shape, dataset.num_classes), device)
    # Rank 0 alone reads and repairs the folder; the others start from what it decided.
    manifest, resume, previous, finished = ranks.from_writer(partial(decide_start, folder))
    if finished:
        return manifest

    torch.manual_seed(cfg.seed)
    model = ck.build_from_manifest(manifest).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    start_epoch, step = _resume_into(model, optimizer, resume, manifest, out, echo)
    net = ranks.wrap(model, device)

    x_train = as_input(dataset.train.x)
    y_train = torch.from_numpy(noisy)
    x_test = as_input(dataset.test.x)
    y_test = torch.from_numpy(dataset.test.y)
    n = len(y_train)
    chance = float(np.bincount(noisy).max() / n)
    history: list[tuple[float, float]] = []  # (loss, accuracy) per epoch, for stalled()
    started = time.perf_counter()

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr, step, total_loss, total_correct = run_epoch(
            epoch,
            model=model,
            net=net,
            optimizer=optimizer,
            ranks=ranks,
            device=device,
            cfg=cfg,
            x_train=x_train,
            y_train=y_train,
            augment=dataset.augment,
            step=step,
        )
        total_loss, total_correct = ranks.total(total_loss, total_correct)
        check_finite(total_loss, epoch)
        total_loss, total_correct = total_loss.item(), int(total_correct)
        metrics = {
            "train_loss": total_loss / n,
            "train_accuracy": total_correct / n,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - t0,
        }
        line = (
            f"epoch {epoch:>3}/{cfg.epochs}  loss {metrics['train_loss']:.4f}  "
            f"acc {metrics['train_accuracy']:.3f}  lr {lr:.4g}  "
            f"{format_seconds(metrics['epoch_seconds'])}"
        )
        # Rank 0 alone evaluates and writes; the others go on to the next epoch's first step,
        # where DDP waits for it.
        if epoch in save_at and ranks.writer:
            line += _save_checkpoint(
                out, manifest, model, x_test, y_test, epoch=epoch, step=step, lr=lr, metrics=metrics
            )
        # The resume state is written after the checkpoint so a kill between the two replays
        # this epoch and rewrites the same checkpoint bits.
        if ranks.writer:
            _save_resume(out / RESUME, model, optimizer, epoch, step)
        per_epoch = (time.perf_counter() - started) / (epoch - start_epoch + 1)
        line += f"  eta {format_seconds(per_epoch * (cfg.epochs - epoch))}"
        echo(line)
        if log is not None:
            log(metrics, epoch)
        history.append((metrics["train_loss"], metrics["train_accuracy"]))
        # Every rank sees the same summed totals, so all of them stop at the same epoch.
        check_learning(
            history,
            metrics,
            epoch=epoch,
            classes=dataset.num_classes,
            chance=chance,
            lr=cfg.lr,
        )

    # Every rank returns once rank 0 has written the complete run, so none reads it half done.
    finish = partial(
        _finish,
        out,
        manifest,
        model,
        x_train,
        y_train,
        dataset.train.y,
        previous=previous,
        device=device,
        warn=warn,
    )
    return ranks.from_writer(finish)
