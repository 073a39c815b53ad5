"""One way to compare two computations of the same result.

Two code paths (CLI and API, a folder and a list, sharded and one process, streamed and in
memory, two batch sizes) order their float operations differently, and which order a kernel uses
depends on the CPU (AVX-512, AVX2, plain): their floats agree to a few ulps, never to the bit.
So floats are compared with a relative tolerance plus an absolute term scaled to the column (a
score near zero in a column of large scores is judged against the column, not against itself),
NaNs equal where both are NaN; integers, booleans, strings and categories must be identical,
because no rounding can explain a different class or index.

Exact equality stays right for the same computation rerun (determinism): those tests compare
with ``np.testing.assert_array_equal`` or ``check_exact=True`` and say so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RTOL = 1e-4
# The absolute term, as a fraction of the column's largest magnitude.
ATOL_SCALE = 1e-6


def _is_float(dtype) -> bool:
    return np.issubdtype(np.dtype(dtype), np.inexact) if not _is_extension(dtype) else False


def _is_extension(dtype) -> bool:
    return isinstance(dtype, pd.api.extensions.ExtensionDtype) and not isinstance(dtype, np.dtype)


def assert_arrays_close(
    actual, expected, *, rtol: float = RTOL, atol_scale: float = ATOL_SCALE, err_msg: str = ""
) -> None:
    """``actual`` equals ``expected``: exactly unless both are floats, then within
    ``rtol * |expected| + atol_scale * max|expected|`` (NaNs where both are NaN)."""
    a, b = np.asarray(actual), np.asarray(expected)
    assert a.shape == b.shape, f"{err_msg}: shape {a.shape} != {b.shape}".lstrip(": ")
    if _is_float(a.dtype) and _is_float(b.dtype):
        finite = np.abs(b[np.isfinite(b)])
        atol = atol_scale * float(finite.max()) if finite.size else 0.0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=err_msg)
    else:
        assert not (_is_float(a.dtype) or _is_float(b.dtype)), (
            f"{err_msg}: dtype {a.dtype} vs {b.dtype}".lstrip(": ")
        )
        np.testing.assert_array_equal(a, b, err_msg=err_msg)


def assert_tables_close(
    actual: pd.DataFrame,
    expected: pd.DataFrame,
    *,
    rtol: float = RTOL,
    atol_scale: float = ATOL_SCALE,
    obj: str = "table",
) -> None:
    """Same columns in the same order, same index and dtypes; each float column within the
    tolerance of :func:`assert_arrays_close`, every other column identical."""
    assert isinstance(actual, pd.DataFrame) and isinstance(expected, pd.DataFrame), obj
    assert list(actual.columns) == list(expected.columns), (
        f"{obj}: columns differ: {list(actual.columns)} != {list(expected.columns)}"
    )
    pd.testing.assert_index_equal(actual.index, expected.index, obj=f"{obj}.index")
    for column in expected.columns:
        a, b = actual[column], expected[column]
        name = f"{obj}[{column!r}]"
        assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} != {b.dtype}"
        if _is_float(b.dtype):
            assert_arrays_close(
                a.to_numpy(), b.to_numpy(), rtol=rtol, atol_scale=atol_scale, err_msg=name
            )
        else:
            pd.testing.assert_series_equal(a, b, check_exact=True, obj=name)
