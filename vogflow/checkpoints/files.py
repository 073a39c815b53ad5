"""Checkpoints of a training run: schedule, atomic save, manifest, and safe loading.

A checkpoint is a plain ``state_dict`` file. ``manifest.json`` beside the files holds everything
needed to rebuild the model (architecture, class count, input shape, dataset and normalisation), so
extraction needs no other configuration. Loading always uses ``torch.load(weights_only=True)``:
opening an audit never runs code from a file.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vogflow.common.atomic import read_json, sha256_file, write_json, write_with
from vogflow.errors import CheckpointError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def schedule(epochs: int, *, early: int, every: int, late: int) -> list[int]:
    """Epochs (1-based, after the epoch ends) at which to save a checkpoint.

    Every epoch of the first ``early`` and last ``late`` epochs (the early and late windows),
    and every ``every``-th epoch in between. A schedule of more than
    :data:`vogflow.config.sizes.MAX_CHECKPOINTS` files is refused before it is listed (10**12
    epochs would list 2 * 10**11 of them).
    """
    from vogflow.config.sizes import MAX_CHECKPOINTS, Every, checkpoint_count

    count = checkpoint_count(epochs, Every(early=early, every=every, late=late))
    if count > MAX_CHECKPOINTS:
        raise CheckpointError(
            f"epochs: {epochs} with a checkpoint every {every} epochs would save {count} "
            f"checkpoints, more than {MAX_CHECKPOINTS}; lower the epochs or raise every"
        )
    chosen = set(range(1, min(early, epochs) + 1))
    chosen |= set(range(every, epochs + 1, every))
    chosen |= set(range(max(epochs - late + 1, 1), epochs + 1))
    return sorted(chosen)


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def save_state_dict(path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> str:
    """Write ``state_dict`` (moved to the CPU) atomically; return its sha256."""
    cpu = {k: v.detach().cpu() for k, v in state_dict.items()}

    # Through a file object: given a path, torch names the zip's inner folder after it, and the
    # random temp name would make the same weights hash differently on every save.
    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(cpu, fh)

    write_with(path, writer)
    return sha256_file(path)


def retrain_hint(run_dir: str | Path) -> str:
    """How to rebuild a training run's folder (its train stage verifies and rebuilds files)."""
    run_dir = Path(run_dir)
    # dvc.yaml writes runs to runs/<run>/checkpoints; elsewhere the stage name is unknown here.
    run = run_dir.parent.name if run_dir.name == "checkpoints" and run_dir.parent.name else "<run>"
    return f"rerun `dvc repro train@{run}` (it verifies every checkpoint and rebuilds bad ones)"


def read_manifest(run_dir: str | Path, *, fix: str | None = None) -> dict[str, Any]:
    """The run's manifest; a corrupted one is refused naming ``fix`` (default: retrain)."""
    path = Path(run_dir) / MANIFEST
    fix = fix or retrain_hint(run_dir)
    if not path.exists():
        raise CheckpointError(
            f"{path} not found: {run_dir} is not a training run (train it first, e.g. `dvc repro`)"
        )
    try:
        manifest = read_json(path)
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(
            f"{path} is not valid JSON ({type(err).__name__}: {err}): the file is corrupted; {fix}"
        ) from err
    if not isinstance(manifest, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(manifest).__name__}, not an object: the file is "
            f"corrupted; {fix}"
        )
    if manifest.get("version") != MANIFEST_VERSION:
        raise CheckpointError(f"{path}: unsupported manifest version {manifest.get('version')!r}")
    return manifest


