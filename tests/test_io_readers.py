"""Readers: real files in ../shared/data (skipped when absent) and small synthetic files."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.time import Time, TimeDelta

from specfit.config import InputConfig
from specfit.errors import InputError
from specfit.io import detect_kind, frame_times, open_input

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
AIA_FITS = DATA / "aia1600_20120606" / "fits"
AIA_JPG = DATA / "aia1600_20120606" / "jpg"
IRIS = DATA / "iris_sji_20140329"
IRIS_1400 = IRIS / "iris_l2_20140329_140938_3860258481_SJI_1400_t000.fits"
IRIS_2796 = IRIS / "iris_l2_20140329_140938_3860258481_SJI_2796_t000_deconvolved.fits"

needs_aia = pytest.mark.skipif(
    not AIA_FITS.is_dir(), reason=f"real AIA data not found at {AIA_FITS} (../shared/data)"
)
needs_jpg = pytest.mark.skipif(
    not AIA_JPG.is_dir(), reason=f"real AIA JPGs not found at {AIA_JPG} (../shared/data)"
)
needs_iris = pytest.mark.skipif(
    not IRIS_1400.is_file(), reason=f"real IRIS cubes not found at {IRIS} (../shared/data)"
)


# ----------------------------------------------------------------------------- helpers
def _hpc_header(ny: int, nx: int, date_obs: str, exptime: float | None = 2.0) -> fits.Header:
    h = fits.Header()
    h["DATE-OBS"] = date_obs
    if exptime is not None:
        h["EXPTIME"] = exptime
    h["BUNIT"] = "DN"
    h["CTYPE1"], h["CTYPE2"] = "HPLN-TAN", "HPLT-TAN"
    h["CUNIT1"], h["CUNIT2"] = "arcsec", "arcsec"
    h["CDELT1"], h["CDELT2"] = 0.5, 0.5
    h["CRPIX1"], h["CRPIX2"] = 3.0, 2.0
    h["CRVAL1"], h["CRVAL2"] = 100.0, -50.0
    h["DSUN_OBS"], h["HGLN_OBS"], h["HGLT_OBS"], h["RSUN_REF"] = 1.5e11, 0.0, 1.0, 6.96e8
    return h


def _write_series(folder: Path, nt: int = 6, ny: int = 5, nx: int = 7, seed: int = 1):
    """Frames with shuffled file order vs time, so sorting is exercised; returns truth."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    secs = np.concatenate([[0.0], np.cumsum(rng.uniform(10, 14, nt - 1))])
    t0 = Time("2020-01-01T00:00:00", scale="utc")
    data = rng.normal(100, 10, (nt, ny, nx)).astype(np.float32)
    exps = rng.uniform(1.5, 2.5, nt)
    names = rng.permutation(nt)  # file name order differs from time order
    for i in range(nt):
        h = _hpc_header(ny, nx, (t0 + TimeDelta(secs[i], format="sec")).isot, float(exps[i]))
        fits.PrimaryHDU(data[i], header=h).writeto(folder / f"f{names[i]:03d}.fits")
    return secs - secs[0], data, exps


# ----------------------------------------------------------------------------- synthetic
def test_fits_series_sorted_normalised_lazy(tmp_path):
    secs, data, exps = _write_series(tmp_path / "s")
    da_ = open_input(InputConfig(path=str(tmp_path / "s")))
    assert da_.name == "intensity" and da_.dims == ("time", "y", "x")
    assert da_.dtype == np.float32 and da_.attrs["kind"] == "fits_series"
    # A few frames per dask chunk (task): all six here (up to 16 frames, ~16 MB a chunk).
    assert da_.data.chunks[0] == (len(secs),)
    # DATE-OBS strings carry milliseconds.
    np.testing.assert_allclose(da_["time"].values, secs, atol=1e-3)
    np.testing.assert_allclose(da_["exposure"].values, exps)
    np.testing.assert_allclose(da_.values, data / exps[:, None, None], rtol=1e-6)
    assert da_.attrs["bunit"] == "DN / s"
    assert da_.attrs["start_time"].startswith("2020-01-01T00:00:00")
    np.testing.assert_array_equal(frame_times(da_)[0], np.datetime64("2020-01-01T00:00:00", "ns"))
    # hpc from the TAN WCS: near the reference pixel the projection is ~linear in CDELT.
    assert da_["hpc_x"].values[1, 2] == pytest.approx(100.0, abs=1e-6)
    assert da_["hpc_y"].values[1, 2] == pytest.approx(-50.0, abs=1e-6)
    assert da_["hpc_x"].values[1, 3] - da_["hpc_x"].values[1, 2] == pytest.approx(0.5, rel=1e-3)
    # Lazy: the data of a file is read only at compute time, so deleting one fails then.
    for f in glob.glob(str(tmp_path / "s" / "*.fits")):
        os.remove(f)
    with pytest.raises(InputError, match=r"\.fits: the file no longer exists"):
        _ = da_.isel(time=0).values


def test_fits_series_without_normalisation_and_missing(tmp_path):
    secs, data, exps = _write_series(tmp_path / "s")
    cfg = InputConfig(path=str(tmp_path / "s"), normalise_exposure=False, missing_below=95.0)
    out = open_input(cfg).values
    expect = np.where(data < 95.0, np.nan, data)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expect))
    np.testing.assert_allclose(out, expect, equal_nan=True)


def test_fits_int16_blank_and_bscale(tmp_path):
    ny, nx = 4, 5
    raw = np.arange(ny * nx, dtype=np.int16).reshape(ny, nx)
    raw[0, 0] = -32768
    for i in range(2):
        h = _hpc_header(ny, nx, f"2021-05-01T00:00:{10 * i:02d}", 2.0)
        h["BLANK"] = -32768
        fits.PrimaryHDU(raw, header=h).writeto(tmp_path / f"a{i}.fits")
    out = open_input(InputConfig(path=str(tmp_path))).values
    assert np.isnan(out[:, 0, 0]).all()
    np.testing.assert_allclose(out[0].ravel()[1:], raw.ravel()[1:] / 2.0)
    # Scaled integers (BZERO/BSCALE): physical = raw * BSCALE + BZERO, BLANK still NaN.
    sub = tmp_path / "scaled"
    sub.mkdir()
    for i in range(2):
        h = _hpc_header(ny, nx, f"2021-05-01T00:00:{10 * i:02d}", 1.0)
        hdu = fits.PrimaryHDU(raw.copy(), header=h)
        hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.5, 10.0, -32768
        hdu.writeto(sub / f"b{i}.fits")
    out = open_input(InputConfig(path=str(sub))).values
    assert np.isnan(out[:, 0, 0]).all()
    np.testing.assert_allclose(out[1].ravel()[1:], raw.ravel()[1:] * 0.5 + 10.0)


