"""Compare a run with the original specFit's own results (its ``param.npy``), pixel by pixel.

The original's validation output for the AIA 1600 Å example frames lives in
``../shared/data/aia1600_20120606/original_specfit/`` (see its README): ``param.npy`` holds
11 numbers per pixel of its derotated, trimmed field, ``visual.npy`` its mean image. Its
field is a sub-rectangle of a derotated specfit field; :func:`register` finds the integer
offset by correlation (the residual offset is sub-pixel), and :func:`compare_original`
reports the figures the original quoted on both sides plus the pixel-by-pixel agreement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["ORIGINAL_COLUMNS", "figures", "preferred_index", "register", "compare_original"]

# param.npy's columns (the original's README)
ORIGINAL_COLUMNS = (
    "amplitude",
    "index",
    "tail",
    "bump_amplitude",
    "bump_center",
    "bump_width",
    "fstat",
    "bump_ratio",
    "pearson_r",
    "rollover_period",
    "chi2red",
)


def preferred_index(ds: xr.Dataset, small: str = "m1", big: str = "m2") -> np.ndarray:
    """(y, x) power-law index of the preferred model (``big`` where ``best_model`` picks it),
    as the original stored it; NaN where no model was kept."""
    aliases = list(ds["best_model"].attrs.get("flag_meanings", "none m1 m2").split()[1:])
    best = np.asarray(ds["best_model"].values)
    ib = aliases.index(big) if big in aliases else 1
    ia = aliases.index(small) if small in aliases else 0
    n_big = np.asarray(ds[f"{big}_index"].values, dtype=float)
    n_small = np.asarray(ds[f"{small}_index"].values, dtype=float)
    return np.where(best == ib, n_big, np.where(best == ia, n_small, np.nan))


def figures(index: np.ndarray, is_big: np.ndarray, bump_period: np.ndarray) -> dict[str, float]:
    """The original's headline figures for one field.

    Parameters
    ----------
    index
        Power-law index of the preferred model per pixel (NaN = none).
    is_big
        Boolean, where the bump model is kept.
    bump_period
        Bump period in minutes per pixel (used where ``is_big``).

    Returns
    -------
    dict
        ``index_median``, ``index_p1``, ``index_p99``, ``bump_period_median`` (min) and
        ``m2_percent`` (share of pixels where the bump model is kept).
    """
    v = np.asarray(index, dtype=float)
    v = v[np.isfinite(v)]
    per = np.asarray(bump_period, dtype=float)[np.asarray(is_big, bool)]
    p1, p50, p99 = np.percentile(v, [1, 50, 99]) if v.size else (np.nan,) * 3
    return {
        "index_median": float(p50),
        "index_p1": float(p1),
        "index_p99": float(p99),
        "bump_period_median": float(np.nanmedian(per)) if per.size else float("nan"),
        "m2_percent": 100.0 * float(np.mean(is_big)),
    }


def register(reference: np.ndarray, field: np.ndarray, max_shift: int | None = None):
    """Integer (dy, dx) placing ``field[dy:dy+h, dx:dx+w]`` on ``reference`` (h, w) with the
    highest correlation; returns ``(dy, dx, correlation)``. NaNs are ignored."""
    ref = np.asarray(reference, dtype=float)
    big = np.asarray(field, dtype=float)
    h, w = ref.shape
    H, W = big.shape
    if h > H or w > W:
        raise ValueError(f"the reference {ref.shape} is larger than the field {big.shape}")
    best = (-2.0, 0, 0)
    for dy in range(H - h + 1):
        for dx in range(W - w + 1):
            if max_shift is not None and max(dy, dx) > max_shift:
                continue
            sub = big[dy : dy + h, dx : dx + w]
            ok = np.isfinite(sub) & np.isfinite(ref)
            if ok.sum() < 10:
                continue
            c = float(np.corrcoef(sub[ok], ref[ok])[0, 1])
            if c > best[0]:
                best = (c, dy, dx)
    return best[1], best[2], best[0]


def compare_original(ds: xr.Dataset, original_dir: str | Path) -> dict:
    """The run against the original's ``param.npy``, on the original's own pixel grid.

    The index map of the run is registered onto the original's (integer offset of highest
    correlation); the figures are computed on both sides over the same pixels.

    Returns
    -------
    dict
        ``offset`` [dy, dx] of the original's grid in the run's field, ``correlation`` of the
        two index maps there, ``median_abs_dindex``, ``same_choice_percent`` (same model kept),
        ``m2_only_specfit`` / ``m2_only_original`` (pixels where only one keeps M2) and the
        median bump width of specfit's M2-only pixels,
        ``original`` and ``specfit`` (each :func:`figures` on that grid), and ``specfit_field``
        (:func:`figures` over the run's whole field).
    """
    d = Path(original_dir)
    param = np.load(d / "param.npy")
    o_index = param[..., 1]
    o_big = np.isfinite(param[..., 3])
    o_period = np.exp(-param[..., 4]) / 60.0
    n = preferred_index(ds)
    big = np.asarray(ds["best_model"].values) == 1
    period = np.asarray(ds["m2_bump_period"].values, dtype=float)
    dy, dx, corr = register(o_index, n)
    h, w = o_index.shape
    sl = (slice(dy, dy + h), slice(dx, dx + w))
    return {
        "offset": [int(dy), int(dx)],
        "correlation": corr,
        "median_abs_dindex": float(np.nanmedian(np.abs(n[sl] - o_index))),
        "same_choice_percent": 100.0 * float(np.mean(big[sl] == o_big)),
        # where the two keep different models: how many pixels, and specfit's bump there
        "m2_only_specfit": int(np.sum(big[sl] & ~o_big)),
        "m2_only_original": int(np.sum(~big[sl] & o_big)),
        "m2_only_specfit_bump_width_median": float(
            np.nanmedian(np.asarray(ds["m2_bump_width"].values, dtype=float)[sl][big[sl] & ~o_big])
        )
        if np.any(big[sl] & ~o_big)
        else float("nan"),
        "original": figures(o_index, o_big, o_period),
        "specfit": figures(n[sl], big[sl], period[sl]),
        "specfit_field": figures(n, big, period),
    }
