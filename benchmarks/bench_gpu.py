"""A full CIFAR-10-sized audit extraction on one GPU, with the speed options and their agreement.

Run from the repository root on a GPU machine (about 3 minutes on one H200; no download)::

    python benchmarks/bench_gpu.py

What it does, with the pipeline's own code (``vogflow.training.train.train_run``,
``vogflow.scoring.extract.run_extraction``):

1. Data: ``--data synthetic`` (default: the shapes of CIFAR-10, 50,000 train and 10,000 test
   3x32x32 images of 10 classes, each a fixed smooth class template plus noise, so a trained
   model has easy and hard examples; nothing to download) or ``--data cifar10`` (torchvision's
   download into ``--root``, on a machine with network).
2. Checkpoints: a CIFAR ResNet-18 trained for ``--epochs`` epochs (11) on the first
   ``--train-examples`` training images, one checkpoint per epoch, so ``K = 11``: the audit's
   cost does not depend on how long training ran.
3. The audit extraction of both splits (60,000 images), both label modes, every window, at
   ``--batch-size`` (1024), once per variant: ``fp32`` (the reference), ``fp32`` channels-last,
   ``tf32`` and ``bf16`` with and without channels-last, and with ``--compile`` the fp32 models
   through ``torch.compile``. Each variant starts with a warm-up on 4 batches (cuDNN autotuning,
   compilation) that is not timed; the timed pass is one full extraction, bracketed by
   ``torch.cuda.synchronize``.
4. Agreement with fp32 on the test split for every window and label mode: the Spearman rank
   correlation of the raw scores (the lowest over the six), and the overlap of the hardest 10%.

Printed: one markdown table (seconds for the 60,000-image audit, images/s, checkpoint-images/s,
agreement), the platform, and whether the goal (the whole extraction under 60 s) is met. On the
CPU (``--device cpu``, e.g. ``--train-examples 256 --n-train 512 --n-test 256``) it runs the same
steps small; bf16 and tf32 rows are skipped there (bf16 is refused on the CPU; tf32 has no
effect), which the output says.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vogflow.checkpoints.files import load_run_models  # noqa: E402
from vogflow.common.runtime import resolve_device  # noqa: E402
from vogflow.config.schema import CheckpointConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from vogflow.data import RawSplits, Split, load_dataset, normalise  # noqa: E402
from vogflow.scoring.extract import run_extraction  # noqa: E402
from vogflow.training.train import train_run  # noqa: E402

VARIANTS = (
    ("fp32", False),
    ("fp32", True),
    ("tf32", False),
    ("tf32", True),
    ("bf16", False),
    ("bf16", True),
)
TOP = 0.1


def synthetic_cifar(n_train: int, n_test: int, seed: int = 0) -> RawSplits:
    """CIFAR-10's shapes with learnable structure: smooth class templates plus pixel noise.

    The noise level varies per image, so some examples sit close to their template (easy) and
    some far (hard): a trained model's VoG has something to rank.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(10, 3, 4, 4)).astype(np.float32)
    templates = coarse.repeat(8, axis=2).repeat(8, axis=3)  # 4x4 blocks: low frequency

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, size=n)
        level = rng.uniform(0.3, 2.5, size=(n, 1, 1, 1)).astype(np.float32)
        x = templates[y] + level * rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
        x = 1 / (1 + np.exp(-x))  # into [0, 1], as a loader returns images
        return x.astype(np.float32), y.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return RawSplits(x_train, y_train, x_test, y_test, classes=tuple(str(c) for c in range(10)))


def dataset(args: argparse.Namespace):
    if args.data == "cifar10":
        return load_dataset(DataConfig(name="cifar10", root=args.root), ROOT)
    raw = synthetic_cifar(args.n_train, args.n_test)
    return normalise(DataConfig(name="npz", augment="none"), raw)


def train(data, args: argparse.Namespace, out: Path) -> float:
    subset = replace(
        data,
        train=Split(data.train.x[: args.train_examples], data.train.y[: args.train_examples]),
    )
    epochs = args.epochs
    started = time.perf_counter()
    train_run(
        subset,
        ModelConfig(name="resnet18"),
        TrainConfig(
            epochs=epochs,
            batch_size=256,
            lr=0.05,
            milestones=(max(epochs - 2, 1),),
            device=args.device,
            threads=torch.get_num_threads(),
        ),
        CheckpointConfig(early=3, every=1, late=3),  # every epoch: K = epochs
        out,
        echo=lambda line: None,
    )
    return time.perf_counter() - started


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def extract_all(models, data, args, precision: str, channels_last: bool, limit: int | None):
    """Both splits, both label modes, every window: what the pipeline's gradients stage runs."""
    out = {}
    for split in ("train", "test"):
        s = data.split(split)
        x, y = torch.from_numpy(s.x), torch.from_numpy(s.y)
        if limit is not None:
            x, y = x[:limit], y[:limit]
        out[split] = run_extraction(
            models,
            (x, y),
            batch_size=args.batch_size,
            device=args.device,
            precision=precision,
            channels_last=channels_last,
            progress=False,
        )
    return out


