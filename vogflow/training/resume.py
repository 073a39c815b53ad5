"""Resuming a run: what a previous attempt left in the run folder, verified before it is trusted,
and the resume state written after every epoch."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.checkpoints import files as ck
from vogflow.common.atomic import write_npz, write_with
from vogflow.training.labels import LABELS, labels_match

RESUME = "resume.pt"


@dataclass
class Folder:
    """A run folder and what a previous attempt in it must match to be continued."""

    out: Path
    config_hash: str
    save_at: list[int]
    platform: dict[str, Any]
    epochs: int
    labels: dict[str, np.ndarray]  # label, true_label, noisy: as labels.npz holds them
    fresh: Callable[[], dict[str, Any]]  # the manifest of a run started afresh
    echo: Callable[[str], None]
    warn: Callable[[str], None]


def read_manifest(out: Path, config_hash: str, warn: Callable[[str], None]) -> dict | None:
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


def first_bad_epoch(out: Path, manifest: dict, warn: Callable[[str], None]) -> int | None:
    """Epoch of the first listed checkpoint that is missing, empty or not its recorded sha256."""
    first = None
    for entry in manifest["checkpoints"]:
        try:
            ck.verify_file(out / entry["file"], sha256=entry["sha256"], fix="rebuilding it")
        except ck.CheckpointError as err:
            warn(f"warning: {err}")
            first = entry["epoch"] if first is None else first
    return first


def load_resume(out: Path, epochs: int, warn: Callable[[str], None]) -> dict | None:
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


def save_resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int
) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
    }
    write_with(path, lambda tmp: torch.save(state, tmp))


def _continue(f: Folder, manifest: dict) -> tuple[dict | None, dict | None, bool]:
    """A previous attempt verified: (the manifest to continue or None, the resume state, done)."""
    out, warn = f.out, f.warn
    bad = first_bad_epoch(out, manifest, warn)
    labels_ok = labels_match(out / LABELS, f.labels)
    if not labels_ok:
        warn(f"warning: {out / LABELS} is unreadable or does not match the configured labels")
    done = [c["epoch"] for c in manifest["checkpoints"]] == f.save_at and "final" in manifest
    if manifest.get("complete") and done and bad is None:
        if not labels_ok:  # derived from the config alone: no training needed
            write_npz(out / LABELS, **f.labels)
        (out / RESUME).unlink(missing_ok=True)
        f.echo(f"{out}: already trained with this configuration; nothing to do")
        return manifest, None, True
    had_resume = (out / RESUME).exists()
    resume = load_resume(out, f.epochs, warn)
    # Checkpoints listed past the resume state are replayed anyway; one before it cannot be.
    usable = resume is not None and labels_ok and (bad is None or bad > resume["epoch"])
    if not usable and (bad is not None or not labels_ok or had_resume):
        warn(
            f"warning: retraining {out} from scratch (a checkpoint holds no optimizer "
            "state, so the start is the last state that can be trusted)"
        )
    if not usable:
        return None, None, False
    return manifest, resume, False


def _start_afresh(f: Folder) -> dict[str, Any]:
    if f.out.exists():
        shutil.rmtree(f.out)
    f.out.mkdir(parents=True)
    write_npz(f.out / LABELS, **f.labels)
    manifest = f.fresh()
    ck.write_manifest(f.out, manifest)
    return manifest


def _note_platform_change(f: Folder, manifest: dict) -> None:
    # The weights so far came from the recorded platform and the rest will come from this
    # one: keep both, since neither alone reproduces these bits.
    current = f.platform
    earlier = manifest.get("platform")
    earlier_keys = earlier.keys() if isinstance(earlier, dict) else []
    changed = sorted(
        k
        for k in {*current, *earlier_keys}
        if not isinstance(earlier, dict) or earlier.get(k) != current.get(k)
    )
    f.warn(
        f"warning: resuming {f.out} on another platform ({', '.join(changed)} changed): the "
        "checkpoints will not match an uninterrupted run on either"
    )
    manifest["platform_before_resume"] = [*manifest.get("platform_before_resume", []), earlier]
    manifest["platform"] = current


def decide_start(f: Folder) -> tuple[dict[str, Any], dict | None, dict[str, str], bool]:
    """The manifest to continue, the resume state, the recorded digests, whether done."""
    # A process killed mid-write leaves its temporary file behind (torchrun stops the other
    # ranks of a failed job that way); it is never part of the run.
    for stray in f.out.glob(".*.tmp"):
        stray.unlink()
    manifest = read_manifest(f.out, f.config_hash, f.warn)
    resume, previous = None, {}
    if manifest is not None:
        previous = {c["file"]: c["sha256"] for c in manifest["checkpoints"]}
        manifest, resume, finished = _continue(f, manifest)
        if finished:
            return manifest, None, previous, True
    if manifest is None:
        manifest = _start_afresh(f)
    elif manifest.get("platform") != f.platform:
        _note_platform_change(f, manifest)
    return manifest, resume, previous, False
