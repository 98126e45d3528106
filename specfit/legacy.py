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

__all__ = [
    "ORIGINAL_COLUMNS",
    "ORIGINAL_SCALE",
    "figures",
    "preferred_index",
    "register",
    "compare_original",
    "original_procedure",
    "compare_choice",
]

# specfit's ``variance`` power is the original's 2 |X_k/N|^2 / var times dt N = 24 s x 300
ORIGINAL_SCALE = 7200.0

# The original's bounds in its own power units (its README): M1 (A, n, C), M2 adds (P, fp, fw)
_ORIGINAL_M1_BOUNDS = ([-0.002, 0.3, -0.01], [0.002, 6.0, 0.01])
_ORIGINAL_M2_BOUNDS = ([0.0, 0.3, -0.01, 1e-5, -6.5, 0.05], [0.002, 6.0, 0.01, 0.2, -4.6, 0.8])

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


_REGISTER_WARN = 0.7  # compare_original warns below this correlation of the index maps


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
    h, w = o_index.shape
    if n.shape[0] < h or n.shape[1] < w:
        raise ValueError(
            f"the run's field {n.shape} is smaller than the original's grid {o_index.shape} "
            "(param.npy): compare a run of configs/legacy.yaml's whole cutout (its "
            "prep.cutout), on which the two are registered"
        )
    dy, dx, corr = register(o_index, n)
    if corr < _REGISTER_WARN:
        import logging

        # one placement only (a field of the original's size) cannot tell a misplaced
        # cutout; the right one correlates above 0.8 on AIA 1600 (tests/test_realdata.py)
        logging.getLogger("specfit").warning(
            "compare_original: the run's index map correlates only %.2f with the original's "
            "at the best placement [%d, %d]: the run's cutout may not be the original's "
            "field (configs/legacy.yaml's prep.cutout)",
            corr,
            dy,
            dx,
        )
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


