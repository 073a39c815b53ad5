"""Training: CPU bit-reproducibility, real kill-and-resume, fresh starts, label noise, schedule."""

from __future__ import annotations

import dataclasses
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from processes import HUNG_AFTER_S

from vogflow.checkpoints import files as ck
from vogflow.common import runtime
from vogflow.common.atomic import read_npz, sha256_file
from vogflow.config.schema import CheckpointConfig, DataConfig, ModelConfig, TrainConfig
from vogflow.data import Split, load_dataset, shuffle_labels
from vogflow.errors import RunError
from vogflow.training import train as train_mod
from vogflow.training.health import stalled
from vogflow.training.labels import LABELS
from vogflow.training.loop import augment_batch, lr_at, predict
from vogflow.training.resume import RESUME
from vogflow.training.train import train_run

# A tiny recipe: LeNet on 8x8 digits, a few epochs, a milestone so the lr decays mid-run.
SHORT = TrainConfig(epochs=4, batch_size=64, lr=0.05, milestones=(3,), seed=0, device="cpu")
SHORT_CKPT = CheckpointConfig(early=2, every=2, late=1)  # saves at epochs 1, 2, 4
# The resume recipe (12 epochs, 6 checkpoints); crop_flip makes the per-epoch generators matter.
LONG = TrainConfig(epochs=12, batch_size=64, lr=0.05, milestones=(8,), seed=3, device="cpu")
LONG_CKPT = CheckpointConfig(early=2, every=4, late=2)  # saves at 1, 2, 4, 8, 11, 12
LONG_DATA = DataConfig(name="digits", augment="crop_flip")
N_TRAIN = 480


def quiet(_: str) -> None:
    pass


def first_train(dataset, n: int = N_TRAIN):
    """The dataset with only its first ``n`` training examples: keeps each run well under 1 s."""
    return dataclasses.replace(dataset, train=Split(dataset.train.x[:n], dataset.train.y[:n]))


@pytest.fixture(scope="module")
def digits():
    return first_train(load_dataset(DataConfig(name="digits")))


@pytest.fixture(scope="module")
def digits_aug():
    return first_train(load_dataset(LONG_DATA))


def entries(manifest: dict) -> list[tuple[str, int, str]]:
    return [(c["file"], c["epoch"], c["sha256"]) for c in manifest["checkpoints"]]


def assert_same_tensors(run_a: Path, run_b: Path, manifest: dict) -> None:
    for entry in manifest["checkpoints"]:
        a = ck.load_file(run_a / entry["file"])
        b = ck.load_file(run_b / entry["file"])
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (entry["file"], key)


# --- reproducibility --------------------------------------------------------------------------


def test_same_seed_gives_identical_bits_and_other_seed_differs(digits, tmp_path):
    model = ModelConfig(name="lenet")
    a = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "a", echo=quiet)
    b = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "b", echo=quiet)
    assert [e[1] for e in entries(a)] == [1, 2, 4]
    # Whole manifests match: hashes, per-checkpoint test accuracy, lr, steps, final accuracies.
    assert a == b
    for entry in a["checkpoints"]:
        assert sha256_file(tmp_path / "a" / entry["file"]) == entry["sha256"]
        assert sha256_file(tmp_path / "b" / entry["file"]) == entry["sha256"]
    assert_same_tensors(tmp_path / "a", tmp_path / "b", a)

    other = dataclasses.replace(SHORT, seed=1)
    c = train_run(digits, model, other, SHORT_CKPT, tmp_path / "c", echo=quiet)
    assert all(x[2] != y[2] for x, y in zip(entries(a), entries(c), strict=True))
    wa = ck.load_file(tmp_path / "a" / "epoch_0004.pt")
    wc = ck.load_file(tmp_path / "c" / "epoch_0004.pt")
    assert not torch.equal(wa["classifier.5.weight"], wc["classifier.5.weight"])


