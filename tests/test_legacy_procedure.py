"""specfit.legacy.original_procedure: the original specFit's per-pixel fits and chi^2-sum
choice, re-enacted with scipy (docs/legacy.md), on tiny synthetic spectra."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from specfit.legacy import ORIGINAL_SCALE, original_procedure


def _field(bump: float) -> tuple[np.ndarray, np.ndarray]:
    """(freq, power (149, 2, 2)) in specfit's variance units: A f^-n + C, plus a Lorentzian
    in ln f of height ``bump`` (original units) at 4.5 min, with 2 % multiplicative noise."""
    f = np.arange(1, 150) / 7200.0
    rng = np.random.default_rng(3)
    base = 1e-6 * f**-1.4 + 1e-4
    lor = bump / (1.0 + ((np.log(f) - np.log(1 / 270.0)) / 0.2) ** 2)
    p = (base + lor)[:, None, None] * (1 + 0.02 * rng.standard_normal((149, 2, 2)))
    return f, p * ORIGINAL_SCALE


def test_the_original_procedure_keeps_m2_where_its_fit_lowers_the_chi2_sum():
    f, p = _field(bump=5e-3)
    p[:, 1, 1] = np.nan  # a bad pixel is skipped, not fitted with the neighbour's values
    r = original_procedure(f, p)
    ok = r["fitted"]
    assert ok.sum() == 3 and not ok[1, 1]
    assert np.all(r["m2_kept"][ok])
    assert np.all(r["chi2_m2"][ok] < r["chi2_m1"][ok])
    assert np.isnan(r["chi2_m1"][1, 1]) and not r["m2_kept"][1, 1]
    assert r["failed"].shape == (3,)


def test_rows_limit_the_procedure_to_those_rows():
    f, p = _field(bump=0.0)
    r = original_procedure(f, p, rows=[1])
    assert not r["fitted"][0].any() and r["fitted"][1].all()
    # the tail is allowed negative and the index stays inside the original's bounds
    assert np.all((r["m1_index"][1] >= 0.3) & (r["m1_index"][1] <= 6.0))


def test_a_wrong_frequency_count_is_one_clear_error():
    f, p = _field(bump=0.0)
    with pytest.raises(ValueError, match="149 frequencies, freq 148"):
        original_procedure(f[:-1], p)


def _fake_original(tmp_path, shape=(40, 50), seed=0):
    """A param.npy of the original's layout (index at 1, bump amplitude at 3, centre at 4)
    with a spatially smooth index map, and a results Dataset holding the same maps."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    index = 1.4 + gaussian_filter(rng.normal(size=shape), 1.0)
    param = np.full((*shape, 6), np.nan)
    param[..., 1] = index
    param[..., 3] = np.where(rng.random(shape) < 0.9, 1e-3, np.nan)
    param[..., 4] = np.log(1 / 270.0)
    (tmp_path / "orig").mkdir()
    np.save(tmp_path / "orig" / "param.npy", param)
    return index, param


def _fake_store(index: np.ndarray, big: np.ndarray):
    dims = ("y", "x")
    best = xr.DataArray(big.astype(np.int8), dims=dims, attrs={"flag_meanings": "none m1 m2"})
    return xr.Dataset(
        {
            "best_model": best,
            "m1_index": (dims, index),
            "m2_index": (dims, index),
            "m2_bump_period": (dims, np.full(index.shape, 4.5)),
            "m2_bump_width": (dims, np.full(index.shape, 0.3)),
        }
    )


def test_compare_original_says_when_the_field_cannot_be_the_originals(tmp_path, caplog):
    """compare_original places param.npy by correlation: on a field of its size there is one
    placement only, so a misplaced cutout gave offset [0, 0] and its figures without a word;
    a smaller cutout raised 'the reference is larger than the field' (legacy probe)."""
    from specfit.legacy import compare_original

    index, param = _fake_original(tmp_path)
    big = np.isfinite(param[..., 3])
    with caplog.at_level("WARNING", logger="specfit"):
        right = compare_original(_fake_store(index, big), tmp_path / "orig")
    assert right["offset"] == [0, 0] and right["correlation"] > 0.99
    assert not [r for r in caplog.records if "correlates only" in r.getMessage()]
    shifted = np.roll(index, (3, 4), axis=(0, 1))  # the cutout 3 rows and 4 columns off
    with caplog.at_level("WARNING", logger="specfit"):
        wrong = compare_original(_fake_store(shifted, big), tmp_path / "orig")
    assert wrong["offset"] == [0, 0] and wrong["correlation"] < 0.7
    (said,) = [r.getMessage() for r in caplog.records if "correlates only" in r.getMessage()]
    assert "may not be the original's field" in said
    with pytest.raises(ValueError, match=r"smaller than the original's grid .*whole cutout"):
        compare_original(_fake_store(index[:20, :20], big[:20, :20]), tmp_path / "orig")
