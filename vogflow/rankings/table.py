"""The rankings table: one row per example, the contract every consumer reads.

Columns (row order = dataset order): ``index`` (then ``path``, the example's file relative to
``data.path``, for image folders), ``label, true_label, noisy, pred, correct``, then
for each window ``w`` and label mode ``m`` computed, ``vog_{w}_{m}_raw`` and ``vog_{w}_{m}``
(class-normalised); then the hardness baselines from the same checkpoints, ``hard_<name>`` for
each name of ``analysis.hardness.BASELINES`` whose statistic the extraction has (every one
oriented higher = harder: ``hard_margin``, ``hard_msp``, ``hard_aum`` and
``hard_datamap_confidence`` are negated); then the label-issue estimate
(``analysis.label_issues``): ``label_issue`` (bool: the given label is probably wrong),
``suggested_label`` (int: the class the evidence points to; ``label`` where no issue),
``suggested_label_prob`` and ``label_prob`` (float: those classes' softmax probabilities averaged
over the checkpoints, the evidence). Higher VoG = harder. A text audit also has ``text`` after
``index``: the example as a person reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vogflow.analysis.hardness import BASELINES, baseline_scores
from vogflow.analysis.label_issues import find_label_issues
from vogflow.common.atomic import write_text, write_with
from vogflow.config.names import LABEL_MODES, WINDOWS
from vogflow.errors import DataError
from vogflow.scoring.results import Extraction
from vogflow.scoring.vog import class_normalise

BASE_COLUMNS = ("index", "label", "true_label", "noisy", "pred", "correct")
# What lets a person find an example besides its index, shown wherever the hardest are listed.
IDENTIFIERS = ("path", "text")
BASELINE_PREFIX = "hard_"
BASELINE_COLUMNS = tuple(f"{BASELINE_PREFIX}{name}" for name in BASELINES)
FLAG_COLUMNS = ("label_issue", "suggested_label", "suggested_label_prob", "label_prob")
PATH_COLUMN = "path"

# The VoG column to show when a table has no baseline to rank by (``rank_choice`` prefers the
# audit's ranking, then the measured single-run default). The paper's score first (late window,
# true label: Figs. 4, 5), then the whole run in the same mode, then the predicted-label mode
# that needs no trusted label; a table with a narrower set of windows still gets a VoG column.
PREFERRED_SCORES = ("vog_late_label", "vog_all_label", "vog_late_pred", "vog_all_pred")


def score_columns(windows=WINDOWS, modes=LABEL_MODES) -> list[str]:
    cols = []
    for w in windows:
        for m in modes:
            cols += [f"vog_{w}_{m}_raw", f"vog_{w}_{m}"]
    return cols


def preferred_score(columns: Iterable[str]) -> str | None:
    """The column to rank by when none is named: the first of :data:`PREFERRED_SCORES` present,
    else the first other class-normalised ``vog_*`` column, else the first ``vog_*_raw``; None
    when there is no VoG column."""
    vog = [c for c in columns if c.startswith("vog_")]
    normalised = [c for c in vog if not c.endswith("_raw")]
    return next((c for c in (*PREFERRED_SCORES, *normalised, *vog) if c in vog), None)


def contract_columns(windows=WINDOWS, modes=LABEL_MODES, *, path: bool = False) -> list[str]:
    """Every column of a full rankings table, in order (``path``: the table of an image folder)."""
    base = [BASE_COLUMNS[0], *([PATH_COLUMN] if path else []), *BASE_COLUMNS[1:]]
    return [*base, *score_columns(windows, modes), *BASELINE_COLUMNS, *FLAG_COLUMNS]


def build(
    extraction: Extraction,
    *,
    true_label: np.ndarray | None = None,
    noisy: np.ndarray | None = None,
    path: np.ndarray | None = None,
    normalise: str = "z",
    text: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The rankings table of one split from an extraction.

    ``label`` is what the gradients were taken for in ``label`` mode (the trained label);
    ``true_label`` the clean label (defaults to ``label``); ``noisy`` marks shuffled labels;
    ``path`` (image folders) each example's file relative to ``data.path``.
    Each mode is normalised within the class it was taken for: ``label`` within labels, ``pred``
    within the final checkpoint's predicted classes.

    The ``hard_*`` columns are ``analysis.hardness.baseline_scores`` over every checkpoint, taken
    against ``label``. The label-issue columns are
    ``analysis.label_issues.find_label_issues`` of ``extraction.probs`` (the softmax averaged
    over the checkpoints) against ``label``. ``text``: each example's text (a ``text`` column
    after ``index``).
    """
    n = len(extraction.label)
    label = np.asarray(extraction.label, dtype=np.int64)
    true_label = label if true_label is None else np.asarray(true_label, dtype=np.int64)
    noisy = np.zeros(n, dtype=bool) if noisy is None else np.asarray(noisy, dtype=bool)
    pred = np.asarray(extraction.pred, dtype=np.int64)
    if extraction.probs is None:
        raise DataError(
            "this extraction has no averaged probabilities (written by an older vogflow): "
            "rerun the gradients stage (`dvc repro`) or `vogflow audit`"
        )
    if text is not None and len(text) != n:
        raise DataError(f"{len(text)} texts for {n} examples")
    table: dict[str, Any] = {"index": np.arange(n, dtype=np.int64)}
    if path is not None:
        if len(path) != n:
            raise DataError(f"path has {len(path)} entries for {n} examples")
        table[PATH_COLUMN] = np.asarray(path, dtype=object)
    if text is not None:
        table["text"] = list(text)
    table |= {
        "label": label,
        "true_label": true_label,
        "noisy": noisy,
        "pred": pred,
        "correct": pred == true_label,
    }
    classes = {"label": label, "pred": pred}
    for w in WINDOWS:
        for m in LABEL_MODES:
            raw = extraction.vog_raw.get(f"{w}_{m}")
            if raw is None:
                continue
            table[f"vog_{w}_{m}_raw"] = np.asarray(raw, dtype=np.float64)
            table[f"vog_{w}_{m}"] = class_normalise(raw, classes[m], method=normalise)
    for name, score in baseline_scores(extraction.stats, label).items():
        table[f"{BASELINE_PREFIX}{name}"] = score
    table |= find_label_issues(extraction.probs, label).columns()
    return pd.DataFrame(table)