def test_manifest_records_the_platform_that_decides_the_bits(digits, tmp_path):
    lenet = ModelConfig(name="lenet")
    manifest = train_run(digits, lenet, SHORT, SHORT_CKPT, tmp_path / "a", echo=quiet)
    record = manifest["platform"]
    assert record == {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": runtime.cpu_model(),
        "torch_threads": SHORT.threads,
        "device": "cpu",
        "cuda": None,
        "gpu": None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "byteorder": sys.byteorder,
    }
    assert isinstance(record["cpu_model"], str)
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert record["cpu_model"]
    # Stable across reruns (it sits in a DVC output): nothing per run, such as time or host.
    assert ck.read_manifest(tmp_path / "a")["platform"] == record


def test_training_pins_its_thread_count_and_restores_the_callers(digits, tmp_path, monkeypatch):
    seen: list[int] = []
    model = ModelConfig(name="lenet")

    def spy(metrics: dict, epoch: int) -> None:
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        a = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "a", echo=quiet, log=spy)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert seen == [SHORT.threads] * SHORT.epochs
    b = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "b", echo=quiet)
    assert entries(a) == entries(b)  # the caller's count did not reach the bits

    seen.clear()
    two = dataclasses.replace(SHORT, threads=2)
    c = train_run(digits, model, two, SHORT_CKPT, tmp_path / "c", echo=quiet, log=spy)
    assert seen == [2] * SHORT.epochs
    assert c["platform"]["torch_threads"] == 2


def test_resuming_on_another_platform_is_said_and_both_are_kept(digits, tmp_path, monkeypatch):
    out = tmp_path / "run"
    model = ModelConfig(name="lenet")
    real_save = train_mod._save_resume

    def stop_after_two(path, model_, optimizer, epoch, step):
        real_save(path, model_, optimizer, epoch, step)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save_resume", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_run(digits, model, SHORT, SHORT_CKPT, out, echo=quiet)
    monkeypatch.setattr(train_mod, "_save_resume", real_save)
    first = ck.read_manifest(out)["platform"]
    real_record = train_mod.platform_record
    monkeypatch.setattr(
        train_mod,
        "platform_record",
        lambda *a: {**real_record(*a), "cpu_capability": "another-isa"},
    )
    warnings: list[str] = []
    manifest = train_run(digits, model, SHORT, SHORT_CKPT, out, echo=quiet, warn=warnings.append)
    assert warnings == [
        f"warning: resuming {out} on another platform (cpu_capability changed): the "
        "checkpoints will not match an uninterrupted run on either"
    ]
    assert manifest["platform_before_resume"] == [first]
    assert manifest["platform"]["cpu_capability"] == "another-isa"


CHILD = """
import dataclasses, sys, time
import torch
# Not the parent's thread count: train_run pins its own, so the bits must match regardless.
torch.set_num_threads(int(sys.argv[3]))
from vogflow.checkpoints import files as ck
from vogflow.config.schema import CheckpointConfig, DataConfig, ModelConfig, TrainConfig
from vogflow.data import Split, load_dataset
from vogflow.training.train import train_run
ds = load_dataset(DataConfig(name="digits", augment="crop_flip"))
n = int(sys.argv[2])
ds = dataclasses.replace(ds, train=Split(ds.train.x[:n], ds.train.y[:n]))

def listed():
    try:
        return len(ck.read_manifest(sys.argv[1])["checkpoints"])
    except (ck.CheckpointError, ValueError):
        return 0

def hold(line):
    # Once two checkpoints are listed the run waits here to be killed, however slowly the
    # parent polls on a loaded machine; it changes no bits. The limit only ends an orphan.
    deadline = time.monotonic() + 900
    while listed() >= 2 and time.monotonic() < deadline:
        time.sleep(0.05)

train_run(ds, ModelConfig(name="lenet"),
          TrainConfig(epochs=12, batch_size=64, lr=0.05, milestones=(8,), seed=3, device="cpu"),
          CheckpointConfig(early=2, every=4, late=2), sys.argv[1], echo=hold)
"""


