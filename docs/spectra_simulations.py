"""The simulations docs/spectra.md quotes: interpolation, box-3 dof, windows (issue 12 item 5).

    python docs/spectra_simulations.py [--only interpolation,box3,box3_causes,windows,lrt_taper,
                                               welch_overlap] [--json docs/spectra_simulations.json]

Six simulations with known truth, each through specfit's own functions (the tile chain's
``resample_values``, ``periodograms``, ``box_spectra``, ``box_dof`` and ``fit_maps`` with the
default fit options); about 4 minutes on one core. ``--only`` re-runs some and keeps the
others' entries in the JSON.

- ``interpolation``: unit white noise (2,000 series of 600 frames) at frame times like AIA's
  (every 24 s, each off by Gaussian jitter of 0.01 s) and IRIS 1400's (spacings alternating 18.7 / 37.5 s),
  linearly interpolated onto a uniform grid (AIA: the cadence ``resample.choose_cadence``
  picks; IRIS: 28.1 s, the median spacing). Printed: the variance kept, and the mean
  periodogram over the expected white-noise density ``2 dt`` in the lowest and the highest
  tenth of the bins.
- ``box3``: box-3 means of a spatially correlated red-noise field (``synthetic.
  correlated_patches``, true N_eff 2.5 of 9), one full box per independent patch; Whittle fits
  (truth: index 2, no bump) with ``spectra.box_dof`` auto and nominal, and the same truth with
  independent Gamma noise of the true dof. Printed: the stored N_eff (median), the std of the
  index pulls, the LRT's rate of preferring M2 at 5 %. Two sizes: 600 boxes of 256 frames (the
  slow test ``tests/test_box_dof.py`` asserts on exactly this one) and 1,000 boxes of 512
  frames, where one pixel's own periodogram (box 1) is fitted too.
- ``box3_causes``: what moves box 3's LRT size. 961 box-3 means 5 px apart on one 160 x 160
  px correlated field (true N_eff 2.50), at 256 and 512 frames, fitted with the per-box
  estimate (``box_dof`` auto), the true N_eff rounded as specfit rounds it, the exact true
  N_eff, and an estimate pooled over 7 x 7 neighbouring boxes (computed here, not in
  specfit); and 4,000 values drawn independently per frequency from the Gamma law of the
  true dof (fitted with the exact and the rounded dof) and from a box mean's exact law (a
  weighted sum of exponentials). Printed as for ``box3``, plus the LRT reference's and the
  statistic's 95 % points for the Gamma rows.
- ``lrt_taper``: is the LRT p-value calibrated under a Hann taper? 6,000 M1 spectra (truths
  drawn as the reference draws them, 300-sample segments, 149 bins) times Hann-windowed
  periodograms of white noise written out with numpy's FFT (1 segment with the mean removed,
  2 segments with the mean or a line removed, Whittle; 2 segments by ``lsq_log``; and as a
  control no window, 2 segments), fitted as a run fits them. Printed: the share of p-values
  below 0.01 / 0.05 / 0.2 / 0.5 and a KS test of their uniformity, with the run's reference
  (correlated bins, 2,000 statistics), the same construction with 16,000 (less of the
  reference's own sampling error), and the one specfit used before (independent bins at the
  likelihood's dof), applied to the same statistics; and the spread of M1's index pulls
  against the truth (status-0 fits).
- ``welch_overlap``: Welch averaging of 300-sample segments, 5 at 50 % overlap without a
  window and with Hann, 9 at 75 % with Hann: 6,000 M1 spectra (truths as the reference draws them, 149 bins)
  times Welch averages of white noise written out with numpy's FFT, Whittle fits with the
  dof and bin correlations a run passes for that layout (``tile.fit_dof`` / ``tile.bin_rho``
  with the overlap) and, as before 2026-12-07, with one segment's (none without a window).
  Printed: the bins' correlation at lags 1-3 and vif, the spread of M1's index pulls, the
  share of LRT p-values below 0.01 / 0.05 / 0.2 / 0.5 with the run's reference (and, for the
  overlap layout, with 16,000 statistics) and their KS p-value.
- ``windows``: 4,000 pure-M1 series (index 2, no bump) of 600 frames at 12 s (299 bins), cut
  from the middle of series four times longer, so that red-noise leakage is as in real data;
  fitted with each window / detrend and the dof correction the pipeline applies
  (``tile.fit_dof``: dof / window_vif) or without it. Printed: the index's mean bias, scatter,
  pull std, and the LRT's rate of preferring M2 at 5 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from figure_stamp import run_parts  # docs/, beside this script
from scipy import stats

from specfit import synthetic
from specfit.config import DEFAULTS
from specfit.kernels import fitting as FT
from specfit.kernels import resample as rs
from specfit.kernels import tile as T
from specfit.pipeline import fit_options
from specfit.stages import resolve_models

ROOT = Path(__file__).resolve().parents[1]
# the defaults' spectra (one segment, no window, mean detrend, density), one pixel at a time
SPECTRA = DEFAULTS.spectra.model_dump(exclude={"box", "box_dof"})
INDEX = 2.0  # the simulated truths' power-law index (synthetic.correlated_series's default)


def _fit(freq, power, dof, rho=None):
    """Whittle fit of a (nf, ny, nx) block at the default fit options and models."""
    models = resolve_models(dict(DEFAULTS.fit.models))
    opts = fit_options(DEFAULTS)  # what `specfit run` hands the solver
    rho = np.zeros(0) if rho is None else rho
    return T.fit_maps(freq, power, dof, None, models, "whittle", opts, rho)


def calibration(out) -> dict:
    """Index pulls against the truth and the LRT's rate of preferring M2 at 5 %."""
    ok = out["m1_status"] == 0
    index = out["m1_index"][ok]
    pulls = (index - INDEX) / out["m1_index_err"][ok]
    return {
        "converged": float(ok.mean()),
        "index_bias": float(np.mean(index) - INDEX),
        "index_scatter": float(np.std(index)),
        "pull_std": float(np.std(pulls)),
        "lrt_size": float(np.mean(out["lrt_pvalue"] < 0.05)),
    }


