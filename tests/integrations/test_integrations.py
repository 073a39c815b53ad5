"""The Lightning and Hugging Face callbacks on real trainers: their folders audit like the
weights the trainers held, and the trainers' own checkpoint files load without pickle.

Real Lightning and transformers (CPU, a few steps on a tiny model); nothing mocked.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch
from numerics import assert_tables_close
from processes import HUNG_AFTER_S
from torch import nn

from vogflow.api import audit
from vogflow.checkpoints import sources
from vogflow.checkpoints.files import read_manifest, schedule
from vogflow.checkpoints.local import load_state
from vogflow.errors import CheckpointError

EPOCHS, EARLY, EVERY, LATE = 5, 2, 3, 1
SAVED = schedule(EPOCHS, early=EARLY, every=EVERY, late=LATE)


class Net(nn.Module):
    """Logits without labels (what VoG differentiates); the loss too with them (the HF Trainer)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.body(x)
        if labels is None:
            return logits
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def run_audit(model, checkpoints, **kw):
    x, y = data(n=20, seed=2)
    # Windows of 2: three checkpoints are then an early, a late and an all window of their own.
    kw.setdefault("window_size", 2)
    return audit(model, checkpoints, (x, y), progress=False, device="cpu", batch_size=8, **kw)


@pytest.mark.integration
def test_importing_vogflow_imports_no_framework_and_a_missing_one_names_its_extra():
    code = textwrap.dedent(
        """
        import sys
        import vogflow, vogflow.api, vogflow.cli.main
        import vogflow.checkpoints.recorder, vogflow.checkpoints.sources
        import vogflow.integrations
        loaded = sorted(m for m in ("lightning", "pytorch_lightning", "transformers")
                        if m in sys.modules)
        assert not loaded, loaded
        from vogflow.errors import VogflowError
        for framework, name, extra in (("lightning", "lightning", "lightning"),
                                       ("transformers", "hf", "hf")):
            sys.modules[framework] = None  # as on a machine without it
            try:
                __import__(f"vogflow.integrations.{name}")
            except VogflowError as err:
                assert f'pip install "vogflow[{extra}]"' in str(err), err
                assert len(str(err).splitlines()) == 1
            else:
                raise AssertionError(f"{name} imported without {framework}")
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HUNG_AFTER_S
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Lightning


def lightning_fit(folder, out, *, max_epochs=EPOCHS, ckpt_path=None, seed=0):
    """A LightningModule holding ``self.model``, trained as a team writes it; returns the module
    and the weights it held after each epoch."""
    import lightning.pytorch as L

    from vogflow.integrations.lightning import VogCheckpoints

    class Lit(L.LightningModule):
        def __init__(self, lr: float = 0.5) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = Net()

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class Seen(L.Callback):
        def __init__(self) -> None:
            self.seen: dict[int, dict] = {}

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seen[trainer.current_epoch + 1] = copy.deepcopy(pl_module.model.state_dict())

    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=12)
    torch.manual_seed(seed)
    module, seen = Lit(), Seen()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=[
            VogCheckpoints(folder, early=EARLY, every=EVERY, late=LATE, input_shape=(1, 8, 8)),
            seen,
            L.callbacks.ModelCheckpoint(out, filename="{epoch}", save_top_k=-1),
        ],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=2,  # sanity-check validation must not record a checkpoint
    )
    trainer.fit(module, loader, loader, ckpt_path=ckpt_path)
    return module, seen.seen


@pytest.mark.integration
def test_lightning_callback_folder_audits_like_the_weights_the_trainer_held(tmp_path):
    folder, out = tmp_path / "ckpts", tmp_path / "lightning"
    _, seen = lightning_fit(folder, out)
    assert sorted(seen) == list(range(1, EPOCHS + 1))

    manifest = read_manifest(folder)
    assert manifest["complete"] and [e["epoch"] for e in manifest["checkpoints"]] == SAVED
    # The inner model is recorded: the folder audits with the user's plain nn.Module.
    assert manifest["model_class"] == f"{__name__}.Net"
    direct = run_audit(Net(), [seen[e] for e in SAVED])
    assert_tables_close(run_audit(Net(), folder), direct)

    # The Trainer's own .ckpt files (0-based names, hyper-parameters inside) load without pickle.
    with sources.resolve(str(out / "*.ckpt")) as source:
        assert [c.path.name for c in source.checkpoints] == [
            f"epoch={e}.ckpt" for e in range(EPOCHS)
        ]
        from_ckpts = run_audit(Net(), source.for_audit())
    assert_tables_close(from_ckpts, run_audit(Net(), [seen[e] for e in sorted(seen)]))

    # Resumed from the end of epoch 2, the run replays epochs 3..5 into the same folder.
    _, again = lightning_fit(folder, tmp_path / "resumed", ckpt_path=out / "epoch=1.ckpt")
    assert sorted(again) == [3, 4, 5]
    manifest = read_manifest(folder)
    assert manifest["complete"] and [e["epoch"] for e in manifest["checkpoints"]] == SAVED
    assert_tables_close(run_audit(Net(), folder), direct)


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).write_text('ran')",)


def test_a_lightning_ckpt_with_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    folder, out = tmp_path / "ckpts", tmp_path / "lightning"
    lightning_fit(folder, out, max_epochs=2)
    ckpt = torch.load(out / "epoch=1.ckpt", weights_only=True)  # the real file loads safely
    marker = tmp_path / "payload_ran"
    ckpt["hyper_parameters"]["planted"] = Payload(str(marker))
    torch.save(ckpt, out / "epoch=1.ckpt")
    with pytest.raises(CheckpointError, match="needs pickled code"):
        load_state(out / "epoch=1.ckpt")
    with sources.resolve(str(out / "*.ckpt")) as source:
        with pytest.raises(CheckpointError, match="needs pickled code"):
            source.for_audit()
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Hugging Face


@pytest.mark.integration
def test_hf_callback_folder_audits_like_the_weights_the_trainer_held(tmp_path):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from vogflow.integrations.hf import VogCheckpoints

    class Seen(TrainerCallback):
        def __init__(self) -> None:
            self.seen: dict[int, dict] = {}

        def on_epoch_end(self, args, state, control, model=None, **_):
            self.seen[round(state.epoch)] = copy.deepcopy(model.state_dict())

    x, y = data()

    class Examples(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, i: int) -> dict:
            return {"x": x[i], "labels": y[i]}

    args = TrainingArguments(
        tmp_path / "trainer",
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=12,
        learning_rate=0.5,
        lr_scheduler_type="constant",
        optim="sgd",
        save_strategy="epoch",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )

    def train(resume_from_checkpoint=None) -> dict[int, dict]:
        torch.manual_seed(0)
        watcher = Seen()
        callback = VogCheckpoints(
            tmp_path / "ckpts", early=EARLY, every=EVERY, late=LATE, classes=["a", "b", "c"]
        )
        trainer = Trainer(Net(), args, train_dataset=Examples(), callbacks=[callback, watcher])
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        return watcher.seen

    seen = train()
    assert sorted(seen) == list(range(1, EPOCHS + 1))

    manifest = read_manifest(tmp_path / "ckpts")
    assert manifest["complete"] and [e["epoch"] for e in manifest["checkpoints"]] == SAVED
    assert manifest["classes"] == ["a", "b", "c"]
    direct = run_audit(Net(), [seen[e] for e in SAVED])
    assert_tables_close(run_audit(Net(), tmp_path / "ckpts"), direct)

    # The Trainer's own checkpoint-<step>/model.safetensors folders, sorted by step.
    with sources.resolve(tmp_path / "trainer") as source:
        assert source.kind == "huggingface"
        assert [c.short for c in source.checkpoints] == [
            f"checkpoint-{2 * e}/model.safetensors" for e in range(1, EPOCHS + 1)
        ]
        from_trainer = run_audit(Net(), source.for_audit())
    assert_tables_close(from_trainer, run_audit(Net(), [seen[e] for e in sorted(seen)]))

    # A run stopped inside an epoch (max_steps 7: 3.5 epochs) records its 3 whole epochs,
    # complete, and never the part epoch's weights in place of a whole one.
    steps = dataclasses.replace(args, max_steps=7, save_strategy="no", output_dir=str(tmp_path))
    torch.manual_seed(0)
    watcher = Seen()
    part = VogCheckpoints(tmp_path / "part", early=1, every=1, late=1)
    with pytest.warns(UserWarning, match="inside an epoch"):
        Trainer(Net(), steps, train_dataset=Examples(), callbacks=[part, watcher]).train()
    manifest = read_manifest(tmp_path / "part")
    assert manifest["complete"] and [e["epoch"] for e in manifest["checkpoints"]] == [1, 2, 3]
    assert_tables_close(
        run_audit(Net(), tmp_path / "part"), run_audit(Net(), [seen[e] for e in (1, 2, 3)])
    )

    # Resumed from the end of epoch 2, the run replays epochs 3..5 into the same folder.
    resumed = train(resume_from_checkpoint=str(tmp_path / "trainer" / "checkpoint-4"))
    assert sorted(resumed) == [3, 4, 5]
    manifest = read_manifest(tmp_path / "ckpts")
    assert manifest["complete"] and [e["epoch"] for e in manifest["checkpoints"]] == SAVED
    assert_tables_close(run_audit(Net(), tmp_path / "ckpts"), direct)
