"""Where checkpoints already are -> the ordered checkpoints of one training run.

:func:`resolve` takes what a team has, with no copying by hand:

- a vogflow checkpoint folder (``manifest.json``: the pipeline's ``train`` stage or
  :class:`vogflow.checkpoints.recorder.CheckpointRecorder`): the manifest's order, every file
  checked against
  its sha256; a built-in architecture rebuilds the model from the manifest (no factory needed);
- ``runs:/<run_id>/<artifact_path>``: a folder of checkpoint files in an MLflow run, downloaded
  through the tracking client and then read as a folder; ``runs:/<run_id>`` alone reads
  ``checkpoints/``, else the checkpoints a recorder logged as models of the run, in epoch order;
- ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<model_id>``: one
  checkpoint each (a logged model's state dict), so a list of them, in training order;
- a Hugging Face ``Trainer`` output folder (``checkpoint-<step>/model.safetensors``, sorted by
  step), or a quoted glob of such folders;
- PyTorch Lightning ``.ckpt`` files (their ``state_dict``, less a ``model.`` prefix on every key);
- plain ``state_dict`` files: a folder or glob (sorted by the number in the name) or a list.

Nothing here runs code from a file: torch files load with ``weights_only=True``
(:func:`vogflow.checkpoints.files.load_file`), safetensors files with the ``safetensors`` package.
An
MLflow model exported with ``torch.export`` (``.pt2``, as the pipeline registers its audited
model) is refused: ``torch.export.load`` unpickles parts of the archive with
``weights_only=False``, so a crafted file runs code.
"""

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


def _has_magic(text: str) -> bool:
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
    if _has_magic(text):
        found = (Path(p) for p in glob.glob(text, recursive=True))
        return any(p.is_dir() and hf_weights(p) is not None for p in found)
    path = Path(text)
    if path.is_dir():
        return (path / ck.MANIFEST).is_file() or bool(_hf_folders(path))
    return path.suffix in (".ckpt", ".safetensors")


def _from_hf(where: str, folders: Sequence[Path]) -> Source:
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


def _from_manifest(where: str, folder: Path, *, names_from: str | None = None) -> Source:
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


def _from_files(where: str, paths: Sequence[Path], *, names_from: str | None = None) -> Source:
    def name(p: Path) -> str:
        return f"{names_from.rstrip('/')}/{p.name}" if names_from else str(p)

    return Source(where, "files", [Checkpoint(p, name(p)) for p in paths])


def _from_folder(where: str, folder: Path, *, names_from: str | None = None) -> Source:
    if (folder / ck.MANIFEST).is_file():
        return _from_manifest(where, folder, names_from=names_from)
    hf = _hf_folders(folder)
    if hf:
        return _from_hf(where, hf)
    weights = hf_weights(folder)
    if weights is not None:
        return _from_files(where, [weights], names_from=names_from)
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES]
    if not found:
        raise ck.CheckpointError(
            f"{where}: no checkpoints in {folder} (no manifest.json, no {HF_PREFIX}*/ folders, "
            f"no {'/'.join(SUFFIXES)} files)"
        )
    return _from_files(where, ck.natural_sort(found), names_from=names_from)


def _store_client(where: str, tracking_uri: str | None) -> tuple[Any, str]:
    """A client on the store of ``where`` (default: the configured one), checked first."""
    from vogflow import tracking
    from vogflow.store.connection import sqlite_path

    store = tracking_uri or tracking.tracking_uri()
    db = sqlite_path(store)
    if db is not None and not db.exists():
        # Opening a missing SQLite store would create an empty one instead of finding the run.
        raise tracking.TrackingError(
            f"{where}: the tracking store {store} does not exist; point MLFLOW_TRACKING_URI at "
            "the store that holds it"
        )
    tracking.check_reachable(store)
    return tracking.client(store), store


def _download_dir(download_dir: str | Path | None) -> tuple[Any, Path]:
    """Where downloads go: ``download_dir``, else a temporary folder (returned to clean up)."""
    tmp = None
    if download_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="vogflow-ckpts-")
        download_dir = tmp.name
    Path(download_dir).mkdir(parents=True, exist_ok=True)
    return tmp, Path(download_dir)


