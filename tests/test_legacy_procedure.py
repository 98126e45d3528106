"""specfit.legacy.original_procedure: the original specFit's per-pixel fits and chi^2-sum
choice, re-enacted with scipy (docs/legacy.md), on tiny synthetic spectra."""

from __future__ import annotations

import numpy as np
import pytest

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
