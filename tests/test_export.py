"""`specfit export --fits` and `specfit.to_map`: maps go back to FITS and sunpy with the WCS of
the field, so that a map's pixel_to_world equals the store's hpc_x/hpc_y."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import yaml

from conftest import tiny_config
from specfit.errors import StoreError

pytest.importorskip("sunpy.map")


def _cli(capsys, *args):
    """The CLI in this process (a subprocess would pay the imports again for every call)."""
    from specfit.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def _check_wcs(smap, ds, tol_arcsec=0.01):
    """pixel_to_world at three pixels (corners and an inner one) equals hpc_x/hpc_y there."""
    import astropy.units as u

    ny, nx = ds.sizes["y"], ds.sizes["x"]
    for y, x in [(0, 0), (ny // 2, nx // 3), (ny - 1, nx - 1)]:
        c = smap.pixel_to_world(x * u.pix, y * u.pix)
        assert abs(c.Tx.to_value("arcsec") - float(ds["hpc_x"][y, x])) < tol_arcsec, (y, x)
        assert abs(c.Ty.to_value("arcsec") - float(ds["hpc_y"][y, x])) < tol_arcsec, (y, x)


@pytest.mark.realdata
def test_real_aia_export_round_trip(shared_data, tmp_path):
    """32 real AIA 1600 frames, derotated, with a pixel cutout (so the WCS is shifted)."""
    import sunpy.map

    import specfit
    from specfit.export import export_fits, map_header

    cfg = {
        "input": {
            "path": str(shared_data / "aia1600_20120606" / "fits"),
            "pattern": "*.fits",
            "exposure_key": "EXPTIME",
            "max_frames": 32,
        },
        "prep": {
            "derotate": True,
            "cutout": {"x1": 40, "x2": 72, "y1": 30, "y2": 54, "units": "pixel"},
        },
        "resample": {"cadence": 24.0},
        "spectra": {"segments": 1, "window": "none", "detrend": "mean"},
        "fit": {"models": {"m1": "powerlaw_tail"}},
        "output": {"path": str(tmp_path / "results.zarr"), "tile": 16},
        "cluster": {"kind": "synchronous"},
    }
    ds = specfit.run(cfg)
    files = export_fits(ds, tmp_path / "fits")
    assert {f.stem for f in files} >= {"m1_index", "m1_status", "mean_intensity"}
    for f in files:
        m = sunpy.map.Map(f)
        assert m.data.shape == (ds.sizes["y"], ds.sizes["x"])
    m = sunpy.map.Map(tmp_path / "fits" / "m1_index.fits")
    _check_wcs(m, ds)
    assert m.instrument.startswith("AIA") and m.wavelength.to_value("angstrom") == 1600
    np.testing.assert_array_equal(m.data, ds["m1_index"].values)
    # The map's date is the derotation's reference time, where the store's hpc_x/hpc_y hold.
    h = map_header(ds, "mean_intensity")
    assert h["BUNIT"] == "DN / s"
    ref = yaml.safe_load(ds.attrs["config"])
    assert ref["prep"]["derotate"] is True
    _check_wcs(specfit.to_map(ds, "m1_index"), ds)


def _derotated_cutout_config(tmp) -> dict:
    """A small synthetic run, derotated, with a pixel cutout (so the WCS is shifted)."""
    return tiny_config(
        tmp,
        prep={
            "derotate": True,
            "cutout": {"x1": 3, "x2": 16, "y1": 2, "y2": 15, "units": "pixel"},
        },
        fit={"models": {"m1": "powerlaw_tail"}},
    )


def test_synthetic_derotated_cutout_export_cli(tmp_path, capsys):
    import sunpy.map

    import specfit

    cfg = _derotated_cutout_config(tmp_path)
    specfit.run(cfg)
    results = tmp_path / "results.zarr"
    ds = specfit.open_results(results)
    # y/x are the frames' pixel indices (the cutout, trimmed by derotation, starts at 8); the
    # exported WCS is that of the maps' own array grid
    assert int(ds["x"][0]) == 8 and int(ds["y"][0]) > 0
    out = tmp_path / "maps"
    r = _cli(
        capsys, "export", str(results), "--fits", str(out), "--maps", "m1_index,mean_intensity"
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["m1_index.fits", "mean_intensity.fits"]
    m = sunpy.map.Map(out / "m1_index.fits")
    _check_wcs(m, ds)
    # a refit of the store's spectra carries the same WCS (to_map refused it, naming an
    # "older specfit"): open_results gives power the input frame's header
    refit = specfit.fit(ds["power"]).compute()
    assert refit.attrs["wcs_header"] == ds.attrs["wcs_header"]
    assert refit.attrs["wcs_origin"] == list(ds.attrs["wcs_origin"]) == [8, int(ds["y"][0])]
    _check_wcs(specfit.to_map(refit, "m1_index"), ds)
    assert sunpy.map.Map(out / "mean_intensity.fits").unit.to_string() == "DN / s"
    # The run's config is in HISTORY (long lines continue on the next card).
    hist = list(m.fits_header["HISTORY"])
    assert hist[0].startswith("specfit run with this config")
    assert "".join(hist[1:]) == ds.attrs["config"].replace("\n", "")
    # Existing files are not replaced without --overwrite; unknown names are named.
    r = _cli(capsys, "export", str(results), "--fits", str(out), "--maps", "m1_index")
    assert r.returncode == 2 and "--overwrite" in r.stderr and "m1_index.fits" in r.stderr
    r = _cli(capsys, "export", str(results), "--fits", str(out), "--maps", ",", "--overwrite")
    assert r.returncode == 2 and "--maps names no map" in r.stderr  # it exported every map
    r = _cli(capsys, "export", str(results), "--fits", str(out), "--maps", "m1_indx", "--overwrite")
    assert r.returncode == 2 and "m1_indx" in r.stderr and "m1_index" in r.stderr
    r = _cli(
        capsys, "export", str(results), "--fits", str(out), "--maps", "m1_index", "--overwrite"
    )
    assert r.returncode == 0, r.stderr
    # --overwrite replaces maps an export wrote, never a user's file of the same name (a
    # text file, another program's FITS, a link): refused before anything is written
    from astropy.io import fits

    mine = fits.PrimaryHDU(np.zeros((2, 2), np.float32))
    mine.writeto(out / "mean_intensity.fits", overwrite=True)
    (out / "m1_index.fits").write_text("my notes")
    r = _cli(capsys, "export", str(results), "--fits", str(out), "--overwrite")
    assert r.returncode == 2 and "not written by specfit" in r.stderr, r.stderr
    assert "_in" in r.stderr and "(and 1 more)" in r.stderr, r.stderr
    assert (out / "m1_index.fits").read_text() == "my notes"
    assert fits.getdata(out / "mean_intensity.fits").shape == (2, 2)
    assert sorted(p.name for p in out.iterdir()) == ["m1_index.fits", "mean_intensity.fits"]
    (out / "m1_index.fits").unlink()
    (out / "m1_index.fits").symlink_to(out / "mean_intensity.fits")
    r = _cli(
        capsys, "export", str(results), "--fits", str(out), "--maps", "m1_index", "--overwrite"
    )
    assert r.returncode == 2 and "m1_index.fits was not written" in r.stderr, r.stderr
    assert (out / "m1_index.fits").is_symlink()


def test_a_derotated_cutout_cube_read_back_keeps_its_wcs_and_is_not_derotated_again(
    tmp_path, capsys
):
    """A specfit cube fed back as Zarr input (docs/data.md): its WCS header is the frames'
    with y/x from the cutout's corner, which the reader renumbered from 0, so exported maps
    and to_map lay 8 x 2 px (here) off the store's hpc_x/hpc_y; and init and the run
    derotated it a second time (a probe's findings)."""
    import sunpy.map

    import specfit
    from specfit.errors import InputError
    from specfit.init import init_config

    first = tmp_path / "first"
    cfg = _derotated_cutout_config(first)
    specfit.run(cfg)
    cube = first / "results.zarr.specfit-work" / "cube.zarr"
    assert cube.is_dir()
    again = {
        "input": {"kind": "zarr", "path": str(cube)},
        "prep": {"derotate": True},
        "resample": {"cadence": 12.0},
        "spectra": {"segments": 1, "window": "none", "detrend": "mean"},
        "fit": {"models": {"m1": "powerlaw_tail"}},
        "output": {"path": str(tmp_path / "again.zarr"), "tile": 8},
        "cluster": {"kind": "synchronous"},
    }
    with pytest.raises(InputError, match="already derotated .*set prep.derotate: false"):
        specfit.run(again)
    assert not (tmp_path / "again.zarr").exists()
    report, text = init_config(str(cube), tmp_path / "init.yaml")
    assert "already derotated" in report and "derotate: false" in text, report
    again["prep"]["derotate"] = False
    ds = specfit.run(again)
    assert int(ds["x"][0]) == 0 and int(ds["y"][0]) == 0
    out = tmp_path / "maps"
    r = _cli(
        capsys, "export", str(tmp_path / "again.zarr"), "--fits", str(out), "--maps", "m1_index"
    )
    assert r.returncode == 0, r.stderr
    _check_wcs(sunpy.map.Map(out / "m1_index.fits"), ds)
    _check_wcs(specfit.to_map(ds, "m1_index"), ds)


def test_store_without_wcs(demo_store, tmp_path):
    from astropy.io import fits

    import specfit
    from specfit.export import export_fits

    ds = specfit.open_results(demo_store)
    assert "wcs_header" in ds.attrs  # synthetic frames carry a helioprojective WCS
    # Input without any WCS (e.g. JPG frames): pixel-only FITS; to_map refuses clearly.
    bare = ds.drop_vars(["hpc_x", "hpc_y"])
    bare.attrs = {k: v for k, v in ds.attrs.items() if k != "wcs_header"}
    (f,) = export_fits(bare, tmp_path, maps=["m1_index"])
    h = fits.getheader(f)
    assert "CTYPE1" not in h and "pixel coordinates only" in str(h["COMMENT"])
    with pytest.raises(StoreError, match="no WCS"):
        specfit.to_map(bare, "m1_index")
    # hpc_x/hpc_y without the header: a store from before the header was recorded.
    old = ds.copy()
    old.attrs = dict(bare.attrs)
    with pytest.raises(StoreError, match="--overwrite"):
        specfit.to_map(old, "m1_index")
    with pytest.raises(StoreError, match="m1_indx"):
        specfit.to_map(ds, "m1_indx")
    # a regular file where the folder should be: one line, nothing written
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(StoreError, match="cannot make the folder .*afile"):
        export_fits(demo_store, tmp_path / "afile", maps=["m1_index"])
    assert (tmp_path / "afile").read_text() == "mine"


def test_stage_chain_maps_carry_the_wcs_of_their_grid(demo_store):
    """specfit.fit on a spatial slice of ingested frames: to_map places the slice correctly."""
    import specfit

    frames = specfit.ingest(str(demo_store.parent / "synthetic" / "frames"))
    part = frames.isel(y=slice(4, 12), x=slice(5, 13))
    power = specfit.power_spectra(specfit.resample(part), segments=1, window="none")
    maps = specfit.fit(power, models={"m1": "powerlaw_tail"}).compute()
    assert int(maps["x"][0]) == 5  # the stage chain keeps the input's pixel positions
    _check_wcs(specfit.to_map(maps, "m1_index"), maps)


def test_iris_wavelength_reaches_the_maps_header():
    """IRIS headers carry the wavelength as TWAVE1, not WAVELNTH: the maps' header gets it as
    WAVELNTH, so sunpy's IRIS map of an exported map has a wavelength (its repr failed with
    a TypeError on None * Unit)."""
    import numpy as np
    import sunpy.map
    from astropy.io import fits

    from specfit.io._base import celestial_header

    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"], h["CUNIT1"], h["CUNIT2"] = "HPLN-TAN", "HPLT-TAN", "arcsec", "arcsec"
    h["CDELT1"] = h["CDELT2"] = 0.33
    h["CRPIX1"] = h["CRPIX2"] = 5.0
    h["CRVAL1"], h["CRVAL2"] = 300.0, 200.0
    h["NAXIS1"] = h["NAXIS2"] = 10
    h["TELESCOP"], h["INSTRUME"], h["TWAVE1"] = "IRIS", "SJI", 1400.0
    h["DATE-OBS"] = "2014-03-29T14:09:39"
    out = celestial_header(h)
    assert out["WAVELNTH"] == 1400.0 and out["WAVEUNIT"] == "Angstrom"
    m = sunpy.map.Map(np.zeros((10, 10)), out)
    assert m.wavelength.to_value("Angstrom") == 1400.0 and "1400" in repr(m)


def test_iris_corrected_dn_is_a_fits_unit():
    """IRIS level 2 says BUNIT 'Corrected DN', which astropy does not parse: the maps' BUNIT
    was '(Corrected DN / s)^2/Hz' and sunpy dropped the unit. It is written as DN now."""
    import astropy.units as u

    from specfit.store import fits_unit

    assert fits_unit("(Corrected DN / s)^2/Hz") == "DN2 / (Hz s2)"
    assert u.Unit(fits_unit("Corrected DN / s")) == u.DN / u.s  # as sunpy reads BUNIT
    assert fits_unit("ln(Hz)") == "ln(Hz)"


def test_a_slice_of_the_maps_gets_the_wcs_of_its_own_grid(demo_store, tmp_path):
    """to_map and export_fits on a slice of a store place it where its hpc_x/hpc_y say (they
    copied the whole grid's WCS and put a slice's pixel 0 at the store's); a strided or reversed
    slice, which no linear WCS describes, is refused with the fix, as is a slice of a store
    that does not say where its WCS starts (the whole of such a store still converts)."""
    import sunpy.map

    import specfit
    from specfit.export import export_fits

    ds = specfit.open_results(demo_store)
    assert ds.attrs["wcs_origin"] == [int(ds["x"][0]), int(ds["y"][0])]
    sub = ds.isel(y=slice(10, 20), x=slice(5, 25))
    _check_wcs(specfit.to_map(sub, "m1_index"), sub)
    (f,) = export_fits(sub, tmp_path, maps=["m1_index"])
    _check_wcs(sunpy.map.Map(f), sub)
    for bad in (ds.isel(x=slice(0, None, 2)), ds.isel(y=slice(None, None, -1))):
        with pytest.raises(StoreError, match="not a contiguous block.*Map.submap"):
            specfit.to_map(bad, "m1_index")
        with pytest.raises(StoreError, match="not a contiguous block"):
            export_fits(bad, tmp_path / "no", maps=["m1_index"])
    assert not (tmp_path / "no").exists()
    old = ds.copy()
    old.attrs = {k: v for k, v in ds.attrs.items() if k != "wcs_origin"}
    _check_wcs(specfit.to_map(old, "m1_index"), old)
    with pytest.raises(StoreError, match="wcs_origin"):
        specfit.to_map(old.isel(x=slice(5, 25)), "m1_index")
    # the stage chain on a strided slice has no WCS header: the error says why, not "re-run"
    power = specfit.open_results(demo_store)["power"].isel(y=slice(0, 16, 2), x=slice(0, 16, 2))
    maps = specfit.fit(power, models={"m1": "powerlaw_tail"}).compute()
    with pytest.raises(StoreError, match="not a contiguous block"):
        specfit.to_map(maps, "m1_index")


def test_export_refuses_what_it_would_place_wrong_and_takes_a_name_once(demo_store, tmp_path):
    """An export probe's findings: a Dataset whose x/y coordinates were dropped converted
    silently with its reference pixel moved by the field's origin; one DataArray raised an
    AttributeError, a transposed Dataset had "no map" (listing none); a map named twice in
    --maps wrote it, then failed with a traceback on the second."""
    import specfit
    from specfit.export import export_fits

    ds = specfit.open_results(demo_store)
    sub = ds.isel(y=slice(10, 20), x=slice(5, 25))
    with pytest.raises(StoreError, match="lost its x/y coordinates"):
        specfit.to_map(sub.drop_vars(["x", "y"]), "m1_index")
    with pytest.raises(StoreError, match=r"not one DataArray .*to_map\(ds, 'm1_index'\)"):
        specfit.to_map(ds["m1_index"], "m1_index")
    _check_wcs(specfit.to_map(sub.transpose("x", "y", ...), "m1_index"), sub)
    files = export_fits(ds, tmp_path / "e", maps=["m1_index", "m1_tail", "m1_index"])
    assert [f.name for f in files] == ["m1_index.fits", "m1_tail.fits"]


def test_relative_times_and_no_unit_are_not_passed_off_as_real(tmp_path, capsys):
    """A .npy cube with times in seconds and no unit: the store kept start_time 2000-01-01
    without the reader's note that it is nominal, `specfit info` printed it as a time and
    every exported map carried DATE-BEG = 2000-01-01 as the first frame; amplitudes got
    BUNIT '(intensity)^2/Hz', which FITS readers refuse (the results reviewer). The store
    and info say the start is nominal, the export sets neither DATE-BEG nor a unit it
    cannot give, and says why in a COMMENT."""
    import astropy.units as u
    from astropy.io import fits

    import specfit
    from specfit.export import export_fits

    rng = np.random.default_rng(1)
    cube = np.cumsum(rng.normal(size=(128, 8, 8)), axis=0) + 100.0
    np.save(tmp_path / "cube.npy", cube.astype(np.float32))
    np.save(tmp_path / "t.npy", np.arange(128) * 12.0)
    cfg = tiny_config(tmp_path)
    cfg["input"] = {"path": str(tmp_path / "cube.npy"), "times": str(tmp_path / "t.npy")}
    ds = specfit.run(cfg)
    assert "nominal" in ds.attrs["time_note"], ds.attrs
    info = _cli(capsys, "info", str(tmp_path / "results.zarr")).stdout
    assert "start_time: 2000-01-01T00:00:00.000Z (relative times only" in info, info
    files = {f.stem: f for f in export_fits(ds, tmp_path / "fits")}
    amp = fits.getheader(files["m1_amplitude"])
    assert "DATE-BEG" not in amp and "BUNIT" not in amp, repr(amp)
    comments = "\n".join(str(c) for c in amp["COMMENT"])
    assert "no unit" in comments and "DATE-BEG not set" in comments, comments
    # units that are units stay: minutes, and every BUNIT written parses
    assert fits.getheader(files["m2_bump_period"])["BUNIT"] == "min"
    for f in files.values():
        unit = fits.getheader(f).get("BUNIT", "")
        assert unit in ("", "ln(Hz)") or u.Unit(unit, format="fits"), (f.name, unit)


def test_maps_of_another_run_left_in_the_folder_are_named(demo_store, tmp_path, caplog):
    """export --overwrite of one store into a folder holding another run's export replaced the
    maps of the same names and left the others, two fields in one folder, without a word (a
    probe). They stay (not this export's to remove) and are named; this run's own maps
    exported earlier under other names are not."""
    import specfit
    from specfit.export import export_fits

    out = tmp_path / "fits"
    export_fits(demo_store, out, maps=["m1_index", "m2_index"])
    with caplog.at_level("WARNING", logger="specfit"):
        export_fits(demo_store, out, maps=["m1_tail"])  # the same run: nothing to say
    assert not [r for r in caplog.records if "another run" in r.getMessage()]
    other = specfit.open_results(demo_store)
    other.attrs = {**other.attrs, "config": other.attrs["config"] + "\n# another run"}
    with caplog.at_level("WARNING", logger="specfit"):
        export_fits(other, out, maps=["m1_index"], overwrite=True)
    (said,) = [r.getMessage() for r in caplog.records if "another run" in r.getMessage()]
    assert "2 map(s)" in said and "m1_tail.fits, m2_index.fits" in said
    assert (out / "m2_index.fits").is_file()
