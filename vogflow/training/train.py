"""Train a model with a checkpoint schedule; resumable, and bit-for-bit reproducible on the CPU.

All randomness derives from ``(seed, epoch)``: the initial weights from the seed, each epoch's
shuffle, augmentation and dropout from a generator seeded with the pair. A run killed mid-training
therefore resumes from its last saved state and ends with the same weights as one never stopped,
and a damaged file of a finished run is rebuilt bit for bit instead of being trusted.
The loop reports through a plain callable and knows nothing of experiment tracking.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.checkpoints import files as ck
from vogflow.common.atomic import read_npz, sha256_bytes, write_npz, write_with
from vogflow.common.progress import Progress, format_seconds
from vogflow.common.runtime import (
    derived_seed,
    pinned_threads,
    platform_record,
)
from vogflow.config.schema import CheckpointConfig, ModelConfig, TrainConfig, section_dict
from vogflow.data import Dataset, loaders, shuffle_labels
from vogflow.errors import RunError
from vogflow.models.architectures import build_model
from vogflow.parallel import ddp

RESUME = "resume.pt"
LABELS = "labels.npz"
MetricsLogger = Callable[[dict[str, float], int], None]


# Also a FloatingPointError, which callers of the loop caught before it was a refusal.
# Epochs in a row at chance before a run counts as stalled: one or two such epochs happen in
# healthy runs (a large first step, a learning-rate bump); a collapse stays.
STALL_EPOCHS = 3


def stalled(history: list[tuple[float, float]], *, classes: int, chance: float) -> bool:
    """Whether ``history`` ((loss, accuracy) per epoch) ends in a run that stopped learning: in
    each of the last :data:`STALL_EPOCHS` epochs, training accuracy at most 5 points above
    ``chance`` (the share of the most common training label), after the run had learned (an
    earlier epoch 10 points above chance: the collapse of a recipe too hot for the data), or
    with a loss 2 % above log(classes) throughout (worse than a uniform guess: a recipe thrown
    about from the start). A run still on its first plateau, its loss at or just below log(classes),
    is slow, not broken: a lower learning rate would not help it."""
    if len(history) < STALL_EPOCHS:
        return False
    before, window = history[:-STALL_EPOCHS], history[-STALL_EPOCHS:]
    if any(accuracy > chance + 0.05 for _, accuracy in window):
        return False
    learned = any(accuracy > chance + 0.1 for _, accuracy in before)
    # 2 % above: an untrained network's loss starts a little above log(classes) (weight decay,
    # initial logits), and a slow first plateau can stay there for epochs.
    return learned or all(loss > 1.02 * float(np.log(classes)) for loss, _ in window)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate during (1-based) ``epoch``: decays by ``gamma`` after each milestone epoch."""
    return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch > m)


def augment_batch(
    x: torch.Tensor,
    kind: str,
    generator: torch.Generator,
    *,
    rows: slice | None = None,
    of: int = 0,
) -> torch.Tensor:
    """The paper's CIFAR augmentation: 4-pixel zero-padded random crop and horizontal flip.

    ``x`` may be ``rows`` of an ``of``-example batch (a DDP rank's share): the draws are the
    whole batch's, in the same order, so every rank advances ``generator`` alike and each
    example gets the crop and flip it would get in one process.
    """
    if kind == "none":
        return x
    b, _, h, w = x.shape
    rows = slice(0, b) if rows is None else rows
    total = of or b
    pad = 4
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (total,), generator=generator)[rows]
    ox = torch.randint(0, 2 * pad + 1, (total,), generator=generator)[rows]
    at_rows = (oy[:, None] + torch.arange(h))[:, :, None]
    at_cols = (ox[:, None] + torch.arange(w))[:, None, :]
    crops = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], at_rows, at_cols]
    crops = crops.permute(0, 3, 1, 2)
    flip = (torch.rand(total, generator=generator) < 0.5)[rows]
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops).contiguous()


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 over both splits' inputs and labels: the identity of the data a run saw."""
    if dataset.train.streamed or dataset.test.streamed:
        from vogflow.data.stream import dataset_fingerprint

        return dataset_fingerprint(dataset)
    parts = [dataset.train.x, dataset.train.y, dataset.test.x, dataset.test.y]
    return sha256_bytes(b"".join(np.ascontiguousarray(p).tobytes() for p in parts))


@torch.no_grad()
def predict(model: nn.Module, x: Any, *, batch_size: int = 1024) -> torch.Tensor:
    """Predicted classes in eval mode (the model's mode is restored); ``x`` a tensor, or a
    streamed split read in batches of the same size."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if torch.is_tensor(x):
        batches = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    else:
        batches = loaders.sequential(x, None, batch_size=batch_size, pin=device.type == "cuda")
    try:
        return torch.cat([model(xb.to(device)).argmax(1).cpu() for xb in batches])
    finally:
        model.train(was_training)


def _as_input(x: Any) -> Any:
    """A split's inputs as the loop indexes them: a tensor view of an array, or the stream."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


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


