"""``specfit demo``: synthetic frames -> the whole pipeline -> recovered vs true parameters.

The demo's settings are ``DEMO_CONFIG``, read from the shipped ``specfit/configs/demo.yaml``
(``specfit config show demo``); only its input and output paths are put under ``--out``. The
synthetic data have known parameter maps (:mod:`specfit.synthetic`), so the demo ends with a
table of recovered minus true values per parameter.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_CONFIG", "demo", "recovery_table"]


def _shipped_demo_config() -> dict[str, Any]:
    """The settings of the shipped ``specfit/configs/demo.yaml`` (paths are set per run)."""
    import yaml

    from specfit.examples import config_path

    return yaml.safe_load(config_path("demo").read_text())


DEMO_CONFIG: dict[str, Any] = _shipped_demo_config()


def config_for(out: Path) -> dict:
    """The demo's config for the folder ``out`` (the shipped demo.yaml, its paths in ``out``)."""
    import copy

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["input"]["path"] = str(out / "synthetic")
    cfg["output"]["path"] = str(out / "results.zarr")
    return cfg


def _made_by_a_demo(results: Path, cfg: dict) -> bool:
    """True if ``results`` is a store this demo folder's run wrote (its input is the demo's
    synthetic frames). Any other store there (a real run's, moved or copied in) is only
    replaced with ``--overwrite``, as ``specfit run`` does."""
    from specfit.store import stored_input_path

    path = stored_input_path(results)
    return bool(path) and Path(path).resolve() == Path(cfg["input"]["path"]).resolve()


def _robust(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))


def _recovery_specs(ds) -> list[tuple[str, str, str, bool]]:
    """(alias, quantity, kind, bump pixels?) rows, read from the fitted models' metadata.

    A model without a base is compared where the truth has no bump: the part holding the
    parameter with role ``index`` as its power at 1 mHz, the index, and its other
    spectrum-unit parameters. A model extending a base is compared where the truth has a
    bump: the index, and its extra parts' spectrum-unit parameters and derived outputs.
    """
    import json

    from specfit.models import SPECTRUM_UNIT, available_models, get_model

    info = ds.attrs.get("models", "{}")
    info = json.loads(info) if isinstance(info, str) else dict(info)
    specs = []
    for alias, mi in info.items():
        if mi.get("name") not in available_models():
            continue
        model = get_model(mi["name"])
        index = model.param_with_role("index")
        if index is None:
            continue
        if model.base_model is None:
            specs.append((alias, "power_1mHz", "dex", False))
            specs.append((alias, index, "", False))
            own = next(c for c in model.components if index in [p.name for p in c.params])
            specs += [
                (alias, p.name, "dex", False)
                for c in model.components
                if c is not own
                for p in c.params
                if p.unit == SPECTRUM_UNIT
            ]
        else:
            specs.append((alias, index, "", True))
            for c in model.components[len(model.base_model.components) :]:
                specs += [(alias, p.name, "dex", True) for p in c.params if p.unit == SPECTRUM_UNIT]
                specs += [(alias, d.name, d.unit, True) for d in c.derived]
    return specs


def _power_1mhz(model, src, alias: str) -> np.ndarray:
    """The power of the part holding the index at 1 mHz (the power law: A (1e-3)^-n)."""
    index = model.param_with_role("index")
    comp = next(c for c in model.components if index in [p.name for p in c.params])
    cols = [
        np.asarray(src[f"{alias}_{p.name}" if alias else p.name].values, dtype=float)
        for p in comp.params
    ]
    return np.asarray(comp.shape(np.log(1e-3), *cols)[0], dtype=float)


