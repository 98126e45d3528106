# ruff: noqa: F401, F811  (pytest fixtures imported from conftest_viz, re-used as arguments)
"""``specfit plot``: a PNG per map (matplotlib) and one self-contained HTML page (bokeh)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest_viz import viz_store
from specfit.store import open_results
from specfit.viz.data import map_catalog


def _check_png(path: Path) -> np.ndarray:
    """A real picture: a sane size and a map area with many colours, not a blank canvas."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    h, w, _ = img.shape
    assert w >= 400 and h >= 200, f"{path.name}: {w}x{h} is too small for a map + histogram"
    assert img.std() > 20, f"{path.name} looks blank"
    return img


def _check_html(page: str, names: list[str]) -> None:
    for name in names:
        assert f'id=\\"{name}\\"' in page, f"map {name} missing from the HTML page"
    # One bokeh Image glyph per map, and nothing loaded from elsewhere (shareable offline).
    assert page.count('"name":"Image"') >= len(names)
    assert not re.search(r"<script[^>]*\bsrc=", page), "the page must not load external scripts"


# A handful of maps of every kind (log10 parameter, derived period, categorical, statistic)
# keeps the default test fast; the slow CLI test below draws every map of the demo store.
SOME_MAPS = ["m1_index", "m1_tail", "m2_bump_period", "m2_status", "best_model", "lrt_pvalue"]


def test_plot_results_png_and_html(viz_store, tmp_path):
    from specfit.viz import plot_results

    files = plot_results(viz_store, tmp_path / "plots", maps=SOME_MAPS, pvalue_threshold=0.05)
    pngs = {p.stem: p for p in files if p.suffix == ".png"}
    assert set(pngs) == set(SOME_MAPS)
    pics = {n: _check_png(p) for n, p in pngs.items()}
    # Different data make different pictures (the map is really drawn from the store).
    assert not np.array_equal(pics["m1_index"], pics["m1_tail"])
    html = [p for p in files if p.suffix == ".html"]
    assert len(html) == 1
    _check_html(html[0].read_text(), SOME_MAPS)


def test_html_page_holds_every_map(viz_store, tmp_path):
    from specfit.viz import plot_results

    names = [s.name for s in map_catalog(open_results(viz_store))]
    files = plot_results(viz_store, tmp_path, png=False)
    assert [p.name for p in files] == ["maps.html"]
    _check_html(files[0].read_text(), names)


def test_plot_never_overwrites_files_it_did_not_write(viz_store, tmp_path):
    """A folder holding the user's own m1_index.png and maps.html: refused before any file is
    written, both left as they were; plotting again into specfit's own plot folder works."""
    from specfit.errors import StoreError
    from specfit.viz import plot_results

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "m1_index.png").write_bytes(b"my precious")
    (mine / "maps.html").write_text("<html>mine</html>")
    with pytest.raises(StoreError, match=r"m1_index.png, maps.html, not written by specfit plot"):
        plot_results(viz_store, mine, maps=["m1_index"])
    assert (mine / "m1_index.png").read_bytes() == b"my precious"
    assert sorted(p.name for p in mine.iterdir()) == ["m1_index.png", "maps.html"]
    out = tmp_path / "plots"
    first = plot_results(viz_store, out, maps=["m1_index"])
    again = plot_results(viz_store, out, maps=["m1_index", "m1_tail"])  # its own: replaced
    assert {f.name for f in first} < {f.name for f in again}
    # a file specfit wrote, replaced since by the user's own of the same name, is theirs (the
    # marker held names only: it was overwritten; docs reviewer)
    (out / "m1_tail.png").unlink()
    (out / "m1_tail.png").write_bytes(b"mine now")
    with pytest.raises(StoreError, match=r"m1_tail.png, not written by specfit plot"):
        plot_results(viz_store, out, maps=["m1_index", "m1_tail"])
    assert (out / "m1_tail.png").read_bytes() == b"mine now"
    plot_results(viz_store, out, maps=["m1_index"])  # its own files: still replaced
    # a copy of the folder that does not keep file times is still specfit's to replace
    import shutil

    copy = shutil.copytree(out, tmp_path / "copy", copy_function=shutil.copy)
    plot_results(viz_store, copy, maps=["m1_index"])
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        plot_results(viz_store, tmp_path / "file", maps=["m1_index"])


def test_plot_results_rejects_unknown_map(viz_store, tmp_path):
    from specfit.errors import ConfigError
    from specfit.viz import plot_results

    with pytest.raises(ConfigError, match="unknown map.*nope"):  # a KeyError before
        plot_results(viz_store, tmp_path, maps=["nope"])