@pytest.mark.integration
def test_killed_run_resumes_to_the_same_bits(digits_aug, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(killed), str(N_TRAIN), str(torch.get_num_threads() + 1)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # A limit for a hung child, not a speed: the child waits to be killed (see CHILD).
        deadline = time.monotonic() + HUNG_AFTER_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"training finished before it could be killed: {proc.stderr.read()}")
            try:
                listed = len(ck.read_manifest(killed)["checkpoints"])
            except (ck.CheckpointError, ValueError):  # not written yet
                listed = 0
            if listed >= 2:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no two checkpoints within {HUNG_AFTER_S} s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=HUNG_AFTER_S)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = ck.read_manifest(killed)
    assert not partial["complete"]
    assert 2 <= len(partial["checkpoints"]) < len(partial["schedule"])
    with pytest.raises(ck.CheckpointError, match="did not finish"):
        ck.load_run_models(killed)

    lines: list[str] = []
    model = ModelConfig(name="lenet")
    resumed = train_run(digits_aug, model, LONG, LONG_CKPT, killed, echo=lines.append)
    # It really resumed (rather than silently starting over).
    assert any(line.startswith(f"resuming {killed} after epoch") for line in lines)
    assert not any("epoch   1/" in line for line in lines)

    straight = train_run(digits_aug, model, LONG, LONG_CKPT, tmp_path / "straight", echo=quiet)
    assert [e[1] for e in entries(straight)] == [1, 2, 4, 8, 11, 12]
    assert ck.read_manifest(killed) == ck.read_manifest(tmp_path / "straight")
    assert resumed["checkpoints"] == straight["checkpoints"]
    assert_same_tensors(killed, tmp_path / "straight", straight)
    assert not (killed / RESUME).exists()


def test_kill_between_checkpoint_and_resume_state_lists_each_epoch_once(
    digits, tmp_path, monkeypatch
):
    # The narrowest kill window: the epoch-2 checkpoint is in the manifest but the resume state
    # still says epoch 1, so resuming replays epoch 2 and must not list it twice.
    real_save = train_mod._save_resume

    def dying_save(path, model, optimizer, epoch, step):
        if epoch == 2:
            raise KeyboardInterrupt
        real_save(path, model, optimizer, epoch, step)

    monkeypatch.setattr(train_mod, "_save_resume", dying_save)
    model = ModelConfig(name="mlp", hidden=16)
    with pytest.raises(KeyboardInterrupt):
        train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "r", echo=quiet)
    assert [e[1] for e in entries(ck.read_manifest(tmp_path / "r"))] == [1, 2]
    monkeypatch.setattr(train_mod, "_save_resume", real_save)

    resumed = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "r", echo=quiet)
    train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "s", echo=quiet)
    assert [e[1] for e in entries(resumed)] == [1, 2, 4]
    assert ck.read_manifest(tmp_path / "r") == ck.read_manifest(tmp_path / "s")


def test_complete_run_is_not_retrained_and_changed_config_starts_afresh(digits, tmp_path):
    model = ModelConfig(name="mlp", hidden=16)
    out = tmp_path / "run"
    first = train_run(digits, model, SHORT, SHORT_CKPT, out, echo=quiet)
    lines: list[str] = []
    again = train_run(digits, model, SHORT, SHORT_CKPT, out, echo=lines.append)
    assert again["checkpoints"] == first["checkpoints"]
    assert lines == [f"{out}: already trained with this configuration; nothing to do"]

    (out / "stray.txt").write_text("left by the old run")
    shorter = dataclasses.replace(SHORT, epochs=3, milestones=(2,))
    changed = train_run(digits, model, shorter, SHORT_CKPT, out, echo=quiet)
    assert changed["config_hash"] != first["config_hash"]
    assert [e[1] for e in entries(changed)] == [1, 2, 3]
    # The old run's epoch-4 checkpoint and anything else in the folder are gone.
    assert sorted(p.name for p in out.iterdir()) == [
        "epoch_0001.pt",
        "epoch_0002.pt",
        "epoch_0003.pt",
        "labels.npz",
        "manifest.json",
    ]
    # Same seed, but a different lr schedule from epoch 3 on: only the first two epochs agree.
    assert entries(changed)[:2] == entries(first)[:2]
    assert entries(changed)[2][2] != entries(first)[2][2]


# --- schedule and learning rate ---------------------------------------------------------------


