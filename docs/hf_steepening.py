"""Is the steepening of the AIA 1600 Å spectra at high frequency solar or made by processing?

    python docs/hf_steepening.py [--size 64] [--json docs/hf_steepening.json]

Issue 12 item 7. On the whole 164 x 287 px field of the AIA 1600 Å frames in
``../shared/data`` (~5 min on one core) it computes the same spectra as
``configs/aia1600.yaml`` (24 s grid, 2 segments, Hann, linear detrend, density) for:

- ``raw``: the frames as stored (level-1 cutouts at a fixed CCD position: no resampling at
  all); solar rotation carries features across the pixels at ~14 px/h (docs/data.md), which puts the
  advected structure of any size >= 2 px below 2.0 mHz (bin 14 of 149), so bins 20-149 are
  free of it (bins 2-20 are not, and are not compared);
- ``order0`` / ``order1`` / ``order3``: derotated to the middle frame as ``prep.derotate``
  does, with spline interpolation of order 0 (nearest pixel: no smoothing, but jumps), 1
  (linear) and 3 (cubic, the default);
- ``raw_1h`` and ``order3_1h``: the first hour only (150 frames, one segment);
- ``noise_only_region``: zero-mean photon + read noise fixed to the CCD (no Sun) on a small
  region, through the same derotation, to see what each interpolation order does to noise.

All are compared over the same positions (the reference time's grid) where every variant is
valid. For each it writes the median (over pixels) of the model-free log-log slope in the bins
2-20, 20-60 and 60-149 (the ranges issue 12 quotes), and the ratio of the measured power in
the top bins to the photon-noise floor expected from the instrument: DN per photon for
1600 Å = (12398.4 / 1600 eV) / (3.65 eV per electron) / (DN_GAIN electrons per DN from the
FITS header), read noise 1.15 DN (AIA camera 3, Boerner et al. 2012 Table 6, as aiapy's
``estimate_error`` uses), quantisation 1/sqrt(12) DN and dark 0.18 DN. The frames' own noise
is measured independently from the temporal second difference of the raw series.

Writes ``docs/img/hf_steepening_spectra.png``, ``docs/img/hf_steepening_index_maps.png`` and the
json of numbers (default ``docs/hf_steepening.json``); docs/hf_steepening.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "aia1600.yaml"

# Instrument numbers (sources in the module docstring and docs/hf_steepening.md)
EV_PER_ELECTRON = 3.65  # silicon: mean energy per electron-hole pair
HC_EV_ANGSTROM = 12398.4
READ_NOISE_DN = 1.15  # AIA camera 3 (1600/1700 Å), Boerner et al. 2012 Table 6
DARK_NOISE_DN = 0.18  # residual dark uncertainty (aiapy estimate_error)
QUANT_NOISE_DN = 1.0 / np.sqrt(12.0)

RANGES = {"2-20": (2, 20), "20-60": (20, 60), "60-149": (60, 149)}
TOP = (120, 149)  # bins where the noise floor is compared


def slopes(freq: np.ndarray, power: np.ndarray, k: np.ndarray) -> dict[str, float]:
    """Median over pixels of the least-squares slope of ln P against ln f in each range of
    bin numbers ``k`` (bins of the 2-h segments: k = f * 7200 s)."""
    out = {}
    for name, (a, b) in RANGES.items():
        sel = (k >= a) & (k <= b)
        if sel.sum() < 3:
            out[name] = float("nan")
            continue
        x = np.log(freq[sel])
        y = np.log(np.maximum(power[:, sel], 1e-30))
        xc = x - x.mean()
        s = (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
        out[name] = float(-np.nanmedian(s))  # quoted as the index: P ~ f^-slope
    return out


def spectra(cube: np.ndarray, t: np.ndarray, dt: float, segments: int, cfg) -> tuple:
    """Resample (nt, ny, nx) onto the uniform grid by linear interpolation in time, as the
    pipeline does, and return (freq, power (npix, nf))."""
    from specfit.kernels.periodogram import periodogram

    nt, ny, nx = cube.shape
    grid = np.arange(0.0, t[-1] - t[0] + 1e-6, dt) + t[0]
    flat = cube.reshape(nt, -1)
    j = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, nt - 2)
    w = ((grid - t[j]) / (t[j + 1] - t[j]))[:, None]
    series = (1.0 - w) * flat[j] + w * flat[j + 1]
    sp = cfg.spectra
    f, p, _ = periodogram(
        np.ascontiguousarray(series.T),
        dt,
        segments=segments,
        overlap=0.0,
        window=sp.window,
        detrend=sp.detrend,
        normalisation=sp.normalisation,
    )
    return f, p.astype(np.float64)


def _series_spectra(cube, t, dt, segments, cfg):
    """Float32 (nt, ny, nx) cube -> (freq, power (ny*nx, nf) float32) with the config's
    spectral settings, after linear interpolation in time onto the uniform grid."""
    f, p = spectra(cube, t, dt, segments, cfg)
    return f, p.astype(np.float32)


def _slope_maps(freq: np.ndarray, power: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel index (-slope of ln P on ln f) in each range of bins."""
    k = np.round(freq * 7200.0).astype(int)
    out = {}
    for name, (a, b) in RANGES.items():
        sel = (k >= a) & (k <= b)
        x = np.log(freq[sel])
        xc = x - x.mean()
        y = np.log(np.maximum(power[:, sel].astype(np.float64), 1e-30))
        out[name] = -((y - y.mean(axis=1, keepdims=True)) @ xc) / (xc @ xc)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="side of the noise-only region (px)")
    ap.add_argument("--json", default=str(ROOT / "docs" / "hf_steepening.json"))
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args(argv)

    import dask
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.io import fits

    from specfit.config import load_config
    from specfit.io import open_input
    from specfit.kernels.periodogram import periodogram
    from specfit.kernels.resample import uniform_times
    from specfit.prep.derotate import derotate, plan_derotation

    dask.config.set(scheduler="synchronous")  # one core: the machine is shared
    t0 = time.perf_counter()
    cfg = load_config(CONFIG)
    # DN, not DN/s: the photon noise is computed on counts; the exposure is divided after
    arr = open_input(cfg.input.model_copy(update={"normalise_exposure": False}))
    nt, ny, nx = arr.shape
    expo = np.asarray(arr["exposure"].values, dtype=np.float64)
    t = np.asarray(arr["time"].values, dtype=np.float64)
    dt = float(cfg.resample.cadence)
    segs = cfg.spectra.segments
    first = sorted(Path(cfg.input.path).glob(cfg.input.pattern))[0]
    gain = float(fits.getheader(first)["DN_GAIN"])  # electrons per DN
    plan = plan_derotation(arr)
    per_s = (1.0 / expo)[:, None, None].astype(np.float32)

    # --- the data: raw frames and three interpolation orders, whole field ---------------------
    raw_dn = np.asarray(arr.data.compute(), dtype=np.float32)
    mean_dn = raw_dn.mean(axis=0, dtype=np.float64)
    f, p_raw = _series_spectra(raw_dn * per_s, t, dt, segs, cfg)
    # the first hour, one segment of 150 samples (rotation moves features ~17 px in it)
    one_h = t <= t[0] + 3600.0 - 1e-6
    f1, p_raw_1h = _series_spectra(raw_dn[one_h] * per_s[one_h], t[one_h], dt, 1, cfg)
    # the frames' own noise, an upper bound: x_t - (x_{t-1} + x_{t+1}) / 2 has variance
    # 1.5 sigma^2 for white noise, plus the solar signal's curvature over 48 s
    d2 = raw_dn[1:-1] - 0.5 * (raw_dn[:-2] + raw_dn[2:])
    close = (np.diff(t)[:-1] < 1.5 * dt) & (np.diff(t)[1:] < 1.5 * dt)
    measured_var = np.var(d2[close], axis=0, dtype=np.float64) / 1.5
    del raw_dn, d2
    powers = {"raw": p_raw}
    for order in (0, 1, 3):
        cube = np.asarray(derotate(arr, plan=plan, order=order).data.compute(), np.float32)
        _, powers[f"order{order}"] = _series_spectra(cube * per_s, t, dt, segs, cfg)
        if order == 3:
            _, p_o3_1h = _series_spectra(cube[one_h] * per_s[one_h], t[one_h], dt, 1, cfg)
        del cube
    # compare over the same positions (reference-time grid) where every variant is valid
    common = np.ones(ny * nx, dtype=bool)
    for p in powers.values():
        common &= np.isfinite(p).all(axis=1)
    k = np.round(f * 7200.0).astype(int)
    top = (k >= TOP[0]) & (k <= TOP[1])

    # the photon-noise floor of each pixel's spectrum, (DN/s)^2/Hz: white noise of unit
    # variance through the same spectral settings (2 dt for "density"), times its variance
    rng = np.random.default_rng(12)
    _, pw, _ = periodogram(
        rng.standard_normal((4000, 2 * 300)),
        dt,
        segments=segs,
        overlap=0.0,
        window=cfg.spectra.window,
        detrend=cfg.spectra.detrend,
        normalisation=cfg.spectra.normalisation,
    )
    unit_level = float(np.mean(pw))
    floors = {}
    for label, e_per_photon in (
        ("boerner_2.12e", HC_EV_ANGSTROM / 1600.0 / EV_PER_ELECTRON),
        ("yield1_1e", 1.0),
    ):
        g = e_per_photon / gain  # DN per photon
        var_dn = g * np.clip(mean_dn, 0, None) + READ_NOISE_DN**2 + DARK_NOISE_DN**2
        var_dn = var_dn + QUANT_NOISE_DN**2
        floors[label] = {
            "electrons_per_photon": e_per_photon,
            "dn_per_photon": g,
            "var_dn": var_dn,
            "level": unit_level * (var_dn / np.mean(expo) ** 2).ravel(),
        }

    # the floor measured from the data: the top bins' power as a white-noise variance in DN^2;
    # its lower envelope (5th percentile in each decile of mean counts) over the mean counts
    # is the DN per photon if that envelope is shot noise (it then scales with the counts)
    v_dn = p_raw[:, top].mean(axis=1) * np.mean(expo) ** 2 / unit_level
    m = mean_dn.ravel()
    ok = np.isfinite(v_dn) & (m > 0)
    edges = np.percentile(m[ok], np.linspace(0, 100, 11))
    envelope = []
    for lo_, hi_ in zip(edges[:-1], edges[1:], strict=True):
        sel = ok & (m >= lo_) & (m <= hi_)
        p5 = float(np.percentile(v_dn[sel], 5))
        envelope.append(
            {
                "mean_dn": float(np.mean(m[sel])),
                "top_var_dn2_p5": p5,
                "top_var_dn2_median": float(np.median(v_dn[sel])),
                "p5_minus_read_over_mean_dn": (p5 - READ_NOISE_DN**2) / float(np.mean(m[sel])),
            }
        )

    # what that envelope bounds: the 5th percentile of a top-bin average of pure white noise
    # through the same settings (its bins correlated by the window) is r5 of its mean, so the
    # noise is at most max(envelope) / r5 DN per photon; its floor, as the two above
    assert pw.shape[1] == f.size  # the same grid as the data's spectra
    white_top = pw[:, top].mean(axis=1)
    r5 = float(np.percentile(white_top, 5) / np.mean(white_top))
    bound_dn = max(e["p5_minus_read_over_mean_dn"] for e in envelope[1:]) / r5
    var_dn = bound_dn * np.clip(mean_dn, 0, None) + READ_NOISE_DN**2 + DARK_NOISE_DN**2
    var_dn = var_dn + QUANT_NOISE_DN**2
    floors["envelope_bound"] = {
        "electrons_per_photon": bound_dn * gain,
        "dn_per_photon": bound_dn,
        "var_dn": var_dn,
        "level": unit_level * (var_dn / np.mean(expo) ** 2).ravel(),
    }

    results: dict[str, dict] = {}
    slope_maps = {}
    for name, p in powers.items():
        sm = _slope_maps(f, p[common])
        slope_maps[name] = sm
        top_power = p[common][:, top].mean(axis=1)
        # the brightest 5 % of the (time-averaged) field against the rest
        bright = mean_dn.ravel()[common] > np.percentile(mean_dn.ravel()[common], 95)
        results[name] = {
            "pixels": int(common.sum()),
            "index_by_bins": {r: float(np.median(v)) for r, v in sm.items()},
            "index_60_149_p10_p90": [float(v) for v in np.percentile(sm["60-149"], [10, 90])],
            "index_60_149_brightest_5pc": float(np.median(sm["60-149"][bright])),
            "index_60_149_other_95pc": float(np.median(sm["60-149"][~bright])),
            "top_bins_power_median": float(np.median(top_power)),
            "top_bins_over_floor_median": {
                lab: float(np.median(top_power / fl["level"][common])) for lab, fl in floors.items()
            },
        }
    for name, p in (("raw_1h", p_raw_1h), ("order3_1h", p_o3_1h)):
        sm = _slope_maps(f1, p[common])
        results[name] = {
            "pixels": int(common.sum()),
            "index_by_bins": {r: float(np.median(v)) for r, v in sm.items()},
        }

    # --- photon + read noise only, the same processing, on a small region --------------------
    h = args.size // 2
    y0, x0 = ny // 2 - h, nx // 2 - h
    region = (y0, y0 + args.size, x0, x0 + args.size)
    g = floors["boerner_2.12e"]["dn_per_photon"]
    lam = np.clip(mean_dn, 0, None) / g
    # zero-mean noise fixed to the CCD: Poisson photons minus their mean, read + dark noise
    noise = (rng.poisson(lam, size=(nt, ny, nx)) - lam) * g
    noise += rng.normal(0.0, np.hypot(READ_NOISE_DN, DARK_NOISE_DN), size=(nt, ny, nx))
    noise = noise.astype(np.float32)
    arr_noise = arr.copy(data=noise)
    var_region = floors["boerner_2.12e"]["var_dn"][y0 : y0 + args.size, x0 : x0 + args.size]
    level_region = unit_level * (var_region - QUANT_NOISE_DN**2).ravel() / np.mean(expo) ** 2
    noise_cubes = {"raw": noise[:, y0 : y0 + args.size, x0 : x0 + args.size]}
    for order in (0, 1, 3):
        d = derotate(arr_noise, plan=plan, order=order, region=region)
        noise_cubes[f"order{order}"] = np.asarray(d.data.compute(), np.float32)
    noise_results = {}
    noise_curves = {}
    for name, cube in noise_cubes.items():
        fn, p = _series_spectra(cube * per_s, t, dt, segs, cfg)
        ok = np.isfinite(p).all(axis=1)
        rel = p[ok] / level_region[ok, None]
        sm = _slope_maps(fn, p[ok])
        noise_results[name] = {
            "pixels": int(ok.sum()),
            "level_over_expected_mean": float(np.mean(rel)),
            "index_by_bins": {r: float(np.median(v)) for r, v in sm.items()},
            "max_over_mean_of_mean_spectrum": float(np.max(np.mean(rel, axis=0)) / np.mean(rel)),
        }
        noise_curves[name] = np.mean(rel, axis=0)

    # how far the frame times lie from the uniform grid they are interpolated onto, and the
    # largest weight a neighbouring frame then gets
    grid = uniform_times(t, dt)
    offset = np.abs(t[:, None] - grid[None, :]).min(axis=1)
    # the raw median spectrum: where its bump peaks above a straight line (ln P on ln f) over
    # bins 14-60 (~2-8 mHz), and how far it falls from there to the top bins (TOP)
    med = np.median(p_raw[common], axis=0)
    band = (k >= 14) & (k <= 60)
    line = np.polyval(np.polyfit(np.log(f[band]), np.log(med[band]), 1), np.log(f[band]))
    peak = int(np.flatnonzero(band)[np.argmax(np.log(med[band]) - line)])
    b = floors["boerner_2.12e"]
    out = {
        "field_px": [int(ny), int(nx)],
        "common_px": int(common.sum()),
        "frames": int(nt),
        "spectra": {
            "segments": segs,
            "window": cfg.spectra.window,
            "detrend": cfg.spectra.detrend,
            "normalisation": cfg.spectra.normalisation,
        },
        "instrument": {
            "dn_gain_e_per_dn": gain,
            "electrons_per_photon_boerner": b["electrons_per_photon"],
            "dn_per_photon_boerner": b["dn_per_photon"],
            "read_noise_dn": READ_NOISE_DN,
            "exposure_s_median": float(np.median(expo)),
            "mean_dn_median": float(np.median(mean_dn)),
            "expected_sigma_dn_median": float(np.median(np.sqrt(b["var_dn"]))),
            "second_difference_sigma_dn_median": float(np.median(np.sqrt(measured_var))),
            "second_difference_over_expected_median": float(
                np.median(np.sqrt(measured_var / b["var_dn"]))
            ),
            "white_unit_level": unit_level,
        },
        "frame_times": {
            "max_offset_from_grid_s": float(offset.max()),
            "max_neighbour_weight": float(offset.max() / dt),
        },
        "raw_median_spectrum": {
            "bump_peak_mhz": float(f[peak] * 1e3),
            "bump_peak_bin": int(k[peak]),
            "decades_from_bump_peak_to_top_bins": float(np.log10(med[peak] / med[top].mean())),
        },
        "top_bins_envelope_by_counts": envelope,
        "envelope_bound": {
            "white_top_p5_over_mean": r5,
            "dn_per_photon_max": bound_dn,
            "electrons_per_photon_max": bound_dn * gain,
        },
        "results": results,
        "noise_only_region": {
            "y": [int(region[0]), int(region[1])],
            "x": [int(region[2]), int(region[3])],
            "results": noise_results,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")

    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = (("raw", "k-"), ("order0", "C0--"), ("order1", "C1-"), ("order3", "C2-"))
    for name, style in styles:
        ax[0].loglog(f * 1e3, np.median(powers[name][common], axis=0), style, lw=1.2, label=name)
    for lab, ls in (("boerner_2.12e", ":"), ("yield1_1e", "-.")):
        e = floors[lab]["electrons_per_photon"]
        ax[0].axhline(
            np.median(floors[lab]["level"][common]),
            color="0.4",
            ls=ls,
            lw=1,
            label=f"photon + read noise, {e:.2f} e$^-$/photon",
        )
    ax[0].set_xlabel("frequency (mHz)")
    ax[0].set_ylabel("median power ((DN/s)$^2$/Hz)")
    ax[0].set_title(f"AIA 1600 Å data, {int(common.sum())} px, 4 h")
    ax[0].legend(fontsize=8)
    for name, style in styles:
        ax[1].semilogx(fn * 1e3, noise_curves[name], style, lw=1.2, label=name)
    ax[1].axhline(1.0, color="0.4", ls=":", lw=1)
    ax[1].set_ylim(0, 1.6)
    ax[1].set_xlabel("frequency (mHz)")
    ax[1].set_ylabel("mean power / expected photon + read noise")
    ax[1].set_title(f"noise only ({args.size} × {args.size} px), same processing")
    ax[1].legend(fontsize=8)
    for a in ax:
        for kk in (20, 60):
            a.axvline(kk / 7.2, color="0.8", lw=0.8)
    fig.tight_layout()
    fig.savefig(img / "hf_steepening_spectra.png", dpi=110)
    plt.close(fig)

    # the 60-149 index per pixel, raw against derotated (cubic) and linear
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4), layout="constrained")
    for a, name in zip(ax, ("raw", "order3", "order1"), strict=True):
        m = np.full(ny * nx, np.nan)
        m[common] = slope_maps[name]["60-149"]
        im = a.imshow(m.reshape(ny, nx), origin="lower", vmin=0, vmax=5, cmap="viridis")
        med = results[name]["index_by_bins"]["60-149"]
        a.set_title(f"{name} (median {med:.2f})", fontsize=10)
    fig.suptitle("power-law index over bins 60-149 (8.3-20.7 mHz), same positions", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.9)
    fig.savefig(img / "hf_steepening_index_maps.png", dpi=100)
    plt.close(fig)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
