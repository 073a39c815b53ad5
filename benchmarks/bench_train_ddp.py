"""DDP training throughput: one process against N processes under torchrun, on the CPU.

Run from the repository root (about 30 s on a 2-core CPU with the defaults: LeNet on the digits
upsampled to 1x28x28, 1438 training images, batch 64, lr 0.01, 5 epochs, 1 thread per process)::

    python benchmarks/bench_train_ddp.py
    python benchmarks/bench_train_ddp.py --procs 1 2 4 --epochs 8 --batch-size 128 --size 32

Each configuration is a fresh ``vogflow.training.train.train_run`` (``python`` for one process,
``torchrun`` for more) into a temporary folder, with checkpoints after every epoch as in an
audit's early window. Reported: training images per second from the loop's own per-epoch
seconds (rank 0's clock, the gradient all-reduce and the waits for the slowest rank included;
evaluation and checkpoint writes excluded), the median over the epochs after the first (which
pays for DDP's bucket set-up), and the wall time of the whole command (start-up, process group,
writes included). Before any number is printed, every configuration's last checkpoint is
checked against one process's (max abs difference, to float tolerance).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dataset(size: int):
    """The digits, bilinearly upsampled to ``size`` x ``size`` (more work per image than 8x8)."""
    import torch

    from vogflow.config.schema import DataConfig
    from vogflow.data import Split, load_dataset

    digits = load_dataset(DataConfig(name="digits"))
    if size == 8:
        return digits

    def up(split: Split) -> Split:
        x = torch.nn.functional.interpolate(
            torch.from_numpy(split.x), size=(size, size), mode="bilinear", align_corners=False
        )
        return Split(x.numpy(), split.y)

    return dataclasses.replace(digits, train=up(digits.train), test=up(digits.test))


def worker(args: argparse.Namespace) -> None:
    """One process of one configuration; rank 0 writes the per-epoch seconds to ``args.out``."""
    from vogflow.config.schema import CheckpointConfig, ModelConfig, TrainConfig
    from vogflow.parallel.launch import rank
    from vogflow.training.train import train_run

    data = dataset(args.size)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        milestones=(),
        device="cpu",
        threads=args.threads,
    )
    seconds: list[float] = []
    manifest = train_run(
        data,
        ModelConfig(name=args.model),
        cfg,
        CheckpointConfig(early=args.epochs, every=1, late=1),
        Path(args.out).with_suffix(".run"),
        log=lambda metrics, epoch: seconds.append(metrics["epoch_seconds"]),
        echo=lambda _: None,
    )
    if rank() == 0:
        last = manifest["checkpoints"][-1]["file"]
        record = {"seconds": seconds, "n": len(data.train.y), "last": last}
        Path(args.out).write_text(json.dumps(record))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace, procs: int, folder: Path) -> tuple[dict, float]:
    out = folder / f"p{procs}.json"
    script = [__file__, "--worker", "--out", str(out), *sys.argv[1:]]
    if procs == 1:
        cmd = [sys.executable, *script]
    else:
        launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={procs}"]
        cmd = [sys.executable, *launcher, f"--master_port={free_port()}", "--", *script]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text()), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model", default="lenet", choices=["lenet", "mlp"])
    p.add_argument("--size", type=int, default=28, help="image side (digits are 8)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    # At 0.05 this recipe amplifies float-order differences (1 against 2 torch threads in one
    # process: 3e-4 after an epoch, 0.3 after five), which would hide a real mismatch.
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    from vogflow.checkpoints import files as ck

    procs = sorted(set(args.procs) | {1})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {n: run(args, n, folder) for n in procs}
        last = results[1][0]["last"]
        weights = {n: ck.load_file(folder / f"p{n}.run" / last) for n in procs}
    rows = []
    base = None
    for n in procs:
        record, wall = results[n]
        diff = max(
            float((weights[n][k].double() - weights[1][k].double()).abs().max()) for k in weights[1]
        )
        assert diff < 1e-4, f"{n} processes: checkpoint differs from 1 process by {diff}"
        rate = record["n"] / statistics.median(record["seconds"][1:] or record["seconds"])
        base = base or rate
        rows.append((n, rate, rate / base, wall, diff))
    print(
        f"\n{args.model}, {results[1][0]['n']} images 1x{args.size}x{args.size}, "
        f"batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs, "
        f"{args.threads} thread(s) per process, torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    print("| processes | train images/s (median epoch) | vs 1 process | wall s | max abs diff |")
    print("|---:|---:|---:|---:|---:|")
    for n, rate, speedup, wall, diff in rows:
        print(f"| {n} | {rate:.0f} | {speedup:.2f}x | {wall:.1f} | {diff:.1e} |")
    print("\nCommand: python benchmarks/bench_train_ddp.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