def test_schedule_covers_early_every_and_late():
    assert ck.schedule(30, early=3, every=5, late=3) == [1, 2, 3, 5, 10, 15, 20, 25, 28, 29, 30]
    assert ck.schedule(12, early=2, every=4, late=2) == [1, 2, 4, 8, 11, 12]
    assert ck.schedule(10, early=1, every=100, late=1) == [1, 10]
    # Fewer epochs than the windows: every epoch, none beyond the last.
    assert ck.schedule(2, early=3, every=5, late=3) == [1, 2]
    assert ck.schedule(7, early=2, every=1, late=2) == list(range(1, 8))


def test_lr_decays_after_each_milestone(digits, tmp_path):
    cfg = TrainConfig(lr=0.1, milestones=(3, 6), gamma=0.1, epochs=8)
    lrs = [lr_at(cfg, e) for e in range(1, 9)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rtol=1e-12)
    assert lr_at(dataclasses.replace(cfg, milestones=()), 8) == 0.1
    # The manifest records the lr each checkpoint was trained with.
    manifest = train_run(
        digits, ModelConfig(name="mlp", hidden=8), SHORT, SHORT_CKPT, tmp_path / "lr", echo=quiet
    )
    assert [c["lr"] for c in manifest["checkpoints"]] == pytest.approx([0.05, 0.05, 0.005])


# --- label noise ------------------------------------------------------------------------------


def test_shuffle_labels_is_seeded_and_permutes_the_chosen_labels():
    y = np.random.default_rng(0).integers(0, 10, size=2000)
    noisy, mask = shuffle_labels(y, 0.2, seed=5)
    assert mask.dtype == bool and mask.sum() == 400
    # Labels outside the mask are untouched; inside it they are a permutation of the originals.
    np.testing.assert_array_equal(noisy[~mask], y[~mask])
    np.testing.assert_array_equal(np.sort(noisy[mask]), np.sort(y[mask]))
    changed = (noisy != y).sum()
    # With 10 balanced classes about 90% of shuffled labels land on another class.
    assert 0.8 * 400 <= changed <= 400
    assert 0.16 <= changed / y.size <= 0.2

    again, mask_again = shuffle_labels(y, 0.2, seed=5)
    np.testing.assert_array_equal(again, noisy)
    np.testing.assert_array_equal(mask_again, mask)
    other, other_mask = shuffle_labels(y, 0.2, seed=6)
    assert not np.array_equal(other_mask, mask)

    clean, none = shuffle_labels(y, 0.0, seed=5)
    np.testing.assert_array_equal(clean, y)
    assert not none.any()
    clean[0] += 1  # a copy, not the caller's array
    assert clean[0] != y[0]


def test_noisy_run_records_its_noise(digits, tmp_path):
    cfg = dataclasses.replace(SHORT, epochs=2, milestones=(), label_noise=0.25, noise_seed=7)
    out = tmp_path / "noisy"
    manifest = train_run(
        digits,
        ModelConfig(name="mlp", hidden=8),
        cfg,
        CheckpointConfig(early=1, every=1, late=1),
        out,
        echo=quiet,
    )
    expected, expected_mask = shuffle_labels(digits.train.y, 0.25, seed=7)
    n_noisy = int(round(0.25 * len(digits.train)))
    assert manifest["label_noise"] == {"fraction": 0.25, "seed": 7, "n_noisy": n_noisy}
    assert manifest["train"]["label_noise"] == 0.25 and manifest["train"]["noise_seed"] == 7
    labels = read_npz(out / "labels.npz")
    assert sorted(labels) == ["label", "noisy", "true_label"]
    np.testing.assert_array_equal(labels["label"], expected)
    np.testing.assert_array_equal(labels["true_label"], digits.train.y)
    np.testing.assert_array_equal(labels["noisy"], expected_mask)
    assert labels["noisy"].sum() == n_noisy
    assert (labels["label"] != labels["true_label"]).sum() > 0.8 * n_noisy

    clean = train_run(
        digits,
        ModelConfig(name="mlp", hidden=8),
        dataclasses.replace(cfg, label_noise=0.0),
        CheckpointConfig(early=1, every=1, late=1),
        tmp_path / "clean",
        echo=quiet,
    )
    assert clean["label_noise"]["n_noisy"] == 0
    assert not read_npz(tmp_path / "clean" / "labels.npz")["noisy"].any()


