"""Sharded extraction on 2 real CPU processes launched by torchrun: the same rows as one process,
and a failure on either rank fails the command with one line and writes nothing.

The file is also the workers' script:
``torchrun ... tests/scoring/test_distributed.py <case> <out>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from numerics import assert_arrays_close, assert_tables_close
from processes import HUNG_AFTER_S, torchrun
from torch.utils.data import TensorDataset
from vog_reference import SmallCNN, models_from, perturbed_checkpoints

from vogflow.common.atomic import read_npz, write_npz
from vogflow.errors import ConfigError, VogflowError
from vogflow.parallel import launch as procgroup
from vogflow.scoring.extract import run_extraction
from vogflow.scoring.health import Health, check_health
from vogflow.scoring.shards import assemble, shard_rows

ROOT = Path(__file__).resolve().parents[2]
# Batches of 4 over 24 rows: the ranks' ranges (12 + 12) start on batch boundaries of one
# process, so every batch holds the same rows as there; the unaligned case splits batches.
ALIGNED, UNALIGNED, BATCH = 24, 23, 4


def setup(n: int, bad_label_at: int | None = None):
    torch.manual_seed(0)
    states = perturbed_checkpoints(SmallCNN(), k=5, seed=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, 3, 6, 6, generator=gen)
    y = torch.randint(0, 4, (n,), generator=gen).float()
    if bad_label_at is not None:
        y[bad_label_at] = 1.5
    return models_from(SmallCNN, states), x, y


def extract_case(case: str):
    """What each case scores; run the same way on one process and on every rank."""
    opts = {"batch_size": BATCH, "device": "cpu", "progress": False}
    if case == "aligned":
        models, x, y = setup(ALIGNED)
        return run_extraction(models, (x, y), **opts)
    if case == "unaligned":  # a Dataset, so the shards are Subsets through a DataLoader
        models, x, y = setup(UNALIGNED)
        return run_extraction(models, TensorDataset(x, y.long()), **opts)
    if case == "bad_label_on_rank1":  # checked batch by batch: only rank 1 sees it
        models, x, y = setup(ALIGNED, bad_label_at=20)
        return run_extraction(models, TensorDataset(x, y), **opts)
    if case == "bug_on_rank1":
        models, x, y = setup(ALIGNED)
        if int(os.environ["RANK"]) == 1:
            models[2].forward = lambda _: (_ for _ in ()).throw(RuntimeError("planted bug"))
        return run_extraction(models, (x, y), **opts)
    raise ValueError(case)


def worker(case: str, out: str) -> None:
    """One rank: rank 0 writes the assembled arrays, the others must get None."""
    torch.set_num_threads(1)
    try:
        extraction = extract_case(case)
    except Exception as err:
        if procgroup.reported_by_rank0(err):
            # Rank 0 names this rank's failure: leaving first would let torchrun stop rank 0
            # before it says so, however fast rank 0 runs. As the stages and the CLI do.
            procgroup.outlive_rank0()
            sys.exit(1)
        # One line on rank 0: its own refusal, or the RunError naming a failed peer.
        if isinstance(err, VogflowError) and int(os.environ["RANK"]) == 0:
            sys.exit(f"{case}: {err}")
        raise
    if int(os.environ["RANK"]) == 0:
        write_npz(out, **extraction.arrays())
    else:
        assert extraction is None


def test_shards_are_contiguous_ordered_and_within_one_row():
    for n in (0, 1, 2, 3, 7, 23, 24, 1000):
        for world in (1, 2, 3, 8):
            rows = [shard_rows(n, r, world) for r in range(world)]
            assert [i for part in rows for i in part] == list(range(n))
            sizes = [len(part) for part in rows]
            assert max(sizes) - min(sizes) <= 1
    assert shard_rows(ALIGNED, 1, 2) == range(12, 24)


def test_merged_health_fails_like_one_process_on_dataset_indices():
    """The whole-split checks see every rank: non-finite rows by dataset index, and a window
    that is 0 on one rank's rows but not another's is fine."""
    windows = {"all": [0, 1, 2]}
    parts = [
        Health(3, [], [], True, {"all_label": False}, windows),
        Health(3, [4], [], False, {"all_label": True}, windows),
    ]
    with pytest.raises(ConfigError, match=r"non-finite inputs for 1 example\(s\), indices 4:"):
        check_health(Health.merge(parts))
    parts[1].bad_inputs = []
    check_health(Health.merge(parts))
    with pytest.raises(ConfigError, match="split is empty"):
        check_health(Health.merge([Health(0, [], [], False, {}, windows)] * 2))


@pytest.mark.integration
def test_two_ranks_give_the_rows_of_one_process(tmp_path):
    torch.set_num_threads(1)
    for case in ("aligned", "unaligned"):
        out = tmp_path / f"{case}.npz"
        done = torchrun(__file__, case, str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        sharded = read_npz(out)
        single = extract_case(case).arrays()
        assert sorted(sharded) == sorted(single)
        for key, want in single.items():
            got = sharded[key]
            assert got.dtype == want.dtype and got.shape == want.shape, key
            assert_arrays_close(got, want, err_msg=key)


@pytest.mark.integration
@pytest.mark.parametrize(
    "case, message",
    [
        (
            "bad_label_on_rank1",
            "bad_label_on_rank1: rank 1 of 2 failed on examples 12-23: labels must be whole "
            "class indices, found 1 that are not (index 20: 1.5): pass integer labels (vogflow "
            "does not round or truncate them)",
        ),
        (
            "bug_on_rank1",
            "bug_on_rank1: rank 1 of 2 failed on examples 12-23: RuntimeError: planted bug",
        ),
    ],
)
def test_a_failing_rank_fails_the_run_in_one_line_and_nothing_is_written(tmp_path, case, message):
    out = tmp_path / "out.npz"
    done = torchrun(__file__, case, str(out))
    assert done.returncode != 0
    assert message in done.stderr.splitlines(), done.stderr[-3000:]
    assert not out.exists()


def test_assemble_keeps_dtypes_and_rank_order():
    models, x, y = setup(ALIGNED)
    whole = run_extraction(models, (x, y), batch_size=BATCH, device="cpu", progress=False)
    halves = [
        run_extraction(
            models,
            (x[r.start : r.stop], y[r.start : r.stop]),
            batch_size=BATCH,
            device="cpu",
            progress=False,
        )
        for r in (range(0, 12), range(12, 24))
    ]
    merged = assemble(halves).arrays()
    for key, want in whole.arrays().items():
        assert_arrays_close(merged[key], want, err_msg=key)
        assert merged[key].dtype == want.dtype


# The pipeline stage: `torchrun stages/gradients.py` writes the files one process writes.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny project (digits, 7 epochs, 6 checkpoints) with run `main` trained."""
    project = tmp_path_factory.mktemp("sharded")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=7, milestones=[5])
    params["checkpoints"].update(early=3, every=2, late=3)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages/train.py"),
            "--run",
            "main",
            "--out",
            "runs/main/checkpoints",
            "--metrics",
            "runs/main/train.json",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return project


