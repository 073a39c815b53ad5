"""Record vogflow checkpoints from a training loop you already have: ``CheckpointRecorder``.

Call ``recorder.epoch_end(epoch, model)`` once per finished epoch; on the pipeline's schedule
(:func:`vogflow.checkpoints.files.schedule`) it writes a plain ``state_dict`` and updates
``manifest.json``, so the folder is the same kind the pipeline's ``train`` stage writes and
``vogflow audit --checkpoints <folder>`` (or :mod:`vogflow.checkpoints.sources`) reads it in
training order, verifying every file's sha256. With ``mlflow_run_id`` each file also goes to that
run's artifacts under ``checkpoints/``, so ``runs:/<run_id>/checkpoints`` finds them again; with
``log_models`` each checkpoint is instead an MLflow logged model of the run
(``models:/<model_id>``, or registered ``models:/<name>/<version>``), and ``runs:/<run_id>`` finds
them in epoch order. Logging never holds the loop: it runs on a background thread, ``epoch_end``
waits for it at most ``log_timeout`` seconds while the store answers, and a store that fails or
stops answering costs a warning (once) and a retry at the next epoch and at
:meth:`CheckpointRecorder.close`; the files are written either way.

The framework callbacks are thin adapters over the recorder, holding no logic of their own:
:class:`vogflow.integrations.lightning.VogCheckpoints` (a Lightning ``Callback``) and
:class:`vogflow.integrations.hf.VogCheckpoints` (a Hugging Face ``TrainerCallback``). They live
apart, so that neither framework is imported unless its callback is used.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.checkpoints import files as ck
from vogflow.common.atomic import sha256_bytes
from vogflow.errors import ConfigError

RECORDER = "vogflow.capture.CheckpointRecorder"
ARTIFACT_PATH = "checkpoints"


def fingerprint(*arrays: Any) -> str:
    """sha256 over the bytes of ``arrays`` (e.g. ``x_train, y_train``): the data's identity."""
    parts = [np.ascontiguousarray(a.detach().cpu() if torch.is_tensor(a) else a) for a in arrays]
    return sha256_bytes(b"".join(p.tobytes() for p in parts))