def test_heatmap_names_an_unknown_map(viz_store):
    """specfit.viz.heatmap raised a bare StopIteration for a name not in the store (the
    explorer reviewer); it now says which maps there are, as map_values does."""
    from specfit.viz import heatmap

    ds = open_results(viz_store)
    with pytest.raises(KeyError, match="no map 'm2_bump_periods'.*available: .*m1_index"):
        heatmap(ds, "m2_bump_periods")


def test_plot_results_missing_store_is_clear(tmp_path):
    from specfit.viz import plot_results

    with pytest.raises(FileNotFoundError, match="not a results store|does not exist"):
        plot_results(tmp_path / "absent.zarr", tmp_path / "out")


def test_a_folder_holding_a_store_or_a_config_is_named_in_the_error(viz_store, tmp_path):
    """`specfit info FOLDER` where FOLDER holds results.zarr, or given the run's config:
    the error says what to give instead."""
    import shutil

    from specfit.store import open_results

    shutil.copytree(viz_store, tmp_path / "run" / "results.zarr")
    with pytest.raises(FileNotFoundError, match=r"holds the results store .*results\.zarr: give"):
        open_results(tmp_path / "run")
    (tmp_path / "run.yaml").write_text("output: {path: run/results.zarr}\n")
    with pytest.raises(FileNotFoundError, match="names its results store in output.path"):
        open_results(tmp_path / "run.yaml")


def test_pvalue_threshold_outside_0_1_is_refused(viz_store, tmp_path, capsys):
    """--pvalue -1 blanked every bump map, --pvalue 5 masked nothing: both are refused."""
    from specfit.cli import main
    from specfit.viz import plot_results

    for bad in ("-1", "5", "0", "nan"):
        with pytest.raises(SystemExit):
            main(["plot", str(viz_store), "--pvalue", bad])
        assert "is not a threshold in (0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        plot_results(viz_store, tmp_path / "p", pvalue_threshold=1.5)


@pytest.mark.slow
def test_cli_plot_on_demo_store(demo_store, tmp_path):
    """`specfit plot` on the lead's real pipeline store: a PNG per map + the HTML page."""
    from specfit.cli import main

    out = tmp_path / "plots"
    assert main(["plot", str(demo_store), "--out", str(out)]) == 0
    names = [s.name for s in map_catalog(open_results(demo_store))]
    for name in names:
        _check_png(out / f"{name}.png")
    _check_html((out / "maps.html").read_text(), names)


def test_cli_plot_default_folder_keeps_a_version_suffix(tmp_path, monkeypatch, capsys):
    """`specfit plot res.v1` draws into res.v1_plots, as output.plots does (it was res_plots,
    shared by res.v1 and res.v2); `.zarr` is left out of the name. (The drawing itself is
    tested above; here only where it goes.)"""
    import specfit.viz
    import specfit.viz.maps
    from specfit.cli import main
    from specfit.viz.__main__ import main as viz_main

    drawn = []

    def record(results, out, **_):
        drawn.append((Path(results).name, Path(out)))
        return []

    monkeypatch.setattr(specfit.viz, "plot_results", record)
    monkeypatch.setattr(specfit.viz.maps, "plot_results", record)
    assert main(["plot", str(tmp_path / "res.v1")]) == 0
    assert main(["plot", str(tmp_path / "res.v2.zarr") + "/"]) == 0
    assert viz_main(["plot", str(tmp_path / "other.v3.zarr")]) == 0
    assert drawn == [
        ("res.v1", tmp_path / "res.v1_plots"),
        ("res.v2.zarr", tmp_path / "res.v2_plots"),
        ("other.v3.zarr", tmp_path / "other.v3_plots"),
    ]
    (tmp_path / "res.v1").mkdir()
    monkeypatch.chdir(tmp_path / "res.v1")  # `specfit plot .` inside the store: a traceback
    assert main(["plot", "."]) == 0
    assert drawn[-1][1] == tmp_path / "res.v1_plots"


def test_decimate_block_means_and_codes():
    import xarray as xr

    from specfit.viz.maps import decimate

    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 11))
    a[0, 0] = np.nan
    da = xr.DataArray(a, dims=("y", "x"))
    small, factor = decimate(da, 4)
    assert factor == 3 and small.shape == (3, 3)
    want = np.array(
        [[np.nanmean(a[3 * i : 3 * i + 3, 3 * j : 3 * j + 3]) for j in range(3)] for i in range(3)]
    )
    np.testing.assert_allclose(small.values, want)
    codes, _ = decimate(xr.DataArray(np.arange(110).reshape(10, 11) % 7, dims=("y", "x")), 4, True)
    # each block's centre pixel, where image_element draws the block (its first pixel was
    # drawn a pixel off at factor 3; explorer probe)
    np.testing.assert_array_equal(codes.values, (np.arange(110).reshape(10, 11) % 7)[1:9:3, 1:9:3])
    assert decimate(da, None)[1] == 1 and decimate(da, 100)[1] == 1


