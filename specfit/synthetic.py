"""Synthetic image sequences with known per-pixel spectra (Timmer & König 1995).

Every pixel's count rate is ``I0 + x(t)`` where ``x`` has the one-sided power spectral density
``A f^-n + bump(f)`` (bump present only inside a disc: a Lorentzian in ln f, the model
``powerlaw_tail_lorentzian``), plus white noise: a small intrinsic white level and photon
(Poisson) noise on the counts ``rate * exptime``. The true tail is the sum of both white levels,
so the truth maps describe exactly what the pipeline should recover from the exposure-normalised,
resampled frames.

Irregular cadence: each frame time is jittered and a few frames are dropped (plus one short gap),
as in real AIA series. The coloured part is synthesised on a fine uniform grid, band-limited to
the nominal Nyquist frequency, and interpolated to the jittered times; the white part is drawn
per frame, so no power aliases into the band.

Normalisation: a series with one-sided PSD ``P(f)`` (units^2/Hz) sampled at ``dt`` has
periodogram ``2 dt / N |X_k|^2`` with expectation ``P(f_k)``, the "density" normalisation of
``specfit.kernels.periodogram``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specfit.config import DEFAULTS

__all__ = [
    "SyntheticData",
    "make_synthetic",
    "synthetic_maps",
    "synthetic_series",
    "open_truth",
    "correlated_series",
    "correlated_patches",
    "mixing_kernel",
    "mixing_neff",
]

START_TIME = "2024-01-01T00:00:00"


@dataclass(frozen=True)
class SyntheticData:
    """Where :func:`make_synthetic` wrote its output."""

    frames: Path  # folder of FITS frames, one per time step
    truth: Path  # truth.zarr: the true parameter maps
    n_frames: int
    shape: tuple[int, int]


def synthetic_maps(
    shape: tuple[int, int], cadence: float, exposure: float
) -> dict[str, np.ndarray]:
    """Spatially structured true parameters.

    Regions: the power-law index rises from 1.3 (bottom) to 2.3 (top); brightness (and with
    it the photon-noise tail) follows a pattern of bright "network" blobs; a disc on the right
    half carries a Lorentzian bump whose period runs from 3 to 5 minutes across it.
    """
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    v = yy / max(ny - 1, 1)
    u = xx / max(nx - 1, 1)
    index = 1.3 + 1.0 * v + 0.1 * np.sin(2 * np.pi * u)
    intensity = (
        300.0
        + 400.0 * np.exp(-(((u - 0.25) ** 2 + (v - 0.3) ** 2) / 0.02))
        + 250.0 * np.exp(-(((u - 0.3) ** 2 + (v - 0.75) ** 2) / 0.015))
    )
    # White levels (one-sided density, rate^2/Hz at the nominal cadence): photon noise of the
    # rate (variance I0/exptime) plus an intrinsic white level half as large.
    photon = 2.0 * cadence * intensity / exposure
    tail = 1.5 * photon
    # Power law meets ~40x the tail at 1 mHz.
    amplitude = 40.0 * tail * (1e-3) ** index
    disc = ((u - 0.72) ** 2 + (v - 0.5) ** 2) < 0.18**2
    period_min = 3.0 + 2.0 * np.clip((v - 0.32) / 0.36, 0, 1)
    bump_center = np.log(1.0 / (60.0 * period_min))
    bump_width = np.full(shape, 0.2)
    pl_at_bump = amplitude * np.exp(bump_center) ** (-index)
    # Strong enough to be seen in a single periodogram (chi^2_2 noise) of 600 frames.
    bump_amplitude = np.where(disc, 8.0 * pl_at_bump, 0.0)
    return {
        "amplitude": amplitude,
        "index": index,
        "tail": tail,
        "bump_amplitude": bump_amplitude,
        "bump_center": np.where(disc, bump_center, np.nan),
        "bump_width": np.where(disc, bump_width, np.nan),
        "bump_period": np.where(disc, period_min, np.nan),
        "has_bump": disc,
        "intensity": intensity,
        "photon_tail": photon,
    }


def _coloured_psd(f: np.ndarray, maps: dict[str, np.ndarray]) -> np.ndarray:
    """(npix, nf) power law + bump (no white tail) at frequencies ``f`` > 0."""
    a = maps["amplitude"].reshape(-1, 1)
    n = maps["index"].reshape(-1, 1)
    lnf = np.log(f)[None, :]
    psd = a * np.exp(-n * lnf)
    has = maps["has_bump"].reshape(-1)
    if has.any():
        alpha = maps["bump_amplitude"].reshape(-1, 1)[has]
        beta = maps["bump_center"].reshape(-1, 1)[has]
        sigma = maps["bump_width"].reshape(-1, 1)[has]
        psd[has] += alpha / (1.0 + ((lnf - beta) / sigma) ** 2)
    return psd


def synthetic_series(
    shape: tuple[int, int] = DEFAULTS.input.synthetic.shape,
    n_frames: int = DEFAULTS.input.synthetic.n_frames,
    cadence: float = DEFAULTS.input.synthetic.cadence,
    seed: int = DEFAULTS.input.synthetic.seed,
    jitter: float = 0.01,
    drop_fraction: float = 0.01,
    exposure: float = 2.9,
    exposure_jitter: float = 0.05,
    oversample: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Make an irregularly sampled cube of counts with known spectra, in memory.

    Returns
    -------
    times : (nt,) float64 seconds from the first frame (irregular, with a few dropped frames)
    counts : (nt, ny, nx) float32 detector counts (not exposure-normalised)
    exptime : (nt,) float64 exposure times in s
    truth : dict of (ny, nx) true parameter maps (see :func:`synthetic_maps`)
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    truth = synthetic_maps(shape, cadence, exposure)

    # Frame times: nominal grid, jittered, with random drops and one 3-frame gap.
    k = np.arange(n_frames, dtype=float)
    keep = rng.random(n_frames) >= drop_fraction
    gap_at = int(0.6 * n_frames)
    keep[gap_at : gap_at + 3] = False
    keep[0] = keep[-1] = True
    t_nominal = k[keep] * cadence
    t = t_nominal + rng.uniform(-jitter, jitter, t_nominal.size) * cadence
    t[0] = 0.0  # the first frame defines t = 0
    nt = t.size

    # Coloured part: Timmer & König on a fine grid twice as long (avoids periodic wrap-around),
    # band-limited to the nominal Nyquist frequency.
    dtf = cadence / oversample
    nfine = int(2 * oversample * n_frames)
    f = np.fft.rfftfreq(nfine, dtf)
    psd = np.zeros((ny * nx, f.size))
    band = (f > 0) & (f < 0.5 / cadence)
    psd[:, band] = _coloured_psd(f[band], truth)
    scale = np.sqrt(psd * nfine / (4.0 * dtf))
    spec = scale * (rng.standard_normal(psd.shape) + 1j * rng.standard_normal(psd.shape))
    fine = np.fft.irfft(spec, n=nfine, axis=1)  # (npix, nfine)
    start = nfine // 4
    tf = np.arange(nfine - start) * dtf
    # Linear interpolation onto the jittered times (the fine grid resolves the band well).
    pos = t / dtf
    i0 = np.floor(pos).astype(int)
    w = pos - i0
    x = fine[:, start + i0] * (1 - w) + fine[:, start + i0 + 1] * w  # (npix, nt)
    del fine, spec, tf

    # Intrinsic white level (density tail - photon part) drawn per frame.
    intrinsic = (truth["tail"] - truth["photon_tail"]).reshape(-1, 1)
    x += rng.standard_normal(x.shape) * np.sqrt(intrinsic / (2.0 * cadence))

    rate = truth["intensity"].reshape(-1, 1) + x
    exptime = exposure * (1.0 + rng.uniform(-exposure_jitter, exposure_jitter, nt))
    counts = rng.poisson(np.clip(rate * exptime[None, :], 0, None)).astype(np.float32)
    cube = counts.T.reshape(nt, ny, nx)
    # The photon tail the pipeline sees is the mean over frames of 2 dt I0 / exptime.
    truth["photon_tail"] = 2.0 * cadence * truth["intensity"] * np.mean(1.0 / exptime)
    truth["tail"] = truth["photon_tail"] + intrinsic.reshape(shape)
    return t, cube, exptime, truth


def _frame_header(time_iso: str, exptime: float, shape: tuple[int, int]):
    from astropy.io import fits

    ny, nx = shape
    h = fits.Header()
    h["DATE-OBS"] = time_iso
    h["EXPTIME"] = (float(exptime), "s")
    h["BUNIT"] = "DN"
    h["TELESCOP"] = "specfit"
    h["INSTRUME"] = "SYNTHETIC"
    h["WAVELNTH"] = 1600
    h["WAVEUNIT"] = "angstrom"
    h["CTYPE1"], h["CTYPE2"] = "HPLN-TAN", "HPLT-TAN"
    h["CUNIT1"], h["CUNIT2"] = "arcsec", "arcsec"
    h["CDELT1"], h["CDELT2"] = 0.6, 0.6
    h["CRPIX1"], h["CRPIX2"] = (nx + 1) / 2.0, (ny + 1) / 2.0
    h["CRVAL1"], h["CRVAL2"] = -120.0, 240.0
    h["DSUN_OBS"] = 1.4710e11
    h["HGLN_OBS"] = 0.0
    h["HGLT_OBS"] = -3.0
    h["RSUN_REF"] = 696000000.0
    return h


def make_synthetic(
    out_dir: str | Path,
    shape: tuple[int, int] = DEFAULTS.input.synthetic.shape,
    n_frames: int = DEFAULTS.input.synthetic.n_frames,
    cadence: float = DEFAULTS.input.synthetic.cadence,
    seed: int = DEFAULTS.input.synthetic.seed,
    overwrite: bool = False,
    **kwargs,
) -> SyntheticData:
    """Write a folder of synthetic FITS frames and their true parameter maps.

    Parameters
    ----------
    out_dir
        Created if needed; frames go to ``out_dir/frames/synth_NNNNN.fits`` and the truth to
        ``out_dir/truth.zarr``.
    shape, n_frames, cadence, seed
        Image size (ny, nx), nominal number of frames (a few are dropped), nominal cadence (s),
        and the random seed (the same seed gives the same files).
    overwrite
        Replace existing frames; otherwise an existing complete set made with the same
        settings is reused (other settings make the frames anew). Frames are only ever
        replaced in a folder that specfit marked as its own (``.complete``).

    Raises
    ------
    FileExistsError
        If ``out_dir`` holds ``synth_*.fits`` frames or ``truth.zarr`` without specfit's marker.
    **kwargs
        Passed to :func:`synthetic_series` (jitter, drop_fraction, exposure, ...).
    """
    import xarray as xr
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    out = Path(out_dir)
    frames = out / "frames"
    truth_path = out / "truth.zarr"
    marker = out / ".complete"
    # The marker records what the frames were made with: other settings make them anew
    # (reusing frames of another seed or size would feed the run other data than asked).
    made_with = json.dumps(
        {"shape": list(shape), "n_frames": n_frames, "cadence": cadence, "seed": seed, **kwargs},
        sort_keys=True,
        default=str,
    )
    if marker.exists() and not overwrite and marker.read_text().strip() == made_with:
        nt = len(list(frames.glob("synth_*.fits")))
        return SyntheticData(frames, truth_path, nt, tuple(shape))
    if not marker.exists() and (any(frames.glob("synth_*.fits")) or truth_path.exists()):
        # Files with specfit's names but no record that specfit made them: never delete them.
        raise FileExistsError(
            f"{out} holds synth_*.fits frames or truth.zarr that specfit has no record of making "
            f"(no {marker.name}); choose an empty folder for the synthetic frames"
        )
    frames.mkdir(parents=True, exist_ok=True)
    # Marked before the first frame is written: frames left by a killed call are specfit's.
    marker.write_text("writing\n")
    for old in frames.glob("synth_*.fits"):
        old.unlink()

    t, cube, exptime, truth = synthetic_series(shape, n_frames, cadence, seed, **kwargs)
    t0 = Time(START_TIME, scale="utc")
    isot = (t0 + TimeDelta(t, format="sec")).isot
    for i in range(t.size):
        hdr = _frame_header(isot[i], exptime[i], shape)
        fits.PrimaryHDU(cube[i], header=hdr).writeto(frames / f"synth_{i:05d}.fits", overwrite=True)

    coords = {"y": np.arange(shape[0]), "x": np.arange(shape[1])}
    ds = xr.Dataset(
        {k: (("y", "x"), np.asarray(v)) for k, v in truth.items()},
        coords=coords,
        attrs={
            "description": "true parameters of specfit.synthetic (rates in DN/s, density PSD)",
            "cadence": cadence,
            "seed": seed,
            "start_time": START_TIME,
        },
    )
    ds.to_zarr(truth_path, mode="w", consolidated=False)
    marker.write_text(made_with + "\n")
    return SyntheticData(frames, truth_path, int(t.size), tuple(shape))


def open_truth(path: str | Path):
    """Open a ``truth.zarr`` written by :func:`make_synthetic` as an xarray Dataset."""
    import xarray as xr

    return xr.open_zarr(path, consolidated=False).load()


def mixing_kernel(smoothing: float, radius: int | None = None) -> np.ndarray:
    """The spatial kernel of :func:`correlated_series`: a Gaussian of standard deviation
    ``smoothing`` px (0: none), scaled to unit sum of squares so mixing keeps the variance."""
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0 px, got {smoothing!r}")
    r = int(np.ceil(4 * smoothing)) if radius is None else int(radius)
    d = np.arange(-r, r + 1, dtype=float)
    d2 = d[:, None] ** 2 + d[None, :] ** 2
    k = np.exp(-d2 / (2 * smoothing**2)) if smoothing > 0 else (d2 == 0).astype(float)
    return k / np.sqrt((k**2).sum())


def mixing_neff(smoothing: float, box: int) -> float:
    """True effective number of independent periodograms in a full ``box`` x ``box`` mean of
    :func:`correlated_series`: ``N^2 / sum_ij r_ij^2``, with ``r_ij`` the correlation of the
    series of pixels i and j (that of their periodogram values is ``r_ij^2``, at every
    frequency, for Gaussian series)."""
    k = mixing_kernel(smoothing)
    offsets = [(a, b) for a in range(box) for b in range(box)]
    pad = np.pad(k, box)
    total = 0.0
    for a1, b1 in offsets:
        for a2, b2 in offsets:
            dy, dx = a1 - a2, b1 - b2
            shifted = np.roll(np.roll(pad, dy, 0), dx, 1)
            total += float((pad * shifted).sum()) ** 2
    return box**4 / total


def correlated_series(
    shape: tuple[int, int],
    n_frames: int,
    cadence: float,
    *,
    index: float = 2.0,
    tail: float = 1.0,
    ratio: float = 30.0,
    smoothing: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Red noise on a uniform grid whose neighbouring pixels are correlated, with known truth.

    Every pixel's series has the one-sided PSD ``A f^-index + tail`` (the model
    ``powerlaw_tail``), with the power law ``ratio`` x the tail at 1 mHz. Independent Gaussian
    series are drawn (Timmer & König, periodic over the ``n_frames`` samples, so periodograms
    without a window do not leak) and mixed spatially by :func:`mixing_kernel`: every pixel
    keeps its PSD, and pixels ``d`` apart are correlated by the kernel's autocorrelation at
    ``d`` (:func:`mixing_neff` gives the resulting effective number of independent spectra in
    a box; ``smoothing=1`` px: 2.5 of 9 in box 3; 0: independent pixels).

    Returns
    -------
    times : (n_frames,) float64 seconds
    values : (n_frames, ny, nx) float64
    truth : dict of (ny, nx) maps ``amplitude``, ``index``, ``tail``
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    k = mixing_kernel(smoothing)
    r = k.shape[0] // 2
    f = np.fft.rfftfreq(n_frames, cadence)
    amplitude = ratio * tail * 1e-3**index
    psd = np.zeros(f.size)
    psd[1:] = amplitude * f[1:] ** -index + tail
    # |X_k|^2 = N psd / (2 dt) has expectation psd in the density normalisation
    scale = np.sqrt(psd * n_frames / (4.0 * cadence))
    gy, gx = ny + 2 * r, nx + 2 * r
    z = scale[:, None, None] * (
        rng.standard_normal((f.size, gy, gx)) + 1j * rng.standard_normal((f.size, gy, gx))
    )
    z[0] = 0.0
    if n_frames % 2 == 0:
        z[-1] = z[-1].real * np.sqrt(2.0)  # the Nyquist bin of a real series is real
    white = np.fft.irfft(z, n=n_frames, axis=0)
    del z
    # 2-D convolution by the kernel ('valid' part): a sum of shifted fields, exact and small
    values = np.zeros((n_frames, ny, nx))
    for a in range(2 * r + 1):
        for b in range(2 * r + 1):
            if k[a, b] != 0.0:
                values += k[a, b] * white[:, a : a + ny, b : b + nx]
    times = np.arange(n_frames) * float(cadence)
    truth = {
        "amplitude": np.full(shape, amplitude),
        "index": np.full(shape, float(index)),
        "tail": np.full(shape, float(tail)),
    }
    return times, values, truth


def correlated_patches(
    n: int, n_frames: int, cadence: float, *, smoothing: float = 1.0, seed: int = 0
) -> np.ndarray:
    """``n`` independent 3 x 3 patches of a :func:`correlated_series` field, side by side.

    Returns (n_frames, 3, 5 n) values: the patches' centres are at column ``2 + 5 i`` of
    row 1, 5 px apart, so full box-3 means centred there share no pixel and, beyond the
    kernel's reach, no noise. Drawn 100 patches at a time (memory).
    """
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(0, n, 100):
        m = min(100, n - i)
        s = int(rng.integers(2**31))
        _, v, _ = correlated_series((3, 5 * m), n_frames, cadence, smoothing=smoothing, seed=s)
        parts.append(v)
    return np.concatenate(parts, axis=2)
