"""Record vogflow checkpoints from a Lightning ``Trainer``: ``VogCheckpoints`` callback.

    from vogflow.integrations.lightning import VogCheckpoints

    trainer = L.Trainer(max_epochs=30, callbacks=[VogCheckpoints("ckpts", input_shape=(1, 28, 28))])
    trainer.fit(lit_model, train_loader)

After each training epoch it calls
:meth:`vogflow.checkpoints.recorder.CheckpointRecorder.epoch_end` with the
number of epochs finished, so the folder holds the pipeline's schedule (early, every, late) and
audits like any vogflow checkpoint folder. The weights recorded are those a Trainer ``.ckpt``
audits with (:mod:`vogflow.checkpoints.sources` drops a ``model.`` prefix common to every key): the
inner ``pl_module.model`` when it holds every weight, else the LightningModule itself (whose
``forward`` must then return the logits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vogflow.checkpoints.local import LIGHTNING_PREFIX
from vogflow.checkpoints.recorder import CheckpointRecorder
from vogflow.errors import ConfigError
from vogflow.integrations import missing

try:
    import lightning.pytorch as pl
except ImportError as err:
    raise missing("lightning", "lightning") from err


def audited_module(pl_module: nn.Module) -> nn.Module:
    """The module whose weights are recorded: ``pl_module.model`` when every key of the
    LightningModule's state dict lies under it, else ``pl_module``."""
    inner = getattr(pl_module, LIGHTNING_PREFIX.rstrip("."), None)
    keys = pl_module.state_dict().keys()
    if isinstance(inner, nn.Module) and keys and all(k.startswith(LIGHTNING_PREFIX) for k in keys):
        return inner
    return pl_module


class VogCheckpoints(pl.Callback):
    """A Lightning callback writing a vogflow checkpoint folder on the pipeline's schedule.

    Args:
        out_dir: the checkpoint folder (a folder of the same model and schedule is continued,
            so ``trainer.fit(..., ckpt_path=...)`` resumes it).
        epochs: the epochs the run will train (default: ``trainer.max_epochs``).
        **options: the other :class:`~vogflow.checkpoints.recorder.CheckpointRecorder` options
        (``early``,
            ``every``, ``late``, ``input_shape``, ``classes``, ``mlflow_run_id``,
            ``log_models``, ...).

    Only the global rank zero records (under DDP every rank holds the same weights). Sanity-check
    validation never records: the hook is the end of a training epoch.
    """

    def __init__(self, out_dir: str | Path, *, epochs: int | None = None, **options: Any) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.epochs = epochs
        self.options = options
        self.recorder: CheckpointRecorder | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        epochs = self.epochs or trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ConfigError(
                f"VogCheckpoints: the Trainer has max_epochs={trainer.max_epochs!r}; pass "
                "epochs=N (the schedule needs the last epoch)"
            )
        self.recorder = CheckpointRecorder(
            self.out_dir, model=audited_module(pl_module), epochs=epochs, **self.options
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:
            self.recorder.epoch_end(trainer.current_epoch + 1, audited_module(pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:  # the last uploads to an MLflow run, if any
            self.recorder.close()