def test_fits_series_errors_name_file_and_fix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_input(InputConfig(path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no FITS or image files"):
        open_input(InputConfig(path=str(tmp_path / "empty")))
    with pytest.raises(InputError, match="no input files"):
        open_input(InputConfig(path=str(tmp_path / "empty"), kind="fits_series"))
    # Inconsistent shapes.
    d = tmp_path / "shapes"
    _write_series(d, nt=3)
    fits.PrimaryHDU(
        np.zeros((6, 7), np.float32), header=_hpc_header(6, 7, "2020-01-01T01:00:00")
    ).writeto(d / "odd.fits")
    with pytest.raises(InputError, match=r"odd\.fits.*differs"):
        open_input(InputConfig(path=str(d)))
    # Missing time key.
    d = tmp_path / "notime"
    _write_series(d, nt=3)
    h = _hpc_header(5, 7, "x")
    del h["DATE-OBS"]
    fits.PrimaryHDU(np.zeros((5, 7), np.float32), header=h).writeto(d / "zz.fits")
    with pytest.raises(InputError, match=r"zz\.fits.*input\.time_key"):
        open_input(InputConfig(path=str(d)))
    # Unreadable header.
    d = tmp_path / "broken"
    _write_series(d, nt=3)
    (d / "bad.fits").write_bytes(b"this is not a FITS file at all" * 10)
    with pytest.raises(InputError, match=r"bad\.fits.*cannot read"):
        open_input(InputConfig(path=str(d), kind="fits_series"))
    # Missing exposure with normalisation on; fine with it off.
    d = tmp_path / "noexp"
    d.mkdir()
    for i in range(2):
        fits.PrimaryHDU(
            np.ones((3, 3), np.float32), header=_hpc_header(3, 3, f"2020-01-01T00:00:0{i}", None)
        ).writeto(d / f"n{i}.fits")
    with pytest.raises(InputError, match="normalise_exposure"):
        open_input(InputConfig(path=str(d)))
    out = open_input(InputConfig(path=str(d), normalise_exposure=False))
    assert "exposure" not in out.coords and out.attrs["exposure_normalised"] is False
    # Duplicate times.
    fits.PrimaryHDU(
        np.ones((3, 3), np.float32), header=_hpc_header(3, 3, "2020-01-01T00:00:00", None)
    ).writeto(d / "n9.fits")
    with pytest.raises(InputError, match="same time"):
        open_input(InputConfig(path=str(d), normalise_exposure=False))
    # An exposure that is not a number, or a card astropy cannot parse: named, no traceback;
    # with normalisation off the frames are read (that frame's exposure NaN).
    for name, card in (("text", "EXPTIME = '2.0s'"), ("garbled", "EXPTIME =                  NaN")):
        d = tmp_path / name
        _write_series(d, nt=3)
        f = sorted(d.glob("*.fits"))[1]
        raw = bytearray(f.read_bytes())
        i = raw.index(b"EXPTIME =")
        raw[i : i + 80] = card.ljust(80).encode()
        f.write_bytes(bytes(raw))
        want = "'2.0s'" if name == "text" else "unreadable card"
        with pytest.raises(InputError, match=rf"{f.name}: header key EXPTIME .*{want}"):
            open_input(InputConfig(path=str(d)))
        out = open_input(InputConfig(path=str(d), normalise_exposure=False))
        assert np.isnan(out["exposure"].values).sum() == 1


def test_reads_lead_synthetic_writer(tmp_path):
    from specfit.synthetic import make_synthetic

    syn = make_synthetic(tmp_path / "syn", shape=(6, 8), n_frames=20, cadence=12.0, seed=3)
    da_ = open_input(InputConfig(path=str(syn.frames)))
    assert da_.shape == (syn.n_frames, 6, 8)
    files = sorted(glob.glob(str(Path(syn.frames) / "*.fits")))
    with fits.open(files[0]) as h:
        ref = h[0].data.astype(np.float32) / np.float32(h[0].header["EXPTIME"])
    np.testing.assert_allclose(da_.isel(time=0).values, ref, rtol=1e-6)
    assert np.all(np.diff(da_["time"].values) > 0)
    assert "hpc_x" in da_.coords and da_.attrs["instrument"] == "specfit SYNTHETIC"


def _write_iris_like(path: Path, nt=5, ny=4, nx=6, extra_rows=7, seed=2):
    rng = np.random.default_rng(seed)
    cube = rng.normal(50, 5, (nt, ny, nx)).astype(np.float32)
    cube[:, 0, :] = -200.0  # IRIS-style missing-pixel sentinel
    h = fits.Header()
    h["STARTOBS"] = "2014-03-29T14:09:38.830"
    h["EXPTIME"] = 4.0
    h["BUNIT"] = "Corrected DN"
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "HPLN-TAN", "HPLT-TAN", "Time"
    h["CUNIT1"], h["CUNIT2"] = "arcsec", "arcsec"
    h["CDELT1"], h["CDELT2"], h["CRPIX1"], h["CRPIX2"] = 0.2, 0.2, 1.0, 1.0
    h["CRVAL1"], h["CRVAL2"] = 500.0, 280.0
    # Irregular times and more table rows than frames, as in the truncated IRIS test files.
    aux = np.zeros((nt + extra_rows, 4))
    aux[:, 0] = 0.1 + np.cumsum(
        np.r_[0, np.tile([18.7, 37.5], nt + extra_rows)[: nt + extra_rows - 1]]
    )
    aux[:, 3] = rng.uniform(3, 5, nt + extra_rows)
    ah = fits.Header()
    ah["TIME"], ah["EXPTIMES"] = 0, 3
    fits.HDUList([fits.PrimaryHDU(cube, header=h), fits.ImageHDU(aux, header=ah)]).writeto(path)
    return cube, aux[:nt]


def test_fits_cube_iris_layout(tmp_path):
    cube, aux = _write_iris_like(tmp_path / "c.fits")
    assert "missing_below" not in open_input(InputConfig(path=str(tmp_path / "c.fits"))).attrs
    cfg = InputConfig(path=str(tmp_path / "c.fits"), missing_below=-100)
    assert detect_kind(cfg) == "fits_cube"
    da_ = open_input(cfg)
    np.testing.assert_allclose(da_["time"].values, aux[:, 0] - aux[0, 0], atol=1e-6)
    assert da_.attrs["start_time"].startswith("2014-03-29T14:09:38.930")
    np.testing.assert_allclose(da_["exposure"].values, aux[:, 3])
    out = da_.values
    assert np.isnan(out[:, 0, :]).all()
    np.testing.assert_allclose(out[:, 1:], cube[:, 1:] / aux[:, 3, None, None], rtol=1e-6)
    assert da_["hpc_x"].values[0, 0] == pytest.approx(500.0, abs=1e-6)


def test_max_frames_gives_the_reference_of_the_frames_kept(tmp_path):
    """input.max_frames cut the series after the reader had taken the middle of all the
    frames as the reference: its WCS, hpc_x/hpc_y and reference_index (which coalign reads:
    beyond the frames kept it failed with an IndexError) came from a frame the run does not
    use, so a run with max_frames differed from one on those frames alone (a helper's
    finding: m1_index up to 0.0011 on AIA). Now the middle of the frames kept."""
    t0 = Time("2020-01-01T00:00:00", scale="utc")
    rng = np.random.default_rng(4)
    for name, n in (("all", 12), ("first", 5)):
        (tmp_path / name).mkdir()
        for i in range(n):
            h = _hpc_header(5, 7, (t0 + TimeDelta(12.0 * i, format="sec")).isot)
            h["CRVAL1"] = 100.0 + 3.0 * i  # the pointing drifts
            data = rng.normal(100, 10, (5, 7)).astype(np.float32)
            fits.PrimaryHDU(data, header=h).writeto(tmp_path / name / f"f{i:03d}.fits")
    cut = open_input(InputConfig(path=str(tmp_path / "all"), max_frames=5))
    alone = open_input(InputConfig(path=str(tmp_path / "first")))
    assert cut.attrs["reference_index"] == alone.attrs["reference_index"] == 2
    assert cut.attrs["wcs_header"] == alone.attrs["wcs_header"]
    np.testing.assert_array_equal(cut["hpc_x"].values, alone["hpc_x"].values)
    # a cube (IRIS layout): its reference time and index from the frames kept too
    _write_iris_like(tmp_path / "c.fits", nt=12, extra_rows=0)
    whole = open_input(InputConfig(path=str(tmp_path / "c.fits")))
    cut = open_input(InputConfig(path=str(tmp_path / "c.fits"), max_frames=4))
    assert whole.attrs["reference_index"] == 6 and cut.attrs["reference_index"] == 2
    assert cut.attrs["wcs_header"] != whole.attrs["wcs_header"]  # its DATE-OBS
    from specfit.prep.coalign import coalign

    aligned = coalign(cut).values  # an IndexError before: frame 6 of 4
    assert aligned.shape == cut.shape and np.isfinite(aligned).any()


def test_fits_cube_linear_time_axis_and_npy_times(tmp_path):
    cube = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    h = fits.Header()
    h["DATE-OBS"], h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = (
        "2020-02-02T00:00:00",
        "Time",
        0.0,
        5.0,
        1.0,
    )
    fits.PrimaryHDU(cube, header=h).writeto(tmp_path / "lin.fits")
    da_ = open_input(InputConfig(path=str(tmp_path / "lin.fits"), normalise_exposure=False))
    np.testing.assert_allclose(da_["time"].values, [0, 5, 10, 15])
    np.testing.assert_array_equal(da_.values, cube)
    # .npy times override; unsorted times are sorted with the frames.
    np.save(tmp_path / "t.npy", np.array([0.0, 30.0, 10.0, 20.0]))
    da2 = open_input(
        InputConfig(
            path=str(tmp_path / "lin.fits"), times=str(tmp_path / "t.npy"), normalise_exposure=False
        )
    )
    np.testing.assert_allclose(da2["time"].values, [0, 10, 20, 30])
    np.testing.assert_array_equal(da2.values, cube[[0, 2, 3, 1]])
    # No times at all: a clear error.
    fits.PrimaryHDU(cube).writeto(tmp_path / "bare.fits")
    with pytest.raises(InputError, match=r"bare\.fits.*input\.times"):
        open_input(InputConfig(path=str(tmp_path / "bare.fits")))


def test_a_time_axis_in_minutes_or_ms_is_read_in_seconds(tmp_path):
    """CUNIT3 of a FITS cube's linear time axis, and a Zarr time coordinate's units attr, were
    ignored: 0.4 min per frame gave a cadence of 0.4 s (frequencies 60x too high), 24000 ms
    one of 24000 s, silently (input reviewer). They are converted; a unit that is not one of
    time is refused naming the key."""
    cube = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    for unit, step in (("min", 0.4), ("ms", 24000.0), ("s", 24.0), ("DN", 24.0)):
        h = fits.Header()
        h["DATE-OBS"], h["CTYPE3"], h["CUNIT3"], h["CDELT3"] = "2020-02-02", "Time", unit, step
        path = tmp_path / f"c_{unit}.fits"
        fits.PrimaryHDU(cube, header=h).writeto(path)
        cfg = InputConfig(path=str(path), normalise_exposure=False)
        if unit == "DN":
            with pytest.raises(InputError, match=r"c_DN\.fits: header key CUNIT3.*'DN'"):
                open_input(cfg)
            continue
        np.testing.assert_allclose(open_input(cfg)["time"].values, [0, 24, 48, 72])
    # a cube whose time axis is FITS axis 1 (numpy last) was read with its rows as frames
    # when input.times happened to match NAXIS3 (input reviewer): refused, naming the axis
    h = fits.Header()
    h["DATE-OBS"], h["CTYPE1"], h["CDELT1"] = "2020-02-02", "TIME", 24.0
    fits.PrimaryHDU(np.moveaxis(cube, 0, -1), header=h).writeto(tmp_path / "last.fits")
    np.save(tmp_path / "t3.npy", np.arange(3) * 24.0)  # as many as NAXIS3 (y)
    for times in (None, str(tmp_path / "t3.npy")):
        with pytest.raises(InputError, match=r"last\.fits: the time axis is FITS axis 1"):
            open_input(InputConfig(path=str(tmp_path / "last.fits"), times=times))
    arr = xr.DataArray(
        cube,
        dims=("time", "y", "x"),
        coords={"time": ("time", np.arange(4) * 0.4, {"units": "min"})},
        name="intensity",
    )
    arr.to_dataset().to_zarr(tmp_path / "m.zarr", mode="w", consolidated=False)
    got = open_input(InputConfig(path=str(tmp_path / "m.zarr"), normalise_exposure=False))
    np.testing.assert_allclose(got["time"].values, [0, 24, 48, 72])


def test_a_zarr_cube_with_exposures_is_normalised_as_fits_input_is(tmp_path):
    """A Zarr input's exposure coordinate was kept but not divided out, though
    input.normalise_exposure is true by default (input reviewer): the values stayed per frame
    while a FITS series of the same frames is per second. Now divided, bunit '/ s'; a store
    saying exposure_normalised, or normalise_exposure: false, is left as it is."""
    cube = np.full((4, 3, 2), 10.0, dtype=np.float32)
    exposure = np.array([2.0, 2.0, 4.0, 2.0])
    arr = xr.DataArray(
        cube,
        dims=("time", "y", "x"),
        coords={"time": np.arange(4) * 12.0, "exposure": ("time", exposure)},
        name="intensity",
        attrs={"bunit": "DN"},
    )
    arr.to_dataset().to_zarr(tmp_path / "e.zarr", mode="w", consolidated=False)
    got = open_input(InputConfig(path=str(tmp_path / "e.zarr")))
    np.testing.assert_allclose(got.values[:, 0, 0], 10.0 / exposure)
    assert got.attrs["bunit"] == "DN / s" and got.attrs["exposure_normalised"]
    raw = open_input(InputConfig(path=str(tmp_path / "e.zarr"), normalise_exposure=False))
    np.testing.assert_allclose(raw.values, cube)
    arr.attrs["exposure_normalised"] = True
    arr.to_dataset().to_zarr(tmp_path / "n.zarr", mode="w", consolidated=False)
    np.testing.assert_allclose(open_input(InputConfig(path=str(tmp_path / "n.zarr"))).values, cube)


def test_npy_and_zarr(tmp_path):
    rng = np.random.default_rng(5)
    cube = rng.normal(size=(7, 3, 4)).astype(np.float64)
    cube[2, 1, 1] = np.inf
    np.save(tmp_path / "c.npy", cube)
    np.save(tmp_path / "t.npy", np.arange(7) * 3.0 + 100.0)
    cfg = InputConfig(path=str(tmp_path / "c.npy"), times=str(tmp_path / "t.npy"))
    da_ = open_input(cfg)
    assert da_.attrs["kind"] == "array" and da_.dtype == np.float32
    np.testing.assert_allclose(da_["time"].values, np.arange(7) * 3.0)
    out = da_.values
    assert np.isnan(out[2, 1, 1]) and np.isfinite(out).sum() == out.size - 1
    with pytest.raises(InputError, match="input.times"):
        open_input(InputConfig(path=str(tmp_path / "c.npy")))
    # relative times listed out of order: the earliest frame is at the nominal start that
    # time_note names (it was one listed step before it)
    assert da_.attrs["start_time"].startswith("2000-01-01T00:00:00")
    np.save(tmp_path / "t_shuffled.npy", np.array([9.0, 0.0, 3.0, 6.0, 12.0, 15.0, 18.0]))
    shuffled = open_input(InputConfig(path=cfg.path, times=str(tmp_path / "t_shuffled.npy")))
    assert shuffled.attrs["start_time"].startswith("2000-01-01T00:00:00"), shuffled.attrs
    assert "2000-01-01T00:00:00" in shuffled.attrs["time_note"]
    np.testing.assert_array_equal(shuffled.values[0], out[1])
    # a computed cube keeps an all-zero frame (a base difference's first), unlike a FITS dropout
    np.save(tmp_path / "d.npy", cube - cube[:1])
    diff = open_input(InputConfig(path=str(tmp_path / "d.npy"), times=cfg.times)).values
    assert (diff[0] == 0).all()
    # complex (or boolean) values are not intensities: refused, not silently cut to reals
    for name, bad in (("z", cube + 1j), ("b", cube > 0)):
        np.save(tmp_path / f"{name}.npy", bad)
        with pytest.raises(InputError, match=rf"{name}.npy: the intensities are (complex|bool)"):
            open_input(InputConfig(path=str(tmp_path / f"{name}.npy"), times=cfg.times))
    # Zarr round trip of the DataArray (what a cube.zarr holds).
    da_.to_dataset().to_zarr(tmp_path / "c.zarr", mode="w", consolidated=False)
    back = open_input(InputConfig(path=str(tmp_path / "c.zarr")))
    assert back.attrs["kind"] == "zarr"
    assert back.attrs["start_time"] == da_.attrs["start_time"]
    np.testing.assert_allclose(back["time"].values, da_["time"].values)
    np.testing.assert_array_equal(back.values, out)


def test_images_times_from_names_csv_exif(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 255, (3, 4, 5, 3), dtype=np.uint8)
    names = ["img_20200101_00_00_20.png", "img_20200101_00_00_00.png", "img_20200101_00_00_10.png"]
    for a, n in zip(rgb, names, strict=True):
        Image.fromarray(a).save(tmp_path / n)
    cfg = InputConfig(path=str(tmp_path), pattern="*.png", time_pattern="img_%Y%m%d_%H_%M_%S.png")
    da_ = open_input(cfg)
    np.testing.assert_allclose(da_["time"].values, [0, 10, 20])
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(da_.values, grey[[1, 2, 0]], rtol=1e-5)
    with pytest.raises(InputError, match="time_pattern"):
        open_input(InputConfig(path=str(tmp_path), pattern="*.png", time_pattern="x_%Y.png"))
    # CSV times (ISO) in a different order again.
    csv = tmp_path / "times.csv"
    csv.write_text(
        "file,time\n"
        + "\n".join(f"{n},2020-01-01T00:01:{s:02d}" for n, s in zip(names, [5, 0, 30], strict=True))
    )
    da_ = open_input(
        InputConfig(path=str(tmp_path), pattern="*.png", times_csv=str(csv), time_source="csv")
    )
    np.testing.assert_allclose(da_["time"].values, [0, 5, 30])
    np.testing.assert_allclose(da_.values, grey[[1, 0, 2]], rtol=1e-5)
    # EXIF DateTimeOriginal in JPEGs.
    jd = tmp_path / "jpg"
    jd.mkdir()
    for i in range(3):
        im = Image.fromarray(rgb[i])
        ex = Image.Exif()
        ex.get_ifd(0x8769)[36867] = f"2019:07:0{i + 1} 12:00:00"
        im.save(jd / f"p{i}.jpg", exif=ex)
    da_ = open_input(InputConfig(path=str(jd)))
    np.testing.assert_allclose(da_["time"].values, [0, 86400, 2 * 86400])
    assert da_.attrs["start_time"].startswith("2019-07-01T12:00:00")
    # No EXIF and no pattern: a clear error.
    with pytest.raises(InputError, match="EXIF"):
        open_input(InputConfig(path=str(tmp_path), pattern="*.png"))


def test_a_truncated_image_frame_is_refused_before_any_work(tmp_path):
    """A PNG, JPEG or TIFF frame cut short (an interrupted copy) was found only when the cube
    was written, after the frames before it; now opening the input names it (TIFF from the
    strips its directory lists: a helper found a cut TIFF failing the run after ingest had
    begun). Complete files with data after their end (a camera's trailer) still open, and
    nothing is decoded for files that end as they should."""
    from PIL import Image

    from specfit.io import images

    rng = np.random.default_rng(3)
    for suffix in ("png", "jpg", "tif"):
        d = tmp_path / suffix
        d.mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(
                d / f"f_20200101_00_00_{10 * i:02d}.{suffix}"
            )
        cfg = InputConfig(path=str(d), time_pattern=f"f_%Y%m%d_%H_%M_%S.{suffix}")
        assert open_input(cfg).shape == (4, 40, 50)
        last = d / f"f_20200101_00_00_30.{suffix}"
        whole = last.read_bytes()
        last.write_bytes(whole + b"camera trailer" * 10)
        assert open_input(cfg).shape == (4, 40, 50)
        last.write_bytes(whole[: len(whole) * 2 // 3])
        assert not images._looks_complete(str(last))
        with pytest.raises(InputError, match=rf"{last.name}: cannot read the image"):
            open_input(cfg)


# ----------------------------------------------------------------------------- real data
@needs_aia
@pytest.mark.realdata
def test_real_aia_fits_series():
    import warnings

    with warnings.catch_warnings():
        # 124 frames carry QUALITY bits 8-11, 18 or 21: none of the default quality_bits
        warnings.simplefilter("error", UserWarning)
        da_ = open_input(InputConfig(path=str(AIA_FITS)))
    with pytest.warns(UserWarning, match=r"left out 112 of 596 frames whose QUALITY has bit 18"):
        assert open_input(InputConfig(path=str(AIA_FITS), quality_bits=[18])).shape[0] == 484
    # 16 frames (2.9 MB) per dask chunk: 37 chunks of 16 and one of 4.
    assert da_.shape == (596, 164, 287) and da_.data.chunks[0] == (16,) * 37 + (4,)
    dt = np.diff(da_["time"].values)
    # Cadence 24 s with one 48 s and one 96 s gap (data README).
    assert np.median(dt) == pytest.approx(24.0, abs=0.1)
    assert sorted(np.round(dt[dt > 30]).tolist()) == [48.0, 96.0]
    assert da_.attrs["start_time"] == "2012-06-06T05:00:18.570Z"  # T_OBS of the first frame
    files = sorted(glob.glob(str(AIA_FITS / "*.fits")))
    with fits.open(files[10]) as h:
        raw = h[0].data.astype(np.float32)
        blank = h[0].header["BLANK"]
        expect = np.where(h[0].data == blank, np.nan, raw / np.float32(h[0].header["EXPTIME"]))
    np.testing.assert_allclose(da_.isel(time=10).values, expect, rtol=1e-6)
    # docs/data.md: the frames with a nonzero QUALITY (bits 8-11/18/21, then 21 alone) have
    # the field's mean count rates of the others
    from conftest import assert_docs_quote

    quality = np.array([fits.getheader(f).get("QUALITY", 0) for f in files])
    rates = da_.mean(("y", "x")).values  # frames in time order; the files are named by time
    groups = [quality & ~(1 << 21) != 0, quality == 1 << 21, quality == 0]
    assert [int(g.sum()) for g in groups] == [112, 12, 472]
    lo_hi = [f"{rates[g].min():.1f}–{rates[g].max():.1f}" for g in groups]
    assert_docs_quote(
        "data.md",
        f"their mean count rates, {lo_hi[0]} and {lo_hi[1]} DN/s, are close to those of the "
        f"frames with `QUALITY` 0 ({lo_hi[2]})",
    )
    # hpc against sunpy's own WCS handling of the reference (middle) frame.
    import sunpy.map

    ref = da_.attrs["reference_index"]
    m = sunpy.map.Map(str(AIA_FITS / da_.attrs["files"][ref]))
    import astropy.units as u

    c = m.pixel_to_world([0, 286] * u.pix, [0, 163] * u.pix)
    np.testing.assert_allclose(
        da_["hpc_x"].values[[0, 163], [0, 286]], c.Tx.to_value("arcsec"), atol=1e-3
    )
    np.testing.assert_allclose(
        da_["hpc_y"].values[[0, 163], [0, 286]], c.Ty.to_value("arcsec"), atol=1e-3
    )
    assert da_.attrs["instrument"].startswith("SDO/AIA") and da_.attrs["wavelength"] == 1600


@needs_jpg
@pytest.mark.realdata
def test_real_aia_jpg_sequence():
    cfg = InputConfig(path=str(AIA_JPG), time_pattern="1600_%Y%m%d_%H_%M_%S.jpg")
    da_ = open_input(cfg)
    assert da_.shape == (596, 164, 287) and da_.attrs["kind"] == "images"
    assert da_.data.numblocks == (596, 1, 1)
    frame = da_.isel(time=0).values
    from PIL import Image

    with Image.open(AIA_JPG / "1600_20120606_05_00_19.jpg") as im:
        ref = np.asarray(im.convert("L"), dtype=np.float32)
    # PIL's L conversion rounds the same BT.601 luma to integers.
    assert np.abs(frame - ref).max() <= 1.0
    if AIA_FITS.is_dir():
        fits_t = open_input(InputConfig(path=str(AIA_FITS)))
        abs_jpg = frame_times(da_).astype("datetime64[ms]").astype(float)
        abs_fit = frame_times(fits_t).astype("datetime64[ms]").astype(float)
        # File names carry whole seconds; T_OBS has hundredths.
        assert np.abs(abs_jpg - abs_fit).max() <= 1000.0


@needs_iris
@pytest.mark.realdata
@pytest.mark.parametrize("path,nt", [(IRIS_1400, 54), (IRIS_2796, 72)])
def test_real_iris_cubes(path, nt):
    da_ = open_input(InputConfig(path=str(path), missing_below=-100))
    assert da_.shape == (nt, 109, 110) and da_.attrs["kind"] == "fits_cube"
    assert 1 < da_.data.numblocks[0] < nt  # a few frames per chunk
    with fits.open(path) as h:
        raw = h[0].data[:nt].astype(np.float32)
        aux = h[1].data
        tcol, ecol = h[1].header["TIME"], h[1].header["EXPTIMES"]
        start = Time(h[0].header["STARTOBS"], scale="utc")
    np.testing.assert_allclose(da_["time"].values, aux[:nt, tcol] - aux[0, tcol], atol=1e-6)
    t0 = Time(da_.attrs["start_time"].rstrip("Z"), scale="utc")
    assert abs((t0 - start).to_value("s") - aux[0, tcol]) < 1e-3
    expect = np.where(raw < -100, np.nan, raw / aux[:nt, ecol, None, None].astype(np.float32))
    np.testing.assert_allclose(da_.values, expect, rtol=1e-6)
    dt = np.diff(da_["time"].values)
    if nt == 54:  # mostly alternating ~18.7 s / ~37.5 s (a few odd steps near the end)
        assert np.median(dt[dt < 28]) == pytest.approx(18.7, abs=0.2)
        assert np.median(dt[dt >= 28]) == pytest.approx(37.5, abs=0.2)
    else:
        assert np.median(dt) == pytest.approx(18.7, abs=0.3)
    assert np.isfinite(da_["hpc_x"].values).all()
    assert 490 < float(da_["hpc_x"].mean()) < 520 and 270 < float(da_["hpc_y"].mean()) < 290
    # Without input.missing_below, IRIS cubes get the IRIS sentinel threshold by default.
    auto = open_input(InputConfig(path=str(path)))
    assert auto.attrs["missing_below"] == -50.0
    frame = auto.isel(time=0).values
    assert np.nanmin(frame) >= -50.0 / aux[0, ecol] and np.isnan(frame).mean() > 0.1


def test_zarr_dataset_is_lazy(tmp_path):
    arr = xr.DataArray(
        np.ones((3, 2, 2), np.float32),
        dims=("time", "y", "x"),
        coords={"time": [0.0, 1.0, 2.0]},
        name="intensity",
        attrs={"start_time": "2020-01-01T00:00:00Z"},
    )
    arr.to_dataset().to_zarr(tmp_path / "z.zarr", mode="w", consolidated=False)
    out = open_input(InputConfig(path=str(tmp_path / "z.zarr")))
    assert out.chunks is not None
    assert out.attrs["start_time"] == "2020-01-01T00:00:00.000Z"


def test_zarr_cube_keeps_its_blocks_and_prep_gets_whole_frames(tmp_path):
    """A cube stored in spatial blocks of many frames is read in those blocks (each block
    decoded once by the cube stage), chunks over ~16 MB are cut along time, and a prep
    step that needs whole frames gets them with short time chunks."""
    import dask.array as da

    from specfit.io._base import cube_time_chunk, whole_frames

    rng = np.random.default_rng(4)
    values = rng.normal(100.0, 1.0, (40, 24, 24)).astype(np.float32)
    arr = xr.DataArray(
        values, dims=("time", "y", "x"), coords={"time": np.arange(40) * 12.0}, name="intensity"
    )
    arr.attrs["start_time"] = "2020-01-01T00:00:00Z"
    enc = {"intensity": {"chunks": (20, 8, 8)}}
    arr.to_dataset().to_zarr(tmp_path / "b.zarr", mode="w", consolidated=False, encoding=enc)
    out = open_input(InputConfig(path=str(tmp_path / "b.zarr")))
    assert out.data.chunksize == (20, 8, 8)
    np.testing.assert_array_equal(out.values, values)
    frames = whole_frames(out.data)
    assert frames.chunksize == (cube_time_chunk(40, 24, 24), 24, 24)
    np.testing.assert_array_equal(frames.compute(), values)
    # whole 1024² frames stored 16 at a time (64 MiB chunks): cut to 4 frames (16 MiB)
    big = xr.DataArray(
        da.zeros((32, 1024, 1024), dtype=np.float32, chunks=(16, 1024, 1024)),
        dims=("time", "y", "x"),
        coords={"time": np.arange(32) * 12.0},
        name="intensity",
    )
    big.attrs["start_time"] = "2020-01-01T00:00:00Z"
    big.to_dataset().to_zarr(tmp_path / "w.zarr", mode="w", consolidated=False)
    assert open_input(InputConfig(path=str(tmp_path / "w.zarr"))).data.chunksize[0] == 4


def test_rice_compressed_frames_in_hdu1(tmp_path):
    """JSOC-style files: empty primary HDU, RICE-compressed integer image in HDU 1."""
    rng = np.random.default_rng(8)
    raw = rng.integers(0, 3000, (3, 6, 7)).astype(np.int16)
    raw[1, 2, 3] = -32768
    for i in range(3):
        h = _hpc_header(6, 7, f"2021-01-01T00:00:{12 * i:02d}", 2.5)
        h["BLANK"] = -32768
        comp = fits.CompImageHDU(raw[i], header=h, compression_type="RICE_1")
        fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp_path / f"c{i}.fits")
    out = open_input(InputConfig(path=str(tmp_path)))
    expect = np.where(raw == -32768, np.nan, raw / np.float32(2.5)).astype(np.float32)
    np.testing.assert_allclose(out.values, expect, rtol=1e-6)
    assert np.isnan(out.values[1, 2, 3])
    # beside plain frames (image in HDU 0): each file is read from its own HDU (the folder
    # was refused with advice to set input.hdu, which no value could follow; input reviewer)
    for i in range(3, 5):
        h = _hpc_header(6, 7, f"2021-01-01T00:00:{12 * i:02d}", 2.5)
        fits.PrimaryHDU(raw[i - 3].astype(np.float32), header=h).writeto(tmp_path / f"c{i}.fits")
    mixed = open_input(InputConfig(path=str(tmp_path))).values
    np.testing.assert_allclose(mixed[:3], expect, rtol=1e-6)
    np.testing.assert_allclose(mixed[3:], raw[:2] / np.float32(2.5), rtol=1e-6)


def test_a_preview_image_in_the_primary_hdu_is_passed_over(tmp_path):
    """A small preview image in the primary HDU before the frame in HDU 1: the frame is read
    (the first image HDU was taken, here a 2 x 2 'series'); the largest image HDU wins."""
    rng = np.random.default_rng(4)
    raw = rng.normal(100.0, 5.0, (4, 6, 7)).astype(np.float32)
    for i in range(4):
        h = _hpc_header(6, 7, f"2021-01-01T00:00:{12 * i:02d}", 2.5)
        thumb = fits.PrimaryHDU(np.ones((2, 2), np.float32), header=h)
        fits.HDUList([thumb, fits.ImageHDU(raw[i], header=h)]).writeto(tmp_path / f"p{i}.fits")
    out = open_input(InputConfig(path=str(tmp_path)))
    assert out.shape == (4, 6, 7)
    np.testing.assert_allclose(out.values, raw / np.float32(2.5), rtol=1e-6)
    # input.hdu still chooses
    assert open_input(InputConfig(path=str(tmp_path), hdu=0)).shape == (4, 2, 2)
    # a frame followed by a larger mask or map is still the frame (the largest HDU was read,
    # without the frame's time keys; diff reviewer): a later HDU wins only with over 4x
    for i in range(4):
        h = _hpc_header(6, 7, f"2021-01-01T00:00:{12 * i:02d}", 2.5)
        mask = fits.ImageHDU(np.zeros((12, 12), np.int16))  # 3.4x the frame
        fits.HDUList([fits.PrimaryHDU(raw[i], header=h), mask]).writeto(
            tmp_path / f"p{i}.fits", overwrite=True
        )
    np.testing.assert_allclose(
        open_input(InputConfig(path=str(tmp_path))).values, raw / np.float32(2.5), rtol=1e-6
    )


def test_sixteen_bit_tiff_keeps_its_levels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(12)
    frames = rng.integers(0, 65535, (2, 5, 6)).astype(np.uint16)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"t_2020-01-01_00{i}.tif")
    cfg = InputConfig(path=str(tmp_path), time_pattern="t_%Y-%m-%d_%H%M.tif")
    out = open_input(cfg)
    np.testing.assert_array_equal(out.values, frames.astype(np.float32))
    np.testing.assert_allclose(out["time"].values, [0.0, 60.0])


def test_a_frame_of_another_channel_is_named(tmp_path):
    """One 304 A frame among 1600 A ones (a shared download folder) is refused before any
    pixel is read, naming the file; so is an HMI frame among AIA ones, or a frame without
    the WAVELNTH the others have (both were read as part of the series; input reviewer).
    A series whose frames all lack it is not judged."""
    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=40, seed=1).frames
    files = sorted(frames.glob("*.fits"))
    with fits.open(files[7], mode="update") as h:
        h[0].header["WAVELNTH"] = 304
    with pytest.raises(
        InputError,
        match=rf"{files[7].name} \(WAVELNTH 304\), beside {len(files) - 1} frames with WAVELNTH 1600",
    ):
        open_input(InputConfig(path=str(frames)))
    with fits.open(files[7], mode="update") as h:
        del h[0].header["WAVELNTH"]
    with pytest.raises(InputError, match=rf"{files[7].name} \(no WAVELNTH\)"):
        open_input(InputConfig(path=str(frames)))
    for f in files:  # none has it: not judged
        with fits.open(f, mode="update") as h:
            h[0].header.pop("WAVELNTH", None)
    assert open_input(InputConfig(path=str(frames))).shape[0] == len(files)
    with fits.open(files[3], mode="update") as h:
        h[0].header["INSTRUME"] = "HMI_FRONT2"
    with pytest.raises(InputError, match=rf"{files[3].name} \(INSTRUME HMI_FRONT2\), beside"):
        open_input(InputConfig(path=str(frames)))
    with fits.open(files[3], mode="update") as h:
        h[0].header["INSTRUME"] = fits.getval(files[0], "INSTRUME")
    for f in files:
        fits.setval(f, "WAVELNTH", value=1600)
    with fits.open(files[7], mode="update") as h:
        h[0].header["WAVELNTH"] = 1600.0001  # a tunable filter's rounding: the same channel
    assert open_input(InputConfig(path=str(frames))).shape[0] == len(files)


def test_frames_timed_by_another_key_are_named(tmp_path):
    """A frame without T_OBS takes DATE-OBS (the next input.time_key): said, with the first
    such file, since the two keys need not agree."""
    _write_series(tmp_path / "s", nt=5)
    files = sorted((tmp_path / "s").glob("*.fits"))
    for f in files:
        with fits.open(f, mode="update") as h:
            h[0].header["T_OBS"] = h[0].header["DATE-OBS"]
    with fits.open(files[2], mode="update") as h:
        del h[0].header["T_OBS"]
    with pytest.warns(
        UserWarning, match=rf"1 of 5 frames have no T_OBS .*DATE-OBS \(first: {files[2].name}\)"
    ):
        open_input(InputConfig(path=str(tmp_path / "s")))


def test_frames_without_a_pointing_key_are_named(tmp_path):
    """A pointing/observer key (CRVAL1 here) that one frame lacks is dropped for the series
    (derotation then takes the reference frame's value for every frame): said, with the first
    such file in time order; the other keys stay per-frame coordinates."""
    _write_series(tmp_path / "s", nt=5)
    files = sorted((tmp_path / "s").glob("*.fits"))
    with fits.open(files[3], mode="update") as h:
        del h[0].header["CRVAL1"]
    with pytest.warns(UserWarning, match=rf"CRVAL1 \(1\) of 5 frames, first {files[3].name}"):
        arr = open_input(InputConfig(path=str(tmp_path / "s")))
    assert "wcs_crval1" not in arr.coords and "wcs_crval2" in arr.coords


def test_frames_flagged_by_quality_are_left_out(tmp_path):
    """AIA frames whose QUALITY word has a bad bit (eclipse, dark, off-pointing... by default)
    are left out, said in one warning with the bits and the first such file; other bits (the
    register flag, bit 21) keep the frame; bit 31 comes as a negative signed word; other
    instruments' frames are kept unless input.quality_bits is given (their bits mean other
    things: SOHO/MDI's bit 16 is a minor telemetry dropout); [] keeps all; fewer than 2 frames
    left is one error before any work."""
    from specfit.errors import ConfigError

    secs, data, _ = _write_series(tmp_path / "s", nt=6)
    by_time = sorted((tmp_path / "s").glob("*.fits"), key=lambda f: fits.getheader(f)["DATE-OBS"])
    words = {1: 1 << 13, 2: 1 << 21, 4: -(1 << 31)}  # eclipse; register flag; no image
    for i, f in enumerate(by_time):
        with fits.open(f, mode="update") as h:
            h[0].header["TELESCOP"] = "SDO/AIA"
            if i in words:
                h[0].header["QUALITY"] = words[i]
    with pytest.warns(
        UserWarning,
        match=rf"left out 2 of 6 frames whose QUALITY has bit 13 \(1\), bit 31 \(1\) set "
        rf"\(AIA's bad-frame bits; first: {min(by_time[1].name, by_time[4].name)}\)",
    ):
        arr = open_input(InputConfig(path=str(tmp_path / "s")))
    kept = [0, 2, 3, 5]
    np.testing.assert_allclose(arr["time"].values, secs[kept] - secs[0], atol=1e-3)
    assert arr.attrs["files"] == [by_time[i].name for i in kept]
    np.testing.assert_allclose(
        arr.values * arr["exposure"].values[:, None, None], data[kept], rtol=1e-6
    )
    assert open_input(InputConfig(path=str(tmp_path / "s"), quality_bits=[])).shape[0] == 6
    assert open_input(InputConfig(path=str(tmp_path / "s"), quality_key=None)).shape[0] == 6
    for f in by_time:
        with fits.open(f, mode="update") as h:
            h[0].header["TELESCOP"] = "SOHO"  # another instrument's bits
    assert open_input(InputConfig(path=str(tmp_path / "s"))).shape[0] == 6
    with pytest.warns(UserWarning, match=r"left out 1 .*bit 13 \(1\) set \(input.quality_bits"):
        assert open_input(InputConfig(path=str(tmp_path / "s"), quality_bits=[13])).shape[0] == 5
    for f in by_time[1:]:
        with fits.open(f, mode="update") as h:
            h[0].header["QUALITY"] = 1 << 16  # dark
    with pytest.raises(InputError, match=r"5 of the 6 frames have QUALITY bit 16 \(5\) set"):
        open_input(InputConfig(path=str(tmp_path / "s"), quality_bits=[16]))
    with pytest.raises(ConfigError, match="numbered 0-31"):
        from specfit.config import load_config

        load_config(overrides=["input.quality_bits=[40]"])


def test_frames_on_another_pixel_grid_are_refused(tmp_path):
    """A frame whose plate scale or roll differs (a level-1.5 AIA frame among level-1 ones:
    CDELT 0.6 against 0.609, CROTA2 0 against 0.02) is one error naming it, before any work,
    also when it comes first (the series' median grid is the reference); the roll's jitter of
    level-1 frames (3e-4 degrees here), a roll written as -360 + 0.02, as a PC matrix or in
    degrees instead of arcsec is the same grid and passes."""
    _write_series(tmp_path / "s", nt=6, ny=40, nx=60)
    files = sorted((tmp_path / "s").glob("*.fits"))

    def grid(f, **keys):
        with fits.open(f, mode="update") as h:
            for k in ("CDELT1", "CDELT2", "CROTA2", "CUNIT1", "CUNIT2", "PC1_1", "PC1_2"):
                h[0].header.pop(k, None)
            for k in ("PC2_1", "PC2_2"):
                h[0].header.pop(k, None)
            h[0].header.update({"CUNIT1": "arcsec", "CUNIT2": "arcsec", **keys})

    for i, f in enumerate(files):
        grid(f, CDELT1=0.609373, CDELT2=0.609373, CROTA2=0.0196 + 6e-5 * i)
    assert open_input(InputConfig(path=str(tmp_path / "s"))).shape == (6, 40, 60)
    t = np.radians(0.0196)
    grid(files[2], CDELT1=0.609373, CDELT2=0.609373, CROTA2=0.0196 - 360.0)
    grid(files[3], CDELT1=0.609373, CDELT2=0.609373, PC1_1=np.cos(t), PC1_2=-np.sin(t),
         PC2_1=np.sin(t), PC2_2=np.cos(t))  # fmt: skip
    grid(files[4], CDELT1=0.609373 / 3600, CDELT2=0.609373 / 3600, CROTA2=0.0196,
         CUNIT1="deg", CUNIT2="deg")  # fmt: skip
    assert open_input(InputConfig(path=str(tmp_path / "s"))).shape == (6, 40, 60)
    for odd in (files[4], files[0]):  # also the first file: the median is the reference
        grid(odd, CDELT1=0.6, CDELT2=0.6, CROTA2=0.0)
        with pytest.raises(
            InputError,
            match=rf"{odd.name}: its pixel grid \(0.6 arcsec/px, roll 0 deg\) departs from the "
            r"series' \(0.609373 arcsec/px, roll 0.0\d+ deg, the median of 6 frames\) by 0.5\d px "
            r"at the field's corner \(1 such frame\)",
        ):
            open_input(InputConfig(path=str(tmp_path / "s")))
        grid(odd, CDELT1=0.609373, CDELT2=0.609373, CROTA2=0.0196)


def test_grid_check_reads_headers_as_wcslib_does(tmp_path):
    """PC before CD when a header has both (as wcslib and sunpy read it), and a mirrored first
    axis named by its own roll; AIA frames known by INSTRUME alone get AIA's quality bits."""
    _write_series(tmp_path / "s", nt=4, ny=40, nx=60)
    files = sorted((tmp_path / "s").glob("*.fits"))
    with fits.open(files[1], mode="update") as h:  # CD says 2"/px, CDELT x PC the same 0.5"
        h[0].header.update(PC1_1=1.0, PC2_2=1.0, CD1_1=2.0, CD2_2=2.0)
    assert open_input(InputConfig(path=str(tmp_path / "s"))).shape[0] == 4
    with fits.open(files[2], mode="update") as h:
        h[0].header.update(CDELT1=-0.5, CROTA2=10.0, QUALITY=1 << 16, INSTRUME="AIA_3")
        for k in ("PC1_1", "PC2_2", "CD1_1", "CD2_2"):
            h[0].header.pop(k, None)
    with pytest.raises(InputError, match=r"its pixel grid \(0.5 arcsec/px, roll 10 deg\)"):
        open_input(InputConfig(path=str(tmp_path / "s"), quality_bits=[]))
    with pytest.warns(UserWarning, match=r"left out 1 of 4 frames .*bit 16 \(1\) set \(AIA's"):
        assert open_input(InputConfig(path=str(tmp_path / "s"))).shape[0] == 3


def _old_style_frames(folder: Path, times: list[str], gz: bool = False) -> None:
    """Frames whose DATE-OBS holds the date only and TIME-OBS the time of day (FITS headers
    before DATE-OBS carried both), written by astropy."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(times):
        date, tod = t.split("T")
        h = fits.Header()
        h["DATE-OBS"] = date
        h["TIME-OBS"] = tod
        h["EXPTIME"] = 2.0
        name = f"frame_{i:04d}.fits" + (".gz" if gz else "")
        fits.PrimaryHDU(np.full((3, 4), i, np.float32), header=h).writeto(folder / name)


@pytest.mark.parametrize("gz", [False, True])  # the plain-header scanner, and astropy
def test_date_obs_without_a_time_takes_time_obs(tmp_path, gz):
    """DATE-OBS='2012-06-06' + TIME-OBS='05:00:12.3' is 05:00:12.3, not midnight: every frame
    of the day was 'the same time 2012-06-06T00:00:00.000; remove the duplicate frame'."""
    times = ["2012-06-06T05:00:12.3", "2012-06-06T05:00:24.3", "2012-06-06T05:00:36.55"]
    _old_style_frames(tmp_path / "f", times, gz=gz)
    arr = open_input(InputConfig(path=str(tmp_path / "f")))
    np.testing.assert_allclose(arr["time"].values, [0.0, 12.0, 24.25], atol=1e-6)
    assert arr.attrs["start_time"].startswith("2012-06-06T05:00:12.3")
    assert arr.attrs["time_key"] == "DATE-OBS"
    # DATE_OBS (underscore) too, and the pre-1997 DD/MM/YY date form
    _old_style_frames(tmp_path / "u", ["1996-06-06T05:00:00", "1996-06-06T05:00:10"])
    for f in sorted((tmp_path / "u").iterdir()):
        with fits.open(f, mode="update") as hdul:
            h = hdul[0].header
            h["DATE_OBS"] = "06/06/96"
            del h["DATE-OBS"]
    arr = open_input(InputConfig(path=str(tmp_path / "u"), time_key=["DATE_OBS"]))
    assert arr.attrs["start_time"].startswith("1996-06-06T05:00:00")
    np.testing.assert_allclose(arr["time"].values, [0.0, 10.0])


def test_date_only_times_are_named_not_called_duplicates(tmp_path):
    folder = tmp_path / "d"
    _old_style_frames(folder, ["2012-06-06T05:00:12", "2012-06-06T05:00:24"])
    for f in sorted(folder.iterdir()):
        with fits.open(f, mode="update") as hdul:
            del hdul[0].header["TIME-OBS"]
    with pytest.raises(InputError, match=r"DATE-OBS holds a date without a time of day.*TIME-OBS"):
        open_input(InputConfig(path=str(folder)))
    # a bad TIME-OBS is named with its key
    _old_style_frames(tmp_path / "b", ["2012-06-06T05:00:12", "2012-06-06T25:61:00"])
    with pytest.raises(InputError, match=r"frame_0001.fits: header key DATE-OBS \+ TIME-OBS"):
        open_input(InputConfig(path=str(tmp_path / "b")))


def _chunked_cube(path: Path, dtype: str) -> np.ndarray:
    """A (6, 4, 4) cube written by xarray/zarr in (2, 2, 2) chunks, no chunk all zero."""
    cube = (np.arange(6 * 4 * 4).reshape(6, 4, 4) % 50 + 1).astype(dtype)
    arr = xr.DataArray(
        cube,
        dims=("time", "y", "x"),
        coords={"time": np.arange(6) * 12.0},
        name="intensity",
        attrs={"start_time": "2020-01-01T00:00:00Z"},
    )
    arr.chunk({"time": 2, "y": 2, "x": 2}).to_dataset().to_zarr(path, mode="w", consolidated=False)
    return cube


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_zarr_missing_chunk_files_are_warned_of(tmp_path, dtype, caplog):
    """A chunk file lost in an incomplete copy read silently as the fill value (int16:
    zeros); now a warning names how many and which, and what they read as."""
    store = tmp_path / "c.zarr"
    cube = _chunked_cube(store, dtype)
    with caplog.at_level("WARNING", logger="specfit"):
        open_input(InputConfig(path=str(store)))
    assert not [r for r in caplog.records if "chunks" in r.getMessage()]
    (store / "intensity" / "c" / "1" / "0" / "1").unlink()
    with caplog.at_level("WARNING", logger="specfit"):
        arr = open_input(InputConfig(path=str(store)))
    said = [r.getMessage() for r in caplog.records if "chunks" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    assert "1 of its 12 chunks have no file on disk (c/1/0/1)" in said[0]
    assert str(store) in said[0]
    if dtype == "float32":
        assert "fill value NaN, so they count as missing pixels" in said[0]
        assert np.isnan(arr.values[2:4, 0:2, 2:4]).all()
    else:
        assert "fill value 0 (int16)" in said[0]
        assert (arr.values[2:4, 0:2, 2:4] == 0).all()
    np.testing.assert_array_equal(arr.values[:2], cube[:2])


def test_zarr_missing_chunks_v2_and_bare_arrays(tmp_path, caplog):
    """Zarr v2 keys (i.j.k), a bare array with input.times, and the count of several."""
    import zarr

    from specfit.io.arrays import missing_chunks

    z = zarr.open_array(
        tmp_path / "v2.zarr", mode="w", shape=(6, 4, 4), chunks=(2, 2, 2), dtype="int16",
        zarr_format=2,
    )  # fmt: skip
    z[:] = 7
    for key in ("0.0.1", "2.1.1", "1.1.0", "2.0.0"):
        (tmp_path / "v2.zarr" / key).unlink()
    n, total, first, fill, dtype = missing_chunks(str(tmp_path / "v2.zarr"))
    assert (n, total, first, dtype) == (4, 12, ["0.0.1", "1.1.0", "2.0.0"], "int16")
    np.save(tmp_path / "t.npy", np.arange(6) * 12.0)
    with caplog.at_level("WARNING", logger="specfit"):
        open_input(
            InputConfig(path=str(tmp_path / "v2.zarr"), kind="zarr", times=str(tmp_path / "t.npy"))
        )
    said = [r.getMessage() for r in caplog.records if "chunks" in r.getMessage()]
    assert len(said) == 1 and "4 of its 12 chunks" in said[0]
    assert "(0.0.1, 1.1.0, 2.0.0, ...)" in said[0]


def test_frames_whose_listed_exposure_the_data_contradict_are_named_before_work(
    tmp_path, caplog, monkeypatch
):
    """A frame listed at 1/8 of the usual exposure but holding the usual counts is named
    (stages.exposure_mismatches, and the run's refusal before any cluster starts); one whose
    counts follow its shorter listed exposure is not."""
    from specfit.config import load_config
    from specfit.pipeline import run
    from specfit.stages import exposure_mismatches

    nt = 40
    rng = np.random.default_rng(5)
    scene = rng.uniform(50, 150, (12, 12))
    exposure = np.full(nt, 8.0)
    exposure[[20, 30]] = [1.0, 2.0]
    counts = scene * rng.gamma(400, 1 / 400, (nt, 12, 12))  # 8 s counts of a steady scene
    counts[30] *= 2.0 / 8.0  # frame 30: the counts of its listed 2 s
    path = tmp_path / "cube.fits"
    h = fits.Header()
    h["STARTOBS"] = "2014-03-29T14:09:38.830"
    h["BUNIT"] = "Corrected DN"
    aux = np.zeros((nt, 4))
    aux[:, 0] = np.arange(nt) * 10.0
    aux[:, 3] = exposure
    ah = fits.Header()
    ah["TIME"], ah["EXPTIMES"] = 0, 3
    fits.HDUList(
        [fits.PrimaryHDU(counts.astype(np.float32), header=h), fits.ImageHDU(aux, header=ah)]
    ).writeto(path)
    arr = open_input(InputConfig(path=str(path)))
    found = {m["frame"]: m for m in exposure_mismatches(arr)}
    assert sorted(found) == [20, 30]
    assert found[20]["contradicted"] and not found[30]["contradicted"]
    assert found[20]["exposure_ratio"] == pytest.approx(1 / 8)
    assert found[20]["level_ratio"] == pytest.approx(1.0, abs=0.05)
    assert found[30]["level_ratio"] == pytest.approx(0.25, abs=0.02)
    assert found[20]["reference"] in (19, 21)
    # read as it is stored (no division), the same frames compare the same way
    raw = open_input(InputConfig(path=str(path), normalise_exposure=False))
    assert exposure_mismatches(raw) == list(found.values())

    overrides = [
        f"input.path={path}", f"output.path={tmp_path / 'r.zarr'}", "cluster.kind=synchronous",
        "fit.models={m1: powerlaw_tail}", "fit.best_model=aic",
    ]  # fmt: skip
    cfg = load_config(None, overrides)
    import specfit.cluster

    def no_cluster(*a, **k):
        raise RuntimeError("no cluster in this test")

    monkeypatch.setattr(specfit.cluster, "connect", no_cluster)
    with pytest.raises(InputError, match="exposure time listed") as err:
        run(cfg)  # refused before any cluster starts or data is written
    said = str(err.value)
    assert said.startswith("1 frame(s)") and "frame 20 (t=200 s" in said
    assert "exposure 0.12x frame" in said and "scales them by 8-8x" in said
    assert "input.normalise_exposure: false" in said and "input.exposure_check: false" in said
    assert not (tmp_path / "r.zarr").exists()
    # as the message says: read as stored, the run goes on past that check (to the cluster)
    with pytest.raises(RuntimeError, match="no cluster"):
        run(load_config(None, [*overrides, "input.normalise_exposure=false"]))
    # a scene that did brighten so (a flare under exposure control): divided, with a warning
    with caplog.at_level("WARNING", logger="specfit"), pytest.raises(RuntimeError):
        run(load_config(None, [*overrides, "input.exposure_check=false"]))
    (said,) = [r.getMessage() for r in caplog.records if "exposure time listed" in r.getMessage()]
    assert said.startswith("1 frame(s)") and "divided as listed" in said


# ------------------------------------------------------- input reviewer, 2026-12-07
def test_a_nan_time_in_an_iris_time_table_is_refused(tmp_path):
    """A NaN in the auxiliary TIME column was accepted: the frame sorted last with a NaN time,
    and the run then failed on a made-up pointing jump, or (derotating) with a traceback."""
    path = tmp_path / "c.fits"
    _write_iris_like(path)
    with fits.open(path, mode="update") as hdul:
        hdul[1].data[2, 0] = np.nan
    with pytest.raises(InputError, match=r"c\.fits: the time table in HDU 1.*frame\(s\) \[2\]"):
        open_input(InputConfig(path=str(path), missing_below=-100))


def test_input_times_must_give_one_time_per_frame(tmp_path):
    """A (y, x, time) .npy cube with its times (40 of them, the cube's last axis) ran to the
    end on a scrambled cube: the times list was cut to the first axis' 16."""
    np.save(tmp_path / "yxt.npy", np.zeros((16, 16, 40), np.float32))
    np.save(tmp_path / "t.npy", np.arange(40) * 24.0)
    with pytest.raises(InputError, match=r"16 frames.*axis 2 has 40.*np\.moveaxis\(cube, 2, 0\)"):
        open_input(InputConfig(path=str(tmp_path / "yxt.npy"), times=str(tmp_path / "t.npy")))
    # one time too many on a right cube: named too (it was cut silently)
    np.save(tmp_path / "txy.npy", np.zeros((39, 4, 5), np.float32))
    with pytest.raises(InputError, match=r"40 times but the cube has 39 frames.*one time per"):
        open_input(InputConfig(path=str(tmp_path / "txy.npy"), times=str(tmp_path / "t.npy")))
    np.save(
        tmp_path / "nat.npy", np.array(["2020-01-01T00:00", "NaT"] + ["2020-01-02"] * 37, "M8[s]")
    )
    with pytest.raises(InputError, match=r"no time \(NaT\) at frame\(s\) \[1\]"):
        open_input(InputConfig(path=str(tmp_path / "txy.npy"), times=str(tmp_path / "nat.npy")))


def test_a_nat_in_a_zarr_datetime_coordinate_is_named(tmp_path):
    """A NaT (a CF time's fill value) gave astropy's format error, naming no store or frame."""
    t = np.array("2012-06-06T06:00:00", "M8[ns]") + np.arange(6) * np.timedelta64(12, "s")
    t[3] = np.datetime64("NaT")
    da_ = xr.DataArray(np.ones((6, 2, 3), np.float32), dims=("time", "y", "x"), coords={"time": t})
    da_.to_dataset(name="intensity").to_zarr(tmp_path / "n.zarr", consolidated=False)
    with pytest.raises(
        InputError, match=r"n\.zarr: the time coordinate has no time \(NaT\) at frame\(s\) \[3\]"
    ):
        open_input(InputConfig(path=str(tmp_path / "n.zarr")))


def test_a_time_slice_of_a_zarr_cube_keeps_its_frames_times(tmp_path):
    """`time` is seconds since start_time: a slice starting at 240 s began at start_time."""
    t = np.arange(20) * 24.0
    da_ = xr.DataArray(
        np.random.default_rng(0).normal(size=(20, 3, 4)).astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": t},
        name="intensity",
        attrs={"start_time": "2012-06-06T06:15:54.570Z"},
    )
    da_.isel(time=slice(10, None)).to_dataset().to_zarr(tmp_path / "s.zarr", consolidated=False)
    back = open_input(InputConfig(path=str(tmp_path / "s.zarr")))
    assert back.attrs["start_time"].startswith("2012-06-06T06:19:54.570"), back.attrs
    np.testing.assert_allclose(back["time"].values, t[:10])


def test_image_colour_modes_and_csv_times_of_2000(tmp_path):
    """CMYK JPEGs were read as RGB (intensities inverted); ISO times from the year 2000 were
    called nominal (and their DATE-BEG left out of exports)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (3, 8, 9, 3), dtype=np.uint8)
    for i, a in enumerate(rgb):
        Image.fromarray(a).save(tmp_path / f"rgb{i}.png")
        Image.fromarray(a).convert("CMYK").save(tmp_path / f"cmyk{i}.jpg", quality=100)
        Image.fromarray(a).convert("LAB").save(tmp_path / f"lab{i}.tiff")
    csv = tmp_path / "t.csv"
    kinds = (("rgb", "png"), ("cmyk", "jpg"), ("lab", "tiff"))
    rows = [f"{p}{i}.{e},2000-03-15T10:0{i}:00" for p, e in kinds for i in range(3)]
    csv.write_text("file,time\n" + "\n".join(rows))
    kw = {"path": str(tmp_path), "times_csv": str(csv), "time_source": "csv"}
    grey = open_input(InputConfig(pattern="rgb*.png", **kw))
    assert "time_note" not in grey.attrs and grey.attrs["start_time"].startswith("2000-03-15T10")
    cmyk = open_input(InputConfig(pattern="cmyk*.jpg", **kw)).values
    r = np.corrcoef(cmyk.ravel(), grey.values.ravel())[0, 1]
    assert r > 0.99, r  # was -1 (inverted); JPEG's loss keeps it below 1
    with pytest.raises(InputError, match=r"lab0\.tiff: its colour mode LAB"):
        open_input(InputConfig(pattern="lab*.tiff", **kw))


def _primary_with_keys(ny=6, nx=7, i=0) -> fits.Header:
    return _hpc_header(ny, nx, f"2021-01-01T00:00:{12 * i:02d}", 2.5)


def test_keys_inherited_from_the_primary_header_are_read(tmp_path):
    """INHERIT = T: time, exposure and WCS in the primary header, the image in HDU 1; the
    advice was to set input.time_key to DATE-OBS, which was what the files had."""
    rng = np.random.default_rng(9)
    raw = rng.normal(100, 5, (3, 6, 7)).astype(np.float32)
    for i in range(3):
        ext = fits.Header()
        ext["INHERIT"] = True
        hdul = fits.HDUList(
            [fits.PrimaryHDU(header=_primary_with_keys(i=i)), fits.ImageHDU(raw[i], header=ext)]
        )
        hdul.writeto(tmp_path / f"f{i}.fits")
    out = open_input(InputConfig(path=str(tmp_path)))
    np.testing.assert_allclose(out["time"].values, [0, 12, 24])
    np.testing.assert_allclose(out.values, raw / np.float32(2.5), rtol=1e-6)
    assert out["hpc_x"].shape == (6, 7)


def test_a_truncated_compressed_frame_is_named_as_truncated(tmp_path):
    """A RICE file cut short lost its image HDU in astropy: 'no image HDU; set input.hdu',
    and with input.hdu=1 'the file has 1 HDUs'. Both now say the file is truncated."""
    raw = np.random.default_rng(8).integers(0, 3000, (64, 64)).astype(np.int16)
    path = tmp_path / "c0.fits"
    comp = fits.CompImageHDU(raw, header=_primary_with_keys(64, 64), compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path)
    path.write_bytes(path.read_bytes()[: 2880 + 1000])  # cut inside HDU 1's header
    for hdu in (None, 1):
        with pytest.raises(InputError, match=r"c0\.fits: the file is truncated"):
            open_input(InputConfig(path=str(tmp_path), hdu=hdu))


@pytest.mark.parametrize("bare", [False, True])
def test_a_damaged_zarr_chunk_is_named_not_a_codec_traceback(tmp_path, bare):
    """A truncated chunk file of a Zarr input failed the cube stage with zstd's traceback from
    a worker; now an InputError names the store and the frames."""
    cube = np.random.default_rng(0).normal(100, 5, (20, 8, 8)).astype(np.float32)
    path = tmp_path / "in.zarr"
    if bare:
        import zarr

        zarr.create_array(str(path), data=cube, chunks=(5, 8, 8))
        np.save(tmp_path / "t.npy", np.arange(20) * 12.0)
        cfg = InputConfig(path=str(path), times=str(tmp_path / "t.npy"))
        chunk = path / "c" / "1" / "0" / "0"
    else:
        da_ = xr.DataArray(cube, dims=("time", "y", "x"), coords={"time": np.arange(20) * 12.0})
        da_.attrs["start_time"] = "2012-06-06T00:00:00Z"
        enc = {"intensity": {"chunks": (5, 8, 8)}}
        da_.to_dataset(name="intensity").to_zarr(path, encoding=enc, consolidated=False)
        cfg = InputConfig(path=str(path))
        chunk = path / "intensity" / "c" / "1" / "0" / "0"
    np.testing.assert_array_equal(open_input(cfg).values, cube)  # read as before
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(InputError, match=r"in\.zarr: array.* \(frames 5-9\): cannot read the data"):
        open_input(cfg).load()


# ------------------------------------------------------- non-FITS input probe, 2026-12-07
def _png16_rgb(path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (PIL writes none): IHDR bit depth 16, colour type 2."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def test_images_cut_to_8_bits_or_mixed_depths_and_doubled_csv_rows_are_refused(tmp_path):
    """16-bit RGB PNG frames were read as 8 bits by PIL (20036 read as 78) and a series of
    16-bit and 8-bit frames was mixed, both silently; a frame listed twice in times_csv took
    the last row's time; a header 'file, time' was refused; a %z offset in file names was
    dropped (times 2 h off, frames out of order across a daylight-saving change)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    v = rng.integers(15000, 25000, (4, 6, 5)).astype(np.uint16)
    rgb16 = tmp_path / "rgb16"
    rgb16.mkdir()
    for i in range(4):
        _png16_rgb(rgb16 / f"f{i}.png", np.stack([v[i]] * 3, axis=-1))
    pattern = "f%S.png"
    with pytest.raises(InputError, match=r"f0.png: its 16-bit RGB samples would be read as 8"):
        open_input(InputConfig(path=str(rgb16), time_pattern=pattern))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(4):
        a = v[i] if i < 2 else (v[i] // 256).astype(np.uint8)
        Image.fromarray(a).save(mixed / f"f{i}.png")
    with pytest.raises(InputError, match=r"f2.png: 8-bit samples, where .*f0.png has 16-bit"):
        open_input(InputConfig(path=str(mixed), time_pattern=pattern))
    grey16 = tmp_path / "grey16"
    grey16.mkdir()
    for i in range(4):
        Image.fromarray(v[i]).save(grey16 / f"f{i}.png")
    np.testing.assert_array_equal(
        open_input(InputConfig(path=str(grey16), time_pattern=pattern)).values, v
    )
    csv = tmp_path / "t.csv"
    csv.write_text("file, time\n" + "".join(f"f{i}.png,{12 * i}\n" for i in range(4)))
    got = open_input(InputConfig(path=str(grey16), times_csv=str(csv)))
    np.testing.assert_allclose(got["time"].values, [0, 12, 24, 36])
    iso = tmp_path / "iso.csv"  # a UTC offset: refused with the CSV's fix, not a header's
    iso.write_text(
        "file,time\n" + "".join(f"f{i}.png,2012-06-06T06:0{i}:00+02:00\n" for i in range(4))
    )
    with pytest.raises(InputError, match=r"in UTC .*fix its row of input.times_csv"):
        open_input(InputConfig(path=str(grey16), times_csv=str(iso)))
    csv.write_text(csv.read_text() + "sub/f1.png,66\n")
    with pytest.raises(InputError, match=r"f1.png is listed twice \(row 6"):
        open_input(InputConfig(path=str(grey16), times_csv=str(csv)))
    tz = tmp_path / "tz"
    tz.mkdir()
    names = ["f_20121028T010000+0200", "f_20121028T010500+0200", "f_20121028T001000+0100"]
    for i, n in enumerate(names):
        Image.fromarray(v[i]).save(tz / f"{n}.png")
    got = open_input(InputConfig(path=str(tz), time_pattern="f_%Y%m%dT%H%M%S%z"))
    assert got.attrs["start_time"].startswith("2012-10-27T23:00:00")
    np.testing.assert_allclose(got["time"].values, [0, 300, 600])  # 23:00, 23:05, 23:10 UTC


def test_timedelta_times_are_seconds_not_nanoseconds(tmp_path):
    """timedelta64 frame times (a .npy of times, or a Zarr store whose time coordinate xarray
    decodes as durations) were read as numbers of nanoseconds taken for seconds: a 12 s
    cadence became 1.2e10 s, and the chain ran to the end on it."""
    import xarray as xr

    cube = np.random.default_rng(0).normal(100, 5, (20, 3, 4)).astype(np.float32)
    np.save(tmp_path / "c.npy", cube)
    durations = (np.arange(20) * np.timedelta64(12, "s")).astype("timedelta64[ns]")
    np.save(tmp_path / "t.npy", durations)
    got = open_input(InputConfig(path=str(tmp_path / "c.npy"), times=str(tmp_path / "t.npy")))
    np.testing.assert_allclose(got["time"].values, 12.0 * np.arange(20))
    xr.Dataset({"intensity": (("time", "y", "x"), cube)}, coords={"time": durations}).to_zarr(
        tmp_path / "z.zarr", mode="w"
    )
    got = open_input(InputConfig(path=str(tmp_path / "z.zarr")))
    np.testing.assert_allclose(got["time"].values, 12.0 * np.arange(20))
    # a numeric time coordinate in hours (CF's name; "h" was read, "hours" refused)
    hours = xr.DataArray(np.arange(20) * 12 / 3600, dims="time", attrs={"units": "hours"})
    xr.Dataset({"intensity": (("time", "y", "x"), cube)}, coords={"time": hours}).to_zarr(
        tmp_path / "h.zarr", mode="w"
    )
    got = open_input(InputConfig(path=str(tmp_path / "h.zarr")))
    np.testing.assert_allclose(got["time"].values, 12.0 * np.arange(20), rtol=1e-12)
    xr.Dataset({"intensity": (("y", "x", "time"), cube.transpose(1, 2, 0))}).to_zarr(
        tmp_path / "yxt.zarr", mode="w"
    )
    with pytest.raises(InputError, match=r"need \(time, y, x\); store it transposed"):
        open_input(InputConfig(path=str(tmp_path / "yxt.zarr")))
    np.save(tmp_path / "nat.npy", np.where(np.arange(20) == 3, np.timedelta64("NaT"), durations))
    with pytest.raises(InputError, match=r"no time \(NaT\) at frame\(s\) \[3\]"):
        open_input(InputConfig(path=str(tmp_path / "c.npy"), times=str(tmp_path / "nat.npy")))