def stage_args(out: str) -> list[str]:
    return [
        str(ROOT / "stages/gradients.py"),
        "--run",
        "main",
        "--checkpoints",
        "runs/main/checkpoints",
        "--out",
        f"{out}/gradients",
        "--metrics",
        f"{out}/gradients.json",
    ]


def run_alone(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A script in one plain process (no torchrun variables, whatever the test's environment)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, *args]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=HUNG_AFTER_S
    )


@pytest.fixture(scope="module")
def one_process(trained):
    """The gradients stage's outputs from one process."""
    single = run_alone(*stage_args("one"), cwd=trained)
    assert single.returncode == 0, single.stderr[-3000:]
    return trained / "one"


def assert_same_outputs(got_dir: Path, want_dir: Path) -> None:
    for split in ("train", "test"):
        want = read_npz(want_dir / "gradients" / f"{split}.npz")
        got = read_npz(got_dir / "gradients" / f"{split}.npz")
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            assert_arrays_close(got[key], want[key], err_msg=key)
    assert (got_dir / "gradients.json").read_text() == (want_dir / "gradients.json").read_text()


@pytest.mark.integration
def test_the_stage_on_two_ranks_writes_what_one_process_writes(trained, one_process):
    sharded = torchrun(*stage_args("two"), cwd=trained)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "on 2 processes" in sharded.stdout
    assert sharded.stdout.count("== gradients@main") == 1  # only rank 0 reports
    assert_same_outputs(trained / "two", one_process)


@pytest.mark.integration
def test_gradients_processes_starts_the_stage_under_torchrun_itself(trained, one_process):
    """`gradients.processes: 2` with the plain command dvc.yaml runs: the sharded outputs."""
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["gradients"]["processes"] = 2
    (trained / "self.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = run_alone(*stage_args("self"), "--params", "self.yaml", cwd=trained)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stdout
    assert done.stdout.count("== gradients@main") == 1
    assert_same_outputs(trained / "self", one_process)


@pytest.mark.integration
def test_vogflow_audit_on_two_processes_writes_the_table_of_one(trained, tmp_path):
    """`vogflow audit --processes 2`: torchrun ranks, one report, one file, the same rows."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    np.savez(
        tmp_path / "d.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:301], y_test=y[200:301]
    )

    def audit(out: str, *extra: str) -> subprocess.CompletedProcess:
        command = ["-m", "vogflow.cli", "audit", "--checkpoints"]
        command += [str(trained / "runs/main/checkpoints"), "--data", f"npz:{tmp_path / 'd.npz'}"]
        command += ["--out", str(tmp_path / out), "--quiet", "--batch-size", "16", *extra]
        return run_alone(*command, cwd=tmp_path)

    one = audit("one.parquet")
    assert one.returncode == 0, one.stderr[-3000:]
    two = audit("two.parquet", "--processes", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1, two.stdout  # rank 0 alone reports and writes
    want = pd.read_parquet(tmp_path / "one.parquet")
    got = pd.read_parquet(tmp_path / "two.parquet")
    assert len(got) == 101
    assert_tables_close(got, want)
    bad = audit("bad.parquet", "--processes", "2", "--window-size", "9")
    assert bad.returncode != 0
    # One line, not one per rank, nor the launcher's page of traceback about the same failure.
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert bad.stderr.startswith("vogflow audit: error: window 'early' of size 9"), bad.stderr
    assert not (tmp_path / "bad.parquet").exists()


@pytest.mark.integration
def test_a_refusal_every_rank_meets_is_said_once_however_late_rank_0_gets_there(trained, tmp_path):
    """Both ranks refuse the same bad argument before any work; rank 1 gets there first (rank 0
    is held back 20 s here, as a loaded machine may), and waits for rank 0 to say it instead of
    leaving, which would make torchrun stop rank 0 before it said anything."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x[:20], y_train=digits.target[:20],
             x_test=x[20:40], y_test=digits.target[20:40])  # fmt: skip
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import os, time\nif os.environ.get('RANK') == '0':\n    time.sleep(20)\n"
    )
    command = [sys.executable, "-m", "vogflow.cli", "audit", "--processes", "2", "--quiet"]
    command += ["--checkpoints", str(trained / "runs/main/checkpoints"), "--window-size", "9"]
    command += ["--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(tmp_path / "bad.parquet")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow), str(ROOT)])}
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_AFTER_S
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith("vogflow audit: error: window 'early' of size 9"), done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "bad.parquet").exists()