# --- rebuilding from the manifest -------------------------------------------------------------


def test_manifest_alone_rebuilds_every_checkpoint(digits, tmp_path):
    out = tmp_path / "run"
    manifest = train_run(
        digits, ModelConfig(name="mlp", hidden=13), SHORT, SHORT_CKPT, out, echo=quiet
    )
    # Moved elsewhere, with no config alongside: the folder is self-describing.
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    models, loaded = ck.load_run_models(moved)
    assert loaded == {**manifest, "version": ck.MANIFEST_VERSION}
    assert len(models) == 3
    assert models[0].net[1].out_features == 13  # model options survive
    for model, entry in zip(models, manifest["checkpoints"], strict=True):
        saved = ck.load_file(moved / entry["file"])
        for key, value in model.state_dict().items():
            assert torch.equal(value, saved[key])
        x = torch.from_numpy(digits.test.x)
        acc = float((predict(model, x) == torch.from_numpy(digits.test.y)).float().mean())
        assert acc == entry["test_accuracy"]
    assert manifest["final"]["test_accuracy"] == manifest["checkpoints"][-1]["test_accuracy"]
    assert manifest["input_shape"] == [1, 8, 8] and manifest["num_classes"] == 10


# --- augmentation -----------------------------------------------------------------------------


def test_augment_batch_is_a_seeded_crop_and_flip():
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert augment_batch(x, "none", torch.Generator().manual_seed(1)) is x

    a = augment_batch(x, "crop_flip", torch.Generator().manual_seed(1))
    b = augment_batch(x, "crop_flip", torch.Generator().manual_seed(1))
    c = augment_batch(x, "crop_flip", torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    changed = [not torch.equal(a[i], x[i]) for i in range(len(x))]
    assert sum(changed) >= 12  # only 1 in 162 draws is the identity

    # Every output is one of the 81 crops of the zero-padded image, possibly mirrored.
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        candidates = [padded[i, :, oy : oy + 8, ox : ox + 8] for oy in range(9) for ox in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(a[i], c) for c in candidates), i

    # A share of the batch (a DDP rank's rows) gets exactly its rows of the whole batch's result,
    # and leaves the generator where the whole batch does.
    for rows in (slice(0, 6), slice(6, 11), slice(11, 16), slice(16, 16)):
        gen = torch.Generator().manual_seed(1)
        part = augment_batch(x[rows], "crop_flip", gen, rows=rows, of=len(x))
        assert torch.equal(part, a[rows])
        after_whole = torch.Generator().manual_seed(1)
        augment_batch(x, "crop_flip", after_whole)
        assert torch.equal(gen.get_state(), after_whole.get_state())


def test_a_diverging_run_stops_with_the_fix(digits, tmp_path):
    recipe = TrainConfig(epochs=2, batch_size=64, lr=1e12, milestones=(), device="cpu")
    with pytest.raises(RunError, match="during epoch 1: lower train.lr") as err:
        train_run(digits, ModelConfig(), recipe, CheckpointConfig(), tmp_path / "run", echo=quiet)
    assert err.value.cause == "diverged" and err.value.epoch == 1


LOG10 = float(np.log(10))


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([(2.5, 0.3), (LOG10, 0.1), (LOG10 + 1e-4, 0.11), (LOG10, 0.09)], True),  # flat at log C
        ([(7.9, 0.09), (6.3, 0.10), (5.4, 0.09)], True),  # worse than a guess, falling or not
        ([(2.3020, 0.12), (2.3015, 0.12), (2.3010, 0.12)], False),  # a slow start, falling
        ([(2.3031, 0.11), (2.2996, 0.13), (2.2998, 0.12), (2.2991, 0.12)], False),  # a plateau
        # The default audit's bs512 run starts just above log(10) and climbs out after epoch 3.
        ([(2.3054, 0.099), (2.3041, 0.099), (2.3030, 0.107)], False),
        ([(LOG10, 0.1), (LOG10, 0.1), (LOG10, 0.16)], False),  # above chance in the last epoch
        ([(LOG10, 0.1), (LOG10, 0.1)], False),  # too few epochs to tell
    ],
)
def test_stalled_tells_a_collapse_from_a_slow_start(history, expected):
    assert stalled(history, classes=10, chance=0.1) is expected