def _model_checkpoint(uri: str, local: Path) -> tuple[Checkpoint, dict[str, Any] | None]:
    """The one checkpoint in a downloaded model, and its manifest when a recorder logged it."""
    exported = sorted(local.rglob("*.pt2"))
    if exported:
        raise ck.CheckpointError(
            f"{uri} is an exported program ({exported[0].relative_to(local)}), which "
            "torch.export.load partly unpickles (weights_only=False), so vogflow does not open "
            f"it; {EXPORTED_FIX}"
        )
    if (local / ck.MANIFEST).is_file():
        found = _from_manifest(uri, local)
        if len(found.checkpoints) != 1:
            raise ck.CheckpointError(
                f"{uri} holds {len(found.checkpoints)} checkpoints; a models:/ URI names one "
                "(log each checkpoint as its own model: CheckpointRecorder(log_models=True))"
            )
        one = found.checkpoints[0]
        named = Checkpoint(one.path, f"{uri} ({one.path.name})", one.sha256, one.epoch)
        return named, found.manifest
    files = [
        p for p in local.rglob("*") if p.is_file() and p.name.endswith(".safetensors.index.json")
    ]
    # The shards of an index are read through it, not as checkpoints of their own.
    files = files or [p for p in local.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    if len(files) != 1:
        what = ", ".join(str(p.relative_to(local)) for p in files) or "none"
        raise ck.CheckpointError(
            f"{uri}: expected one state dict file ({'/'.join(SUFFIXES)}) in the model, found "
            f"{what}; log one checkpoint per model"
        )
    return Checkpoint(files[0], f"{uri} ({files[0].relative_to(local)})"), None


# What a manifest says about the model itself (not about one checkpoint of it).
SAME_MODEL = ("architecture", "model_class", "num_classes", "input_shape", "normalisation")


def _joined(
    manifests: Sequence[dict[str, Any] | None], chosen: Sequence[Checkpoint]
) -> dict[str, Any] | None:
    """One manifest for checkpoints from several models, when they all describe one model."""
    known = [m for m in manifests if m is not None]
    if not known or len(known) < len(manifests):
        return None
    last = known[-1]
    if any(m.get(k) != last.get(k) for m in known for k in SAME_MODEL):
        return None
    entries = [{"file": c.path.name, "epoch": c.epoch, "sha256": c.sha256} for c in chosen]
    return {**last, "checkpoints": entries}


def _from_models(
    where: str,
    uris: Sequence[str],
    *,
    download_dir: str | Path | None,
    tracking_uri: str | None,
    store: tuple[Any, str] | None = None,
) -> Source:
    from vogflow import tracking

    mlflow_client, uri = store or _store_client(where, tracking_uri)
    tmp, folder = _download_dir(download_dir)
    chosen, manifests = [], []
    try:
        for i, ref in enumerate(uris, 1):
            local = tracking.download_model(mlflow_client, ref, folder / f"model_{i}", uri=uri)
            checkpoint, manifest = _model_checkpoint(ref, local)
            chosen.append(checkpoint)
            manifests.append(manifest)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return Source(where, "models", chosen, manifest=_joined(manifests, chosen), _tmp=tmp)


def _from_run(uri: str, *, download_dir: str | Path | None, tracking_uri: str | None) -> Source:
    from vogflow import tracking

    rest = uri[len(RUNS_PREFIX) :].strip("/")
    run_id, _, artifact_path = rest.partition("/")
    if not run_id:
        raise ck.CheckpointError(
            f"{uri!r} names no run; write runs:/<run_id>/<artifact_path> (the recorder logs to "
            f"runs:/<run_id>/{DEFAULT_ARTIFACT_PATH})"
        )
    client, store = _store_client(uri, tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as err:  # MlflowException; its message is one line of the store's answer
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise tracking.TrackingError(
            f"{uri}: no such run in the tracking store {store} ({first}); check the run id and "
            "MLFLOW_TRACKING_URI"
        ) from err
    if not artifact_path and not client.list_artifacts(run_id, DEFAULT_ARTIFACT_PATH):
        from vogflow.checkpoints.recorder import RECORDER

        models = tracking.logged_checkpoints(client, run_id, recorded_by=RECORDER)
        if not models:
            raise ck.CheckpointError(
                f"{uri}: the run has no {DEFAULT_ARTIFACT_PATH}/ artifacts and no checkpoints "
                "logged as models; name the artifact folder (runs:/<run_id>/<path>) or record "
                "with CheckpointRecorder(mlflow_run_id=...)"
            )
        refs = [f"{MODELS_PREFIX}{m}" for m in models]
        return _from_models(
            uri, refs, download_dir=download_dir, tracking_uri=None, store=(client, store)
        )
    artifact_path = artifact_path or DEFAULT_ARTIFACT_PATH
    tmp, download_dir = _download_dir(download_dir)
    try:
        local = Path(client.download_artifacts(run_id, artifact_path, str(download_dir)))
        if not local.exists():
            raise FileNotFoundError(local)
        shown = f"{RUNS_PREFIX}{run_id}/{artifact_path}"
        if local.is_dir():
            source = _from_folder(uri, local, names_from=shown)
        else:
            source = _from_files(uri, [local], names_from=str(Path(shown).parent))
    except Exception as err:
        if tmp is not None:
            tmp.cleanup()
        if isinstance(err, ck.CheckpointError):
            raise
        raise tracking.TrackingError(
            f"{uri}: cannot download {artifact_path!r} from run {run_id} "
            f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); check the artifact path"
        ) from err
    source._tmp = tmp
    return source


def resolve(
    where: str | Path | Sequence[str | Path],
    *,
    download_dir: str | Path | None = None,
    tracking_uri: str | None = None,
) -> Source:
    """The checkpoints at ``where``, in training order (see the module docstring for the kinds).

    Several paths, or several ``models:/`` URIs, are used in the order given. ``download_dir``
    keeps a ``runs:/`` or ``models:/`` download (default: a temporary folder, removed by
    :meth:`Source.close`); ``tracking_uri`` is the store of that run or model (default:
    :func:`vogflow.tracking.tracking_uri`).
    """
    if not isinstance(where, str | Path):
        items = list(where)
        if any(is_model_uri(i) for i in items):
            shown = ", ".join(map(str, items))
            others = [str(i) for i in items if not is_model_uri(i)]
            if others:
                raise ck.CheckpointError(
                    f"{others[0]}: a list with models:/ URIs takes only models:/ URIs ({shown}); "
                    "log every checkpoint as a model, or pass files only"
                )
            return _from_models(shown, items, download_dir=download_dir, tracking_uri=tracking_uri)
        if len(items) == 1:
            return resolve(items[0], download_dir=download_dir, tracking_uri=tracking_uri)
        shown = ", ".join(map(str, items))

        def alone(where: str) -> ck.CheckpointError:
            return ck.CheckpointError(
                f"{where}: a checkpoint folder or run is one source; pass it alone, not in a "
                f"list of files ({shown})"
            )

        # Refused before anything is downloaded: a run in a list would fetch its files first.
        runs = [str(i) for i in items if str(i).startswith(RUNS_PREFIX)]
        if runs:
            raise alone(runs[0])
        parts = [resolve(i) for i in items]
        for p in parts:
            if p.kind != "files" or p._tmp is not None:
                for q in parts:
                    q.close()
                raise alone(p.where)
        return Source(shown, "files", [c for p in parts for c in p.checkpoints])
    text = str(where)
    if text.startswith(RUNS_PREFIX):
        return _from_run(text, download_dir=download_dir, tracking_uri=tracking_uri)
    if is_model_uri(text):
        return _from_models(text, [text], download_dir=download_dir, tracking_uri=tracking_uri)
    if _has_magic(text):
        found = [Path(p) for p in glob.glob(text, recursive=True)]
        folders = [p for p in found if p.is_dir() and hf_weights(p) is not None]
        files = [p for p in found if p.is_file()]
        if folders and not files:
            return _from_hf(text, folders)
        if not files:
            raise ck.CheckpointError(f"{text!r} matches no checkpoint file or folder")
        return _from_files(text, ck.natural_sort(files))
    path = Path(text)
    if path.is_dir():
        return _from_folder(text, path)
    if not path.exists():
        raise ck.CheckpointError(f"{text!r} does not exist; check the path")
    return _from_files(text, [path])
