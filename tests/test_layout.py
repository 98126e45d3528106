"""The block-wise transpose between frames and pixel rows is an exact copy of numpy's."""

from __future__ import annotations

import numpy as np
import pytest

from specfit.kernels import layout


@pytest.mark.parametrize("shape", [(1, 1), (37, 5), (130, 67), (64, 0)])
@pytest.mark.parametrize(
    "dtype, out", [("float32", None), ("float64", None), ("float32", "float64")]
)
def test_transpose_matches_numpy(shape, dtype, out):
    rng = np.random.default_rng(1)
    a = rng.normal(size=shape).astype(dtype)
    if a.size:
        a.flat[0] = np.nan  # NaN is copied like any value
    got = layout.transpose(a, out)
    want = np.ascontiguousarray(a.T, dtype=out)
    assert got.flags.c_contiguous and got.dtype == want.dtype
    assert np.array_equal(got, want, equal_nan=True)


def test_transpose_of_a_strided_view_and_narrowing_fall_back_exactly():
    a = np.arange(60.0).reshape(6, 10)[::2, 1::3]
    assert np.array_equal(layout.transpose(a), np.ascontiguousarray(a.T))
    assert layout.transpose(a, np.float32).dtype == np.float32  # numpy's own cast


def test_rows_and_frames_round_trip_without_copies_where_possible():
    v = np.random.default_rng(2).normal(size=(9, 4, 5)).astype(np.float32)
    rows = layout.pixel_rows(v)
    assert np.array_equal(rows, v.reshape(9, 20).T)
    view = layout.frames_view(rows, 4, 5)
    assert np.shares_memory(view, rows) and np.array_equal(view, v)
    assert np.shares_memory(layout.pixel_rows(view), rows)  # the rows themselves, no copy
    assert np.array_equal(layout.frames(rows, 4, 5), v)
    wide = layout.pixel_rows(view, np.float64)  # a widening needs a copy
    assert wide.dtype == np.float64 and np.array_equal(wide, rows)
