"""Which given labels are probably wrong, estimated from the checkpoints' probabilities.

One job: the label-issue estimate of one split. The evidence is the softmax probability of every
class averaged over a run's checkpoints (``Extraction.probs``). A label is flagged where that
average favours another class: the model, trained on the label at every checkpoint, still puts
more probability on a different class over training than on the label itself. How many are
flagged, and in which class pairs, is therefore an estimate from the data (the off-diagonal of
the confusion between averaged prediction and label), not a fixed share; an example whose label
the checkpoints still favour, however weakly, is not flagged: it is hard, which the ``hard_*``
scores rank.

Why this rule and not confident learning's per-class thresholds (Northcutt et al. 2021, the
mean probability of each class over the examples labelled with it): measured on the default
digits audit's shuffled-label run (benchmarks/bench_label_issues.py), the probabilities averaged
over in-training checkpoints are pulled toward the trained label, so an alternative class rarely
reaches its threshold (recall 0.39; cleanlab's pruning methods on the same probabilities 0.46 to
0.48), while the averaged argmax finds 0.89 of the changed labels at precision 1.00 (F1 0.94),
above cleanlab's 5-fold cross-validated recipe on the same data, with no extra training.
On held-out data no probability separates a wrong label from a confident model error; each
flag carries its evidence (``label_prob``, ``suggested_label_prob``) to judge by.

Arrays in, arrays out; numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelIssues:
    """Per example ``(N,)``: ``label_issue`` (bool), ``suggested_label`` (int64; the given label
    where there is no issue), ``suggested_label_prob`` and ``label_prob`` (float64, probabilities
    averaged over the checkpoints)."""

    label_issue: np.ndarray
    suggested_label: np.ndarray
    suggested_label_prob: np.ndarray
    label_prob: np.ndarray

    def columns(self) -> dict[str, np.ndarray]:
        """The rankings table's columns, in its order (see ``vogflow.rankings.table``)."""
        return {
            "label_issue": self.label_issue,
            "suggested_label": self.suggested_label,
            "suggested_label_prob": self.suggested_label_prob,
            "label_prob": self.label_prob,
        }


def check_probs(probs: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    label = np.asarray(label, dtype=np.int64)
    if probs.ndim != 2 or label.shape != (probs.shape[0],):
        raise ValueError(f"probs {probs.shape} must be (N, C) and label {label.shape} (N,)")
    if label.size and (label.min() < 0 or label.max() >= probs.shape[1]):
        raise ValueError(
            f"labels range over [{label.min()}, {label.max()}] but probs has {probs.shape[1]} "
            "classes"
        )
    if not np.isfinite(probs).all():
        raise ValueError("probs must be finite")
    return probs, label


def find_label_issues(probs: np.ndarray, label: np.ndarray) -> LabelIssues:
    """Label issues of ``N`` examples from ``probs`` ``(N, C)`` (softmax averaged over
    checkpoints) and the given ``label`` ``(N,)``.

    ``label_issue[i]``: some class has a higher averaged probability than ``label[i]`` (a tie
    keeps the label); ``suggested_label[i]``: the most probable class where flagged (the first
    on ties), else ``label[i]``.
    """
    probs, label = check_probs(probs, label)
    rows = np.arange(len(label))
    favoured = probs.argmax(axis=1)
    label_prob = probs[rows, label]
    issue = probs[rows, favoured] > label_prob
    suggested = np.where(issue, favoured, label).astype(np.int64)
    return LabelIssues(
        label_issue=issue,
        suggested_label=suggested,
        suggested_label_prob=probs[rows, suggested],
        label_prob=label_prob,
    )


def issues_per_class(issues: LabelIssues, label: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64: how many examples labelled ``i`` are flagged with suggested class ``j``
    (the estimated count of wrong labels per class pair; the diagonal is 0)."""
    label = np.asarray(label, dtype=np.int64)
    flagged = issues.label_issue
    pairs = label[flagged] * num_classes + issues.suggested_label[flagged]
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, -1)


def flag_quality(flagged: np.ndarray, wrong: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of ``flagged`` against the labels known to be ``wrong`` (both
    ``(N,)`` bool); NaN where undefined (nothing flagged, nothing wrong)."""
    flagged, wrong = np.asarray(flagged, dtype=bool), np.asarray(wrong, dtype=bool)
    if flagged.shape != wrong.shape:
        raise ValueError(f"flagged {flagged.shape} and wrong {wrong.shape} must match")
    hit = int((flagged & wrong).sum())
    precision = hit / flagged.sum() if flagged.any() else float("nan")
    recall = hit / wrong.sum() if wrong.any() else float("nan")
    f1 = float("nan")
    if np.isfinite(precision) and np.isfinite(recall):
        f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "flagged": int(flagged.sum()),
        "wrong": int(wrong.sum()),
    }