def class_path(model: nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _state_of(model: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        # DataParallel/DDP wrap the user's module; the checkpoint holds the module's own keys.
        inner = getattr(model, "module", None)
        return (inner if isinstance(inner, nn.Module) else model).state_dict()
    if isinstance(model, Mapping):
        return model
    raise TypeError(f"epoch_end: expected an nn.Module or a state_dict, got {type(model).__name__}")


class CheckpointRecorder:
    """Writes a vogflow checkpoint folder from a user's own training loop.

    Args:
        out_dir: the folder (created; a folder of an earlier recorder with the same schedule and
            model is continued, so a resumed loop keeps its checkpoints).
        model: the model being trained (its class is recorded; its weights are not saved here).
        epochs: the number of epochs the loop will run (the schedule needs the last ones).
        early, every, late: the schedule, as the pipeline's ``checkpoints`` params.
        architecture: a built-in name (``mlp``, ``lenet``, ``resnet18``, ``resnet50``): the
            folder then rebuilds the model without a factory. It is checked against ``model``.
        model_options: options of the built-in architecture (``{"hidden": 64}`` for ``mlp``).
        input_shape: one example's shape, ``(C, H, W)`` or ``(D,)``.
        classes: class names, in label order; ``num_classes`` defaults to their count.
        data_fingerprint: identity of the training data, e.g. :func:`fingerprint` of the arrays.
        normalisation: ``{"mean": [...], "std": [...]}`` per channel when the loop standardises
            inputs in [0, 1]; ``vogflow audit`` then standardises its data the same way.
        mlflow_run_id: also log every file as an artifact under ``checkpoints/`` of this run
            (or, with ``log_models``, as models of it).
        tracking_uri: the store of that run (default:
            :func:`vogflow.store.connection.tracking_uri`; pass ``mlflow.get_tracking_uri()``
            when the loop set one in code).
        log_models: log each checkpoint as an MLflow logged model of that run (its state dict
            and manifest; the epoch as a param) instead of as run artifacts: models can be
            registered, and ``models:/`` URIs audit them.
        log_timeout: the most seconds ``epoch_end`` waits for the logging while the store
            answers (it goes on in the background after that).

    ``epoch_end`` takes 1-based epochs (the number of epochs finished); the folder is complete
    after epoch ``epochs``. With an MLflow run, call :meth:`close` (or use the recorder as a
    context manager) when training ends, to wait for the last uploads; it also runs at exit.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        model: nn.Module,
        epochs: int,
        early: int = 3,
        every: int = 5,
        late: int = 3,
        architecture: str | None = None,
        model_options: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
        data_fingerprint: str | None = None,
        normalisation: Mapping[str, Sequence[float]] | None = None,
        mlflow_run_id: str | None = None,
        tracking_uri: str | None = None,
        log_models: bool = False,
        log_timeout: float = 5.0,
    ) -> None:
        for name, value, low in (
            ("epochs", epochs, 1),
            ("early", early, 0),
            ("every", every, 1),
            ("late", late, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}: {value!r} is not allowed; pass an integer >= {low}")
        self.out_dir = Path(out_dir)
        self.epochs = epochs
        self.schedule = ck.schedule(epochs, early=early, every=every, late=late)
        if log_models and mlflow_run_id is None:
            raise ConfigError("log_models: True needs mlflow_run_id, the run the models belong to")
        self.mlflow_run_id = mlflow_run_id
        self.tracking_uri = tracking_uri
        self.log_models = log_models
        self.log_timeout = log_timeout
        self._client: Any = None
        self._uploader: Any = None
        if num_classes is None and classes is not None:
            num_classes = len(classes)
        if classes is not None and num_classes != len(classes):
            raise ConfigError(f"num_classes {num_classes} differs from the {len(classes)} classes")
        manifest: dict[str, Any] = {
            "architecture": architecture or class_path(model),
            "model_class": class_path(model),
            "model_options": dict(model_options or {}),
            "num_classes": num_classes,
            "classes": list(classes) if classes is not None else None,
            "input_shape": list(input_shape) if input_shape is not None else None,
            "data_fingerprint": data_fingerprint,
            "schedule": self.schedule,
            "recorded_by": RECORDER,
            "checkpoints": [],
            "complete": False,
        }
        if normalisation is not None:
            manifest["normalisation"] = {k: list(normalisation[k]) for k in ("mean", "std")}
        if architecture is not None:
            self._check_builtin(manifest, model)
        self.manifest = self._continue(manifest)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ck.write_manifest(self.out_dir, self.manifest)
        self._log(self.out_dir / ck.MANIFEST)

    @staticmethod
    def _check_builtin(manifest: dict[str, Any], model: nn.Module) -> None:
        """A built-in name that does not rebuild ``model`` would make a folder nobody can audit."""
        from vogflow.models.architectures import build_model

        if manifest["input_shape"] is None or manifest["num_classes"] is None:
            raise ConfigError(
                f"architecture {manifest['architecture']!r}: pass input_shape and classes (or "
                "num_classes) too, so the folder can rebuild the model"
            )
        built = build_model(
            manifest["architecture"],
            tuple(manifest["input_shape"]),
            manifest["num_classes"],
            **manifest["model_options"],
        )
        ck.load_into(
            built, _state_of(model), source=f"the model being trained ({class_path(model)})"
        )

    def _continue(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The folder's manifest when it was recorded for this model and schedule, else ours."""
        if not (self.out_dir / ck.MANIFEST).exists():
            return manifest
        fix = f"choose another folder, or delete {self.out_dir} to record afresh"
        earlier = ck.read_manifest(self.out_dir, fix=fix)
        same = ("architecture", "model_class", "num_classes", "input_shape", "schedule")
        changed = [k for k in same if earlier.get(k) != manifest[k]]
        if earlier.get("recorded_by") != RECORDER or changed:
            what = ", ".join(changed) if changed else "it was not written by a CheckpointRecorder"
            raise ck.CheckpointError(
                f"{self.out_dir} already holds another run's checkpoints ({what}); {fix}"
            )
        return {**manifest, "checkpoints": earlier.get("checkpoints", [])}

    @property
    def checkpoints(self) -> list[Path]:
        """The files recorded so far, in training order."""
        return [self.out_dir / e["file"] for e in self.manifest["checkpoints"]]

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def epoch_end(self, epoch: int, model: nn.Module | Mapping[str, torch.Tensor]) -> Path | None:
        """Record ``model`` after 1-based ``epoch`` if the schedule saves it; returns the file."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= self.epochs:
            raise ConfigError(
                f"epoch {epoch!r} is outside 1..{self.epochs}: epochs are 1-based, the number of "
                "epochs finished (pass epoch + 1 in a `for epoch in range(epochs)` loop)"
            )
        # A resumed loop replays epochs: what was recorded from them is superseded.
        entries = [e for e in self.manifest["checkpoints"] if e["epoch"] < epoch]
        self.manifest["checkpoints"] = entries
        path = None
        if epoch in self.schedule:
            path = self.out_dir / ck.checkpoint_name(epoch)
            digest = ck.save_state_dict(path, _state_of(model))
            entries.append({"file": path.name, "epoch": epoch, "sha256": digest})
        self.manifest["complete"] = epoch == self.epochs
        if path is not None or self.manifest["complete"]:
            ck.write_manifest(self.out_dir, self.manifest)
            if path is not None and self.log_models:
                self._log_model(path, entries[-1])
            elif path is not None:
                self._log(path)
            self._log(self.out_dir / ck.MANIFEST)
            if self._uploader is not None:
                self._uploader.settle()
        return path

    def close(self, timeout: float | None = 60.0) -> bool:
        """Wait up to ``timeout`` seconds for the logging still under way (retrying what failed);
        True when everything was logged, else a warning names what was not."""
        return self._uploader is None or self._uploader.close(timeout)

    def __enter__(self) -> CheckpointRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, what: str, call: Any) -> None:
        if self._uploader is None:
            from vogflow.common.background import Uploader

            how = (
                f"audit {self.out_dir} as it is, or log it with mlflow.log_artifacts("
                f"{str(self.out_dir)!r}, {ARTIFACT_PATH!r}, run_id={self.mlflow_run_id!r})"
            )
            self._uploader = Uploader(
                f"MLflow run {self.mlflow_run_id}", later=how, timeout=self.log_timeout
            )
        self._uploader.submit(what, call)

    def _mlflow(self) -> Any:
        if self._client is None:
            from vogflow.store.connection import client, tracking_uri

            # A plain client, not open_store: the run is the user's, in a store vogflow does not
            # own, so its artifact locations are not vogflow's to rebase.
            self._client = client(self.tracking_uri or tracking_uri())
        return self._client

    def _log(self, path: Path) -> None:
        if self.mlflow_run_id is None or self.log_models:
            return
        run_id = self.mlflow_run_id
        self._submit(
            path.name, lambda: self._mlflow().log_artifact(run_id, str(path), ARTIFACT_PATH)
        )

    def _log_model(self, path: Path, entry: dict[str, Any]) -> None:
        """The checkpoint and a manifest naming only it: the model is a checkpoint folder.

        Both are copied now: a resumed loop may rewrite the file before the upload runs."""
        from vogflow.checkpoints.logged import log_checkpoint_model

        tmp = Path(tempfile.mkdtemp(prefix="vogflow-model-"))
        shutil.copy2(path, tmp / path.name)
        ck.write_manifest(tmp, {**self.manifest, "checkpoints": [entry]})
        run_id = self.mlflow_run_id

        def upload() -> None:
            log_checkpoint_model(
                self._mlflow(),
                run_id,
                [tmp / path.name, tmp / ck.MANIFEST],
                name=path.stem,
                epoch=entry["epoch"],
                recorded_by=RECORDER,
            )
            shutil.rmtree(tmp, ignore_errors=True)

        self._submit(f"{path.stem} (model)", upload)