def interpolation(npix: int = 2000, n_frames: int = 600, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    frame_times = {
        "aia": 24.0 * np.arange(n_frames) + rng.normal(0.0, 0.01, n_frames),
        "iris": np.concatenate([[0.0], np.cumsum(np.resize([18.7, 37.5], n_frames - 1))]),
    }
    out = {}
    for name, times in frame_times.items():
        cadence = rs.choose_cadence(times)[0] if name == "aia" else 28.1
        grid = rs.uniform_times(times, cadence)
        values = rng.standard_normal((n_frames, 1, npix))
        res = T.resample_values(values, times, grid)
        freq, power, _ = T.periodograms(res, cadence, SPECTRA)
        ratio = power.mean(axis=(1, 2)) / (2.0 * cadence)  # white noise of variance 1
        tenth = max(1, freq.size // 10)
        out[name] = {
            "cadence": cadence,
            "variance_kept": float(np.mean(res.var(axis=0)) / np.mean(values.var(axis=0))),
            "density_lowest_tenth": float(ratio[:tenth].mean()),
            "density_highest_tenth": float(ratio[-tenth:].mean()),
        }
    return out


def box3_case(n: int, n_frames: int, seed: int, box1: bool) -> dict:
    values = synthetic.correlated_patches(n, n_frames, 12.0, smoothing=1.0, seed=seed)
    freq, power, meta = T.periodograms(values, 12.0, SPECTRA)
    mean, _, count = T.box_spectra(power, 3)
    centres = (slice(1, 2), slice(2, None, 5))  # one full box per patch: independent pixels
    box_mean = mean[(slice(None), *centres)].astype(np.float32)
    out = {}
    for mode in ("auto", "nominal"):
        dof = T.box_dof(power, count, 3, meta["dof"], mode)[centres]
        out[mode] = {"neff_median": float(np.median(dof) / meta["dof"])}
        out[mode].update(calibration(_fit(freq, box_mean, dof)))
    # the same truth with independent Gamma noise of the true dof
    k = synthetic.mixing_neff(1.0, 3)
    truth = 30.0 * 1e-3**INDEX * freq**-INDEX + 1.0
    noise = np.random.default_rng(seed + 1).gamma(k, 1.0 / k, size=(freq.size, 1, n))
    gamma = (truth[:, None, None] * noise).astype(np.float32)
    neff = float(T.quantise_neff(np.array(k), 9))
    out["gamma_true_dof"] = {"neff_true": k, "neff_median": neff}
    out["gamma_true_dof"].update(calibration(_fit(freq, gamma, np.float32(2 * neff))))
    if box1:  # one pixel's own periodogram, exact chi^2_2
        own = power[(slice(None), *centres)].astype(np.float32)
        out["box1"] = {"neff_median": 1.0}
        out["box1"].update(calibration(_fit(freq, own, np.float32(meta["dof"]))))
    return {"boxes": n, "frequencies": int(freq.size), **out}


def _pooled_neff(power: np.ndarray, pool: int) -> tuple[np.ndarray, np.ndarray]:
    """Box-3 N_eff per box as ``periodogram.box_neff`` computes it (for boxes at least 1 px
    inside the field), and the same estimator with its sums pooled over ``pool`` x ``pool``
    neighbouring boxes (not in specfit; valid ``pool // 2 + 1`` px inside the field)."""
    from scipy.ndimage import uniform_filter

    p = power.astype(np.float64)
    nf = p.shape[0]
    box = (1, 3, 3)
    m = uniform_filter(p, box, mode="nearest")  # box means (exact inside the field)
    k = np.arange(1, nf - 1)
    c = sum(m[np.clip(k + j, 0, nf - 1)] for j in (-3, -2, 2, 3))
    d = p[:-2] - 2.0 * p[1:-1] + p[2:]
    w = 1.0 / c**2
    num = (w * uniform_filter(d * d, box, mode="nearest")).sum(axis=0)
    den = (w * uniform_filter(d, box, mode="nearest") ** 2).sum(axis=0)
    pooled = uniform_filter(num, pool, mode="nearest") / uniform_filter(den, pool, mode="nearest")
    return np.clip(num / den, 1.0, 9.0), np.clip(pooled, 1.0, 9.0)


def _box_eigen_noise(rng, shape: tuple[int, ...], smoothing: float) -> np.ndarray:
    """The exact distribution of a box-3 mean of one frequency's periodogram values over a
    :func:`synthetic.correlated_series` field: sum_j lambda_j E_j, E_j ~ Exp(1), with
    lambda_j the eigenvalues of the 9 pixels' correlation matrix / 9 (mean 1), drawn
    independently for every value."""
    lam = box_eigenvalues(smoothing)
    return (rng.exponential(size=(*shape, 9)) * lam).sum(axis=-1)


def box_eigenvalues(smoothing: float) -> np.ndarray:
    """The eigenvalues of a 3 x 3 box's pixels' correlation matrix over a
    :func:`synthetic.correlated_series` field, / 9 (mean 1), ascending."""
    kern = np.pad(synthetic.mixing_kernel(smoothing), 3)
    offs = [(a, b) for a in range(3) for b in range(3)]
    r = np.array(
        [
            [(kern * np.roll(kern, (a1 - a2, b1 - b2), (0, 1))).sum() for a2, b2 in offs]
            for a1, b1 in offs
        ]
    )
    return np.linalg.eigvalsh(r) / 9.0


def box3_causes_case(n_frames: int, side: int = 160, seed: int = 5, npix: int = 4000) -> dict:
    from specfit.kernels import fitting as FT

    _, values, _ = synthetic.correlated_series(
        (side, side), n_frames, 12.0, smoothing=1.0, seed=seed
    )
    freq, power, meta = T.periodograms(values, 12.0, SPECTRA)
    del values
    mean, _, count = T.box_spectra(power, 3)
    c = np.arange(4, side - 4, 5)  # box centres 5 px apart: no shared pixel
    at = (c[:, None], c[None, :])
    box_mean = mean[(slice(None), *at)].reshape(freq.size, 1, -1).astype(np.float32)
    auto = T.box_dof(power, count, 3, meta["dof"], "auto")[at].reshape(1, -1)
    per_box, pooled = _pooled_neff(power, 7)
    del power, mean
    # the same estimator, recomputed in numpy: it must give specfit's stored dof
    same = T.quantise_neff(per_box[at].reshape(1, -1), 9) * meta["dof"]
    if not np.allclose(same, auto, rtol=1e-6):
        raise RuntimeError("the numpy N_eff differs from periodogram.box_neff")
    k = synthetic.mixing_neff(1.0, 3)
    kq = float(T.quantise_neff(np.array(k), 9))
    exact, quantised = np.float32(2 * k), np.float32(2 * kq)
    rows = {
        "box means, auto (per box)": (box_mean, auto),
        "box means, true N_eff quantised": (box_mean, quantised),
        "box means, true N_eff exact": (box_mean, exact),
        "box means, N_eff pooled over 7x7 boxes": (
            box_mean,
            (2 * T.quantise_neff(pooled[at].reshape(1, -1), 9)).astype(np.float32),
        ),
    }
    truth = 30.0 * 1e-3**INDEX * freq**-INDEX + 1.0
    rng = np.random.default_rng(seed + 100)
    gamma = truth[:, None, None] * rng.gamma(k, 1.0 / k, size=(freq.size, 1, npix))
    gamma = gamma.astype(np.float32)  # one copy for both dof
    eigen = truth[:, None, None] * _box_eigen_noise(rng, (freq.size, 1, npix), 1.0)
    rows["Gamma noise, exact dof"] = (gamma, exact)
    rows["Gamma noise, quantised dof"] = (gamma, quantised)
    rows["box-mean distribution, exact dof"] = (eigen.astype(np.float32), exact)
    out: dict = {"boxes": int(box_mean.shape[2]), "frequencies": int(freq.size), "neff_true": k}
    models = resolve_models(dict(DEFAULTS.fit.models))
    opts = fit_options(DEFAULTS)
    for name, (power_, dof) in rows.items():
        res = _fit(freq, power_, dof)
        neff = np.broadcast_to(
            np.asarray(dof, dtype=np.float64) / meta["dof"], res["m1_status"].shape
        )
        out[name] = {
            "pixels": int(power_.shape[2]),
            "neff_median": float(np.median(neff)),
            "neff_share_off": float(np.mean(np.abs(neff - kq) > 1e-3)),
            **calibration(res),
        }
        if name.startswith("Gamma noise"):
            ref = FT.lrt_reference(
                freq,
                float(dof),
                *models.values(),
                "whittle",
                opts["max_iter"],
                opts["tol"],
                opts["multistart"],
            )
            out[name]["reference_q95"] = float(np.quantile(ref.null, 0.95))
            out[name]["statistic_q95"] = float(np.quantile(res["lrt_stat"], 0.95))
    return out


def box3_causes() -> dict:
    return {f"{n}": box3_causes_case(n) for n in (256, 512)}


def box3() -> dict:
    return {
        "600x256": box3_case(600, 256, seed=21, box1=False),
        "1000x512": box3_case(1000, 512, seed=31, box1=True),
    }


def windows(npix: int = 4000, n_frames: int = 600, seed: int = 5) -> dict:
    _, long, _ = synthetic.correlated_series(
        (1, npix), 4 * n_frames, 12.0, smoothing=0.0, seed=seed
    )
    values = long[3 * n_frames // 2 : 3 * n_frames // 2 + n_frames]
    out = {}
    for label, window, detrend, corrected in (
        ("none, mean", "none", "mean", True),
        ("hann, mean", "hann", "mean", True),
        ("hann, linear", "hann", "linear", True),
        ("hann, linear, uncorrected", "hann", "linear", False),
    ):
        spectra = {**SPECTRA, "window": window, "detrend": detrend}
        freq, power, meta = T.periodograms(values, 12.0, spectra)
        dof = T.fit_dof(meta["dof"], "whittle", window, n_frames) if corrected else meta["dof"]
        # uncorrected: the bins taken as independent, by the fit and by its LRT reference
        rho = T.bin_rho(window, n_frames) if corrected else np.zeros(0)
        res = _fit(freq, power.astype(np.float32), np.float32(dof), rho)
        out[label] = {"frequencies": int(freq.size), "dof": float(dof), **calibration(res)}
    return out


def _tapered_noise(rng, npix, length: int, segments: int, window: str, detrend: str) -> np.ndarray:
    """(npix, length // 2 - 1) mean of ``segments`` periodograms of unit white noise (mean or
    line removed, then Hann-windowed or not) over the white-noise expectation: written out
    with numpy's FFT here, independently of specfit's periodogram and of its LRT reference."""
    w = np.ones(length)
    if window == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    t = np.arange(length) - (length - 1) / 2.0
    acc = np.zeros((npix, length // 2 - 1))
    for _ in range(segments):
        x = rng.standard_normal((npix, length))
        x -= x.mean(axis=1, keepdims=True)
        if detrend == "linear":
            x -= np.outer((x * t).sum(axis=1) / (t * t).sum(), t)
        acc += np.abs(np.fft.rfft(x * w, axis=1)[:, 1 : length // 2]) ** 2 / (w * w).sum()
    return acc / segments


def _null_setup(length: int):
    """The default models and fit options, the solver settings of an LRT reference, M1 and
    M2, the frequencies of ``length``-sample segments at 12 s, and the p-value levels."""
    models = resolve_models(dict(DEFAULTS.fit.models))
    opts = fit_options(DEFAULTS)
    solver = (opts["max_iter"], opts["tol"], opts["multistart"])
    freq = np.arange(1, length // 2) / (length * 12.0)
    return models, opts, solver, *models.values(), freq, (0.01, 0.05, 0.2, 0.5)


def lrt_taper(npix: int = 6000, length: int = 300, seed: int = 11, big: int = 16000) -> dict:
    models, opts, solver, m1, m2, freq, levels = _null_setup(length)
    out: dict = {
        "pixels": npix, "frequencies": int(freq.size), "levels": list(levels), "big": big,
    }  # fmt: skip
    cases = (
        ("whittle", "hann", 1, "mean"),
        ("whittle", "hann", 2, "mean"),
        ("whittle", "hann", 2, "linear"),
        ("lsq_log", "hann", 2, "mean"),
        ("whittle", "none", 2, "mean"),
    )
    for i, (method, window, segments, detrend) in enumerate(cases):
        rng = np.random.default_rng(seed + i)
        truth = m1.null(freq, rng, npix)  # M1 truths as the reference draws them
        noise = _tapered_noise(rng, npix, length, segments, window, detrend)
        power = m1.evaluate(freq, truth) * noise
        dof = T.fit_dof(2.0 * segments, method, window, length)
        rho = T.bin_rho(window, length)
        res = FT.fit_block(freq, power, models, method=method, dof=dof, bin_rho=rho, **opts)
        refs = {
            "correlated": res["lrt_pvalue"],  # the run's reference (nsim 2000)
            # the same construction with 8x the statistics: less of the reference's own error
            "correlated_big": FT.lrt_reference(
                freq, float(dof), m1, m2, method, *solver, nsim=big, bin_rho=rho
            ).pvalue(res["lrt_stat"]),
        }
        if window != "none":  # before: independent bins at the likelihood's dof
            old = FT.lrt_reference(freq, float(dof), m1, m2, method, *solver)
            refs["independent"] = old.pvalue(res["lrt_stat"])
        row: dict = {"method": method, "dof": 2 * segments, "fit_dof": float(dof)}
        # M1's index against its truth: are the errors calibrated under the taper?
        ok = res["m1_status"] == 0
        i = m1.param_names.index("index")
        pull = (res["m1_index"][ok] - truth[ok, i]) / res["m1_index_err"][ok]
        row["m1_index_pull_std"] = float(np.std(pull))
        for name, p in refs.items():
            p = p[np.isfinite(p)]
            row[name] = {
                "rates": [float(np.mean(p < a)) for a in levels],
                "ks_pvalue": float(stats.kstest(p, "uniform").pvalue),
            }
        out[f"{method}, {window}, {segments} segment(s), {detrend}"] = row
    return out


def _welch_noise(rng, npix, length: int, segments: int, overlap: float, window: str):
    """(npix, length // 2 - 1) Welch average of unit white noise: ``segments`` segments
    starting every ``length - floor(overlap length)`` samples of one series, mean removed,
    Hann-windowed or not, over the white-noise expectation (numpy's FFT, not specfit's)."""
    w = np.ones(length)
    if window == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    step = length - int(np.floor(overlap * length))
    x = rng.standard_normal((npix, length + (segments - 1) * step))
    acc = np.zeros((npix, length // 2 - 1))
    for a in range(segments):
        seg = x[:, a * step : a * step + length]
        seg = seg - seg.mean(axis=1, keepdims=True)
        acc += np.abs(np.fft.rfft(seg * w, axis=1)[:, 1 : length // 2]) ** 2 / (w * w).sum()
    return acc / segments


WELCH_CASES = (("none", 0.5, 5), ("hann", 0.5, 5), ("hann", 0.75, 9))


def welch_overlap(npix: int = 6000, length: int = 300, seed: int = 41, big: int = 16000) -> dict:
    from specfit.kernels import periodogram as pg

    models, opts, solver, m1, m2, freq, levels = _null_setup(length)
    out: dict = {
        "pixels": npix, "frequencies": int(freq.size), "levels": list(levels), "big": big,
    }  # fmt: skip
    for i, (window, overlap, segments) in enumerate(WELCH_CASES):
        rng = np.random.default_rng(seed + i)
        truth = m1.null(freq, rng, npix)
        noise = _welch_noise(rng, npix, length, segments, overlap, window)
        power = m1.evaluate(freq, truth) * noise
        step = pg.segment_step(length, overlap)
        dof = pg.welch_dof(window, length, step, segments)
        row: dict = {"segments": segments, "welch_dof": float(dof)}  # the key names the overlap
        for label, bins in (
            ("overlap", (window, length, overlap, segments)),
            ("one_segment", (window, length)),  # what specfit passed before
        ):
            fdof = T.fit_dof(dof, "whittle", *bins)
            rho = T.bin_rho(*bins)
            res = FT.fit_block(freq, power, models, method="whittle", dof=fdof, bin_rho=rho, **opts)
            ok = res["m1_status"] == 0
            j = m1.param_names.index("index")
            pull = (res["m1_index"][ok] - truth[ok, j]) / res["m1_index_err"][ok]
            refs = {"run": res["lrt_pvalue"]}
            if label == "overlap":
                refs["big"] = FT.lrt_reference(
                    freq, float(fdof), m1, m2, "whittle", *solver, nsim=big, bin_rho=rho
                ).pvalue(res["lrt_stat"])
            case: dict = {
                "rho": [float(r) for r in np.pad(rho, (0, 3))[:3]],
                "vif": float(1.0 + 2.0 * np.sum(rho)),
                "fit_dof": float(fdof),
                "m1_index_pull_std": float(np.std(pull)),
            }
            for name, p in refs.items():
                p = p[np.isfinite(p)]
                case[name] = {
                    "rates": [float(np.mean(p < a)) for a in levels],
                    "ks_pvalue": float(stats.kstest(p, "uniform").pvalue),
                }
            row[label] = case
        out[f"{window}, {overlap:g}, {segments}"] = row
    return out


PARTS = {
    "interpolation": interpolation,
    "box3": box3,
    "box3_causes": box3_causes,
    "windows": windows,
    "lrt_taper": lrt_taper,
    "welch_overlap": welch_overlap,
}


def main(argv: list[str] | None = None) -> dict:
    return run_parts(PARTS, "docs/spectra_simulations.py", __doc__, argv)


if __name__ == "__main__":
    main()
