"""Text summaries of a results store (``specfit info`` and the end of ``specfit run``)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import xarray as xr

__all__ = ["summarise", "percentiles"]


def percentiles(values: np.ndarray, q=(1, 50, 99)) -> np.ndarray:
    """Percentiles of the finite values (NaN if none)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.full(len(q), np.nan)
    return np.percentile(v, q)


def _models(ds: xr.Dataset) -> dict:
    m = ds.attrs.get("models", "{}")
    return json.loads(m) if isinstance(m, str) else dict(m)


def _by_role(info: dict) -> tuple[str | None, str | None]:
    """(the parameter with role "index", the derived output with role "period") of a model."""
    from specfit.models import stored_metadata

    meta = stored_metadata(info)
    index = next((p for p, r in meta["roles"].items() if r == "index"), None)
    period = next((d["name"] for d in meta["derived"] if d.get("role") == "period"), None)
    return index, period


def headline(ds: xr.Dataset) -> dict[str, float]:
    """The figures the original specFit reported: the power-law index distribution, the
    median bump period and how often the bump model is preferred, and how many of those
    preferred pixels have a fit that did not converge (``<alias>_unconverged_percent``,
    ``_unconverged_pixels`` of ``_preferred_pixels``: counted in the figures, hidden by
    ``specfit plot`` and the explorer).

    Which parameter is "the index" and which output is "the period" is read from the
    models' metadata (roles), not from their names.
    """
    models = _models(ds)
    out: dict[str, float] = {}
    best = np.asarray(ds["best_model"].values) if "best_model" in ds else None
    for i, (alias, info) in enumerate(models.items()):
        index, period = _by_role(info)
        if index and f"{alias}_{index}" in ds:
            v = np.asarray(ds[f"{alias}_{index}"].values, dtype=float)
            if best is not None:
                v = np.where(best == i, v, np.nan)  # the index of the preferred model
            p1, p50, p99 = percentiles(v)
            out[f"{alias}_{index}_median"], out[f"{alias}_{index}_p1"] = p50, p1
            out[f"{alias}_{index}_p99"] = p99
        if period and f"{alias}_{period}" in ds:
            v = np.asarray(ds[f"{alias}_{period}"].values, dtype=float)
            if best is not None:
                v = np.where(best == i, v, np.nan)
            out[f"{alias}_{period}_median"] = percentiles(v)[1]
        if best is not None:
            out[f"{alias}_preferred_percent"] = 100.0 * float(np.mean(best == i))
            status = f"{alias}_status"
            if status in ds and np.any(best == i):
                from specfit.viz.data import converged_codes

                s = np.asarray(ds[status].values)[best == i]
                bad = ~np.isin(s, converged_codes(ds, alias))
                out[f"{alias}_unconverged_percent"] = 100.0 * float(np.mean(bad))
                out[f"{alias}_unconverged_pixels"] = float(bad.sum())
                out[f"{alias}_preferred_pixels"] = float(bad.size)
    return out


def _headline_lines(ds: xr.Dataset) -> list[str]:
    h = headline(ds)
    lines = ["  headline (where each model is preferred):"]
    for alias, info in _models(ds).items():
        index, period = _by_role(info)
        if h.get(f"{alias}_preferred_percent") == 0.0:  # no pixel: no medians to show (NaN)
            lines.append(f"    {alias}: preferred in no pixel")
            continue
        parts = []
        if f"{alias}_{index}_median" in h:
            parts.append(
                f"{index.replace('_', ' ')} median {h[f'{alias}_{index}_median']:.3g} "
                f"(1st-99th percentile {h[f'{alias}_{index}_p1']:.3g}-"
                f"{h[f'{alias}_{index}_p99']:.3g})"
            )
        if f"{alias}_{period}_median" in h:
            unit = next((d["unit"] for d in _derived(info) if d["name"] == period), "")
            parts.append(
                f"{period.replace('_', ' ')} median {h[f'{alias}_{period}_median']:.3g} {unit}"
            )
        if f"{alias}_preferred_percent" in h:
            parts.append(f"preferred in {h[f'{alias}_preferred_percent']:.1f}% of pixels")
        if h.get(f"{alias}_unconverged_pixels", 0.0) > 0.0:
            # counted in these figures, hidden by `specfit plot` and the explorer; one pixel
            # of many is "1 px (<0.1%)", not "0.0%"
            share = _share(
                int(h[f"{alias}_unconverged_pixels"]), int(h[f"{alias}_preferred_pixels"])
            )
            parts.append(
                f"{share} of those did not converge (included here; plot and explore hide them)"
            )
        lines.append(f"    {alias}: " + "; ".join(parts))
    return lines


def _derived(info: dict) -> list[dict]:
    from specfit.models import stored_metadata

    return stored_metadata(info)["derived"]


