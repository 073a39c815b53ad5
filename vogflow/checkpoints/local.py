"""Checkpoints on disk: one file's state dict (torch, Lightning, safetensors), and the ordered
checkpoints of a folder, a glob or a list of files (see :mod:`vogflow.checkpoints.sources`)."""

from __future__ import annotations

import copy
import glob
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vogflow.checkpoints import files as ck

RUNS_PREFIX = "runs:/"
MODELS_PREFIX = "models:/"
DEFAULT_ARTIFACT_PATH = "checkpoints"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
HF_PREFIX = "checkpoint-"
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
LIGHTNING_PREFIX = "model."
SAFETENSORS_HINT = "pip install safetensors"
RECORD_FIX = "rerun the training that wrote the folder (`dvc repro` or a CheckpointRecorder)"
EXPORTED_FIX = (
    "audit the checkpoints it was trained from instead (runs/<run>/checkpoints, or a "
    "CheckpointRecorder(log_models=True) run's models)"
)


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file: ``name`` is how it is shown (a path, or the run's artifact path)."""

    path: Path
    name: str
    sha256: str | None = None
    epoch: int | None = None

    @property
    def short(self) -> str:
        """The file name; with its folder for Hugging Face checkpoints, which share one name."""
        if self.path.name in HF_WEIGHTS:
            return f"{self.path.parent.name}/{self.path.name}"
        return self.path.name

    @property
    def plain(self) -> bool:
        """A file that :func:`vogflow.api.audit` loads as it is (a torch state dict file)."""
        return self.path.suffix in TORCH_SUFFIXES and self.path.suffix != ".ckpt"


@dataclass
class Source:
    """The checkpoints of one run, in training order, and the manifest when there is one.

    A downloaded source keeps its files in a temporary folder until :meth:`close` (or the end of
    a ``with`` block).
    """

    where: str
    kind: str
    checkpoints: list[Checkpoint]
    manifest: dict[str, Any] | None = None
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    @property
    def complete(self) -> bool:
        """False only for a manifest that says training has not finished."""
        return self.manifest is None or bool(self.manifest.get("complete", False))

    @property
    def fix(self) -> str:
        return RECORD_FIX if self.manifest is not None else ck.RESAVE

    def load(self) -> list[dict[str, torch.Tensor]]:
        """Every checkpoint's ``state_dict``, in order (sha256 checked where a manifest has it)."""
        return [
            load_state(c.path, sha256=c.sha256, name=c.name, fix=self.fix) for c in self.checkpoints
        ]

    def for_audit(self) -> list[Path | dict[str, torch.Tensor]]:
        """What :func:`vogflow.api.audit` takes: paths where it loads the file as it is (each
        checked against its sha256 first), state dicts otherwise."""
        items: list[Path | dict[str, torch.Tensor]] = []
        for c in self.checkpoints:
            if c.plain:
                ck.verify_file(c.path, sha256=c.sha256, fix=self.fix)
                items.append(c.path)
            else:
                items.append(load_state(c.path, sha256=c.sha256, name=c.name, fix=self.fix))
        return items

    def builtin_architecture(self) -> str | None:
        """The manifest's architecture when it is one of vogflow's built-in models."""
        from vogflow.config.schema import MODELS

        arch = (self.manifest or {}).get("architecture")
        return arch if arch in MODELS else None

    def build_model(self) -> nn.Module:
        """The untrained model rebuilt from the manifest (built-in architectures only)."""
        if self.builtin_architecture() is None:
            if self.manifest is None:
                why = "it has no manifest.json"
            else:
                why = f"its architecture {self.manifest.get('architecture')!r} is not built in"
            raise ck.CheckpointError(
                f"{self.where}: the model cannot be rebuilt from the checkpoints ({why}); pass "
                "the model (a factory, or torchvision:<name>)"
            )
        return ck.build_from_manifest(self.manifest or {})


# ---------------------------------------------------------------------------------------------
# loading one file


def _safetensors_load() -> Any:
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise ck.CheckpointError(
            f"safetensors checkpoints need the safetensors package: {SAFETENSORS_HINT}"
        ) from err
    return load_file


def _load_safetensors(path: Path, *, sha256: str | None, fix: str) -> dict[str, torch.Tensor]:
    load_file = _safetensors_load()
    if path.name.endswith(".index.json"):
        # A sharded checkpoint: the index maps each tensor to the shard file holding it.
        ck.verify_file(path, sha256=sha256, fix=fix)
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ck.CheckpointError(f"index {path} is not valid ({err}); {fix}") from err
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_load_safetensors(path.parent / shard, sha256=None, fix=fix))
        return state
    ck.verify_file(path, sha256=sha256, fix=fix)
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as err:  # safetensors raises its own SafetensorError on damaged headers
        raise ck.CheckpointError(
            f"checkpoint {path} is not a readable safetensors file ({type(err).__name__}: "
            f"{err}); {fix}"
        ) from err


