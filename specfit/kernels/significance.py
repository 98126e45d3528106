"""Field-wide significance: Benjamini-Hochberg q-values and a Sidak global level.

A per-pixel test at level ``alpha`` flags about ``alpha`` of the pixels where nothing is there
(a 5 % test on 2.5 million pixels of pure red noise flags 125,000 "bumps"). Two field-wide
controls turn the per-pixel p-values of one test map into statements about the whole field:

- **false-discovery rate** (Benjamini & Hochberg 1995): the q-value of a pixel is the smallest
  FDR level at which BH would call it significant; the pixels with ``q <= fdr_q`` are a set in
  which, on average, at most a fraction ``fdr_q`` are false. With every null true, the chance
  of one or more discoveries anywhere is at most ``fdr_q``.
- **global confidence level** (Vaughan 2005; Auchere et al. 2016): the per-test threshold
  ``1 - x^(1/N)`` (Sidak) for ``N`` tested pixels gives a chance ``x`` that not one pixel of a
  field of pure nulls passes it.

Both need the whole field's p-values, so they are computed once every tile is in (the store's
finalise step), never per tile: then they do not depend on the tiling, the cluster or a resume.
Pure numpy; NaN p-values (pixels not tested) are left out of ``N`` and get NaN.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BHTable", "bh_qvalues", "sidak_threshold"]


class BHTable:
    """The Benjamini-Hochberg q-value as a function of p over one field's p-values.

    The q-value is a non-decreasing function of p, so it is held as the sorted p-values and
    their q-values; :meth:`qvalues` then maps any block of the field by a binary search. That
    keeps the field-wide step at 16 bytes per tested pixel (two float64 vectors) however the
    maps are read and written, tile by tile.

    Parameters
    ----------
    pvalues
        Every p-value of the field (any shape; NaN are not tests and are dropped).
    """

    def __init__(self, pvalues: np.ndarray) -> None:
        p = np.asarray(pvalues).ravel()
        p = p[np.isfinite(p)].astype(np.float64)  # one float64 copy of the tested values
        p.sort()
        self.p = p
        self.n = n = int(p.size)
        # q_(i) = min_{j >= i} p_(j) n / j: the step-up rule's adjusted p-values, built in
        # place in one more vector (millions of pixels: no temporaries of that size)
        q = np.arange(n, 0, -1, dtype=np.float64)  # reversed: j = n .. 1
        np.divide(n, q, out=q)
        q *= p[::-1]
        np.minimum.accumulate(q, out=q)
        self.q = q[::-1]
        np.minimum(self.q, 1.0, out=self.q)

    def qvalues(self, pvalues: np.ndarray) -> np.ndarray:
        """q-values of p-values of this field (same shape; NaN stays NaN).

        Tied p-values share one q-value: that of the last of the ties in sorted order, which
        the running minimum from the top has already carried down to every tie.
        """
        p = np.asarray(pvalues, dtype=np.float64)
        out = np.full(p.shape, np.nan)
        ok = np.isfinite(p)
        if self.n == 0 or not ok.any():
            return out
        i = np.searchsorted(self.p, p[ok], side="right") - 1
        # a p-value not in the field (only possible when called on other values) below the
        # smallest one gets the smallest q: the table covers the field's own values exactly
        out[ok] = self.q[np.clip(i, 0, self.n - 1)]
        return out

    def count_at(self, level: float) -> int:
        """How many of the field's tests have ``q <= level`` (BH discoveries at ``level``)."""
        return int(np.count_nonzero(self.q <= level))


def bh_qvalues(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of one field, NaN left out.

    Parameters
    ----------
    pvalues
        p-values of any shape; NaN marks pixels that were not tested.

    Returns
    -------
    numpy.ndarray
        float64 q-values of the same shape; ``q <= Q`` is the BH discovery set at FDR ``Q``.
    """
    return BHTable(pvalues).qvalues(pvalues)


def sidak_threshold(level: float, n: int) -> float:
    """Per-test p-value threshold for a global confidence ``level`` over ``n`` tests.

    ``1 - level^(1/n)`` (Sidak; Vaughan 2005's global level): if all ``n`` nulls are true and
    the tests independent, no test passes with probability ``level``. Computed as
    ``-expm1(ln(level) / n)`` so that it stays exact for millions of pixels.

    Parameters
    ----------
    level
        Global confidence level in (0, 1), e.g. 0.999.
    n
        Number of tests (tested pixels); 0 gives NaN.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"global level must be in (0, 1); got {level!r}")
    if n <= 0:
        return float("nan")
    return float(-np.expm1(np.log(level) / n))