def summarise(ds: xr.Dataset, path: str | None = None) -> str:
    """A readable multi-line summary: size, settings, per-map percentiles, status, best model."""
    from specfit.store import written_pixels

    lines = []
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    nf = ds.sizes.get("freq", 0)
    title = f"results {path}" if path else "results"
    lines.append(f"{title}: {ny} x {nx} px (y by x), {nf} frequencies")
    written = written_pixels(ds)  # None: every pixel (a finished store)
    if "complete" in ds.attrs:
        hint = "resume with --resume"
        if path and not ds.attrs["complete"]:
            from specfit.store import finish_hint

            hint = finish_hint(path)
        state = "complete" if ds.attrs["complete"] else f"INCOMPLETE ({hint})"
        if written is not None:
            done = ds["tiles_done"].values
            n = int((done > 0).sum())
            state = (
                f"INCOMPLETE: {n} of {done.size} tiles written ({hint}); "
                "the figures below cover the written tiles only"
                if n < done.size
                else f"INCOMPLETE: every tile written, the field-wide maps not yet ({hint})"
            )
        lines.append(f"  state: {state}")
        if written is not None and not written.any():
            return "\n".join(lines)  # nothing written yet: no figures to give
    for key in ("source", "start_time", "cadence", "n_frames", "segments", "box", "method"):
        if key in ds.attrs and ds.attrs[key] not in ("", None):
            note = (
                f" ({ds.attrs['time_note']})"
                if key == "start_time" and ds.attrs.get("time_note")
                else ""
            )
            lines.append(f"  {key}: {ds.attrs[key]}{note}")
    if "freq" in ds.coords and nf:
        f = ds["freq"].values
        lines.append(f"  frequencies: {f[0]:.4g} - {f[-1]:.4g} Hz")
    models = _models(ds)
    for alias, info in models.items():
        lines.append(f"  {alias}: {info.get('name', '?')}  {info.get('formula', '')}")
    lines.append("")
    # the units column as wide as the longest unit (IRIS's "(Corrected DN / s)^2/Hz" was cut)
    uw = max([14] + [len(str(v.attrs.get("units", ""))) for v in ds.data_vars.values()])
    lines.append(
        f"  {'map':28s} {'units':>{uw}s} {'p1':>11s} {'median':>11s} {'p99':>11s} {'NaN %':>6s}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, var in ds.data_vars.items():
            if var.dims != ("y", "x") or name.endswith("_status") or name == "best_model":
                continue
            if "flag_values" in var.attrs:  # categorical maps (best_model_fdr, <test>_global)
                continue
            if np.dtype(var.dtype).kind not in "fiu":
                continue
            v = np.asarray(var.values, dtype=float)
            v = v if written is None else v[written]
            p1, p50, p99 = percentiles(v)
            nan = 100.0 * np.mean(~np.isfinite(v))
            units = str(var.attrs.get("units", ""))
            lines.append(
                f"  {name:28s} {units:>{uw}s} {p1:11.4g} {p50:11.4g} {p99:11.4g} {nan:6.1f}"
            )
    codes = ds.attrs.get("status_codes")
    codes = json.loads(codes) if isinstance(codes, str) else (codes or {})
    for alias in models:
        st = f"{alias}_status"
        if st in ds:
            s = np.asarray(ds[st].values)
            s = (s if written is None else s[written]).ravel()
            vals, counts = np.unique(s, return_counts=True)
            parts = [
                f"{codes.get(str(int(v)), str(int(v)))}: {_share(c, s.size)}"
                for v, c in zip(vals, counts, strict=True)
            ]
            lines.append(f"  {st}: " + ", ".join(parts))
    if "best_model" in ds:
        b = np.asarray(ds["best_model"].values)
        b = (b if written is None else b[written]).ravel()
        aliases = list(models)
        parts = []
        for i, a in enumerate(aliases):
            parts.append(f"{a} {100 * np.mean(b == i):.1f}%")
        if np.any(b < 0):
            parts.append(f"none {100 * np.mean(b < 0):.1f}%")
        rule = ds["best_model"].attrs.get("rule", "")
        lines.append(f"  best_model{f' ({rule})' if rule else ''}: " + ", ".join(parts))
        if written is None:  # the headline and field-wide figures are those of a whole run
            lines += _headline_lines(ds)
    if written is None:
        lines += _field_lines(ds)
    return "\n".join(lines)


def _field_lines(ds: xr.Dataset) -> list[str]:
    """How many pixels pass each significance control, per tested p-value map: per pixel
    (p < alpha), Benjamini-Hochberg (q <= fdr_q) and the global level (from the store's
    ``field_significance`` attr, written when the run finished)."""
    raw = ds.attrs.get("field_significance")
    if not raw:
        return []
    field = json.loads(raw) if isinstance(raw, str) else dict(raw)
    lines = ["  significance over the field (docs/significance.md):"]
    for name, info in field.items():
        if "n_tested" not in info:
            continue
        n = info["n_tested"]

        def share(k: int, n: int = n) -> str:
            return f"{k} ({100 * k / n:.1f}%)" if n else str(k)

        parts = [f"{n} tested"]
        if "n_pixel" in info:
            parts.append(f"per pixel p < {info['alpha']:g}: {share(info['n_pixel'])}")
        if "n_fdr" in info:
            parts.append(f"BH q <= {info['fdr_q']:g}: {share(info['n_fdr'])}")
        if "n_global" in info:
            parts.append(
                f"global {info['global_level']:g}: {share(info['n_global'])} "
                f"(p <= {info['per_test_threshold']:.3g})"
            )
        lines.append(f"    {name}: " + "; ".join(parts))
    for name, info in field.items():
        if "counts" in info and name in ds:
            total = max(int(info.get("n_pixels", 0)), 1)
            parts = [f"{a} {100 * c / total:.1f}%" for a, c in info["counts"].items()]
            rule = ds[name].attrs.get("rule", "")
            lines.append(f"    {name}{f' ({rule})' if rule else ''}: " + ", ".join(parts))
    return lines


def _share(count: int, total: int) -> str:
    """A share in per cent to 0.1, with the count where that would read 0.0 % (a status of
    one pixel in 37,098 is not none)."""
    pct = 100 * count / total
    return f"{pct:.1f}%" if pct >= 0.05 or count == 0 else f"{count} px (<0.1%)"