@pytest.mark.integration
@pytest.mark.parametrize("death", ["raise", "exit"])
def test_the_stage_fails_whole_when_a_rank_dies(trained, tmp_path, death):
    """Rank 1 fails mid-extraction: nonzero exit, nothing written; a raise is named in one line
    by rank 0, a process that vanishes (no Python exception) is stopped by torchrun."""
    planted = tmp_path / "planted"
    planted.mkdir()
    fail = "raise RuntimeError('planted failure')" if death == "raise" else "os._exit(3)"
    # Imported by every Python process on this path, before the stage: breaks rank 1 only.
    (planted / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import torch\n"
        "    def _boom(*args, **kwargs):\n"
        f"        {fail}\n"
        "    torch.autograd.grad = _boom\n"
    )
    done = torchrun(*stage_args("dead"), cwd=trained, env={"PYTHONPATH": str(planted)})
    assert done.returncode != 0
    assert not (trained / "dead").exists()
    if death == "raise":
        from vogflow.training.labels import LABELS

        n_train = len(read_npz(trained / "runs/main/checkpoints" / LABELS)["label"])
        rows = shard_rows(n_train, 1, 2)
        line = (
            f"gradients@main: rank 1 of 2 failed on examples {rows.start}-{rows.stop - 1}: "
            "RuntimeError: planted failure"
        )
        assert line in done.stderr.splitlines(), done.stderr[-3000:]


if __name__ == "__main__":
    worker(*sys.argv[1:])
