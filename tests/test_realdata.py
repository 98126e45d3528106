"""configs/legacy.yaml against the original specFit's own param.npy, pixel by pixel, and the
README's real-data figures against a fresh run (issue 12 items 2 and 5).

One legacy run (~2 min on 2 cores) serves every test here; they skip cleanly without
``../shared/data``. docs/make_realdata_figures.py regenerates docs/realdata.json, the figures
the README quotes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "realdata.json"


# Issue 12 asks for M2 kept in 96.7 +- 1.5 % (param.npy's share). specfit keeps M2 in ~99.8 %:
# with the original's own rule (raw chi^2 sums) a nested M2 that is fully optimised is never
# worse than M1. The original's M1 pixels are where its single local curve_fit of M2 (from the
# middle of the bounds) stopped in a local minimum above M1's chi^2; re-enacting that procedure
# on specfit's spectra gives param.npy's share (test_the_original_m1_share_is_its_optimiser,
# docs/legacy.md). So that target is not met by specfit's solver, by design.
M2_TOLERANCE = 1.5
ORIGINAL_SUBDIR = ("aia1600_20120606", "original_specfit")


@pytest.fixture(scope="module")
def legacy_store(shared_data, tmp_path_factory) -> Path:
    """The results store of ``specfit run configs/legacy.yaml``."""
    from specfit.pipeline import run

    original = shared_data.joinpath(*ORIGINAL_SUBDIR)
    if not (original / "param.npy").is_file():
        pytest.skip(f"{original}/param.npy is absent")
    out = tmp_path_factory.mktemp("legacy") / "results.zarr"
    run(
        ROOT / "configs" / "legacy.yaml",
        [f"output.path={out}", "cluster.dashboard=false", "output.keep_cube=false"],
    )
    return out


@pytest.fixture(scope="module")
def legacy_run(shared_data, legacy_store) -> dict:
    """The legacy run's comparison with the original's param.npy."""
    import xarray as xr

    from specfit.legacy import compare_original

    return compare_original(xr.open_zarr(legacy_store), shared_data.joinpath(*ORIGINAL_SUBDIR))


@pytest.mark.realdata
@pytest.mark.slow
def test_legacy_reproduces_the_original_pixel_by_pixel(legacy_run):
    """Issue 12's targets for the faithful legacy mode, on the original's own pixel grid."""
    c = legacy_run
    o, s = c["original"], c["specfit"]
    # the original's figures as its README states them (a check that param.npy is the one)
    assert o["index_median"] == pytest.approx(1.371, abs=1e-3)
    assert o["m2_percent"] == pytest.approx(96.74, abs=0.01)
    assert c["correlation"] > 0.8
    assert c["median_abs_dindex"] <= 0.1
    assert s["index_median"] == pytest.approx(1.37, abs=0.03)
    assert s["index_p1"] == pytest.approx(0.82, abs=0.08)
    assert s["index_p99"] == pytest.approx(2.23, abs=0.08)
    assert s["bump_period_median"] == pytest.approx(4.5, abs=0.2)
    # specfit's fully optimised M2 keeps the bump model at least as often as the original did
    assert s["m2_percent"] >= o["m2_percent"]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="issue 12's M2-kept target is the original optimiser's failure rate: specfit's "
    "nested M2 is never worse than M1, so chi2sum keeps it in ~99.8 % (docs/legacy.md)",
)
def test_legacy_keeps_m2_as_often_as_the_original(legacy_run):
    assert legacy_run["specfit"]["m2_percent"] == pytest.approx(96.7, abs=M2_TOLERANCE)


@pytest.mark.realdata
@pytest.mark.slow
def test_the_original_m1_share_is_its_optimiser(shared_data, legacy_store):
    """The original's procedure (single local curve_fit per model from the middle of the
    bounds, chi2 sums) re-run on the legacy run's spectra keeps M2 as often as param.npy
    (issue 12's 96.7 +- 1.5), and where it keeps M1, specfit's M2 on the same spectra has a
    lower chi^2 than that M1: the original's M1 pixels are local minima of its M2 fit.
    Every 10th row (2,618 px, ~1-2 min)."""
    import numpy as np
    import xarray as xr

    from specfit.legacy import compare_choice

    c = compare_choice(
        xr.open_zarr(legacy_store), shared_data.joinpath(*ORIGINAL_SUBDIR), np.arange(0, 134, 10)
    )
    assert c["pixels"] == 14 * 187
    assert c["m2_percent_procedure"] == pytest.approx(96.7, abs=M2_TOLERANCE)
    assert c["m2_percent_procedure"] == pytest.approx(c["m2_percent_param"], abs=M2_TOLERANCE)
    assert c["procedure_m1_specfit_m2_below_m1_percent"] >= 90.0
    # the same pixels more often than chance (the choice there is fragile, not random)
    assert c["m1_both"] >= 3 * c["m1_chance"]


@pytest.mark.realdata
@pytest.mark.slow
def test_readme_quotes_the_regenerated_legacy_figures(legacy_run):
    """docs/realdata.json (written by docs/make_realdata_figures.py) agrees with a fresh run,
    and the README quotes its numbers as they are rounded there."""
    saved = json.loads(FIGURES.read_text())["legacy"]["original_comparison"]
    s, ref = legacy_run["specfit"], saved["specfit"]
    # the run is deterministic up to solver rounding on another machine / BLAS
    for key, tol in (
        ("index_median", 0.01),
        ("index_p1", 0.02),
        ("index_p99", 0.02),
        ("bump_period_median", 0.05),
        ("m2_percent", 0.3),
    ):
        assert s[key] == pytest.approx(ref[key], abs=tol), key
    assert legacy_run["median_abs_dindex"] == pytest.approx(saved["median_abs_dindex"], abs=0.01)
    for key in ("m2_only_specfit", "m2_only_original"):
        assert legacy_run[key] == pytest.approx(saved[key], abs=30), key
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## On real data") :]
    section = section.split("\n## ", 1)[0]  # to the next section, or the end
    table = section[section.index("<!-- realdata:legacy -->") :]
    table = table[: table.index("<!-- /realdata -->")]
    quoted = [float(v) for v in re.findall(r"\d+\.\d+", table)]
    for value, fmt in (
        (ref["index_median"], "{:.2f}"),
        (ref["index_p1"], "{:.2f}"),
        (ref["index_p99"], "{:.2f}"),
        (ref["bump_period_median"], "{:.1f}"),
        (ref["m2_percent"], "{:.1f}"),
        (saved["median_abs_dindex"], "{:.2f}"),
    ):
        assert float(fmt.format(value)) in quoted, f"README does not quote {fmt.format(value)}"

    # the counts of pixels where the two keep different models, as quoted
    for key in ("m2_only_specfit", "m2_only_original"):
        assert f" {saved[key]} " in section.replace("\n", " "), f"README does not quote {key}"


def test_readme_quotes_the_regenerated_aia1600_figures():
    """The README's aia1600 figures are docs/realdata.json's (no run: the legacy tests above
    check that the file holds a run's numbers; the script rewrites both runs)."""
    fig = json.loads(FIGURES.read_text())["aia1600"]
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## On real data") :]
    section = section.split("\n## ", 1)[0]  # to the next section, or the end
    for value in (
        f"{fig['m2_preferred_percent']:.1f} %",
        f"{fig['m1_index_median_where_preferred']:.2f} where M1",
        f"{fig['m2_index_median_where_preferred']:.2f} where M2",
        f"{fig['m1_tail_at_lower_bound_percent']:.1f} %",
        f"{fig['shape'][0]} × {fig['shape'][1]} px in {fig['seconds']:.0f} s",
        f"{fig['lrt_fdr_percent']:.1f} % after BH",
        f"{fig['lrt_global_percent']:.1f} % at the global",
    ):
        assert value in section, f"README's real-data section does not quote {value!r}"