def original_procedure(
    freq: np.ndarray, power: np.ndarray, rows: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The original specFit's per-pixel fitting and model choice, step for step (scipy),
    including its order-dependent fall-back.

    The same curve_fit calls as ``fit.optimizer: original``
    (:mod:`specfit.kernels.original`: M1 one bounded 'dogbox' fit from the middle of the
    bounds; M2 'dogbox' (at most 3000 evaluations) then 'trf' from its result; sigma = delta
    log10 f; raw chi-square sums; M2 kept where chi2(M1) > chi2(M2)), with the original's
    own bounds (M1's amplitude down to -0.002) and its handling of a call that raises: it
    keeps that call's result from the last pixel where it succeeded, as the original's
    ``except: pass`` did (pixels visited row by row), which the pipeline does not (there
    the model gets NaN and status 10 on that pixel). It measures what the original's choice
    was on given spectra (docs/legacy.md).

    Parameters
    ----------
    freq
        (nf,) frequencies in Hz (the original's k/7200 Hz, k = 1..149).
    power
        (nf, ny, nx) spectra in specfit's ``variance`` normalisation (divided here by
        :data:`ORIGINAL_SCALE` to the original's units, where its bounds apply).
    rows
        Row indices to fit (None: all); other rows are NaN / False.

    Returns
    -------
    dict
        (ny, nx) arrays ``chi2_m1``, ``chi2_m2`` (raw weighted sums, original units),
        ``m2_kept`` (bool), ``m1_index``, ``m2_index``, ``m2_bump_width``, ``fitted`` (bool),
        and ``failed`` (int: calls that raised, per model step: m1, m2 dogbox, m2 trf).
    """
    from specfit.kernels.fitting import dlogf_sigma
    from specfit.kernels.original import ORIGINAL_MODELS, ORIGINAL_STEPS, curve_fit_step

    f = np.asarray(freq, dtype=np.float64)
    p = np.asarray(power, dtype=np.float64) / ORIGINAL_SCALE
    nf, ny, nx = p.shape
    if nf != f.size:
        raise ValueError(f"power has {nf} frequencies, freq {f.size}")
    sigma = dlogf_sigma(f)
    names = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    bounds = {"m1": _ORIGINAL_M1_BOUNDS, "m2": _ORIGINAL_M2_BOUNDS}
    out = {k: np.full((ny, nx), np.nan) for k in ("chi2_m1", "chi2_m2", "m1_index", "m2_index")}
    out["m2_bump_width"] = np.full((ny, nx), np.nan)
    kept = np.zeros((ny, nx), dtype=bool)
    fitted = np.zeros((ny, nx), dtype=bool)
    failed = np.zeros(3, dtype=int)
    # the last result of each curve_fit call (carried over to later pixels where one raises)
    last = {m: [None] * len(ORIGINAL_STEPS[n]) for m, n in names.items()}
    for iy in range(ny) if rows is None else np.asarray(rows, dtype=int):
        for ix in range(nx):
            s = p[:, iy, ix]
            if not np.all(np.isfinite(s)):
                continue
            k = 0
            for m, name in names.items():
                for j, (method, max_nfev) in enumerate(ORIGINAL_STEPS[name]):
                    start = last[m][j - 1] if j else None
                    if j and start is None:
                        continue  # the original ran the 'trf' polish only after a dogbox result
                    try:
                        last[m][j], _, _ = curve_fit_step(
                            name, f, s, sigma, bounds[m], method, max_nfev, start
                        )
                    except (RuntimeError, ValueError):
                        failed[k + j] += 1
                k += len(ORIGINAL_STEPS[name])
            q1, q2 = last["m1"][-1], last["m2"][-1]
            if q1 is None or q2 is None:
                continue  # the original would have stopped here (no previous values)
            c1 = float((((s - ORIGINAL_MODELS[names["m1"]](f, *q1)) / sigma) ** 2).sum())
            c2 = float((((s - ORIGINAL_MODELS[names["m2"]](f, *q2)) / sigma) ** 2).sum())
            out["chi2_m1"][iy, ix], out["chi2_m2"][iy, ix] = c1, c2
            out["m1_index"][iy, ix], out["m2_index"][iy, ix] = q1[1], q2[1]
            out["m2_bump_width"][iy, ix] = q2[5]
            kept[iy, ix] = c1 > c2
            fitted[iy, ix] = True
    out["m2_kept"] = kept
    out["fitted"] = fitted
    out["failed"] = failed
    return out


def compare_choice(
    ds: xr.Dataset,
    original_dir: str | Path,
    rows: np.ndarray | None = None,
    run: xr.Dataset | None = None,
) -> dict[str, float]:
    """Where the original kept M1: the original's procedure re-run on the run's spectra
    (:func:`original_procedure`) against ``param.npy`` and against specfit's own fits.

    The run must be on the original's grid (``configs/legacy.yaml``: offset 0, 0) and fitted
    by specfit's own solver (``--set fit.optimizer=specfit``): its M2 is what the procedure's
    M1 pixels are compared with (the spectra do not depend on the optimiser).

    Returns
    -------
    dict
        Over the fitted pixels: ``pixels``; ``m2_percent_param`` (param.npy),
        ``m2_percent_procedure`` (the original's procedure on specfit's spectra),
        ``m2_percent_specfit`` (the run's ``best_model``); ``m1_both`` (pixels where
        param.npy and the procedure both keep M1) and ``m1_chance`` (expected by chance);
        ``procedure_m1_specfit_m2_below_m1_percent``: of the procedure's M1 pixels, the share
        where specfit's M2 (same spectra, same weights) has a raw chi-square below the
        procedure's M1, i.e. where M1 was kept because M2's fit stopped in a local minimum;
        ``failed`` calls per step. With ``run``, a store of the same config fitted with
        ``fit.optimizer=original`` (the procedure inside the pipeline, without the fall-back
        to a previous pixel's values): ``m2_percent_run``, ``same_choice_procedure_run_percent``
        and ``differ_run_raised`` (of the pixels where the two choose differently, those
        where a call raised in the run, status 10).
    """
    import json

    from specfit.kernels.fitting import dlogf_sigma
    from specfit.kernels.original import powerlaw_tail_lorentzian

    fit = json.loads(ds.attrs.get("config_json", "{}")).get("fit", {})
    if fit.get("optimizer", "specfit") != "specfit":
        raise ValueError(
            "compare_choice compares the original's procedure with specfit's own solver: run "
            "configs/legacy.yaml with --set fit.optimizer=specfit (this store was fitted by "
            f"fit.optimizer={fit.get('optimizer')!r})"
        )
    param = np.load(Path(original_dir) / "param.npy")
    f = np.asarray(ds["freq"].values, dtype=np.float64)
    power = np.asarray(ds["power"].transpose("freq", "y", "x").values, dtype=np.float64)
    if power.shape[1:] != param.shape[:2]:
        raise ValueError(
            f"the run's field {power.shape[1:]} is not param.npy's {param.shape[:2]}: "
            "run configs/legacy.yaml (its cutout is the original's grid)"
        )
    r = original_procedure(f, power, rows)
    ok = r["fitted"]
    o_big = np.isfinite(param[..., 3])[ok]
    p_big = r["m2_kept"][ok]
    s_big = (np.asarray(ds["best_model"].values) == 1)[ok]
    # specfit's M2 raw chi-square in the original's units, for the same dlogf weights
    sigma = dlogf_sigma(f)
    names = ("amplitude", "index", "tail", "bump_amplitude", "bump_center", "bump_width")
    q = [np.asarray(ds[f"m2_{n}"].values, dtype=np.float64)[ok] for n in names]
    for j in (0, 2, 3):  # power parameters to the original's units
        q[j] = q[j] / ORIGINAL_SCALE
    s = power[:, ok].T / ORIGINAL_SCALE
    model = powerlaw_tail_lorentzian(f[None, :], *(v[:, None] for v in q))
    c2_specfit = (((s - model) / sigma) ** 2).sum(axis=1)
    m1 = ~p_big
    below = c2_specfit[m1] < r["chi2_m1"][ok][m1]
    n = int(ok.sum())
    extra: dict[str, float] = {}
    if run is not None:
        r_big = (np.asarray(run["best_model"].values) == 1)[ok]
        raised = (
            (np.asarray(run["m1_status"].values) == 10)
            | (np.asarray(run["m2_status"].values) == 10)
        )[ok]
        differ = r_big != p_big
        extra = {
            "m2_percent_run": 100.0 * float(r_big.mean()),
            "same_choice_procedure_run_percent": 100.0 * float(np.mean(~differ)),
            "differ_run": int(differ.sum()),
            "differ_run_raised": int((differ & raised).sum()),
        }
    return {
        "pixels": n,
        "m2_percent_param": 100.0 * float(o_big.mean()),
        "m2_percent_procedure": 100.0 * float(p_big.mean()),
        "m2_percent_specfit": 100.0 * float(s_big.mean()),
        "same_choice_procedure_param_percent": 100.0 * float(np.mean(p_big == o_big)),
        "m1_param": int((~o_big).sum()),
        "m1_procedure": int(m1.sum()),
        "m1_both": int((~o_big & m1).sum()),
        "m1_chance": float((~o_big).sum() * m1.sum() / max(n, 1)),
        "procedure_m1_specfit_m2_below_m1_percent": 100.0 * float(below.mean())
        if m1.any()
        else float("nan"),
        "failed": [int(v) for v in r["failed"]],
        **extra,
    }