def agreement(result, reference) -> tuple[float, float]:
    """Lowest Spearman and lowest hardest-10% overlap (Jaccard) over every window and mode."""
    from scipy.stats import spearmanr

    rhos, overlaps = [], []
    for key, ref in reference["test"].vog_raw.items():
        got = result["test"].vog_raw[key]
        rhos.append(float(spearmanr(got, ref).statistic))
        k = max(1, int(round(TOP * len(ref))))
        a, b = set(np.argsort(-got)[:k]), set(np.argsort(-ref)[:k])
        overlaps.append(len(a & b) / len(a | b))
    return min(rhos), min(overlaps)


def compiled(models):
    return [torch.compile(m) for m in models]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", choices=("synthetic", "cifar10"), default="synthetic")
    p.add_argument("--root", default="data", help="download folder for --data cifar10")
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--train-examples", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=11, help="checkpoints K (one per epoch)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="add a torch.compile row (fp32)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()

    dev = resolve_device(args.device)
    args.device = str(dev)
    data = dataset(args)
    n_images = len(data.train) + len(data.test)
    with tempfile.TemporaryDirectory() as tmp:
        train_s = train(data, args, Path(tmp) / "run")
        models, manifest = load_run_models(Path(tmp) / "run")
    k = len(models)
    print(
        f"{platform.node()}: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}, "
        f"torch {torch.__version__}; {n_images} images ({len(data.train)} train + "
        f"{len(data.test)} test), K={k} ResNet-18 checkpoints (trained {train_s:.1f} s on "
        f"{args.train_examples} images, final test accuracy "
        f"{manifest['final']['test_accuracy']:.3f}), batch {args.batch_size}"
    )

    variants = [(p, cl, False) for p, cl in VARIANTS]
    if args.compile:
        variants.append(("fp32", False, True))
    rows, skipped, reference = [], [], None
    for precision, channels_last, use_compile in variants:
        if dev.type != "cuda" and precision != "fp32":
            skipped.append(f"{precision}{' channels-last' if channels_last else ''}")
            continue
        run_models = compiled(models) if use_compile else models
        with contextlib.redirect_stderr(sys.stdout):
            extract_all(run_models, data, args, precision, channels_last, 4 * args.batch_size)
        sync(dev)
        t0 = time.perf_counter()
        result = extract_all(run_models, data, args, precision, channels_last, None)
        sync(dev)
        seconds = time.perf_counter() - t0
        if reference is None:
            reference = result
        rho, overlap = agreement(result, reference)
        rows.append(
            {
                "precision": precision,
                "channels_last": channels_last,
                "compile": use_compile,
                "seconds": seconds,
                "images_per_s": n_images / seconds,
                "checkpoint_images_per_s": n_images * k / seconds,
                "spearman_min": rho,
                "top10_jaccard_min": overlap,
            }
        )

    print()
    print(
        "| precision | layout | compile | seconds | images/s | checkpoint-images/s | "
        "Spearman vs fp32 (min) | hardest-10% Jaccard (min) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['precision']} | {'channels-last' if r['channels_last'] else 'contiguous'} | "
            f"{'yes' if r['compile'] else 'no'} | {r['seconds']:.1f} | {r['images_per_s']:.0f} | "
            f"{r['checkpoint_images_per_s']:.0f} | {r['spearman_min']:.4f} | "
            f"{r['top10_jaccard_min']:.3f} |"
        )
    if skipped:
        print(f"\nskipped on {dev.type}: {', '.join(skipped)} (GPU-only options)")
    best = min(rows, key=lambda r: r["seconds"])
    verdict = "met" if best["seconds"] < 60 else "not met"
    print(
        f"\ngoal (the {n_images}-image, K={k} extraction under 60 s): {verdict}; fastest "
        f"{best['seconds']:.1f} s ({best['precision']}, "
        f"{'channels-last' if best['channels_last'] else 'contiguous'})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"k": k, "images": n_images, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
