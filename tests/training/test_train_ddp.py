"""DDP training on 2 real CPU processes launched by torchrun: the checkpoints of one process to
float tolerance, the same manifest and schedule, files from rank 0 only, one line for a failing
rank, and a resume after it that ends in the bits of an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from numerics import assert_arrays_close
from processes import HUNG_AFTER_S, torchrun
from torch import nn

from vogflow.checkpoints import files as ck
from vogflow.common.atomic import sha256_file
from vogflow.config.schema import TrainConfig, load_params
from vogflow.data import load_dataset
from vogflow.errors import ConfigError
from vogflow.models.architectures import build_model
from vogflow.parallel import ddp
from vogflow.training.train import train_run

ROOT = Path(__file__).resolve().parents[2]
# A mean of the ranks' mean losses instead of weighted sums puts the gradient of an uneven step
# off by more than 1e-3 (below, against ATOL): far outside the float rounding of a sum.
ATOL = 1e-5
# 1438 digits training examples in batches of 63, split 32 + 31 between 2 ranks: every step
# exercises the weighting of uneven shares.
BATCH, STEPS_PER_EPOCH = 63, 23
ONE_TEST_EXAMPLE = 1 / 359

# Imported by every Python process on its path, before the stage: a rank other than 0 that
# writes, renames or removes anything under the project fails with the path it touched.
WRITE_GUARD = """
import os, sys
if os.environ.get("RANK", "0") != "0":
    root = os.path.realpath(os.environ["GUARD_ROOT"])
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path):
        if isinstance(path, int):
            return False
        return os.path.realpath(os.fsdecode(path)).startswith(root + os.sep)

    def guard(event, args):
        if event == "open":
            path, mode, flags = args
            if not inside(path):
                return
            if (mode and any(c in mode for c in "wax+")) or (flags or 0) & writes:
                raise PermissionError(f"rank {os.environ['RANK']} wrote {path}")
        elif event in ("os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir",
                       "shutil.rmtree", "os.truncate", "os.chmod"):
            if inside(args[0]) or (event in ("os.rename", "os.replace") and inside(args[1])):
                raise PermissionError(f"rank {os.environ['RANK']} did {event} on {args[0]}")

    sys.addaudithook(guard)
    print(f"write guard on rank {os.environ['RANK']}", file=sys.stderr, flush=True)
"""

# Rank 1 fails in its 6th step of epoch 3, after epochs 1 and 2 were saved.
PLANTED_FAILURE = f"""
import os
if os.environ.get("RANK") == "1":
    import torch.nn.functional as F
    real, calls = F.cross_entropy, [0]

    def planted(*args, **kwargs):
        calls[0] += 1
        if calls[0] > 2 * {STEPS_PER_EPOCH} + 5:
            raise RuntimeError("planted failure")
        return real(*args, **kwargs)

    F.cross_entropy = planted