def write_manifest(run_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    write_json(Path(run_dir) / MANIFEST, {**manifest, "version": MANIFEST_VERSION})


# torch.save's legacy (pre-zip) format opens with this pickled magic number.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
RESAVE = "re-save it (e.g. `torch.save(model.state_dict(), path)`)"


def verify_file(path: str | Path, *, sha256: str | None = None, fix: str = RESAVE) -> None:
    """Refuse a missing, empty or (when ``sha256`` is given) changed file, naming ``fix``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found; {fix}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file; {fix}")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes; an interrupted write or copy); {fix}"
        )
    if sha256 is not None and sha256_file(path) != sha256:
        raise CheckpointError(
            f"checkpoint {path} does not match the sha256 in its manifest: the file changed "
            f"after training (corrupted, truncated or replaced); {fix}"
        )


def _check_container(path: Path, fix: str) -> None:
    """Refuse a file that is not an intact torch.save archive, before unpickling anything.

    ``torch.load`` does not check the zip's CRCs, so flipped bytes in tensor data would load as
    silently wrong weights; and a damaged header makes it fall back to the legacy format and
    fail as if the file needed pickled code.
    """
    with open(path, "rb") as fh:
        head = fh.read(len(LEGACY_MAGIC))
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {path} is a damaged archive, truncated or corrupted ({err}); {fix}"
            ) from err
        if bad is not None:
            raise CheckpointError(
                f"checkpoint {path} is corrupted (checksum mismatch in its entry {bad}); {fix}"
            )
    elif head != LEGACY_MAGIC:
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint, or its header is corrupted "
            f"(it starts with {head[:8]!r}); {fix}"
        )


def _needs_code(err: pickle.UnpicklingError) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("global", "unrecognized function", "unsupported class"))


def load_file(path: str | Path, *, sha256: str | None = None, fix: str = RESAVE) -> Any:
    """``torch.load(path, weights_only=True)`` of an intact file; refuses it with ``fix`` otherwise.

    Checks, in order: exists, not empty, the manifest's sha256 (when given), the archive's own
    checksums; then loads without running code from the file.
    """
    path = Path(path)
    verify_file(path, sha256=sha256, fix=fix)
    _check_container(path, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if _needs_code(err):
            raise CheckpointError(
                f"checkpoint {path} needs pickled code to load, which vogflow refuses (loading "
                "it could run arbitrary code). Re-save it as tensors only, e.g. "
                f"`torch.save(model.state_dict(), path)`. Details: {_detail(err)}"
            ) from err
        raise CheckpointError(f"checkpoint {path} is corrupted ({_detail(err)}); {fix}") from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:
        # What torch.load raises on damaged bytes that passed the checks above (legacy format).
        raise CheckpointError(
            f"checkpoint {path} cannot be read, it is corrupted or truncated "
            f"({type(err).__name__}: {_detail(err)}); {fix}"
        ) from err


def _detail(err: BaseException) -> str:
    """The informative line of torch's multi-paragraph load errors."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            rest = rest or next((x for x in lines[lines.index(line) + 1 :]), line)
            # Drop torch's advice to allowlist the class: vogflow never does.
            return rest.split(" Please use")[0]
    return lines[0] if lines else type(err).__name__


def extract_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model ``state_dict`` from the layouts people save.

    Accepts a bare ``state_dict``, or a dict holding one under ``state_dict``,
    ``model_state_dict`` or ``model``; strips the ``module.`` prefix of DataParallel/DDP.
    """
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state_dict (a mapping of tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj))[:5])
        raise CheckpointError(
            f"{source}: no tensors found (top-level keys: {keys}); expected a state_dict or a dict "
            f"holding one under {', '.join(STATE_DICT_KEYS)}"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def check_finite(state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Refuse a checkpoint holding an infinite or NaN value, naming it and the tensor.

    Such weights audit to nonsense without failing: an infinite weight makes every prediction
    the same class and every loss NaN.
    """
    for key, tensor in state_dict.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            count, total = int(bad.sum()), tensor.numel()
            kinds = sorted({"NaN" if torch.isnan(v) else "infinite" for v in tensor[bad][:100]})
            raise CheckpointError(
                f"{source}: tensor {key!r} holds {count} {' and '.join(kinds)} value(s) of "
                f"{total} (a diverged training, or damaged weights); audit the checkpoints "
                "saved before it, or retrain (e.g. with a lower learning rate)"
            )


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load weights strictly, explaining any mismatch with the first offending keys and shapes;
    non-finite weights are refused (:func:`check_finite`)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatches: " + "; ".join(wrong[:5]))
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:5]))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:5]))
        raise CheckpointError(
            f"{source} does not fit the model ({type(model).__name__}): "
            + " | ".join(parts)
            + ". Check the architecture and the number of classes."
        )
    check_finite(state_dict, source=source)
    model.load_state_dict(state_dict, strict=True)


def natural_sort(paths: Sequence[str | Path]) -> list[Path]:
    """Sort by the numbers in the file names (``epoch_2`` before ``epoch_10``)."""

    def key(p: Path) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted((Path(p) for p in paths), key=key)


def build_from_manifest(manifest: Mapping[str, Any]) -> nn.Module:
    from vogflow.models.architectures import build_model

    return build_model(
        manifest["architecture"],
        tuple(manifest["input_shape"]),
        manifest["num_classes"],
        **manifest.get("model_options", {}),
    )


def load_run_models(run_dir: str | Path) -> tuple[list[nn.Module], dict[str, Any]]:
    """Rebuild every checkpoint of a run from its manifest alone, in training order (on the CPU)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    entries = manifest.get("checkpoints", [])
    if not manifest.get("complete", False):
        raise CheckpointError(
            f"{run_dir}: training did not finish ({len(entries)} saved); train it again"
        )
    models = []
    for entry in entries:
        path = run_dir / entry["file"]
        model = build_from_manifest(manifest)
        state = load_file(path, sha256=entry["sha256"], fix=retrain_hint(run_dir))
        load_into(model, state, source=str(path))
        models.append(model)
    return models, manifest
