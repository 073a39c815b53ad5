"""Peak memory of training and extraction on an image folder, streamed and in memory, at N and 4N.

    python benchmarks/bench_streaming.py --sizes 2000 8000 --work /tmp/bench_streaming

Writes a folder of 32x32 RGB PNGs per size (N training images, N/4 test images, 10 classes),
then for each size and mode runs, each in a fresh process, 2 epochs of LeNet training and the
extraction of both splits from its checkpoints. Each process reports its own peak RSS
(``ru_maxrss`` of itself, and of its loader processes when it has any) and its wall time; the
table goes to stdout as Markdown. In memory, the splits cost O(N) on top of the interpreter and
torch; streamed, only the per-example outputs grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = {"memory": (False, 0), "stream": (True, 0), "stream+2 workers": (True, 2)}


def make_folder(root: Path, n_train: int, n_test: int, *, classes: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 200, (32, 32, 3)) + 5 * (i % classes)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:06d}.png")


def _data_cfg(folder: Path, stream: bool, workers: int):
    from vogflow.config.schema import DataConfig

    return DataConfig(name="imagefolder", path=str(folder), stream=stream, workers=workers)


def child_train(folder: Path, out: Path, stream: bool, workers: int) -> None:
    from vogflow.config.schema import CheckpointConfig, ModelConfig, TrainConfig
    from vogflow.data import load_dataset
    from vogflow.training.train import train_run

    data = load_dataset(_data_cfg(folder, stream, workers), out.parent)
    train_run(
        data,
        ModelConfig(name="lenet"),
        TrainConfig(epochs=2, batch_size=64, milestones=()),
        CheckpointConfig(early=1, every=1, late=1),
        out,
        echo=lambda _: None,
    )


def child_extract(folder: Path, out: Path, stream: bool, workers: int) -> None:
    from vogflow.checkpoints.files import load_run_models
    from vogflow.data.loaders import extraction_input
    from vogflow.scoring.extract import run_extraction
    from vogflow.training.runs import load_run_data

    models, manifest = load_run_models(out)
    data = load_run_data(_data_cfg(folder, stream, workers), out.parent, out, manifest)
    for x, labels in data.values():
        run_extraction(
            models,
            extraction_input(x, labels["label"], batch_size=256),
            windows=("all",),  # two checkpoints: one window
            batch_size=256,
            progress=False,
        )


def run_child(kind: str, folder: Path, out: Path, mode: str, env: dict[str, str]) -> dict:
    stream, workers = MODES[mode]
    cmd = [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--out", str(out)]
    cmd += ["--stream", str(int(stream)), "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    p.add_argument("--work", default="/tmp/bench_streaming")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument(
        "--fixed-mmap-threshold",
        action="store_true",
        help="children run with MALLOC_MMAP_THRESHOLD_=131072: glibc's sliding threshold lets "
        "freed batch-sized buffers fragment the heap, which shows up as RSS that is not data",
    )
    p.add_argument("--child", choices=["train", "extract"])
    p.add_argument("--folder")
    p.add_argument("--out")
    p.add_argument("--stream", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args()

    if args.child:
        t0 = time.perf_counter()
        fn = child_train if args.child == "train" else child_extract
        fn(Path(args.folder), Path(args.out), bool(args.stream), args.workers)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            json.dumps(
                {"rss_mb": own, "workers_rss_mb": workers, "seconds": time.perf_counter() - t0}
            )
        )
        return

    work = Path(args.work)
    env = dict(os.environ)
    if args.fixed_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    print(f"load average at start: {os.getloadavg()}, cpus: {os.cpu_count()}", file=sys.stderr)
    rows = []
    for n in args.sizes:
        folder = work / f"images_{n}"
        if not (folder / "test").is_dir():
            make_folder(folder, n, n // 4)
        for mode in args.modes:
            out = work / f"run_{n}_{mode.replace(' ', '_').replace('+', '')}" / "checkpoints"
            shutil.rmtree(out.parent, ignore_errors=True)
            out.parent.mkdir(parents=True)
            for kind in ("train", "extract"):
                r = run_child(kind, folder, out, mode, env)
                rows.append((n, mode, kind, r))
                print(n, mode, kind, r, file=sys.stderr, flush=True)
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)
    print(
        "| N train (+N/4 test) | mode | stage | peak RSS (MiB) | largest child process (MiB) | s |"
    )
    print("|---|---|---|---|---|---|")
    for n, mode, kind, r in rows:
        workers = f"{r['workers_rss_mb']:.0f}" if MODES[mode][1] else "-"
        print(f"| {n} | {mode} | {kind} | {r['rss_mb']:.0f} | {workers} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