def strip_lightning_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``model.`` when every key has it (a LightningModule holding ``self.model``)."""
    if state and all(k.startswith(LIGHTNING_PREFIX) for k in state):
        return {k[len(LIGHTNING_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def load_state(
    path: str | Path, *, sha256: str | None = None, name: str | None = None, fix: str = ck.RESAVE
) -> dict[str, torch.Tensor]:
    """One checkpoint file's ``state_dict``, by its kind, without running code from it.

    ``.safetensors`` (and a sharded ``model.safetensors.index.json``) through the safetensors
    package; every other file through ``torch.load(weights_only=True)``, taking the state dict
    from the layouts :func:`vogflow.checkpoints.files.extract_state_dict` knows; a Lightning
    ``.ckpt``
    also loses a ``model.`` prefix common to every key.
    """
    path = Path(path)
    name = name or str(path)
    if path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json"):
        return _load_safetensors(path, sha256=sha256, fix=fix)
    obj = ck.load_file(path, sha256=sha256, fix=fix)
    state = ck.extract_state_dict(obj, source=name)
    if path.suffix == ".ckpt" or (isinstance(obj, Mapping) and "pytorch-lightning_version" in obj):
        state = strip_lightning_prefix(state)
    return state


def check_fit(model: nn.Module, items: Sequence[Any], names: Sequence[str]) -> None:
    """Refuse, naming the checkpoint, a state dict in ``items`` that does not fit ``model``.

    :func:`vogflow.api.audit` names in-memory state dicts by position only; this names them as
    the user knows them. Paths in ``items`` are left to the audit, which names them itself.
    """
    probe = copy.deepcopy(model)
    for item, name in zip(items, names, strict=True):
        if isinstance(item, Mapping):
            ck.load_into(probe, item, source=f"checkpoint {name}")


# ---------------------------------------------------------------------------------------------
# resolving where checkpoints are


def has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def hf_weights(folder: Path) -> Path | None:
    """The model weights file of one Hugging Face checkpoint folder, or None."""
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    return None


def _hf_folders(folder: Path) -> list[Path]:
    return [p for p in folder.glob(f"{HF_PREFIX}*") if p.is_dir() and hf_weights(p) is not None]


def is_model_uri(item: Any) -> bool:
    """Whether ``item`` is a ``models:/`` URI (one checkpoint, read through MLflow)."""
    return isinstance(item, str) and item.startswith(MODELS_PREFIX)


def is_source(item: str | Path) -> bool:
    """Whether ``item`` needs :func:`resolve` rather than a plain list of state dict files: a
    ``runs:/`` or ``models:/`` URI, a folder with a manifest or with Hugging Face checkpoint
    folders, a glob matching such folders, or a file that needs more than ``torch.load``."""
    text = str(item)
    if text.startswith((RUNS_PREFIX, MODELS_PREFIX)):
        return True
    if has_magic(text):
        found = (Path(p) for p in glob.glob(text, recursive=True))
        return any(p.is_dir() and hf_weights(p) is not None for p in found)
    path = Path(text)
    if path.is_dir():
        return (path / ck.MANIFEST).is_file() or bool(_hf_folders(path))
    return path.suffix in (".ckpt", ".safetensors")


def from_hf(where: str, folders: Sequence[Path]) -> Source:
    chosen = []
    for folder in ck.natural_sort(folders):
        weights = hf_weights(folder)
        if weights is None:
            raise ck.CheckpointError(
                f"{folder} holds none of {', '.join(HF_WEIGHTS)}: not a Hugging Face checkpoint "
                "folder (save with Trainer(save_safetensors=True) or point at the weights)"
            )
        chosen.append(Checkpoint(weights, str(weights)))
    return Source(where, "huggingface", chosen)


def from_manifest(where: str, folder: Path, *, names_from: str | None = None) -> Source:
    manifest = ck.read_manifest(folder, fix=RECORD_FIX)
    entries = manifest.get("checkpoints")
    if not isinstance(entries, list) or not all(
        isinstance(e, Mapping) and isinstance(e.get("file"), str) for e in entries
    ):
        raise ck.CheckpointError(
            f"{folder / ck.MANIFEST} lists no checkpoint files: the file is damaged; {RECORD_FIX}"
        )
    chosen = []
    for e in entries:
        path = folder / e["file"]
        name = f"{names_from.rstrip('/')}/{e['file']}" if names_from else str(path)
        chosen.append(Checkpoint(path, name, sha256=e.get("sha256"), epoch=e.get("epoch")))
    return Source(where, "manifest", chosen, manifest=manifest)


def from_files(where: str, paths: Sequence[Path], *, names_from: str | None = None) -> Source:
    def name(p: Path) -> str:
        return f"{names_from.rstrip('/')}/{p.name}" if names_from else str(p)

    return Source(where, "files", [Checkpoint(p, name(p)) for p in paths])


def from_folder(where: str, folder: Path, *, names_from: str | None = None) -> Source:
    if (folder / ck.MANIFEST).is_file():
        return from_manifest(where, folder, names_from=names_from)
    hf = _hf_folders(folder)
    if hf:
        return from_hf(where, hf)
    weights = hf_weights(folder)
    if weights is not None:
        return from_files(where, [weights], names_from=names_from)
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES]
    if not found:
        raise ck.CheckpointError(
            f"{where}: no checkpoints in {folder} (no manifest.json, no {HF_PREFIX}*/ folders, "
            f"no {'/'.join(SUFFIXES)} files)"
        )
    return from_files(where, ck.natural_sort(found), names_from=names_from)


def from_glob(text: str) -> Source:
    """The checkpoints a glob matches: Hugging Face folders, or files in natural order."""
    found = [Path(p) for p in glob.glob(text, recursive=True)]
    folders = [p for p in found if p.is_dir() and hf_weights(p) is not None]
    files = [p for p in found if p.is_file()]
    if folders and not files:
        return from_hf(text, folders)
    if not files:
        raise ck.CheckpointError(f"{text!r} matches no checkpoint file or folder")
    return from_files(text, ck.natural_sort(files))


def from_path(text: str) -> Source:
    """The checkpoints of a folder, or the one file at ``text``."""
    path = Path(text)
    if path.is_dir():
        return from_folder(text, path)
    if not path.exists():
        raise ck.CheckpointError(f"{text!r} does not exist; check the path")
    return from_files(text, [path])
