"""Which default training/checkpoint schedule gives VoG rankings that survive a change of seed?

For each candidate schedule (learning-rate milestones and checkpoint epochs), trains the default
recipe of ``params.yaml`` (digits, LeNet, same data split) with seeds 0..4, extracts VoG on the
test split over every checkpoint (window size 3), builds the rankings tables and prints, as
markdown, the mean pairwise Spearman across the seeds of every VoG variant (window early/late/all
x label mode label/pred x normalisation z, |z|, raw) and the final test accuracy:

    PYTHONPATH=. VOGFLOW_TRACKING=off python benchmarks/schedule_study.py [--work DIR] [--json F]

Candidates may set ``late_every``: the late window's checkpoints ``late_every`` epochs apart
(epochs E, E - late_every, ...), with the every-N checkpoints kept before the window only (so
that the last ``late`` checkpoints are the spread-out window).
``vogflow.checkpoints.files.schedule`` has no such option yet: this script prototypes it by
patching ``schedule`` while it trains (``late_every = 1`` gives exactly today's schedule).
Nothing in the project is changed.

One torch thread (training pins ``train.threads`` anyway); about 10 s per run on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2, 3, 4)
WINDOW_SIZE = 3

# name -> (description, train overrides, checkpoint options). The first is today's default.
CANDIDATES: dict[str, tuple[str, dict, dict]] = {
    "A": (
        "paper/current: milestones [20, 26], late window 28,29,30",
        {"milestones": (20, 26)},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
    "B": (
        "milestones [20, 26], late window spread 3 apart: 24,27,30",
        {"milestones": (20, 26)},
        {"early": 3, "every": 5, "late": 3, "late_every": 3},
    ),
    "B5": (
        "milestones [20, 26], late window spread 5 apart: 20,25,30",
        {"milestones": (20, 26)},
        {"early": 3, "every": 5, "late": 3, "late_every": 5},
    ),
    "C": (
        "single decay, milestones [20], late window 28,29,30",
        {"milestones": (20,)},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
    "CB": (
        "single decay, milestones [20], late window spread 3 apart: 24,27,30",
        {"milestones": (20,)},
        {"early": 3, "every": 5, "late": 3, "late_every": 3},
    ),
    "D": (
        "last decay inside the late window: milestones [20, 28], late window 28,29,30",
        {"milestones": (20, 28)},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
    "D29": (
        "last decay inside the late window: milestones [20, 29], late window 28,29,30",
        {"milestones": (20, 29)},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
    "D24": (
        "both decays later: milestones [24, 28], late window 28,29,30",
        {"milestones": (24, 28)},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
    "D26": (
        "both decays later: milestones [26, 28], late window 28,29,30",
        {"milestones": (26, 28)},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
    "F": (
        "longer low-lr phase: milestones [10, 20], late window 28,29,30",
        {"milestones": (10, 20)},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
    "E": (
        "no decay (constant lr 0.05), late window 28,29,30",
        {"milestones": ()},
        {"early": 3, "every": 5, "late": 3, "late_every": 1},
    ),
}
NORMS = ("z", "abs", "raw")


def study_schedule(epochs: int, *, early: int, every: int, late: int, late_every: int = 1):
    """Checkpoint epochs: the first ``early``; every ``every``-th before the late window; the
    late window's ``late`` epochs ``late_every`` apart, ending at ``epochs``.

    ``late_every = 1`` is :func:`vogflow.checkpoints.files.schedule` exactly.
    """
    late_start = max(epochs - late_every * (late - 1), 1)
    chosen = set(range(1, min(early, epochs) + 1))
    chosen |= set(range(every, late_start, every))
    chosen |= set(range(epochs, late_start - 1, -late_every))
    if late_every == 1:  # today's rule, which also keeps an every-N epoch inside the window
        chosen |= set(range(every, epochs + 1, every))
    return sorted(chosen)


@contextlib.contextmanager
def patched_schedule(late_every: int) -> Iterator[None]:
    from vogflow.checkpoints import files as ck

    original = ck.schedule

    def schedule(epochs: int, *, early: int, every: int, late: int) -> list[int]:
        return study_schedule(epochs, early=early, every=every, late=late, late_every=late_every)

    ck.schedule = schedule
    try:
        yield
    finally:
        ck.schedule = original


def run_candidate(name: str, params, dataset, work: Path, seeds) -> dict:

    from vogflow.checkpoints.files import load_run_models
    from vogflow.rankings import table as rankings
    from vogflow.scoring.extract import run_extraction
    from vogflow.training.loop import lr_at
    from vogflow.training.train import train_run

    _, train_over, ckpt_opts = CANDIDATES[name]
    ckpt_opts = dict(ckpt_opts)
    late_every = ckpt_opts.pop("late_every")
    ckpt_cfg = dataclasses.replace(params.checkpoints, **ckpt_opts)
    scores: dict[str, dict[str, np.ndarray]] = {}
    acc, seconds, epochs_saved, lrs = {}, {}, None, None
    for seed in seeds:
        cfg = dataclasses.replace(params.train, seed=seed, threads=1, device="cpu", **train_over)
        cfg.validate("train")
        out = work / f"{name}_le{late_every}" / f"seed{seed}"
        t0 = time.perf_counter()
        with patched_schedule(late_every):
            manifest = train_run(dataset, params.model, cfg, ckpt_cfg, out, echo=lambda _: None)
        seconds[seed] = time.perf_counter() - t0
        epochs_saved = [c["epoch"] for c in manifest["checkpoints"]]
        lrs = [lr_at(cfg, e) for e in epochs_saved]
        acc[seed] = manifest["final"]["test_accuracy"]
        models, _ = load_run_models(out)
        extraction = run_extraction(
            models,
            (dataset.test.x, dataset.test.y),
            window_size=WINDOW_SIZE,
            batch_size=256,
            device="cpu",
            progress=False,
        )
        table = rankings.build(extraction, normalise="z")
        for w, m in itertools.product(("early", "late", "all"), ("label", "pred")):
            z = table[f"vog_{w}_{m}"].to_numpy()
            variants = {"z": z, "abs": np.abs(z), "raw": table[f"vog_{w}_{m}_raw"].to_numpy()}
            for norm, values in variants.items():
                scores.setdefault(f"{w}_{m}_{norm}", {})[f"seed{seed}"] = values
        print(
            f"  {name} seed {seed}: test acc {acc[seed]:.4f}  ({seconds[seed]:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return {"scores": scores, "acc": acc, "epochs": epochs_saved, "lrs": lrs, "seconds": seconds}


def subset(result: dict, seeds) -> dict:
    """``result`` restricted to ``seeds``."""
    keep = {f"seed{s}" for s in seeds}
    return {
        **result,
        "scores": {
            k: {r: v for r, v in runs.items() if r in keep} for k, runs in result["scores"].items()
        },
        "acc": {s: a for s, a in result["acc"].items() if s in set(seeds)},
        "seconds": {s: t for s, t in result["seconds"].items() if s in set(seeds)},
    }


def summarise(result: dict) -> dict:
    from vogflow.analysis.scorecard import scorecard

    card = scorecard(
        result["scores"], main=next(iter(next(iter(result["scores"].values())))), seedmean=False
    )["scores"]
    acc = np.array(list(result["acc"].values()))
    return {
        "spearman": {k: card[k]["spearman"] for k in result["scores"]},
        "spearman_min": {k: card[k]["spearman_min"] for k in result["scores"]},
        "top_jaccard": {k: card[k]["top_jaccard"] for k in result["scores"]},
        "acc_mean": float(acc.mean()),
        "acc_min": float(acc.min()),
        "epochs": result["epochs"],
        "late_lrs": result["lrs"][-WINDOW_SIZE:],
        "seconds": float(np.mean(list(result["seconds"].values()))),
    }


def markdown(summary: dict[str, dict], seeds) -> str:
    names = list(summary)
    lines = [
        f"Mean pairwise Spearman of the test split's VoG ranking across seeds {list(seeds)} "
        f"(window size {WINDOW_SIZE}; higher = more stable)",
        "",
        "| score | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for w, m, norm in itertools.product(("early", "late", "all"), ("label", "pred"), NORMS):
        key = f"{w}_{m}_{norm}"
        label = f"vog_{w}_{m} ({'abs z' if norm == 'abs' else norm})"
        lines.append(
            f"| {label} | " + " | ".join(f"{summary[n]['spearman'][key]:.3f}" for n in names) + " |"
        )
    lines.append(
        "| test accuracy, mean | "
        + " | ".join(f"{summary[n]['acc_mean']:.4f}" for n in names)
        + " |"
    )
    lines.append(
        "| test accuracy, min | " + " | ".join(f"{summary[n]['acc_min']:.4f}" for n in names) + " |"
    )
    lines.append(
        "| late window lr | "
        + " | ".join("/".join(f"{lr:g}" for lr in summary[n]["late_lrs"]) for n in names)
        + " |"
    )
    lines += ["", "| candidate | schedule | checkpoint epochs |", "|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {CANDIDATES[n][0]} | {summary[n]['epochs']} |")
    return "\n".join(lines)


def blocks_markdown(blocks: list[dict[str, dict]], reference: str) -> str:
    """Late and all windows: mean +- sd over independent 5-seed blocks, and the paired change
    against ``reference`` (same seeds): mean, and in how many blocks it was positive."""
    names = list(blocks[0])
    n = len(blocks)
    lines = [
        f"Mean pairwise Spearman over {n} independent blocks of {len(SEEDS)} seeds "
        f"(mean +- sd over blocks; delta = paired change vs {reference}, blocks with delta > 0)",
        "",
        "| score | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for w, m, norm in itertools.product(("late", "all"), ("label", "pred"), NORMS):
        key = f"{w}_{m}_{norm}"
        cells = []
        for name in names:
            vals = np.array([b[name]["spearman"][key] for b in blocks])
            cell = f"{vals.mean():.3f} +- {vals.std(ddof=1) if n > 1 else 0:.3f}"
            if name != reference:
                ref = np.array([b[reference]["spearman"][key] for b in blocks])
                delta = vals - ref
                cell += f" (delta {delta.mean():+.3f}, {int((delta > 0).sum())}/{n})"
            cells.append(cell)
        label = f"vog_{w}_{m} ({'abs z' if norm == 'abs' else norm})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for stat in ("acc_mean", "acc_min"):
        cells = [f"{np.mean([b[nm][stat] for b in blocks]):.4f}" for nm in names]
        label = "test accuracy, mean" if stat == "acc_mean" else "test accuracy, min (block mean)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument(
        "--blocks",
        type=int,
        default=1,
        help=f"train seeds 0..{len(SEEDS)}*BLOCKS-1 and also report the spread over "
        f"blocks of {len(SEEDS)} seeds (overrides --seeds)",
    )
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--work", help="folder for the runs (kept; reused if trained alike)")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args()

    import torch

    from vogflow.config.schema import load_params
    from vogflow.data import load_dataset

    torch.set_num_threads(1)
    params = load_params(args.params)
    dataset = load_dataset(params.data, ROOT)
    work = Path(args.work or tempfile.mkdtemp(prefix="vogflow-schedule-"))
    started = time.perf_counter()
    if args.blocks > 1:
        size = len(SEEDS)
        groups = [list(range(b * size, (b + 1) * size)) for b in range(args.blocks)]
    else:
        groups = [args.seeds]
    results = {
        name: run_candidate(name, params, dataset, work, sorted({s for g in groups for s in g}))
        for name in args.candidates
    }
    blocks = [{n: summarise(subset(r, g)) for n, r in results.items()} for g in groups]
    print(markdown(blocks[0], groups[0]))
    if len(blocks) > 1:
        print()
        print(blocks_markdown(blocks, args.candidates[0]))
    print(f"\nwall time {time.perf_counter() - started:.0f} s; runs in {work}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": groups, "blocks": blocks}, indent=1))


if __name__ == "__main__":
    main()
