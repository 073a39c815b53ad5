"""Record vogflow checkpoints from a Hugging Face ``Trainer``: ``VogCheckpoints`` callback.

    from vogflow.integrations.hf import VogCheckpoints

    trainer = Trainer(model, args, train_dataset=train, callbacks=[VogCheckpoints("ckpts")])
    trainer.train()

At each whole epoch's end it calls
:meth:`vogflow.checkpoints.recorder.CheckpointRecorder.epoch_end` with
the number of epochs finished, so the folder holds the pipeline's schedule (early, every, late)
and audits like any vogflow checkpoint folder. A run that stops inside an epoch (``max_steps``,
a fractional ``num_train_epochs``) records its whole epochs only: the Trainer's extra
``on_epoch_end`` for the part epoch is not an epoch of the schedule, and is said in a warning.
The model audited must map an input tensor to logits: e.g. a ``forward(x, labels=None)``
returning the logits without labels and ``{"loss", "logits"}`` with them, as the Trainer needs.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from vogflow.checkpoints.recorder import CheckpointRecorder
from vogflow.integrations import missing

try:
    from transformers import TrainerCallback
except ImportError as err:
    raise missing("transformers", "hf") from err


def whole_epochs(args: Any, state: Any, loader: Any) -> int:
    """The whole epochs the Trainer will finish: a part epoch at the end (``max_steps``, a
    fractional ``num_train_epochs``) has no place in the schedule."""
    steps = getattr(args, "max_steps", -1)
    if steps and steps > 0 and loader is not None:
        accumulate = max(1, int(getattr(args, "gradient_accumulation_steps", 1)))
        per_epoch = max(1, math.ceil(len(loader) / accumulate))
        return max(1, steps // per_epoch)
    return max(1, math.floor(state.num_train_epochs + EPOCH_SLACK))


# state.epoch is a float sum of per-step fractions: a whole epoch may read 2.9999999.
EPOCH_SLACK = 1e-4


class VogCheckpoints(TrainerCallback):
    """A ``TrainerCallback`` writing a vogflow checkpoint folder on the pipeline's schedule.

    Args:
        out_dir: the checkpoint folder (a folder of the same model and schedule is continued,
            so ``trainer.train(resume_from_checkpoint=...)`` resumes it).
        epochs: the epochs the run will train (default: the Trainer's whole epochs).
        **options: the other :class:`~vogflow.checkpoints.recorder.CheckpointRecorder` options
        (``early``,
            ``every``, ``late``, ``input_shape``, ``classes``, ``mlflow_run_id``,
            ``log_models``, ...).

    Only the world's process zero records (every process holds the same weights).
    """

    def __init__(self, out_dir: str | Path, *, epochs: int | None = None, **options: Any) -> None:
        self.out_dir = Path(out_dir)
        self.epochs = epochs
        self.options = options
        self.recorder: CheckpointRecorder | None = None

    def on_train_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        train_dataloader: Any = None,
        **_: Any,
    ):
        loader = train_dataloader
        if not state.is_world_process_zero:
            return
        epochs = self.epochs or whole_epochs(args, state, loader)
        self.recorder = CheckpointRecorder(self.out_dir, model=model, epochs=epochs, **self.options)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any):
        if self.recorder is None:
            return
        finished = math.floor(state.epoch + EPOCH_SLACK)
        if abs(state.epoch - finished) > EPOCH_SLACK or finished > self.recorder.epochs:
            warnings.warn(
                f"vogflow: training stopped {state.epoch:.3g} epochs in, inside an epoch; its "
                f"checkpoint folder holds the {min(finished, self.recorder.epochs)} whole epochs "
                "only (train whole epochs to record the final model)",
                stacklevel=2,
            )
            return
        self.recorder.epoch_end(finished, model)

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any):
        if self.recorder is not None:  # the last uploads to an MLflow run, if any
            self.recorder.close()