def check_aligned(tables: dict[str, pd.DataFrame]) -> None:
    """Runs compared example by example must have scored the same examples with the same clean
    labels, or agreement between them means nothing."""
    first_name, first = next(iter(tables.items()))
    for name, table in tables.items():
        if len(table) != len(first) or not np.array_equal(table["true_label"], first["true_label"]):
            raise DataError(f"runs {first_name} and {name} scored different examples")


def top_bottom(table: pd.DataFrame, column: str, k: int) -> pd.DataFrame:
    """The ``k`` hardest, then the ``k`` easiest rows by ``column``, ranked (1 = hardest)."""
    order = table[column].rank(ascending=False, method="first").astype(int)
    ranked = table.assign(rank=order).sort_values("rank")
    picked = pd.concat([ranked.head(k).assign(end="hardest"), ranked.tail(k).assign(end="easiest")])
    traced = [c for c in IDENTIFIERS if c in table.columns]
    keep = ["end", "rank", "index", *traced, "label", "true_label", "pred", "correct", "noisy"]
    return picked[[*keep, column]].reset_index(drop=True)


def write_parquet(table: pd.DataFrame, path: str | Path) -> Path:
    return write_with(path, lambda tmp: table.to_parquet(tmp, index=False))


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    return write_text(path, table.to_csv(index=False, float_format="%.6g"))


def read(path: str | Path) -> pd.DataFrame:
    table = pd.read_parquet(path)
    missing = [c for c in BASE_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path} is not a rankings table: missing columns {', '.join(missing)}")
    return table
