"""The rankings table contract: the VoG columns first, then the baselines and the relabel flag."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vogflow.analysis.hardness import baseline_scores
from vogflow.config.names import LABEL_MODES, WINDOWS
from vogflow.errors import DataError
from vogflow.rankings.table import (
    BASE_COLUMNS,
    BASELINE_COLUMNS,
    FLAG_COLUMNS,
    build,
    contract_columns,
    preferred_score,
    score_columns,
)
from vogflow.scoring.results import STATS, Extraction
from vogflow.scoring.vog import class_normalise

NEW_COLUMNS = [
    "hard_loss",
    "hard_margin",
    "hard_el2n",
    "hard_msp",
    "hard_forgetting",
    "hard_aum",
    "hard_datamap_confidence",
    "hard_datamap_variability",
    "hard_disagree",
    "label_issue",
    "suggested_label",
    "suggested_label_prob",
    "label_prob",
]


def _extraction(n: int = 40, k: int = 5, seed: int = 0) -> Extraction:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 4
    pred = np.tile(label, (k, 1))
    pred[:, : n // 4] = (label[: n // 4] + 1) % 4  # the first quarter is never fitted
    logits = rng.normal(size=(k, n, 4))
    logits[np.arange(k)[:, None], np.arange(n)[None, :], pred] += 5.0
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    p = np.exp(log_p)
    given = np.take_along_axis(logits, np.broadcast_to(label[None, :, None], (k, n, 1)), -1)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, np.broadcast_to(label[None, :, None], (k, n, 1)), -np.inf, -1)
    one_hot = np.eye(4)[label][None]
    stats = {
        "pred": pred,
        "loss": -np.take_along_axis(log_p, np.broadcast_to(label[None, :, None], (k, n, 1)), -1)[
            ..., 0
        ],
        "margin": given - others.max(-1),
        "el2n": np.linalg.norm(p - one_hot, axis=-1),
        "msp": p.max(-1),
    }
    vog = {f"{w}_{m}": rng.random(n) for w in WINDOWS for m in LABEL_MODES}
    return Extraction(
        label=label, pred=pred[-1], vog_raw=vog, stats=stats, probs=p.mean(0).astype(np.float32)
    )


def test_contract_lists_the_new_columns_after_the_unchanged_ones():
    ext = _extraction()
    assert set(ext.stats) == set(STATS)
    table = build(ext)  # the existing callers' call: no new arguments
    assert list(BASELINE_COLUMNS) + list(FLAG_COLUMNS) == NEW_COLUMNS
    assert list(table.columns) == [*BASE_COLUMNS, *score_columns(), *NEW_COLUMNS]
    assert list(table.columns) == contract_columns()
    # The existing columns are what they were.
    assert table["pred"].tolist() == ext.pred.tolist()
    assert table["correct"].tolist() == (ext.pred == ext.label).tolist()
    raw = ext.vog_raw["late_label"]
    np.testing.assert_array_equal(table["vog_late_label_raw"], raw)
    np.testing.assert_array_equal(table["vog_late_label"], class_normalise(raw, ext.label))
    # The baselines are the hardness module's, every checkpoint, against the trained label.
    for name, score in baseline_scores(ext.stats, ext.label).items():
        np.testing.assert_array_equal(table[f"hard_{name}"], score)
    assert table["label_issue"].dtype == bool
    assert table["suggested_label"].dtype == np.int64
    assert table["label_prob"].dtype == table["suggested_label_prob"].dtype == np.float64


def test_label_issues_are_the_averaged_probabilities_evidence():
    ext = _extraction()
    table = build(ext)
    rows = np.arange(len(ext.label))
    probs = ext.probs.astype(np.float64)
    favoured = probs.argmax(1)
    # The never-fitted quarter: every checkpoint favours label + 1, so each is flagged with it.
    expected = favoured != ext.label
    assert expected[: len(rows) // 4].all() and not expected[len(rows) // 4 :].any()
    assert table["label_issue"].tolist() == expected.tolist()
    assert table["suggested_label"].tolist() == np.where(expected, favoured, ext.label).tolist()
    np.testing.assert_allclose(table["label_prob"], probs[rows, ext.label], rtol=1e-6)
    np.testing.assert_allclose(
        table["suggested_label_prob"], probs[rows, table["suggested_label"]], rtol=1e-6
    )
    # Every flag shows its evidence: the suggested class is more probable than the label.
    flagged = table[table["label_issue"]]
    assert (flagged["suggested_label_prob"] > flagged["label_prob"]).all()


def test_an_extraction_without_probabilities_is_refused_with_the_fix():
    ext = _extraction()
    ext.probs = None
    with pytest.raises(DataError, match="rerun the gradients stage"):
        build(ext)


def test_tiny_table_aum_and_forgetting_by_hand():
    # K = 4 checkpoints of N = 3 examples (labels 0, 1, 2).
    margin = np.array([[2.0, -1.0, 0.5], [3.0, -2.0, -0.5], [1.0, 1.0, 1.5], [4.0, -3.0, -1.5]])
    pred = np.array([[0, 0, 2], [0, 1, 1], [1, 0, 2], [0, 0, 1]])
    ext = Extraction(
        label=np.array([0, 1, 2]),
        pred=pred[-1],
        vog_raw={"late_label": np.array([0.1, 0.2, 0.3])},
        stats={"pred": pred, "margin": margin},
        probs=np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.45, 0.45]]),
    )
    table = build(ext)
    assert list(table.columns) == [
        *BASE_COLUMNS,
        "vog_late_label_raw",
        "vog_late_label",
        "hard_margin",
        "hard_forgetting",
        "hard_aum",
        "hard_disagree",
        *FLAG_COLUMNS,
    ]
    assert table["hard_aum"].tolist() == pytest.approx([-2.5, 1.25, 0.0])  # -mean margin
    assert table["hard_forgetting"].tolist() == [1.0, 1.0, 2.0]
    # Example 1's checkpoints favour class 0 over its label 1; example 2's tie keeps its label.
    assert table["label_issue"].tolist() == [False, True, False]
    assert table["suggested_label"].tolist() == [0, 0, 2]
    assert table["suggested_label_prob"].tolist() == pytest.approx([0.9, 0.6, 0.45])
    assert table["label_prob"].tolist() == pytest.approx([0.9, 0.3, 0.45])
    assert isinstance(table, pd.DataFrame)


def test_preferred_score_is_the_papers_first_then_any_vog_column() -> None:
    full = ["index", "vog_all_pred", "vog_all_label", "vog_late_label_raw", "vog_late_label"]
    assert preferred_score(full) == "vog_late_label"
    assert preferred_score(["vog_all_pred", "vog_all_label"]) == "vog_all_label"
    assert preferred_score(["vog_early_label_raw", "vog_early_label"]) == "vog_early_label"
    assert preferred_score(["vog_early_label_raw"]) == "vog_early_label_raw"
    assert preferred_score(["index", "hard_loss"]) is None
