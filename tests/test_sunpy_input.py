"""sunpy objects in memory (MapSequence, list of Maps, NDCube) as specfit input."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("sunpy.map")

from specfit.errors import (
    ConfigError,  # noqa: E402
    InputError,  # noqa: E402
)

AIA_SETTINGS = {
    "input": {"time_key": ["T_OBS", "DATE-OBS"], "exposure_key": "EXPTIME"},
    # Derotation uses each frame's observer and pointing; the cutout keeps the fit small.
    "prep": {
        "derotate": True,
        "cutout": {"x1": 100, "x2": 124, "y1": 60, "y2": 84, "units": "pixel"},
    },
    "resample": {"cadence": 24.0, "max_gap": 1.5},
    "spectra": {"segments": 1, "window": "hann", "detrend": "linear"},
    "fit": {"models": {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}},
    "output": {"tile": 12},
    "cluster": {"kind": "synchronous"},
}


def _aia_files(shared_data, n=60):
    import glob

    files = sorted(glob.glob(str(shared_data / "aia1600_20120606" / "fits" / "*.fits")))
    # Frames 100..159 hold both gaps (48 s and 96 s), so irregular times are exercised too.
    return files[100 : 100 + n]


@pytest.mark.slow  # two runs on real frames, ~25 s with the numba compile
@pytest.mark.realdata
def test_mapsequence_run_equals_file_run(shared_data, tmp_path):
    """The same 60 AIA frames as files and as a MapSequence give bit-identical maps."""
    import copy

    import sunpy.map

    import specfit

    files = _aia_files(shared_data)
    folder = tmp_path / "frames"
    folder.mkdir()
    for f in files:
        os.symlink(f, folder / os.path.basename(f))
    cfg_file = copy.deepcopy(AIA_SETTINGS)
    cfg_file["input"]["path"] = str(folder)
    cfg_file["output"]["path"] = str(tmp_path / "files.zarr")
    ds_file = specfit.run(cfg_file)

    maps = sunpy.map.Map(files, sequence=True)
    cfg_mem = copy.deepcopy(AIA_SETTINGS)
    cfg_mem["output"]["path"] = str(tmp_path / "memory.zarr")
    ds_mem = specfit.run(cfg_mem, data=maps)

    assert ds_mem.attrs["gaps"] == ds_file.attrs["gaps"] != "[]"
    assert "input.kind: memory" not in ds_file.attrs["config"]
    assert "kind: memory" in ds_mem.attrs["config"]
    names = [v for v in ds_file.data_vars if v.startswith(("m1_", "m2_"))]
    assert "m2_bump_center" in names and "power" in ds_file
    for v in [*names, "power", "mean_intensity", "best_model"]:
        a, b = ds_file[v].values, ds_mem[v].values
        # Same frames, same cleaning function, same times and WCS: same numbers exactly.
        np.testing.assert_array_equal(a, b, err_msg=v)
    for c in ("hpc_x", "hpc_y"):
        np.testing.assert_array_equal(ds_file[c].values, ds_mem[c].values)
    assert np.isfinite(ds_mem["m1_index"].values).mean() > 0.9


def _tiny_maps(seed: int, n: int = 64):
    """n small Maps with a helioprojective WCS, 12 s apart, exposure 2 s (in memory only)."""
    import astropy.units as u
    import sunpy.map
    from astropy.time import Time, TimeDelta

    rng = np.random.default_rng(seed)
    t0 = Time("2020-01-01T00:00:00", scale="utc")
    maps = []
    for i in range(n):
        header = {
            "CTYPE1": "HPLN-TAN",
            "CTYPE2": "HPLT-TAN",
            "CUNIT1": "arcsec",
            "CUNIT2": "arcsec",
            "CDELT1": 0.6,
            "CDELT2": 0.6,
            "CRPIX1": 8.5,
            "CRPIX2": 8.5,
            "CRVAL1": 100.0,
            "CRVAL2": -200.0,
            "DATE-OBS": (t0 + TimeDelta(12.0 * i, format="sec")).isot,
            "EXPTIME": 2.0,
            "DSUN_OBS": u.AU.to(u.m),
            "HGLN_OBS": 0.0,
            "HGLT_OBS": 0.0,
            "BUNIT": "DN",
        }
        maps.append(sunpy.map.Map(rng.gamma(5.0, 20.0, (16, 16)).astype("float32"), header))
    return maps


def test_list_of_maps_times_exposure_wcs():
    import specfit

    maps = _tiny_maps(0)
    arr = specfit.ingest(list(reversed(maps)))  # any order: sorted by time
    np.testing.assert_allclose(arr["time"].values, 12.0 * np.arange(64))
    np.testing.assert_array_equal(arr["exposure"].values, 2.0)
    assert arr.attrs["bunit"] == "DN / s" and arr.attrs["kind"] == "memory"
    assert arr.attrs["start_time"] == "2020-01-01T00:00:00.000Z"
    np.testing.assert_allclose(arr["hpc_x"].values[7, 7], 100.0 - 0.3, atol=1e-3)
    np.testing.assert_allclose(arr["hpc_y"].values[7, 7], -200.0 - 0.3, atol=1e-3)
    np.testing.assert_array_equal(arr.values[5], maps[5].data / np.float32(2.0))


def test_dask_backed_maps_stay_lazy():
    import dask.array as da
    import sunpy.map

    import specfit

    maps = _tiny_maps(0, n=10)
    calls = []

    def read(block):
        calls.append(block.shape)
        return block

    lazy = [
        sunpy.map.Map(da.from_array(m.data, chunks=(8, 16)).map_blocks(read), m.meta) for m in maps
    ]
    calls.clear()  # dask calls ``read`` on empty arrays to infer the dtype: not a read
    arr = specfit.ingest(lazy)
    assert calls == []  # opening reads nothing; each frame is read when its chunk is computed
    np.testing.assert_array_equal(arr.values, specfit.ingest(maps).values)
    assert sorted(set(calls)) == [(8, 16)] and len(calls) == 20  # 10 frames x 2 chunks


def test_ndcube_dask_backed_stays_lazy():
    import astropy.wcs
    import dask.array as da
    from astropy.time import Time

    ndcube = pytest.importorskip("ndcube")

    import specfit

    w = astropy.wcs.WCS(naxis=3)
    w.wcs.ctype = ["HPLN-TAN", "HPLT-TAN", "UTC"]
    w.wcs.cunit = ["arcsec", "arcsec", "s"]
    w.wcs.cdelt = [0.6, 0.6, 12.0]
    w.wcs.crpix = [1, 1, 1]
    w.wcs.crval = [100.0, 200.0, 0.0]
    w.wcs.mjdref = [Time("2012-06-06T05:00:00", scale="utc").mjd, 0.0]
    w.wcs.set()
    calls = []

    def frame(block, block_info=None):
        calls.append(block_info[0]["array-location"][0])
        return np.ones(block.shape, np.float32) * 6.0

    data = da.zeros((20, 8, 10), chunks=(5, 8, 10), dtype="f4").map_blocks(frame, dtype="f4")
    cube = ndcube.NDCube(data, wcs=w, meta={"EXPTIME": 2.0})
    calls.clear()
    arr = specfit.ingest(cube)
    assert calls == [] and arr.chunks is not None  # nothing was read to open it
    assert arr.attrs["start_time"] == "2012-06-06T05:00:00.000Z"
    np.testing.assert_allclose(arr["time"].values, 12.0 * np.arange(20))
    np.testing.assert_allclose(arr["hpc_x"].values[0, :2], [100.0, 100.6], atol=1e-6)
    assert float(arr.isel(time=3).mean()) == 3.0  # 6 / exposure 2


def test_memory_input_errors(tmp_path):
    import astropy.units as u

    import specfit
    from specfit.pipeline import run

    maps = _tiny_maps(0, n=8)
    with pytest.raises(ConfigError, match="data="):
        run({"input": {"path": str(tmp_path)}, "cluster": {"kind": "synchronous"}}, data=maps)
    with pytest.raises(InputError, match="MapSequence"):
        specfit.ingest({"kind": "memory"}, data=np.zeros((3, 4, 4)))
    with pytest.raises(InputError, match="data=maps"):
        specfit.ingest({"kind": "memory"})
    odd = [*maps[:3], maps[3].superpixel((2, 2) * u.pix)]
    with pytest.raises(InputError, match="Map 3 has shape"):
        specfit.ingest(odd)


def test_cube_not_reused_for_other_data(tmp_path):
    """Two runs on different in-memory data with one config never share the cube or a resume."""
    from specfit.errors import StoreError
    from specfit.pipeline import run

    cfg = {
        "resample": {"cadence": 12.0},
        "spectra": {"segments": 1},
        "fit": {"models": {"m1": "powerlaw_tail"}},
        "output": {"path": str(tmp_path / "r.zarr"), "tile": 8},
        "cluster": {"kind": "synchronous"},
    }
    a = run(cfg, data=_tiny_maps(1))["mean_intensity"].values
    b = run(cfg, data=_tiny_maps(2), overwrite=True)["mean_intensity"].values
    assert not np.allclose(a, b)
    with pytest.raises(StoreError, match="frames given in memory"):
        # A finished store with the same config is "done" only for the same data.
        run(cfg, data=_tiny_maps(3), resume=True)
    again = run(cfg, data=_tiny_maps(2), resume=True)  # the same data: nothing to do
    np.testing.assert_array_equal(again["mean_intensity"].values, b)


def test_maps_flagged_by_quality_are_left_out():
    """A Map whose meta QUALITY has a bad bit (eclipse here) is left out as a FITS frame is,
    and said; the others are read as before."""
    import specfit

    maps = _tiny_maps(0)
    maps[3].meta["QUALITY"] = 1 << 13
    assert specfit.ingest(maps).sizes["time"] == 64  # not an AIA frame: its bits mean other things
    maps[3].meta["TELESCOP"] = "SDO/AIA"
    with pytest.warns(UserWarning, match=r"left out 1 of 64 frames .*bit 13 \(1\).*data= Map 3"):
        arr = specfit.ingest(maps)
    np.testing.assert_allclose(arr["time"].values, 12.0 * np.delete(np.arange(64), 3))
    np.testing.assert_array_equal(arr.values[3], maps[4].data / np.float32(2.0))
    del maps[5].meta["EXPTIME"]  # later messages keep the user's numbering of the Maps
    with pytest.warns(UserWarning, match="left out 1"), pytest.raises(InputError, match="Map 5:"):
        specfit.ingest(maps)


def test_maps_without_a_readable_date_or_of_another_channel_are_refused():
    """A probe: a Map without a date sunpy reads (none, or DATE-OBS with a UTC offset) got
    sunpy's fallback, the current time, as its frame time: undated Maps ran to the end on a
    made-up 4e-5 s cadence, one undated Map moved to the end of the series. And Maps skipped
    the checks a folder of the same frames gets (one channel, one pixel grid)."""
    import sunpy.map

    import specfit

    maps = _tiny_maps(1, n=24)
    for change, message in (
        ({"DATE-OBS": None}, r"data= Map 7: no observation time sunpy can read"),
        ({"DATE-OBS": "2020-01-01T00:01:24+02:00"}, r"data= Map 7: no observation time"),
        ({"WAVELNTH": 304}, r"data= Map 7"),
        ({"CDELT1": 1.2, "CDELT2": 1.2}, r"data= Map 7: its pixel grid"),
    ):
        odd = list(maps)
        meta = dict(maps[7].meta)
        for k, v in change.items():
            meta.pop(k.lower(), None)
            if v is not None:
                meta[k] = v
        if "WAVELNTH" in change:  # the others carry one too, as an AIA series does
            odd = [sunpy.map.Map(m.data, {**dict(m.meta), "WAVELNTH": 1600}) for m in maps]
        odd[7] = sunpy.map.Map(maps[7].data, meta)
        with pytest.raises(InputError, match=message):
            specfit.ingest(odd)
