"""Regenerate every real-data figure the README quotes, from fresh runs, and print them.

    python docs/make_realdata_figures.py [--out DIR] [--only aia1600,legacy]

Runs ``specfit run`` (the CLI, timed as a user would time it) on the AIA 1600 Å frames in
``../shared/data`` with ``configs/aia1600.yaml`` and ``configs/legacy.yaml``, then computes:

- aia1600: field size, wall time, the share of pixels where the LRT prefers M2, the median
  index of each model where it is preferred, the share of M1 tails at their bound (status 7);
- legacy: the same run figures, and the comparison with the original specFit's ``param.npy``
  on the original's own pixel grid (:func:`specfit.legacy.compare_original`);
- aia1600_models (``configs/aia1600_models.yaml``: power law, knee, broken power law and
  kappa function, with bump models nested): the share of pixels where each model is
  preferred, and per model the share of pixels with any parameter (and each parameter) on
  a bound; the map of the preferred model goes to ``docs/img/aia1600_best_model.png``.

It prints them, writes ``docs/img/aia1600_m1_index.png`` and ``aia1600_m2_bump_period.png``
(``specfit plot`` of the aia1600 run) and ``docs/realdata.json`` (the README's real-data section quotes these
numbers; ``tests/test_realdata.py`` checks a fresh legacy run and the README against them).
Results go under ``--out`` (default a temporary folder), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from figure_stamp import stamp  # docs/, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "aia1600_20120606"
ORIGINAL = DATA / "original_specfit"
JSON_OUT = ROOT / "docs" / "realdata.json"


def run_config(name: str, out: Path) -> tuple[Path, float]:
    """``specfit run configs/<name>.yaml`` into ``out/<name>``; returns (store, seconds)."""
    store = out / name / "results.zarr"
    cmd = [
        sys.executable,
        "-m",
        "specfit.cli",
        "run",
        str(ROOT / "configs" / f"{name}.yaml"),
        "--set",
        f"output.path={store}",
        "--set",
        "cluster.dashboard=false",
        "--overwrite",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return store, time.perf_counter() - t0


def plot_maps(store: Path, folder: Path) -> None:
    """``specfit plot`` of the aia1600 run; the two maps the README and docs/explore.md show
    are copied to docs/img/aia1600_<map>.png."""
    import shutil

    subprocess.run(
        # --pvalue 0.05: M2's maps only where the LRT prefers it, as docs/explore.md shows them
        [sys.executable, "-m", "specfit.cli", "plot", str(store), "--out", str(folder)]
        + ["--pvalue", "0.05"],
        check=True,
    )
    for m in ("m1_index", "m2_bump_period"):
        shutil.copyfile(folder / f"{m}.png", ROOT / "docs" / "img" / f"aia1600_{m}.png")
        print(f"wrote docs/img/aia1600_{m}.png")


def run_figures(store: Path, seconds: float) -> dict:
    """Figures of one run: size, time, preferred-model shares and medians, tails at bound."""
    import xarray as xr

    ds = xr.open_zarr(store)
    aliases = ds["best_model"].attrs["flag_meanings"].split()[1:]
    best = np.asarray(ds["best_model"].values)
    out: dict = {
        "shape": [int(ds.sizes["y"]), int(ds.sizes["x"])],
        "seconds": round(seconds, 1),
        "rule": ds["best_model"].attrs.get("rule"),
    }
    for i, a in enumerate(aliases):
        pref = best == i
        out[f"{a}_preferred_percent"] = 100.0 * float(pref.mean())
        n = np.asarray(ds[f"{a}_index"].values, dtype=float)[pref]
        out[f"{a}_index_median_where_preferred"] = float(np.nanmedian(n)) if n.size else None
        status = np.asarray(ds[f"{a}_status"].values)
        out[f"{a}_at_bound_percent"] = 100.0 * float(np.mean(status == 7))
        info = json.loads(ds.attrs["models"])[a]
        names = info["params"]
        if "tail" in names:
            lo = info["bounds"][names.index("tail")][0]
            lo = -np.inf if lo is None else lo
            tail = np.asarray(ds[f"{a}_tail"].values, dtype=float)
            at_lo = tail <= lo + 1e-6 * max(abs(lo), 1e-30)
            out[f"{a}_tail_at_lower_bound_percent"] = 100.0 * float(np.mean(at_lo))
    # field-wide significance (docs/significance.md): share of tested pixels per control
    field = json.loads(ds.attrs.get("field_significance") or "{}").get("lrt_pvalue")
    if field:
        n = max(field["n_tested"], 1)
        out["lrt_pixel_percent"] = 100.0 * field["n_pixel"] / n
        out["lrt_fdr_percent"] = 100.0 * field["n_fdr"] / n
        out["lrt_global_percent"] = 100.0 * field["n_global"] / n
        out["lrt_global_threshold"] = field["per_test_threshold"]
    return out


def model_figures(store: Path, seconds: float) -> dict:
    """Figures of the many-model run (``configs/aia1600_models.yaml``): which model the data
    prefer (share of pixels), and per model the share of pixels with any parameter on a
    bound (status 7), with each parameter on a bound, and the role-"index" median where the
    model is preferred."""
    import xarray as xr

    from specfit.models import get_model

    ds = xr.open_zarr(store)
    aliases = ds["best_model"].attrs["flag_meanings"].split()[1:]
    best = np.asarray(ds["best_model"].values)
    info = json.loads(ds.attrs["models"])
    freq = np.asarray(ds["freq"].values, dtype=float)
    out: dict = {
        "shape": [int(ds.sizes["y"]), int(ds.sizes["x"])],
        "seconds": round(seconds, 1),
        "rule": ds["best_model"].attrs.get("rule"),
        "nonnested": ds["best_model"].attrs.get("nonnested"),
        "none_percent": 100.0 * float(np.mean(best < 0)),
        "models": {},
    }
    for i, a in enumerate(aliases):
        model = get_model(info[a]["name"])  # shipped: its bounds on this frequency grid
        lo, hi = model.bounds_for(freq)
        pref = best == i
        status = np.asarray(ds[f"{a}_status"].values)
        rec: dict = {
            "name": info[a]["name"],
            "preferred_percent": 100.0 * float(pref.mean()),
            "any_at_bound_percent": 100.0 * float(np.mean(status == 7)),
            "any_at_bound_percent_where_preferred": (
                100.0 * float(np.mean(status[pref] == 7)) if pref.any() else None
            ),
            "converged_percent": 100.0 * float(np.mean(status == 0)),
            "at_bound_percent": {},
            "at_bound_percent_where_preferred": {},
        }
        for j, pname in enumerate(model.param_names):
            v = np.asarray(ds[f"{a}_{pname}"].values, dtype=float)
            tol_lo = 1e-6 * max(abs(lo[j]), 1e-30) if np.isfinite(lo[j]) else 0.0
            tol_hi = 1e-6 * max(abs(hi[j]), 1e-30) if np.isfinite(hi[j]) else 0.0
            at = (v <= lo[j] + tol_lo) | (v >= hi[j] - tol_hi)
            rec["at_bound_percent"][pname] = 100.0 * float(np.mean(at))
            if pref.any():
                rec["at_bound_percent_where_preferred"][pname] = 100.0 * float(np.mean(at[pref]))
        index = model.param_with_role("index")
        if index and pref.any():
            v = np.asarray(ds[f"{a}_{index}"].values, dtype=float)[pref]
            rec[f"{index}_median_where_preferred"] = float(np.nanmedian(v))
        out["models"][a] = rec
    out["detail"] = model_details(ds, aliases, best)
    return out


def _pct(mask) -> float:
    return 100.0 * float(np.mean(mask))


def model_details(ds, aliases: list[str], best: np.ndarray) -> dict:
    """The figures docs/models.md quotes in prose, from the same store: BIC margins, what the
    curved models measure where preferred, the bump tests inside each family, the sunspot
    region, goodness of fit."""

    def var(name: str) -> np.ndarray:
        return np.asarray(ds[name].values, dtype=float)

    q = (5, 50, 95)
    bic = {a: var(f"{a}_bic") for a in aliases}
    lowest = np.nanmin(np.stack(list(bic.values())), axis=0)
    out: dict = {"bic_above_lowest_median": {}, "gof_below_5_percent": {}, "gof_median": {}}
    for a in aliases:
        out["bic_above_lowest_median"][a] = float(np.nanmedian(bic[a] - lowest))
        g = var(f"{a}_gof_pvalue")
        out["gof_below_5_percent"][a] = _pct(g[np.isfinite(g)] < 0.05)
        out["gof_median"][a] = float(np.nanmedian(g))
    code = {a: i for i, a in enumerate(aliases)}
    straight = np.isin(best, [code[a] for a in ("m1", "m2") if a in code])
    out["straight_percent"] = _pct(straight)
    if {"b1", "k1", "c1"} <= set(code):
        b1 = best == code["b1"]
        other = np.fmin(bic["k1"], bic["c1"])
        out["b1_bic_below_better_of_k1_c1_median"] = float(np.nanmedian(other - bic["b1"]))
        for name in ("index", "break_period", "index_high"):
            v = var(f"b1_{name}")[b1]
            out[f"b1_{name}_p5_p50_p95_where_preferred"] = [
                float(x) for x in np.nanpercentile(v, q)
            ]
    if "c1" in code:
        c1 = best == code["c1"]
        out["c1_kappa_slope_median_where_preferred"] = float(
            np.nanmedian(var("c1_kappa_slope")[c1])
        )
    for a in aliases:  # inside a family: the LRT's bump rejections, and narrow bumps
        if f"{a}_lrt_pvalue" in ds:
            p = var(f"{a}_lrt_pvalue")
            out[f"{a}_lrt_below_5_percent"] = _pct(p[np.isfinite(p)] < 0.05)
        if f"{a}_bump_width" in ds:
            w = var(f"{a}_bump_width")
            out[f"{a}_bump_width_at_lower_bound_percent"] = _pct(w <= np.nanmin(w) * (1 + 1e-6))
    # The sunspot: the darkest spot of the mean intensity (7 x 7 px box mean), and the share
    # of pixels within 20 px of it that prefer the straight power law (M1 or M2).
    from scipy.ndimage import uniform_filter

    mean = var("mean_intensity")
    smooth = uniform_filter(np.nan_to_num(mean, nan=np.nanmax(mean)), 7)
    cy, cx = np.unravel_index(np.argmin(smooth), smooth.shape)
    yy, xx = np.indices(mean.shape)
    near = (yy - cy) ** 2 + (xx - cx) ** 2 <= 20**2
    out["sunspot_centre_yx"] = [int(cy), int(cx)]
    out["sunspot_straight_percent_within_20px"] = _pct(straight[near])
    out["straight_pixels_within_20px_percent"] = (
        100.0 * float(straight[near].sum()) / max(int(straight.sum()), 1)
    )
    return out


def plot_best_model(store: Path, path: Path) -> None:
    """Map of the preferred model per pixel (categorical), written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr
    from matplotlib.colors import BoundaryNorm, ListedColormap

    ds = xr.open_zarr(store)
    aliases = ds["best_model"].attrs["flag_meanings"].split()[1:]
    info = json.loads(ds.attrs["models"])
    best = np.asarray(ds["best_model"].values)
    colours = ["#bbbbbb", "#1f77b4", "#aec7e8", "#d62728", "#ff9896", "#2ca02c", "#9467bd"]
    colours += ["#c5b0d5", "#8c564b", "#e377c2"]
    cmap = ListedColormap(["black", *colours[: len(aliases)]])
    norm = BoundaryNorm(np.arange(-1.5, len(aliases)), cmap.N)
    fig, ax = plt.subplots(figsize=(8, 6))
    im = ax.imshow(best, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, ticks=np.arange(-1, len(aliases)))
    labels = ["none"] + [
        f"{a} {info[a]['name']} ({100 * np.mean(best == i):.1f} %)" for i, a in enumerate(aliases)
    ]
    cb.ax.set_yticklabels(labels, fontsize=8)
    ax.set_title(
        f"preferred model (rule {ds['best_model'].attrs.get('rule')}, between "
        f"families {ds['best_model'].attrs.get('nonnested')})"
    )
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="where the runs write (default: tmp)")
    p.add_argument(
        "--only", default="aia1600,legacy,aia1600_models", help="comma-separated config names"
    )
    p.add_argument("--json", type=Path, default=JSON_OUT, help="figures file to write")
    args = p.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA.resolve()} (../shared/data)")
    out = args.out or Path(tempfile.mkdtemp(prefix="specfit-realdata-"))
    # each entry says when, on what and on which commit it was measured: a run of some
    # configs keeps the other entries, which may be older
    when = stamp("docs/make_realdata_figures.py")
    figures: dict = {}
    for name in args.only.split(","):
        store, seconds = run_config(name, out)
        if name == "aia1600_models":
            figures[name] = model_figures(store, seconds)
            plot_best_model(store, ROOT / "docs" / "img" / "aia1600_best_model.png")
            continue
        figures[name] = run_figures(store, seconds)
        if name == "aia1600":
            plot_maps(store, out / "aia1600_plots")
        if name == "legacy":
            import xarray as xr

            from specfit.legacy import compare_original

            figures[name]["original_comparison"] = compare_original(xr.open_zarr(store), ORIGINAL)
    for entry in figures.values():
        entry.update(when)
    old = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for key in ("measured", "machine"):  # the file-wide stamp of earlier versions
        old.pop(key, None)
    old.update(figures)
    args.json.write_text(json.dumps(old, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.json}")
    return figures


if __name__ == "__main__":
    main()
