"""configs/legacy.yaml against the original specFit's own param.npy, pixel by pixel, and the
README's real-data figures against a fresh run (issue 12 items 2 and 5).

One legacy run (~15 min on 2 cores: the original's optimiser, scipy per pixel) serves every test here; they skip cleanly without
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


# Issue 12 asks for M2 kept in 96.7 +- 1.5 % (param.npy's share). With the original's rule (raw
# chi^2 sums) that share measures the original's optimiser: its single local curve_fit of M2
# from the middle of the bounds stopped above M1's chi^2 on ~3 % of pixels. configs/legacy.yaml
# therefore fits with that procedure (fit.optimizer: original); specfit's own solver, whose M2
# is never worse than the M1 nested in it, keeps M2 on ~99.8 % (docs/legacy.md).
M2_TOLERANCE = 1.5
# The legacy run (the original's scipy optimiser on 25,058 px) is set up by whichever test
# asks first, inside that test's timeout: it took 857 s in one CI run on this 2-core machine
# and over 900 s (pyproject's default timeout) in the next, so these tests get more.
LEGACY_TIMEOUT = 3600
ORIGINAL_SUBDIR = ("aia1600_20120606", "original_specfit")


def _section(text: str, start: str) -> str:
    """``text`` from the heading ``start`` to the next heading of the same level."""
    level = start.split(" ", 1)[0]
    section = text[text.index(start) :]
    return section.split(f"\n{level} ", 1)[0]


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
@pytest.mark.timeout(LEGACY_TIMEOUT)
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


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(LEGACY_TIMEOUT)
def test_legacy_keeps_m2_as_often_as_the_original(legacy_run, legacy_store):
    """With the original's optimiser (fit.optimizer: original) and its raw chi^2 rule, M2 is
    kept as often as in param.npy; a curve_fit call that raised leaves that model NaN with
    status 10 on that pixel (rare), and the other model is kept there."""
    import numpy as np
    import xarray as xr

    assert legacy_run["specfit"]["m2_percent"] == pytest.approx(96.7, abs=M2_TOLERANCE)
    assert legacy_run["specfit"]["m2_percent"] == pytest.approx(
        legacy_run["original"]["m2_percent"], abs=M2_TOLERANCE
    )
    ds = xr.open_zarr(legacy_store)
    s1, s2 = ds["m1_status"].values, ds["m2_status"].values
    best = ds["best_model"].values
    assert 0 < np.mean((s1 == 10) | (s2 == 10)) < 0.01
    assert np.all(best[(s1 == 10) & (s2 != 10)] == 1)
    assert np.all(best[(s2 == 10) & (s1 != 10)] == 0)
    assert np.all(np.isnan(ds["m1_index"].values[s1 == 10]))


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(LEGACY_TIMEOUT)
def test_the_original_m1_share_is_its_optimiser(legacy_store):
    """The same spectra and settings fitted by specfit's own solver (fit.optimizer: specfit)
    keep M2 almost everywhere, and where the original's procedure kept M1, specfit's M2 has a
    lower raw chi^2 than that M1: the original's M1 pixels are local minima of its M2 fit,
    not pixels without a better bump model. Every 10th row (2,618 px, seconds)."""
    import numpy as np
    import xarray as xr

    from specfit import stages
    from specfit.config import load_config

    cfg = load_config(ROOT / "configs" / "legacy.yaml").fit
    ds = xr.open_zarr(legacy_store).isel(y=slice(0, None, 10))
    ours = stages.fit(
        ds["power"],
        models=cfg.models,
        method=cfg.method,
        bounds=cfg.bounds,
        weights=cfg.weights,
        best_model=cfg.best_model,
        multistart=cfg.multistart,
        optimizer="specfit",
    ).compute()
    assert ours.sizes["y"] * ours.sizes["x"] == 14 * 187
    run_m1 = ds["best_model"].values == 0
    assert 1.0 < 100 * run_m1.mean() < 6.0
    assert 100 * np.mean(ours["best_model"].values == 1) >= 99.0
    # raw weighted chi^2 sums (chi2red x (n - p), the spectra's units)
    nf = ds.sizes["freq"]
    chi2_m1 = ds["m1_chi2red"].values.astype(float) * (nf - 3)
    chi2_m2 = ours["m2_chi2red"].values.astype(float) * (nf - 6)
    below = chi2_m2[run_m1] < chi2_m1[run_m1]
    assert 100 * below.mean() >= 90.0


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(LEGACY_TIMEOUT)
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
    section = _section(readme, "## On real data")
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
    section = _section(readme, "## On real data")
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
    # docs/explore.md shows that run's maps and says where M2's bump is significant
    explore = " ".join((ROOT / "docs" / "explore.md").read_text().split())
    assert f"{fig['lrt_pixel_percent']:.1f} % of pixels" in explore, "docs/explore.md's LRT share"


# The parameters docs/models.md's table lists under "position on a bound", in this order.
POSITION_PARAMS = ("knee", "break_freq", "kappa_rho", "bump_width")


def test_docs_quote_the_regenerated_model_figures():
    """docs/models.md's table and prose on the seven-model AIA 1600 run, and the README's
    summary of it, are docs/realdata.json's ``aia1600_models`` figures as rounded there (the
    script writes them from one run; no run here)."""
    fig = json.loads(FIGURES.read_text())["aia1600_models"]
    models, detail = fig["models"], fig["detail"]
    doc = (ROOT / "docs" / "models.md").read_text()
    run = _section(doc, "## The run")
    rows = {}
    for line in run.splitlines():
        m = re.match(r"\| `(\w+)` `\w+` \|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    assert set(rows) == set(models), "docs/models.md's table rows are not the run's models"
    for a, rec in models.items():
        cells, every, pref = (
            rows[a],
            rec["at_bound_percent"],
            rec["at_bound_percent_where_preferred"],
        )
        assert cells[0] == f"{rec['preferred_percent']:.1f}", (a, "preferred")
        assert cells[1] == f"{rec['any_at_bound_percent']:.1f}", (a, "any on a bound")
        assert cells[2] == f"{rec['any_at_bound_percent_where_preferred']:.1f}", (a, "… preferred")
        assert cells[3] == f"{every['tail']:.1f} / {pref['tail']:.1f}", (a, "tail")
        position = ", ".join(
            f"{p} {every[p]:.1f} / {pref[p]:.1f}" for p in POSITION_PARAMS if p in every
        )
        assert cells[4] == (position or "—"), (a, "position")
        (median,) = [v for k, v in rec.items() if k.endswith("_median_where_preferred")]
        assert cells[5].endswith(f" {median:.2f}"), (a, "median where preferred")
    ny, nx = fig["shape"]
    run_text = " ".join(run.split())
    assert f"{ny} × {nx} px" in run_text, "field size"
    assert f"{fig['seconds']:.0f} s wall" in run_text, "the run's time"

    # the prose of "What the data say", each figure as rounded there
    say = " ".join(_section(doc, "## What the data say").split())
    pct = {a: rec["preferred_percent"] for a, rec in models.items()}
    curved = 100 - detail["straight_percent"] - fig["none_percent"]
    bic, gof = detail["bic_above_lowest_median"], detail["gof_below_5_percent"]
    b1 = (
        detail["b1_index_p5_p50_p95_where_preferred"],
        detail["b1_break_period_p5_p50_p95_where_preferred"],
    )
    quoted = [
        f"curved background is preferred on {curved:.0f} %",
        f"broken {pct['b1']:.1f} %, kappa {pct['c1']:.1f} %, knee {pct['k1']:.1f} %",
        f"their bump variants {pct['k2'] + pct['c2']:.1f} %",
        f"on {detail['straight_percent']:.1f} %",
        f"{detail['sunspot_straight_percent_within_20px']:.0f} % of pixels prefer the straight",
        f"a quarter ({detail['straight_pixels_within_20px_percent']:.0f} %)",
        f"median BIC of M1 is {bic['m1']:.0f} above the lowest BIC, M2's {bic['m2']:.0f}",
        f"{models['b1']['at_bound_percent_where_preferred']['tail']:.1f} % of the pixels where `broken_tail`",
        f"{models['k1']['at_bound_percent_where_preferred']['tail']:.1f} % for `knee_tail`",
        f"{models['c1']['at_bound_percent_where_preferred']['tail']:.1f} % for `kappa_tail`",
        f"(M1: {models['m1']['at_bound_percent']['tail']:.0f} % of all pixels)",
        "The knee, break and kappa width are on a bound on at most "
        + f"{max(models['k1']['at_bound_percent_where_preferred']['knee'], models['b1']['at_bound_percent_where_preferred']['break_freq'], models['c1']['at_bound_percent_where_preferred']['kappa_rho']):.2f} %",
        f"upper bound 10 on {models['b1']['at_bound_percent_where_preferred']['index_high']:.1f} %",
        f"upper bound 50 on {models['c1']['at_bound_percent_where_preferred']['kappa']:.1f} %",
        f"median BIC of `broken_tail` is {detail['b1_bic_below_better_of_k1_c1_median']:.1f} below",
        f"the index is {b1[0][1]:.2f} (5th–95th percentile {b1[0][0]:.2f}–{b1[0][2]:.2f})",
        f"at a period of {b1[1][1]:.1f} min ({b1[1][0]:.1f}–{b1[1][2]:.1f} min)",
        f"its knee is {models['k1']['index_median_where_preferred']:.1f}",
        f"κ + 1 of the kappa function {detail['c1_kappa_slope_median_where_preferred']:.1f}",
        f"here on {pct['m2']:.1f} %",
        f"on {detail['k2_lrt_below_5_percent']:.0f} % and {detail['c2_lrt_below_5_percent']:.0f} %",
        f"below 5 % on {gof['m1']:.0f} % of pixels for M1, {gof['m2']:.0f} % for M2, {gof['b1']:.0f} % for",
    ]
    for value in quoted:
        assert value in say, f"docs/models.md's prose does not quote {value!r}"

    readme = " ".join((ROOT / "README.md").read_text().split())
    for value in (
        f"curved background is preferred on {curved:.0f} % of the pixels",
        f"(broken {pct['b1']:.1f} %, kappa {pct['c1']:.1f} %, knee {pct['k1']:.1f} %, bump variants {pct['k2'] + pct['c2']:.1f} %)",
        f"median ΔBIC {detail['b1_bic_below_better_of_k1_c1_median']:.1f}",
        f"at 5 % on {gof['b1']:.0f} % of the pixels",
        f"{fig['seconds']:.0f} s on 2",
    ):
        assert value in readme, f"README does not quote {value!r}"