"""


# --- the share of each rank and its loss, in one process ------------------------------------


def grads(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("batch", [64, 29, 3, 1])
@pytest.mark.parametrize("world", [2, 3])
def test_shares_tile_the_batch_and_their_losses_give_its_mean_gradient(batch, world):
    """DDP averages the ranks' gradients; the weighted sums make that average the full batch's
    mean gradient, also for uneven and empty shares, where a mean of means would not."""
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    x, y = torch.randn(batch, 5), torch.randint(0, 4, (batch,))
    want = grads(model, F.cross_entropy(model(x), y))
    got, naive, rows, summed = 0, 0, [], 0.0
    for r in range(world):
        share = ddp.Ranks(world, r).share(batch)
        xs, ys = x[share], y[share]
        rows.append(ys)
        loss, share_sum = ddp.Ranks(world, r).loss(model(xs), ys, batch)
        got = got + grads(model, loss) / world
        summed += float(share_sum)
        if len(ys):
            naive = naive + grads(model, F.cross_entropy(model(xs), ys)) / world
    assert torch.equal(torch.cat(rows), y)  # contiguous, in order, nothing twice
    assert max(len(r) for r in rows) - min(len(r) for r in rows) <= 1
    assert_arrays_close(got.detach().numpy(), want.detach().numpy())
    full = float(F.cross_entropy(model(x), y).detach())
    assert summed == pytest.approx(full * batch, rel=1e-5)
    if batch % world:
        assert (naive - want).abs().max() > 100 * ATOL


def test_one_process_is_the_plain_loop():
    one = ddp.Ranks()
    x, y = torch.randn(6, 3), torch.arange(6) % 3
    assert one.share(6) == slice(0, 6)
    loss, summed = one.loss(x, y, 6)
    assert torch.equal(loss, F.cross_entropy(x, y))
    assert torch.equal(summed, F.cross_entropy(x, y) * 6)
    model = nn.Linear(3, 3)
    assert one.wrap(model, torch.device("cpu")) is model


def test_batchnorm_on_cpu_processes_is_refused_with_the_fix():
    resnet = build_model("resnet18", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="BatchNorm.*train it with one process on the CPU"):
        ddp.Ranks(2, 0).wrap(resnet, torch.device("cpu"))


def test_one_gpu_for_every_process_and_zero_processes_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="train.device: 'cuda:1' puts all 2 processes on one"):
        ddp.join("cuda:1")
    with pytest.raises(ConfigError, match="train.processes: 0 is not allowed"):
        TrainConfig(processes=0).validate("train")


# --- 2 processes under torchrun, against 1 --------------------------------------------------


def stage_args(out: str) -> list[str]:
    return [
        str(ROOT / "stages/train.py"),
        "--run",
        "main",
        "--out",
        f"{out}/checkpoints",
        "--metrics",
        f"{out}/train.json",
    ]


def with_file(tmp: Path, name: str, text: str) -> dict:
    folder = tmp / name
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(text)
    return {"PYTHONPATH": str(folder)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Digits and LeNet for 4 epochs (lr decays after 3, batches of 63), checkpoints after epochs
    1, 2 and 4;
    ``one``: that run trained by one process."""
    project = tmp_path_factory.mktemp("ddp")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=4, milestones=[3], batch_size=BATCH)
    params["checkpoints"].update(early=2, every=2, late=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prm = load_params(project / "params.yaml")
    train_run(
        load_dataset(prm.data, project),
        prm.model,
        prm.run_train("main"),
        prm.checkpoints,
        project / "one/checkpoints",
        echo=lambda _: None,
    )
    return project


@pytest.fixture(scope="module")
def two(project, tmp_path_factory):
    """The same run on 2 processes, rank 1 unable to write anything under the project."""
    guard = with_file(tmp_path_factory.mktemp("guard"), "guard", WRITE_GUARD)
    env = {**guard, "GUARD_ROOT": str(project)}
    done = torchrun(*stage_args("two"), cwd=project, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# Two processes sum each step's gradient in another order than one, and training carries each
# step's rounding into the next: after 4 epochs (92 steps) the weights differ by up to 1e-7 with
# this machine's AVX-512 kernels but 1e-4 with torch's portable ones (the kernel pass). So the
# checkpoints agree to 1e-3 of the largest weight, ten times that, while another seed moves
# weights by ~1e-1; the weighting of uneven shares is checked per step, to float rounding, above.
TRAINED_RTOL, TRAINED_ATOL_SCALE = 1e-3, 2e-3


def assert_weights_close(got: dict, want: dict, where: str) -> None:
    assert got.keys() == want.keys(), where
    for key in want:
        assert_arrays_close(
            got[key].numpy(),
            want[key].numpy(),
            rtol=TRAINED_RTOL,
            atol_scale=TRAINED_ATOL_SCALE,
            err_msg=f"{where}: {key}",
        )


@pytest.mark.integration
def test_two_processes_train_the_checkpoints_of_one(project, two):
    one, ddp_run = project / "one/checkpoints", project / "two/checkpoints"
    want, got = ck.read_manifest(one), ck.read_manifest(ddp_run)
    # The same manifest but for where it ran and the bits: schedule, steps, lr, config hash.
    assert got["platform"] == {**want["platform"], "world_size": 2}
    assert [c["file"] for c in got["checkpoints"]] == ["epoch_0001.pt", "epoch_0002.pt"] + [
        "epoch_0004.pt"
    ]
    same = {"file", "epoch", "step", "lr"}
    for g, w in zip(got["checkpoints"], want["checkpoints"], strict=True):
        assert {k: g[k] for k in same} == {k: w[k] for k in same}
        assert g["test_accuracy"] == pytest.approx(w["test_accuracy"], abs=ONE_TEST_EXAMPLE)
    drop = {"platform", "checkpoints", "final"}
    assert {k: v for k, v in got.items() if k not in drop} == {
        k: v for k, v in want.items() if k not in drop
    }
    assert got["final"] == pytest.approx(want["final"], abs=ONE_TEST_EXAMPLE)
    assert sorted(p.name for p in ddp_run.iterdir()) == sorted(p.name for p in one.iterdir())
    for c in want["checkpoints"]:
        assert_weights_close(
            ck.load_file(ddp_run / c["file"]), ck.load_file(one / c["file"]), c["file"]
        )
    # The global metrics: rank 0 logs the loss and accuracy summed over both ranks' shares.
    assert (project / "two/train.json").read_text().count("test_accuracy") == 1


@pytest.mark.integration
def test_only_rank_0_writes_and_reports(two):
    assert "write guard on rank 1" in two.stderr.splitlines()
    assert two.stdout.count("== train@main") == 1
    assert two.stdout.count("epoch   4/4") == 1


@pytest.mark.slow
def test_a_failing_rank_fails_in_one_line_and_the_run_resumes_to_the_same_bits(
    project, two, tmp_path
):
    out = project / "killed/checkpoints"
    planted = with_file(tmp_path, "planted", PLANTED_FAILURE)
    done = torchrun(*stage_args("killed"), cwd=project, env=planted)
    assert done.returncode != 0
    assert "train@main: rank 1 of 2 failed: RuntimeError: planted failure" in (
        done.stderr.splitlines()
    ), done.stderr[-3000:]
    assert "[rank0]: Traceback" not in done.stderr  # rank 0 stopped without a traceback
    # Epochs 1 and 2 whole and listed, nothing half-written, the resume state after epoch 2.
    manifest = ck.read_manifest(out)
    assert [c["epoch"] for c in manifest["checkpoints"]] == [1, 2]
    for c in manifest["checkpoints"]:
        assert sha256_file(out / c["file"]) == c["sha256"]
    listed = {"manifest.json", "labels.npz", "resume.pt", "epoch_0001.pt", "epoch_0002.pt"}
    assert {p.name for p in out.iterdir()} == listed
    assert torch.load(out / "resume.pt", weights_only=True)["epoch"] == 2
    shutil.copytree(out, tmp_path / "other_world")

    # Resumed by the stage itself starting 2 processes (train.processes: 2): the bits of the
    # uninterrupted 2-process run.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["processes"] = 2
    (project / "params2.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    again = subprocess.run(
        [sys.executable, *stage_args("killed"), "--params", "params2.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {Path('killed/checkpoints')} after epoch 2" in again.stdout
    uninterrupted = project / "two/checkpoints"
    assert ck.read_manifest(out) == ck.read_manifest(uninterrupted)
    for name in ("epoch_0001.pt", "epoch_0002.pt", "epoch_0004.pt"):
        assert sha256_file(out / name) == sha256_file(uninterrupted / name), name

    # Resumed by one process instead: said like any platform change, both records kept, and
    # the checkpoints those of one process to float tolerance.
    warnings: list[str] = []
    prm = load_params(project / "params.yaml")
    resumed = train_run(
        load_dataset(prm.data, project),
        prm.model,
        prm.run_train("main"),
        prm.checkpoints,
        tmp_path / "other_world",
        echo=lambda _: None,
        warn=warnings.append,
    )
    assert any("on another platform (world_size changed)" in w for w in warnings), warnings
    assert resumed["platform_before_resume"][0]["world_size"] == 2
    assert "world_size" not in resumed["platform"]
    one = project / "one/checkpoints"
    assert_weights_close(
        ck.load_file(tmp_path / "other_world/epoch_0004.pt"),
        ck.load_file(one / "epoch_0004.pt"),
        "epoch_0004.pt",
    )