def _read_manifest(out: Path, config_hash: str, warn: Callable[[str], None]) -> dict | None:
    """The manifest of a previous attempt with the same config, or None (start afresh)."""
    if not (out / ck.MANIFEST).exists():
        return None
    # Everything in the folder derives from the config, so a damaged manifest costs a retrain,
    # never a wrong result.
    try:
        manifest = ck.read_manifest(out, fix=f"retraining {out} from scratch")
    except ck.CheckpointError as err:
        warn(f"warning: {err}")
        return None
    if manifest.get("config_hash") != config_hash:
        return None
    entries = manifest.get("checkpoints")
    well_formed = isinstance(entries, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("file"), str)
        and isinstance(e.get("epoch"), int)
        and isinstance(e.get("sha256"), str)
        for e in entries
    )
    if not well_formed or [e["epoch"] for e in entries] != sorted({e["epoch"] for e in entries}):
        warn(f"warning: {out / ck.MANIFEST} lists malformed checkpoints; retraining from scratch")
        return None
    return manifest


def _first_bad_epoch(out: Path, manifest: dict, warn: Callable[[str], None]) -> int | None:
    """Epoch of the first listed checkpoint that is missing, empty or not its recorded sha256."""
    first = None
    for entry in manifest["checkpoints"]:
        try:
            ck.verify_file(out / entry["file"], sha256=entry["sha256"], fix="rebuilding it")
        except ck.CheckpointError as err:
            warn(f"warning: {err}")
            first = entry["epoch"] if first is None else first
    return first


def _load_resume(out: Path, epochs: int, warn: Callable[[str], None]) -> dict | None:
    """The resume state if it loads and makes sense; an unusable one is set aside, not trusted."""
    path = out / RESUME
    if not path.exists():
        return None
    try:
        state = ck.load_file(path, fix="setting it aside")
        ok = (
            isinstance(state, dict)
            and isinstance(state.get("model"), dict)
            and isinstance(state.get("optimizer"), dict)
            and isinstance(state.get("epoch"), int)
            and isinstance(state.get("step"), int)
            and 1 <= state["epoch"] <= epochs
        )
        if not ok:
            raise ck.CheckpointError(f"resume state {path} is not one this trainer wrote")
        return state
    except ck.CheckpointError as err:
        # Kept beside the run folder: inside it, it would be cached with the run's outputs.
        aside = out.with_name(f"{out.name}.{RESUME}.unreadable")
        path.replace(aside)
        warn(f"warning: {err}; moved it to {aside}")
        return None


