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

from vogflow.errors import VogflowError
from vogflow.rankings import IDENTIFIERS, preferred_score

# The label-issue estimate of a rankings table: the given label is probably wrong
# (``label_issue``), the class the evidence points to and its probability, and the given label's
# probability, both averaged over the checkpoints.
LABEL_ISSUE_COLUMNS = ("label_issue", "suggested_label", "suggested_label_prob", "label_prob")
NOT_ESTIMATED = "label issues: not estimated in this table"
RANK_SCORE = "rank_score"  # the audit's ranking (results/ranking/): its score, named by rank_by
# Integer bookkeeping columns: never a score to rank by.
NOT_SCORES = ("index", "label", "true_label", "pred", "rank", "suggested_label")
HARDEST_SHARE = 0.1  # the per-class summary's "among the hardest" share


class ReportError(VogflowError, ValueError):
    """A table or option the report cannot use."""


def has_label_issues(table: pd.DataFrame) -> bool:
    return all(c in table.columns for c in LABEL_ISSUE_COLUMNS)


def score_names(table: pd.DataFrame) -> list[str]:
    """The names a score may be given by: every numeric score column, and the audit's ranking
    under its own name."""
    names = [
        c
        for c in table.columns
        if c not in NOT_SCORES
        and pd.api.types.is_numeric_dtype(table[c])
        and not pd.api.types.is_bool_dtype(table[c])
    ]
    if RANK_SCORE in table.columns and "rank_by" in table.columns and len(table):
        names = [str(table["rank_by"].iloc[0]), *(n for n in names if n != RANK_SCORE)]
    return names


def resolve_score(
    table: pd.DataFrame, name: str | None, *, where: str = "the table"
) -> tuple[str, str]:
    """``(column, shown name)`` of the score to rank by, higher = harder.

    No name: the audit's ranking (``rank_score``, shown as its ``rank_by``) where the table has
    one, else :func:`vogflow.rankings.preferred_score`. A name: a score column (``hard_loss``,
    ``vog_late_pred``), a VoG score without its prefix (``late_pred``), or the ranking's
    ``rank_by`` (``hard_aum_seedmean``).
    """
    ranked = RANK_SCORE in table.columns and "rank_by" in table.columns and len(table)
    rank_by = str(table["rank_by"].iloc[0]) if ranked else None
    if name is None:
        if rank_by is not None:
            return RANK_SCORE, rank_by
        column = preferred_score(table.columns)
        if column is None:
            raise ReportError(f"{where} has no score column to rank by; pass --score NAME")
        return column, column
    if name in (rank_by, RANK_SCORE) and rank_by is not None:
        return RANK_SCORE, rank_by
    offered = score_names(table)
    for column in (name, f"vog_{name}"):
        if column in offered and column in table.columns:
            return column, column
    raise ReportError(
        f"--score {name!r}: no such score in {where}; scores: {', '.join(offered) or 'none'}"
    )


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
    table: pd.DataFrame, column: str, names: Sequence[str] | None
) -> list[dict[str, Any]]:
    """Size, error rate, label issues, mean score and share among the hardest, per given label."""
    k = max(1, int(round(HARDEST_SHARE * len(table))))
    hardest = np.zeros(len(table), dtype=bool)
    hardest[np.argsort(-table[column].to_numpy(dtype=float), kind="stable")[:k]] = True
    frame = table.assign(_hard=hardest, _error=~table["correct"].astype(bool))
    issues = has_label_issues(table)
    rows = []
    for label, group in frame.groupby("label", sort=True):
        rows.append(
            {
                "label": class_name(label, names),
                "size": len(group),
                "error_rate": float(group["_error"].mean()),
                "issues": int(group["label_issue"].astype(bool).sum()) if issues else None,
                "mean_score": float(group[column].mean()),
                "hardest_share": float(group["_hard"].mean()),
            }
        )
    return rows


def split_section(
    table: pd.DataFrame,
    name: str,
    *,
    score: str | None = None,
    rank_where: str,
    k: int = 12,
    issue_limit: int = 60,
    class_names: Sequence[str] | None = None,
    images: Images | None = None,
    where: str = "the table",
) -> SplitSection:
    """One split's section: label issues, ``k`` hardest and easiest, per-class summary.

    ``images``: data URIs of the examples by index (only the rows shown are asked for).
    """
    column, shown = resolve_score(table, score, where=where)
    order = np.argsort(-table[column].to_numpy(dtype=float), kind="stable")
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
        rank_by=shown,
        rank_where=rank_where,
        hardest=[
            _example(r, s, class_names, pictures)
            for r, s in zip(top.to_dict("records"), top[column], strict=True)
        ],
        easiest=[
            _example(r, s, class_names, pictures)
            for r, s in zip(bottom.to_dict("records"), bottom[column], strict=True)
        ],
        per_class=per_class(table, column, class_names),
        issues=label_issue_rows(table, class_names, pictures, issue_limit) if issues else None,
        issues_total=int(table["label_issue"].astype(bool).sum()) if issues else 0,
        images=bool(pictures),
    )
