"""The report's content, from a rankings table: what a person needs to act on one split.

A split's section holds its label issues (the table's ``label_issue`` estimate, with the given
and the suggested label and their probabilities), the hardest and easiest examples by the
audit's ranking, and a per-class summary. Values stay plain (numbers, strings); escaping and
layout belong to :mod:`vogflow.report.page`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from vogflow.rankings.choice import Ranking, resolve
from vogflow.rankings.table import IDENTIFIERS

# The label-issue estimate of a rankings table: the given label is probably wrong
# (``label_issue``), the class the evidence points to and its probability, and the given label's
# probability, both averaged over the checkpoints.
LABEL_ISSUE_COLUMNS = ("label_issue", "suggested_label", "suggested_label_prob", "label_prob")
NOT_ESTIMATED = "label issues: not estimated in this table"
HARDEST_SHARE = 0.1  # the per-class summary's "among the hardest" share


def has_label_issues(table: pd.DataFrame) -> bool:
    return all(c in table.columns for c in LABEL_ISSUE_COLUMNS)


def ranking(table: pd.DataFrame, score: str | None, *, where: str) -> Ranking:
    """The score the report and the export rank by: the one every surface uses
    (:func:`vogflow.rankings.choice.resolve`: the audit's ranking, else the single-run default, or
    the score named)."""
    return resolve(table, score, where=where)


def class_name(label: Any, names: Sequence[str] | None) -> str:
    """``3`` or ``3 cat``: the index a table holds, and the name where the data has one."""
    label = int(label)
    if names is None or not 0 <= label < len(names) or str(names[label]) == str(label):
        return str(label)
    return f"{label} {names[label]}"


@dataclass
class SplitSection:
    name: str
    n: int
    error_rate: float
    rank_by: str  # the score's name, as the reader knows it
    rank_where: str  # where that choice was made
    hardest: list[dict[str, Any]]
    easiest: list[dict[str, Any]]
    per_class: list[dict[str, Any]]
    issues: list[dict[str, Any]] | None  # None: not estimated in this table
    issues_total: int = 0
    images: bool = False  # whether the examples carry pictures


@dataclass
class Report:
    title: str
    facts: list[tuple[str, str]]  # data, model, commit, ...: what was audited
    splits: list[SplitSection]
    commands: list[str]
    params: str | None = None  # the params file, as written
    claims: list[dict[str, Any]] = field(default_factory=list)
    choice: dict[str, Any] | None = None  # the scorecard's choice: score, reason, numbers
    ood: dict[str, Any] | None = None  # rows of the OoD summary, where it ran
    issue_quality: str | None = None  # how the label-issue flag did on planted noise
    notes: list[str] = field(default_factory=list)


Images = Callable[[Sequence[int]], Mapping[int, str]]


TEXT_SHOWN = 160  # characters of a text example on a card


def _identifier(row: Mapping[str, Any]) -> str | None:
    for column in IDENTIFIERS:
        value = row.get(column)
        if isinstance(value, str) and value:
            return value if len(value) <= TEXT_SHOWN else value[: TEXT_SHOWN - 1] + "…"
    return None


def _example(
    row: Mapping[str, Any], score: float, names: Sequence[str] | None, images: Mapping[int, str]
) -> dict[str, Any]:
    index = int(row["index"])
    return {
        "index": index,
        "where": _identifier(row),
        "label": class_name(row["label"], names),
        "pred": class_name(row["pred"], names),
        "correct": bool(row["correct"]),
        "score": float(score),
        "image": images.get(index),
    }


def label_issue_rows(
    table: pd.DataFrame, names: Sequence[str] | None, images: Mapping[int, str], limit: int
) -> list[dict[str, Any]]:
    """The flagged rows, most doubtful given label first (lowest ``label_prob``)."""
    flagged = table[table["label_issue"].astype(bool)].sort_values(
        ["label_prob", "index"], kind="stable"
    )
    rows = []
    for row in flagged.head(limit).to_dict("records"):
        rows.append(
            {
                "index": int(row["index"]),
                "where": _identifier(row),
                "given": class_name(row["label"], names),
                "given_id": int(row["label"]),
                "given_prob": float(row["label_prob"]),
                "suggested": class_name(row["suggested_label"], names),
                "suggested_id": int(row["suggested_label"]),
                "suggested_prob": float(row["suggested_label_prob"]),
                "image": images.get(int(row["index"])),
            }
        )
    return rows


def per_class(
    table: pd.DataFrame, score: np.ndarray, names: Sequence[str] | None
) -> list[dict[str, Any]]:
    """Size, error rate, label issues, mean score and share among the hardest, per given label;
    ``score``: ``(N,)`` in row order, higher = harder."""
    k = max(1, int(round(HARDEST_SHARE * len(table))))
    hardest = np.zeros(len(table), dtype=bool)
    hardest[np.argsort(-np.asarray(score, dtype=float), kind="stable")[:k]] = True
    frame = table.assign(_hard=hardest, _error=~table["correct"].astype(bool), _score=score)
    issues = has_label_issues(table)
    rows = []
    for label, group in frame.groupby("label", sort=True):
        rows.append(
            {
                "label": class_name(label, names),
                "size": len(group),
                "error_rate": float(group["_error"].mean()),
                "issues": int(group["label_issue"].astype(bool).sum()) if issues else None,
                "mean_score": float(group["_score"].mean()),
                "hardest_share": float(group["_hard"].mean()),
            }
        )
    return rows


def split_section(
    table: pd.DataFrame,
    name: str,
    *,
    score: str | None = None,
    rank_where: str | None = None,
    k: int = 12,
    issue_limit: int = 60,
    class_names: Sequence[str] | None = None,
    images: Images | None = None,
    where: str = "the table",
) -> SplitSection:
    """One split's section: label issues, ``k`` hardest and easiest, per-class summary.

    ``score``: as ``vogflow top --score`` (None: the table's own ranking); ``rank_where``: where
    that choice was made, when the caller knows better than the table. ``images``: data URIs of
    the examples by index (only the rows shown are asked for).
    """
    chosen = ranking(table, score, where=where)
    values = np.asarray(chosen.values, dtype=float)
    order = np.argsort(-values, kind="stable")
    k = min(k, len(table) // 2 or len(table))
    top, bottom = table.iloc[order[:k]], table.iloc[order[::-1][:k]]
    issues = has_label_issues(table)
    flagged = table[table["label_issue"].astype(bool)] if issues else table.iloc[:0]
    if issues:
        flagged = flagged.sort_values(["label_prob", "index"], kind="stable").head(issue_limit)
    wanted = [*top["index"], *bottom["index"], *flagged["index"]]
    pictures = dict(images([int(i) for i in wanted])) if images is not None else {}
    return SplitSection(
        name=name,
        n=len(table),
        error_rate=float(1 - table["correct"].astype(bool).mean()) if len(table) else 0.0,
        rank_by=chosen.name,
        rank_where=rank_where or chosen.reason,
        hardest=[
            _example(r, s, class_names, pictures)
            for r, s in zip(top.to_dict("records"), values[order[:k]], strict=True)
        ],
        easiest=[
            _example(r, s, class_names, pictures)
            for r, s in zip(bottom.to_dict("records"), values[order[::-1][:k]], strict=True)
        ],
        per_class=per_class(table, values, class_names),
        issues=label_issue_rows(table, class_names, pictures, issue_limit) if issues else None,
        issues_total=int(table["label_issue"].astype(bool).sum()) if issues else 0,
        images=bool(pictures),
    )