def _labels_match(path: Path, label: np.ndarray, true: np.ndarray, noisy: np.ndarray) -> bool:
    try:
        saved = read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return False
    return all(
        k in saved and np.array_equal(saved[k], v)
        for k, v in (("label", label), ("true_label", true), ("noisy", noisy))
    )


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

    def decide_start() -> tuple[dict[str, Any], dict | None, dict[str, str], bool]:
        """The manifest to continue, the resume state, the recorded digests, whether done."""
        # A process killed mid-write leaves its temporary file behind (torchrun stops the other
        # ranks of a failed job that way); it is never part of the run.
        for stray in out.glob(".*.tmp"):
            stray.unlink()
        manifest = _read_manifest(out, config_hash, warn)
        resume, previous = None, {}
        if manifest is not None:
            previous = {c["file"]: c["sha256"] for c in manifest["checkpoints"]}
            bad = _first_bad_epoch(out, manifest, warn)
            labels_ok = _labels_match(out / LABELS, noisy, dataset.train.y, noisy_mask)
            if not labels_ok:
                warn(
                    f"warning: {out / LABELS} is unreadable or does not match the configured labels"
                )
            done = [c["epoch"] for c in manifest["checkpoints"]] == save_at and "final" in manifest
            if manifest.get("complete") and done and bad is None:
                if not labels_ok:  # derived from the config alone: no training needed
                    write_npz(
                        out / LABELS, label=noisy, true_label=dataset.train.y, noisy=noisy_mask
                    )
                (out / RESUME).unlink(missing_ok=True)
                echo(f"{out}: already trained with this configuration; nothing to do")
                return manifest, None, previous, True
            had_resume = (out / RESUME).exists()
            resume = _load_resume(out, cfg.epochs, warn)
            # Checkpoints listed past the resume state are replayed anyway; one before it cannot be.
            usable = resume is not None and labels_ok and (bad is None or bad > resume["epoch"])
            if not usable and (bad is not None or not labels_ok or had_resume):
                warn(
                    f"warning: retraining {out} from scratch (a checkpoint holds no optimizer "
                    "state, so the start is the last state that can be trusted)"
                )
            if not usable:
                manifest, resume = None, None
        if manifest is None:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            write_npz(out / LABELS, label=noisy, true_label=dataset.train.y, noisy=noisy_mask)
            manifest = {
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
                "platform": current_platform,
                "checkpoints": [],
                "complete": False,
            }
            ck.write_manifest(out, manifest)
        elif manifest.get("platform") != current_platform:
            # The weights so far came from the recorded platform and the rest will come from this
            # one: keep both, since neither alone reproduces these bits.
            earlier = manifest.get("platform")
            earlier_keys = earlier.keys() if isinstance(earlier, dict) else []
            changed = sorted(
                k
                for k in {*current_platform, *earlier_keys}
                if not isinstance(earlier, dict) or earlier.get(k) != current_platform.get(k)
            )
            warn(
                f"warning: resuming {out} on another platform ({', '.join(changed)} changed): the "
                "checkpoints will not match an uninterrupted run on either"
            )
            manifest["platform_before_resume"] = [
                *manifest.get("platform_before_resume", []),
                earlier,
            ]
            manifest["platform"] = current_platform
        return manifest, resume, previous, False

    if ranks.world > 1:  # before rank 0 touches the folder
        ranks.check(build_model(model_cfg.name, dataset.input_shape, dataset.num_classes), device)
    # Rank 0 alone reads and repairs the folder; the others start from what it decided.
    manifest, resume, previous, finished = ranks.from_writer(decide_start)
    if finished:
        return manifest

    torch.manual_seed(cfg.seed)
    model = ck.build_from_manifest(manifest).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    start_epoch, step = 1, 0
    if resume is not None:
        ck.load_into(model, resume["model"], source=str(out / RESUME))
        optimizer.load_state_dict(resume["optimizer"])
        start_epoch, step = int(resume["epoch"]) + 1, int(resume["step"])
        # A kill between a checkpoint and its resume state leaves that checkpoint listed; the
        # replayed epoch lists it again, so forget entries past the resume point first.
        manifest["checkpoints"] = [c for c in manifest["checkpoints"] if c["epoch"] < start_epoch]
        echo(f"resuming {out} after epoch {start_epoch - 1}")
    net = ranks.wrap(model, device)

    x_train = _as_input(dataset.train.x)
    y_train = torch.from_numpy(noisy)
    x_test = _as_input(dataset.test.x)
    y_test = torch.from_numpy(dataset.test.y)
    n = len(y_train)
    chance = float(np.bincount(noisy).max() / n)
    history: list[tuple[float, float]] = []  # (loss, accuracy) per epoch, for stalled()
    started = time.perf_counter()

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(derived_seed(cfg.seed, epoch))
        torch.manual_seed(derived_seed(cfg.seed, epoch, 1))  # dropout and other layer randomness
        order = torch.randperm(n, generator=generator)
        model.train()
        # Running sums stay on the device: a .item() per step would stall a GPU every step.
        total_loss = torch.zeros((), device=device)
        total_correct = torch.zeros((), device=device, dtype=torch.long)
        # A live bar within the epoch on a terminal only; logs get the one line per epoch.
        bar = Progress(
            -(-n // cfg.batch_size),
            f"epoch {epoch}",
            unit="step",
            enabled=sys.stderr.isatty() and ranks.writer,
        )
        steps = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
        # Each rank reads (decodes, for streamed data) only its own share of every batch.
        shares = [ranks.share(len(idx)) for idx in steps]
        own = [idx[share] for idx, share in zip(steps, shares, strict=True)]
        inputs = loaders.index_batches(x_train, own, pin=device.type == "cuda")
        for idx, share, x_own in zip(steps, shares, inputs, strict=True):
            xb = augment_batch(x_own, dataset.augment, generator, rows=share, of=len(idx))
            xb = xb.to(device)
            yb = y_train[idx[share]].to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = net(xb)
            loss, summed = ranks.loss(logits, yb, len(idx))
            loss.backward()
            optimizer.step()
            step += 1
            total_loss += summed
            total_correct += (logits.argmax(1) == yb).sum()
            bar.update()
        bar.close()
        total_loss, total_correct = ranks.total(total_loss, total_correct)
        if not torch.isfinite(total_loss):
            raise RunError(
                f"training loss became {total_loss.item()} during epoch {epoch}: lower train.lr",
                cause="diverged",
                epoch=epoch,
            )
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
            line += f"  test {test_acc:.3f}  [saved {name}]"
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
        if stalled(history, classes=dataset.num_classes, chance=chance):
            reason = (
                f"training stopped learning at epoch {epoch}: train accuracy "
                f"{metrics['train_accuracy']:.3f} (chance {chance:.3f}) and loss "
                f"{metrics['train_loss']:.3f} (a uniform guess: {np.log(dataset.num_classes):.3f}) "
                f"for {STALL_EPOCHS} epochs; the usual cause is a learning rate too high for the "
                f"recipe ({cfg.lr:g})"
            )
            raise RunError(f"{reason}: lower train.lr", cause="stalled", epoch=epoch, reason=reason)

    def finish() -> dict[str, Any]:
        train_pred = predict(model, x_train)
        manifest["final"] = {
            # On the labels it was trained on, noisy ones included: 1.0 means the noise was
            # memorised.
            "train_accuracy": float((train_pred == y_train).float().mean()),
            "train_accuracy_clean": float(
                (train_pred == torch.from_numpy(dataset.train.y)).float().mean()
            ),
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

    # Every rank returns once rank 0 has written the complete run, so none reads it half done.
    return ranks.from_writer(finish)


def _save_resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int
) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
    }
    write_with(path, lambda tmp: torch.save(state, tmp))
