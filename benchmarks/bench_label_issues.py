"""Label issues: the audit's estimate against cleanlab's recipe, side by side on the same data.

    python benchmarks/bench_label_issues.py [--runs runs] [--folds 5] [--threads 1]

On the audit's ``shuffled`` run (``runs.shuffled`` in params.yaml: a share of the training labels
replaced by a shuffle of them) the labels that actually changed (``label != true_label``) are
known, so every method is scored by precision, recall and F1 against them:

- ``audit``: ``analysis.label_issues.find_label_issues`` on the softmax averaged over the run's
  checkpoints (what the gradients stage keeps; recomputed here by forward passes of the same
  checkpoints, and timed so). No extra training.
- ``old flag``: the rule it replaces (final prediction != label AND final loss in the split's top
  10%).
- ``confident learning on the averaged probabilities``: cleanlab's ``find_label_issues`` fed the
  same averaged probabilities, with each of its ``filter_by`` methods (the per-class
  threshold rules of Northcutt et al. 2021 among them).
- ``cleanlab 5-fold``: cleanlab's documented recipe, out-of-fold probabilities from
  ``--folds`` models trained with the same recipe as the run (params.yaml's train section and
  model) on the other folds of the same noisy labels, then ``cleanlab.filter.find_label_issues``
  with its defaults; timed including the training.

On the clean ``main`` run (no label changed) it counts what each flags per split, and checks that
every audit flag carries its evidence (the suggested class more probable than the label).
Prints a markdown table; RESULTS.md keeps one.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vogflow.analysis.label_issues import find_label_issues, flag_quality
from vogflow.checkpoints.files import load_run_models
from vogflow.common.atomic import read_npz
from vogflow.config.schema import load_params
from vogflow.data import Split, load_dataset
from vogflow.training.labels import LABELS
from vogflow.training.train import train_run

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning")


def averaged_probs(models: list[torch.nn.Module], x: np.ndarray) -> np.ndarray:
    """The softmax of every checkpoint on ``x``, averaged: ``(N, C)``."""
    xt = torch.from_numpy(np.asarray(x))
    with torch.no_grad():
        total = None
        for model in models:
            model.eval()
            p = torch.cat(
                [torch.softmax(model(xt[i : i + 512]), 1) for i in range(0, len(xt), 512)]
            )
            total = p if total is None else total + p
    return (total / len(models)).numpy()


def old_flag(models: list[torch.nn.Module], x: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The replaced rule: final prediction != label AND final loss in the top 10%."""
    with torch.no_grad():
        logits = models[-1](torch.from_numpy(np.asarray(x)))
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(label), reduction="none")
    top = np.zeros(len(label), dtype=bool)
    top[np.argsort(-loss.numpy(), kind="stable")[: math.ceil(0.1 * len(label))]] = True
    return (logits.argmax(1).numpy() != label) & top


def cross_validated_probs(prm, dataset, label: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities: ``folds`` models of the run's recipe, each trained on the other
    folds' (noisy) labels and predicting its own fold."""
    from sklearn.model_selection import StratifiedKFold

    cfg = dataclasses.replace(prm.run_train("shuffled"), label_noise=0.0)
    x = np.asarray(dataset.train.x)
    out = np.zeros((len(label), dataset.num_classes), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (fit, held) in enumerate(splitter.split(x, label)):
        fold = dataclasses.replace(
            dataset,
            train=Split(x=x[fit], y=label[fit]),
            test=Split(x=x[held], y=label[held]),
        )
        with tempfile.TemporaryDirectory() as tmp:
            train_run(fold, prm.model, cfg, prm.checkpoints, tmp, echo=lambda _: None)
            models, _ = load_run_models(tmp)
        with torch.no_grad():
            models[-1].eval()
            out[held] = torch.softmax(models[-1](torch.from_numpy(x[held])), 1).numpy()
        print(f"  fold {k + 1}/{folds} trained", flush=True)
    return out


def row(name: str, flagged: np.ndarray, wrong: np.ndarray, seconds: float | None) -> str:
    q = flag_quality(flagged, wrong)
    t = "" if seconds is None else f"{seconds:.2f}"
    return (
        f"| {name} | {q['flagged']} | {q['precision']:.3f} | {q['recall']:.3f} | {q['f1']:.3f} "
        f"| {t} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", default="runs", help="folder of runs/<run>/checkpoints")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the fold split")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from cleanlab.filter import find_label_issues as cleanlab_issues

    prm = load_params(args.params)
    dataset = load_dataset(prm.data, ".")
    runs = Path(args.runs)

    shuffled = runs / "shuffled" / "checkpoints"
    labels = read_npz(shuffled / LABELS)
    label, wrong = labels["label"], labels["label"] != labels["true_label"]
    x = np.asarray(dataset.train.x)
    models, _ = load_run_models(shuffled)
    print(f"shuffled run: {len(label)} training labels, {wrong.sum()} changed", flush=True)

    t0 = time.perf_counter()
    probs = averaged_probs(models, x)
    ours = find_label_issues(probs, label)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    find_label_issues(probs, label)
    t_estimate = time.perf_counter() - t0
    lines = [
        "| method | flagged | precision | recall | F1 | seconds |",
        "|---|---:|---:|---:|---:|---:|",
        row(
            f"audit: averaged probabilities of the {len(models)} checkpoints (forward passes + "
            "estimate)",
            ours.label_issue,
            wrong,
            t_ours,
        ),
        row(
            "old flag (final pred != label, top 10% final loss)",
            old_flag(models, x, label),
            wrong,
            None,
        ),
    ]
    for how in FILTERS:
        flagged = cleanlab_issues(label, probs / probs.sum(1, keepdims=True), filter_by=how)
        lines.append(row(f"cleanlab `{how}` on the averaged probabilities", flagged, wrong, None))
    t0 = time.perf_counter()
    cv = cross_validated_probs(prm, dataset, label, args.folds, args.seed)
    theirs = cleanlab_issues(label, cv)
    t_theirs = time.perf_counter() - t0
    lines.append(
        row(
            f"cleanlab {args.folds}-fold recipe (training + `find_label_issues`)",
            theirs,
            wrong,
            t_theirs,
        )
    )
    print(f"\nestimate alone from the stored probabilities: {t_estimate * 1e3:.1f} ms\n")
    print("\n".join(lines))

    print("\nclean `main` run (no label changed): flags per split")
    models, _ = load_run_models(runs / "main" / "checkpoints")
    print("| split | examples | audit flags | with evidence | old flags | model errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for split in ("train", "test"):
        data = dataset.split(split)
        xs, ys = np.asarray(data.x), np.asarray(data.y)
        est = find_label_issues(averaged_probs(models, xs), ys)
        flagged = est.label_issue
        evident = flagged & (est.suggested_label_prob > est.label_prob)
        with torch.no_grad():
            errors = int((models[-1](torch.from_numpy(xs)).argmax(1).numpy() != ys).sum())
        print(
            f"| {split} | {len(ys)} | {flagged.sum()} | {evident.sum()} "
            f"| {old_flag(models, xs, ys).sum()} | {errors} |"
        )


if __name__ == "__main__":
    main()