def test_plot_results_decimates_large_maps(tmp_path):
    """A map over max_pixels is shrunk before drawing (mostly-NaN store, pixel axes)."""
    from conftest_viz import make_large_store
    from specfit.viz import plot_results

    store = make_large_store(tmp_path / "big.zarr", n=96, nfreq=8, chunk=16)
    files = plot_results(store, tmp_path / "out", maps=["m1_index", "m1_status"], max_pixels=32)
    _check_png(files[0])
    page = files[-1].read_text()
    _check_html(page, ["m1_index", "m1_status"])


def test_an_all_nan_map_plots_without_numpy_noise(viz_store, tmp_path):
    """A map with no finite value (every tail on its bound: no error bar) is drawn empty,
    without numpy's 'All-NaN slice' warning from inside the plotting library."""
    import warnings

    import specfit
    from specfit.viz import plot_results

    ds = specfit.open_results(viz_store).load()
    ds["m1_index"][:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        files = plot_results(ds, tmp_path / "p", maps=["m1_index"], html_page=True)
    assert {f.name for f in files} == {"m1_index.png", "maps.html"}


@pytest.mark.parametrize(
    "cut", [{"y": slice(2, 3)}, {"x": slice(1, 2)}, {"y": slice(2, 3), "x": slice(1, 2)}]
)
def test_a_single_row_or_column_plots(viz_store, tmp_path, cut):
    """A store of one row or column (a slit-like cutout): holoviews took the pixel size from
    the centres' spacing, NaN for one centre, and plot and explore failed ('cannot convert
    float NaN to integer'; 1 x 1: 'Axis limits cannot be NaN'; export reviewer)."""
    import specfit
    from specfit.viz import plot_results
    from specfit.viz.app import build_explorer

    ds = specfit.open_results(viz_store).isel(cut)
    files = plot_results(ds, tmp_path / "p", maps=["m1_index", "best_model"])
    assert {f.name for f in files} == {"m1_index.png", "best_model.png", "maps.html"}
    _check_html(files[-1].read_text(), ["m1_index", "best_model"])
    assert build_explorer(ds) is not None


def test_status_maps_tick_their_codes(demo_store):
    """A categorical map's colour bar ticked 0.5, 1.0, 1.5 between its colours; it ticks
    the codes now (specfit plot, matplotlib)."""
    import holoviews as hv

    from specfit.viz.maps import heatmap

    layout = heatmap(demo_store, "m2_status", backend="matplotlib")
    image = layout.Image.I
    ticks = hv.Store.lookup_options("matplotlib", image, "plot").kwargs["cbar_ticks"]
    codes = layout.Image.I.dimension_values(2)
    codes = codes[np.isfinite(codes)]
    assert ticks == list(range(int(codes.min()), int(codes.max()) + 1))


def test_pngs_an_earlier_plot_left_are_named(viz_store, tmp_path, caplog):
    """A second plot into one folder replaced only the maps it drew: PNGs of maps it did not
    draw (a replaced run's m2 maps, another store's) stayed beside its own without a word (a
    probe). They stay (not this plot's to remove), and are named."""
    from specfit.viz import plot_results

    out = tmp_path / "plots"
    plot_results(viz_store, out, maps=["m1_index", "m1_tail"], html_page=False)
    (out / "m1_tail.png").write_bytes(b"the user's own now")  # changed since: not named
    with caplog.at_level("WARNING", logger="specfit"):
        plot_results(viz_store, out, maps=["m1_index"], html_page=False)
    assert not [r for r in caplog.records if "earlier specfit plot" in r.getMessage()]
    plot_results(viz_store, tmp_path / "p2", maps=["m1_index", "m1_tail"], html_page=False)
    caplog.clear()
    with caplog.at_level("WARNING", logger="specfit"):
        plot_results(viz_store, tmp_path / "p2", maps=["m1_index"], html_page=False)
    (said,) = [r.getMessage() for r in caplog.records if "earlier specfit plot" in r.getMessage()]
    assert "1 PNG(s)" in said and "(m1_tail.png)" in said
    assert (tmp_path / "p2" / "m1_tail.png").is_file()