def recovery_table(ds, truth) -> list[dict]:
    """Recovered minus true, per parameter: median and robust scatter (1.4826 MAD).

    Pixels without a bump are compared with the model without a base (``m1``), pixels with
    one with the model extending it (``m2``); which parameters are compared is read from the
    models' metadata (:func:`_recovery_specs`). Spectrum-unit parameters are compared as
    log10 ratios (dex); the index and derived outputs (bump period, minutes) as differences.
    """
    import json

    from specfit.models import get_model

    rows = []
    has = np.asarray(truth["has_bump"].values, dtype=bool)
    info = ds.attrs.get("models", "{}")
    info = json.loads(info) if isinstance(info, str) else dict(info)

    def values(src, alias, p, model):
        if p == "power_1mHz":
            return _power_1mhz(model, src, alias)
        return np.asarray(src[f"{alias}_{p}" if alias else p].values, dtype=float)

    # The amplitude A is the power law's value at 1 Hz, far outside the band (0.14-42 mHz),
    # so its error mostly mirrors the index error; the power law at 1 mHz is what the data
    # constrain, and it is what is compared.
    bigger = None
    # the truth is a density, (DN/s)^2/Hz: spectra normalised otherwise have no true value
    density = ds.attrs.get("normalisation", "density") == "density"
    skipped = []
    for alias, p, kind, bump in _recovery_specs(ds):
        mask = has if bump else ~has
        model = get_model(info[alias]["name"])
        if bump:
            bigger = alias
        if not mask.any() or (p != "power_1mHz" and p not in truth):
            continue
        if kind == "dex" and not density:
            skipped.append(f"{alias}_{p}")
            continue
        try:
            est = values(ds, alias, p, model)[mask]
            tru = values(truth, "", p, model)[mask]
        except KeyError:  # e.g. a knee model's power at 1 mHz needs the knee, not in the truth
            skipped.append(f"{alias}_{p}")
            continue
        if kind == "dex":
            with np.errstate(all="ignore"):
                d = np.log10(est / tru)
        else:
            d = est - tru
        med, sc = _robust(d)
        rows.append(
            dict(
                parameter=f"{alias}_{p}",
                pixels=int(mask.sum()),
                true_median=float(np.median(tru)),
                median_error=med,
                scatter=sc,
                units="dex" if kind == "dex" else (kind or "1"),
            )
        )
    if "best_model" in ds and bigger is not None:
        b = np.asarray(ds["best_model"].values)
        ib = list(info).index(bigger)
        rows.append(
            dict(
                parameter=f"{bigger} preferred (bump pixels)",
                pixels=int(has.sum()),
                fraction=float(np.mean(b[has] == ib)) if has.any() else float("nan"),
            )
        )
        rows.append(
            dict(
                parameter=f"{bigger} preferred (no-bump pixels)",
                pixels=int((~has).sum()),
                fraction=float(np.mean(b[~has] == ib)),
            )
        )
    if "best_model_fdr" in ds and bigger is not None:
        # the same with the field-wide false-discovery-rate control (docs/significance.md)
        b = np.asarray(ds["best_model_fdr"].values)
        for label, sel in (("bump", has), ("no-bump", ~has)):
            rows.append(
                dict(
                    parameter=f"{bigger} preferred, FDR ({label})",
                    pixels=int(sel.sum()),
                    fraction=float(np.mean(b[sel] == ib)) if sel.any() else float("nan"),
                )
            )
    test_global = f"{bigger}_lrt_global" if bigger is not None else ""
    if test_global not in ds and "lrt_global" in ds:
        test_global = "lrt_global"
    if test_global in ds:
        # and at the global confidence level (fit.global_level; docs/significance.md)
        g = np.asarray(ds[test_global].values) == 1
        for label, sel in (("bump", has), ("no-bump", ~has)):
            rows.append(
                dict(
                    parameter=f"{bigger} preferred, global ({label})",
                    pixels=int(sel.sum()),
                    fraction=float(np.mean(g[sel])) if sel.any() else float("nan"),
                )
            )
    if skipped:
        why = (
            f"the spectra are normalised as {ds.attrs.get('normalisation')!r}, the truth as "
            "'density'"
            if not density
            else "their model has parameters the synthetic truth does not"
        )
        rows.append(dict(note=f"not compared: {', '.join(skipped)} ({why})"))
    return rows


def format_table(rows: list[dict]) -> str:
    out = [
        f"{'parameter':32s} {'pixels':>6s} {'true median':>12s} {'median error':>13s} "
        f"{'scatter':>9s}  units"
    ]
    for r in rows:
        if "note" in r:
            out.append(f"({r['note']})")
        elif "fraction" in r:
            out.append(
                f"{r['parameter']:32s} {r['pixels']:6d} {'':>12s} {100 * r['fraction']:12.1f}%"
            )
        else:
            out.append(
                f"{r['parameter']:32s} {r['pixels']:6d} {r['true_median']:12.4g} "
                f"{r['median_error']:+13.4f} {r['scatter']:9.4f}  {r['units']}"
            )
    return "\n".join(out)


def demo(
    out: str | Path = "specfit-demo",
    overrides: list[str] | None = None,
    cluster: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    plots: bool = True,
    report: str | None = None,
):
    """Make synthetic frames, run the pipeline, write heatmaps, print recovered vs true."""
    from specfit.pipeline import run
    from specfit.summary import summarise
    from specfit.synthetic import open_truth

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from specfit.config import load_config

    cfg = config_for(out)
    # where the run writes once --set is applied (output.path, input.path may be among them:
    # the summary, the truth and the plots were looked for in the defaults after the run)
    resolved = load_config(cfg, overrides)
    results = Path(resolved.output.path)
    cfg["input"]["path"] = str(resolved.input.path)
    if results.exists() and not (overwrite or resume) and _made_by_a_demo(results, cfg):
        overwrite = True  # the demo's own results: rerunning it simply starts again
    ds = run(cfg, overrides, overwrite=overwrite, resume=resume, cluster=cluster, report=report)
    print(summarise(ds, path=str(results)))
    truth = open_truth(Path(resolved.input.path) / "truth.zarr")
    print("\nrecovered vs true (synthetic truth):")
    print(format_table(recovery_table(ds, truth)))
    if plots:
        try:
            from specfit.viz import plot_results
        except ImportError as exc:  # viz extras not installed
            print(f"\n(no heatmaps: {exc}; pip install 'specfit-solar[viz]')", file=sys.stderr)
        else:
            files = plot_results(results, out / "plots")
            print(f"\nheatmaps: {len(files)} files in {out / 'plots'}")
    print(f"\nexplore: specfit explore {results}")
    return ds
