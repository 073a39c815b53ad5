"""Sharded extraction throughput: 1 process against N processes under torchrun, on the CPU.

Run from the repository root (about a minute on a 2-core CPU with the defaults: LeNet 1x28x28,
random data N=4096, K=8 random checkpoints, batch 256, both label modes)::

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --n 8192 --checkpoints 11 --procs 2 4 --repeats 5

Each configuration runs in fresh processes (``python`` for one process, ``torchrun`` for more),
with ``--threads`` intra-op threads per process. Every process first extracts a few rows to warm
up (and, under torchrun, to join the process group), then times ``run_extraction`` on the whole
data ``--repeats`` times; the median is reported, from rank 0's clock (the time until the
assembled result is in rank 0's hands, the gather included). The sharded scores are checked
against the one-process scores (rtol 1e-5) before any number is printed.

Also measured: the gather alone (``gather_object`` of each rank's part to rank 0, the way
:func:`vogflow.scoring.shards.run_sharded` does it) for ``--gather-rows`` rows, the size of a
60 000-image train split, to show whether it matters next to the extraction.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One process of one configuration; rank 0 writes its timings to ``args.out``."""
    import torch

    from vogflow.models.architectures import LeNet
    from vogflow.scoring.extract import run_extraction
    from vogflow.scoring.shards import assemble, rank, shard_rows, sharded

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [LeNet((1, 28, 28), 10) for _ in range(args.checkpoints)]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.n, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.n,), generator=gen)
    opts = {"batch_size": args.batch_size, "device": "cpu", "progress": False}
    run_extraction(models, (x[: 2 * args.batch_size], y[: 2 * args.batch_size]), **opts)
    seconds, result = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = run_extraction(models, (x, y), **opts)
        seconds.append(time.perf_counter() - t0)
    gather = []
    if sharded():
        import torch.distributed as dist

        world = dist.get_world_size()
        # A part of a `gather_rows` split: the shapes and dtypes of a real one, filled with zeros.
        part = _zeros(len(shard_rows(args.gather_rows, rank(), world)), args.checkpoints)
        for _ in range(args.repeats):
            dist.barrier()
            objects = [None] * world if rank() == 0 else None
            t0 = time.perf_counter()
            dist.gather_object(part, objects)
            if rank() == 0:
                assemble(objects)
            gather.append(time.perf_counter() - t0)
    if rank() == 0:
        arrays = {k: v.tolist() for k, v in result.arrays().items() if k.startswith("vog_")}
        Path(args.out).write_text(json.dumps({"seconds": seconds, "gather": gather, **arrays}))


def _zeros(n: int, k: int):
    from vogflow.config.names import LABEL_MODES, WINDOWS
    from vogflow.scoring.results import STATS, Extraction

    return Extraction(
        label=np.zeros(n, dtype=np.int64),
        pred=np.zeros(n, dtype=np.int64),
        vog_raw={f"{w}_{m}": np.zeros(n) for w in WINDOWS for m in LABEL_MODES},
        stats={s: np.zeros((k, n), dtype=np.int64 if s == "pred" else np.float32) for s in STATS},
        windows={},
        # The averaged softmax a split's extraction carries too (10 classes, as CIFAR-10).
        probs=np.zeros((n, 10), dtype=np.float32),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(procs: int, args: argparse.Namespace, out: Path, threads: int) -> dict:
    """One configuration in fresh processes; rank 0's timings."""
    script = [str(Path(__file__).resolve()), "--worker", "--out", str(out)]
    for name in ("n", "checkpoints", "batch_size", "repeats", "gather_rows"):
        script += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    script += ["--threads", str(threads)]
    if procs == 1:
        cmd = [sys.executable, *script]
    else:
        # `--` ends torchrun's options, so it never reads a script option as its own.
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={procs}",
            f"--master_port={free_port()}",
            "--",
            *script,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096, help="examples (default 4096)")
    p.add_argument("--checkpoints", type=int, default=8, help="K (default 8)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--procs", type=int, nargs="+", default=[2], help="process counts to compare")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gather-rows", type=int, default=60000)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = launch(1, args, Path(tmp) / "1.json", args.threads)
        for procs in args.procs:
            # The same cores as intra-op threads of one process: what sharding has to beat.
            same = launch(1, args, Path(tmp) / f"1x{procs}.json", args.threads * procs)
            got = launch(procs, args, Path(tmp) / f"{procs}.json", args.threads)
            for key in base:
                if key.startswith("vog_"):
                    np.testing.assert_allclose(got[key], base[key], rtol=1e-5, err_msg=key)
            rows.append((1, args.threads * procs, same))
            rows.append((procs, args.threads, got))
    one = args.n / statistics.median(base["seconds"])
    print(
        f"LeNet 1x28x28, random data N={args.n}, K={args.checkpoints} random checkpoints, "
        f"batch {args.batch_size}, label modes label+pred, CPU ({os.cpu_count()} cores, "
        f"torch {torch.__version__}), median of {args.repeats}\n"
    )
    print("| processes | threads each | images/s | vs the first row | gather to rank 0 |")
    print("|---|---|---|---|---|")
    print(f"| 1 | {args.threads} | {one:.0f} | 1.00x | - |")
    for procs, threads, got in rows:
        rate = args.n / statistics.median(got["seconds"])
        gather = (
            f"{statistics.median(got['gather']) * 1000:.0f} ms for {args.gather_rows} rows"
            if got["gather"]
            else "-"
        )
        print(f"| {procs} | {threads} | {rate:.0f} | {rate / one:.2f}x | {gather} |")
    print("\nCommand: python benchmarks/bench_distributed.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
