"""The comparison helper: lenient only where float rounding could explain a difference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numerics import assert_arrays_close, assert_tables_close


def table(**overrides) -> pd.DataFrame:
    columns = {
        "index": np.arange(4),
        "pred": np.array([0, 2, 1, 1]),
        "correct": np.array([True, False, True, True]),
        "split": pd.Categorical(["a", "b", "a", "b"]),
        "name": ["w", "x", "y", "z"],
        "hard_aum": np.array([0.001324765, -3.0, 12.5, np.nan]),
    }
    columns.update(overrides)
    return pd.DataFrame(columns)


def test_floats_agree_within_kernel_rounding():
    # The difference AVX-512 and AMD kernels gave this column (relative 1.1e-5).
    shifted = table(hard_aum=np.array([0.001324780, -3.0000001, 12.5, np.nan]))
    assert_tables_close(shifted, table())


def test_a_score_near_zero_is_judged_against_its_column():
    assert_arrays_close([1e-12, 100.0], [2e-12, 100.0])
    with pytest.raises(AssertionError):
        assert_arrays_close([1e-3, 100.0], [2e-3, 100.0])


@pytest.mark.parametrize(
    "column, value",
    [
        ("hard_aum", np.array([0.0013, -3.0, 12.5, np.nan])),  # relative 2e-2
        ("hard_aum", np.array([0.001324765, -3.0, 12.5, 1.0])),  # NaN on one side only
        ("pred", np.array([0, 2, 1, 0])),
        ("correct", np.array([True, False, True, False])),
        ("split", pd.Categorical(["a", "b", "b", "b"])),
        ("name", ["w", "x", "y", "Z"]),
        ("index", np.arange(4.0)),  # a dtype change is a change
    ],
)
def test_anything_rounding_cannot_explain_fails(column, value):
    with pytest.raises(AssertionError):
        assert_tables_close(table(**{column: value}), table())


def test_columns_and_index_must_match():
    with pytest.raises(AssertionError, match="columns differ"):
        assert_tables_close(table()[["pred", "index"]], table()[["index", "pred"]])
    with pytest.raises(AssertionError):
        assert_tables_close(table().iloc[::-1], table())
