"""Record vogflow checkpoints from a Hugging Face ``Trainer``: ``VogCheckpoints`` callback.

    from vogflow.integrations.hf import VogCheckpoints

    trainer = Trainer(model, args, train_dataset=train, callbacks=[VogCheckpoints("ckpts")])
    trainer.train()

At each epoch's end it calls :meth:`vogflow.capture.CheckpointRecorder.epoch_end` with
``round(state.epoch)``, the number of epochs finished, so the folder holds the pipeline's
schedule (early, every, late) and audits like any vogflow checkpoint folder. The model audited
must map an input tensor to logits: e.g. a ``forward(x, labels=None)`` returning the logits
without labels and ``{"loss", "logits"}`` with them, as the Trainer needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vogflow.capture import CheckpointRecorder
from vogflow.integrations import missing

try:
    from transformers import TrainerCallback
except ImportError as err:
    raise missing("transformers", "hf") from err


class VogCheckpoints(TrainerCallback):
    """A ``TrainerCallback`` writing a vogflow checkpoint folder on the pipeline's schedule.

    Args:
        out_dir: the checkpoint folder (a folder of the same model and schedule is continued,
            so ``trainer.train(resume_from_checkpoint=...)`` resumes it).
        epochs: the epochs the run will train (default: the Trainer's, rounded up).
        **options: the other :class:`~vogflow.capture.CheckpointRecorder` options (``early``,
            ``every``, ``late``, ``input_shape``, ``classes``, ``mlflow_run_id``,
            ``log_models``, ...).

    Only the world's process zero records (every process holds the same weights).
    """

    def __init__(self, out_dir: str | Path, *, epochs: int | None = None, **options: Any) -> None:
        self.out_dir = Path(out_dir)
        self.epochs = epochs
        self.options = options
        self.recorder: CheckpointRecorder | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any):
        if not state.is_world_process_zero:
            return
        epochs = self.epochs or math.ceil(state.num_train_epochs)
        self.recorder = CheckpointRecorder(self.out_dir, model=model, epochs=epochs, **self.options)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any):
        if self.recorder is not None:
            self.recorder.epoch_end(round(state.epoch), model)