def test_a_run_that_stops_learning_fails_naming_the_epoch(digits, tmp_path):
    # lr 8 throws LeNet about from the first step: at chance, its loss above a uniform guess.
    recipe = TrainConfig(epochs=10, batch_size=64, lr=8.0, milestones=(), device="cpu")
    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"stopped learning at epoch \d+: train accuracy") as err:
        train_run(digits, ModelConfig(), recipe, SHORT_CKPT, out, echo=quiet)
    assert 3 <= err.value.epoch < 10
    assert str(err.value).endswith("(8): lower train.lr")
    assert not ck.read_manifest(out).get("complete")


def test_a_small_learning_rate_is_slow_but_not_stalled(digits, tmp_path):
    recipe = TrainConfig(epochs=6, batch_size=64, lr=0.001, milestones=(), device="cpu")
    manifest = train_run(digits, ModelConfig(), recipe, SHORT_CKPT, tmp_path / "run", echo=quiet)
    assert manifest["complete"]


# --- damaged runs are verified and rebuilt, never trusted ---------------------------------------


def flip_bytes(path: Path) -> None:
    """Flip a few bytes in the middle (inside the tensor data): the file still loads."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped": flip_bytes,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "zero_bytes": lambda p: p.write_bytes(b""),
    "deleted": lambda p: p.unlink(),
}


def digests(run: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(run.iterdir())}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_of_a_complete_run_is_rebuilt_bit_identical(digits, tmp_path, damage):
    model = ModelConfig(name="mlp", hidden=16)
    out = tmp_path / "run"
    first = train_run(digits, model, SHORT, SHORT_CKPT, out, echo=quiet)
    before = digests(out)
    DAMAGE[damage](out / "epoch_0002.pt")
    assert digests(out) != before

    lines: list[str] = []
    warnings: list[str] = []
    again = train_run(
        digits, model, SHORT, SHORT_CKPT, out, echo=lines.append, warn=warnings.append
    )
    # Not skipped as "already trained": the damage is named, then the run is replayed.
    assert not any("already trained" in line for line in lines)
    assert any("epoch_0002.pt" in w for w in warnings), warnings
    assert any("from scratch" in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert digests(out) == before
    assert again == first
    # And now it is intact: the next run trusts it.
    lines.clear()
    train_run(digits, model, SHORT, SHORT_CKPT, out, echo=lines.append, warn=warnings.append)
    assert lines == [f"{out}: already trained with this configuration; nothing to do"]


def interrupted(digits, out: Path, monkeypatch, *, die_at: int) -> None:
    """Train until the resume state of epoch ``die_at`` would be written, then die."""
    real_save = train_mod._save_resume

    def dying_save(path, model, optimizer, epoch, step):
        if epoch == die_at:
            raise KeyboardInterrupt
        real_save(path, model, optimizer, epoch, step)

    monkeypatch.setattr(train_mod, "_save_resume", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train_run(digits, ModelConfig(name="mlp", hidden=16), SHORT, SHORT_CKPT, out, echo=quiet)
    monkeypatch.setattr(train_mod, "_save_resume", real_save)


@pytest.mark.parametrize("damage", ["flipped", "truncated", "zero_bytes"])
def test_unloadable_resume_state_is_set_aside_and_training_restarts(
    digits, tmp_path, monkeypatch, damage
):
    model = ModelConfig(name="mlp", hidden=16)
    straight = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "straight", echo=quiet)
    out = tmp_path / "run"
    interrupted(digits, out, monkeypatch, die_at=3)  # resume state of epoch 2
    DAMAGE[damage](out / RESUME)

    lines: list[str] = []
    warnings: list[str] = []
    resumed = train_run(
        digits, model, SHORT, SHORT_CKPT, out, echo=lines.append, warn=warnings.append
    )
    aside = tmp_path / f"run.{RESUME}.unreadable"
    assert aside.is_file()  # kept for a look, outside the cached folder
    assert any(str(out / RESUME) in w and str(aside) in w for w in warnings), warnings
    assert not any(line.startswith("resuming") for line in lines)
    assert resumed == straight
    assert digests(out) == digests(tmp_path / "straight")


def test_damaged_checkpoint_before_the_resume_state_replays_from_the_start(
    digits, tmp_path, monkeypatch
):
    model = ModelConfig(name="mlp", hidden=16)
    straight = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "straight", echo=quiet)
    out = tmp_path / "run"
    interrupted(digits, out, monkeypatch, die_at=3)
    flip_bytes(out / "epoch_0001.pt")
    lines: list[str] = []
    warnings: list[str] = []
    resumed = train_run(
        digits, model, SHORT, SHORT_CKPT, out, echo=lines.append, warn=warnings.append
    )
    # Resuming after epoch 2 would keep the bad epoch-1 file: only the start can rebuild it.
    assert not any(line.startswith("resuming") for line in lines)
    assert any("epoch_0001.pt" in w and "sha256" in w for w in warnings)
    assert resumed == straight
    assert digests(out) == digests(tmp_path / "straight")


def test_damaged_checkpoint_after_the_resume_state_is_replayed(digits, tmp_path, monkeypatch):
    model = ModelConfig(name="mlp", hidden=16)
    straight = train_run(digits, model, SHORT, SHORT_CKPT, tmp_path / "straight", echo=quiet)
    out = tmp_path / "run"
    interrupted(digits, out, monkeypatch, die_at=2)  # epoch-2 checkpoint listed, resume at 1
    flip_bytes(out / "epoch_0002.pt")
    lines: list[str] = []
    resumed = train_run(
        digits, model, SHORT, SHORT_CKPT, out, echo=lines.append, warn=lambda _: None
    )
    assert f"resuming {out} after epoch 1" in lines
    assert resumed["checkpoints"] == straight["checkpoints"]
    assert ck.read_manifest(out) == ck.read_manifest(tmp_path / "straight")
    assert digests(out) == digests(tmp_path / "straight")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff\xfe"])
def test_unreadable_manifest_is_reported_and_the_run_retrained(digits, tmp_path, text):
    # Our call: everything in the folder derives from the config, so retrain rather than stop.
    model = ModelConfig(name="mlp", hidden=16)
    out = tmp_path / "run"
    first = train_run(digits, model, SHORT, SHORT_CKPT, out, echo=quiet)
    before = digests(out)
    (out / ck.MANIFEST).write_bytes(text.encode("latin-1"))
    warnings: list[str] = []
    again = train_run(digits, model, SHORT, SHORT_CKPT, out, echo=quiet, warn=warnings.append)
    assert len(warnings) == 1 and str(out / ck.MANIFEST) in warnings[0], warnings
    assert "retraining" in warnings[0]
    assert again == first and digests(out) == before
    # Elsewhere (loading a run for extraction) the same damage is a one-line refusal.
    (out / ck.MANIFEST).write_bytes(text.encode("latin-1"))
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_run_models(out)
    assert str(out / ck.MANIFEST) in str(err.value) and "\n" not in str(err.value)


def test_damaged_labels_of_a_complete_run_are_rewritten_without_training(digits, tmp_path):
    model = ModelConfig(name="mlp", hidden=16)
    out = tmp_path / "run"
    train_run(digits, model, SHORT, SHORT_CKPT, out, echo=quiet)
    before = digests(out)
    (out / LABELS).write_bytes(b"garbage")
    lines: list[str] = []
    warnings: list[str] = []
    train_run(digits, model, SHORT, SHORT_CKPT, out, echo=lines.append, warn=warnings.append)
    assert any(str(out / LABELS) in w for w in warnings)
    assert lines == [f"{out}: already trained with this configuration; nothing to do"]
    assert digests(out) == before
