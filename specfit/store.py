"""The results store (``results.zarr``): the results contract, tile-by-tile writes, resume
bookkeeping, one writer at a time.

The contract (names, dtypes, attrs and real units of every variable) is declared here only,
in :func:`fit_variables`, :func:`spectral_variables`, :func:`fit_attrs`, :func:`spectra_attrs`,
:func:`power_units` and :func:`derived_outputs`; ``specfit run`` and the stage API's ``fit``
both take it from them.

Layout (a Zarr v3 group that ``xarray.open_zarr`` reads as a Dataset):

- coordinates ``y``, ``x`` (px), ``freq`` (Hz), and ``hpc_x``, ``hpc_y`` (arcsec) where known;
- every fit variable (``<alias>_<param>``, ``_err``, ``_status``, statistics, ``best_model``,
  ...) as (y, x), ``power`` (freq, y, x), ``power_sigma`` with box averaging, ``dof`` (y, x; a
  coordinate of ``power``: what a refit needs, with the :func:`spectra_attrs`),
  ``mean_intensity`` and ``longest_gap`` (y, x; seconds);
- the field-wide significance maps of :func:`field_variables` (``<test>_qvalue``,
  ``<test>_global``, ``best_model_fdr``), written by :func:`finalise_store` from the whole
  field once every tile is in (docs/significance.md);
- ``tiles_done`` (tile_y, tile_x) int8: 1 once a spatial tile's every variable is written;
- ``tiles_run`` (tile_y, tile_x) int64: the run key (config + inputs) each tile was
  written under, set just before its ``tiles_done`` mark;
- attrs: ``config`` (YAML), ``config_hash``, ``specfit_version``, ``specfit_code_sha256``
  (:func:`code_sha256`), ``models`` and
  ``status_codes`` (JSON text), ``method``, ``fit_dof``, the :func:`spectra_attrs`, ``cube_path``, ``specfit_kind`` ("results": what lets
  ``--overwrite`` replace it), ``run_key``, ``input_fingerprint``, ``variables``, ``complete``
  (true only when every tile is in, written under this store's own run key), ``tile_size``.

Stores written before the unit of work was named a tile (``blocks_done``) still open; a resume
of one is refused (rerun with ``--overwrite``).

Zarr chunks are the spatial tiles, so each tile's write touches its own chunks only and the
tasks of one run never share a chunk. One run at a time writes a store: :class:`StoreLock`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import socket
import stat as _stat
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specfit.errors import StoreError

__all__ = [
    "IncompleteStoreWarning",
    "StoreLayout",
    "open_results",
    "differing_variables",
    "tile_status",
    "is_complete",
    "prepare_store",
    "write_tile",
    "finalise_store",
    "field_tests",
    "field_variables",
    "write_field_significance",
    "config_hash",
    "run_key_int",
    "StoreLock",
    "code_sha256",
]

log = logging.getLogger("specfit")


class IncompleteStoreWarning(UserWarning):
    """A results store of an unfinished run was opened on purpose (``allow_incomplete``)."""


def config_hash(science: dict) -> str:
    """A stable hash of the science sections of a config (what changes the numbers)."""
    text = json.dumps(science, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_CODE_SHA256: list[str] = []


def code_sha256() -> str:
    """sha256 of specfit's own Python sources (every ``.py`` file of the installed package):
    a results store records it, and a run resumes only a store begun by the same code, so that
    an unfinished store never mixes tiles of two versions (the version string alone does not
    change with every edit of a development install)."""
    if not _CODE_SHA256:
        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for f in sorted(root.rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        _CODE_SHA256.append(h.hexdigest())
    return _CODE_SHA256[0]


def run_key_int(run_key: str) -> int:
    """The int64 form of a hex run key, as stored per tile in ``tiles_run`` (never 0)."""
    return int(run_key[:15], 16) or 1


# ----------------------------------------------------------------------------- the contract
# Everything a results Dataset holds (names, dtypes, attrs, units) is declared here and only
# here: the pipeline's store and the stage API's ``fit`` both take it from these functions.

#: The unit role a model gives parameters that scale the model linearly (see
#: :mod:`specfit.models`); in results it is replaced by the spectra's real unit.
POWER_ROLE = "power"


# The unit text of values whose input gave no unit (a .npy cube, a DataArray without units).
NO_UNIT = "intensity"


def power_units(bunit: str | None, normalisation: str) -> str:
    """The unit of the power spectra of data in ``bunit`` under a ``spectra.normalisation``.

    ``density``: ``(B)^2/Hz``; ``raw``: ``(B)^2``; ``variance`` (power / variance of the
    series): ``1/Hz``. ``bunit`` None or empty reads as ``intensity``.
    """
    b = bunit or NO_UNIT
    try:
        return {"density": f"({b})^2/Hz", "variance": "1/Hz", "raw": f"({b})^2"}[normalisation]
    except KeyError:
        raise ValueError(
            f"spectra.normalisation: {normalisation!r} is not one of density, variance, raw"
        ) from None


def fits_unit(units: str) -> str:
    """A FITS ``BUNIT`` for a ``units`` attr: the standard form where astropy parses it.

    specfit writes spectral units as ``(B)^2/Hz`` or ``(B)^2``, which astropy does not parse;
    they are read here as ``B**2 / Hz``. IRIS level 2's ``Corrected DN`` is read as ``DN``. A
    unit astropy does not know (``ln(Hz)``) is kept.
    """
    import re

    import astropy.units as u

    units = re.sub(r"\bCorrected DN\b", "DN", units)
    m = re.fullmatch(r"\((.+)\)\^(\d+)\s*(?:/\s*(.+))?", units.strip())
    try:
        if m:
            unit = u.Unit(m[1]) ** int(m[2]) / u.Unit(m[3] or "")
        else:
            unit = u.Unit(units)
    except ValueError:
        return units
    try:
        return unit.to_string("fits")
    except ValueError:
        return unit.to_string()  # e.g. DN, which sunpy reads but FITS does not standardise


def real_unit(unit: str, power_unit: str) -> str:
    """A model parameter's unit in results: its role ``power`` becomes ``power_unit``."""
    return power_unit if unit == POWER_ROLE else unit


def derived_outputs(model: Any) -> dict[str, dict]:
    """Maps derived from a model's fitted parameters: ``suffix -> {dtype, attrs, compute}``.

    Read from the model's declaration (:attr:`specfit.models.Model.derived`, e.g. the bump
    models' ``bump_period`` in minutes). ``compute(params)`` takes ``{param name: (npix,)
    values}`` and returns the (npix,) map of ``<alias>_<suffix>``.
    """
    return {
        d.name: {
            "dtype": np.dtype("float32"),
            "attrs": {"units": d.unit, "long_name": d.long_name},
            "compute": d.func,
        }
        for d in model.derived
    }


def _status_attrs() -> dict:
    from specfit.kernels.fitting import STATUS_CODES

    return {
        "flag_values": list(STATUS_CODES),
        "flag_meanings": " ".join(v.split(":")[0] for v in STATUS_CODES.values()),
        "status_codes": "; ".join(f"{k} = {v}" for k, v in STATUS_CODES.items()),
    }


def fit_variables(
    models: dict[str, Any],
    method: str,
    best_model: str,
    power_unit: str,
    nonnested: str = "bic",
    intervals: Sequence[str] = (),
) -> dict[str, dict]:
    """Names, dtypes and attrs of every (y, x) map a fit returns, in order.

    The names and dtypes are the kernel's (:func:`specfit.kernels.fitting.output_dtypes`)
    plus :func:`derived_outputs`; attrs carry real units (``power_unit`` for the model
    parameters whose role is ``power``). ``intervals``: the parameters with
    profile-likelihood intervals (``fit.intervals``).
    """
    from specfit.kernels.fitting import FIT_STATISTICS, output_dtypes, pair_variables

    dtypes = output_dtypes(models, method, best_model, intervals)
    out: dict[str, dict] = {}
    for alias, m in models.items():
        for pname, unit, long in zip(m.param_names, m.units, m.long_names, strict=True):
            u = real_unit(unit, power_unit)
            out[f"{alias}_{pname}"] = {
                "dtype": dtypes[f"{alias}_{pname}"],
                "attrs": {"units": u, "long_name": f"{alias} ({m.name}): {long}"},
            }
            out[f"{alias}_{pname}_err"] = {
                "dtype": dtypes[f"{alias}_{pname}_err"],
                "attrs": {"units": u, "long_name": f"{alias}: 1-sigma error of {pname} (Fisher)"},
            }
            for end in ("lower", "upper"):
                if f"{alias}_{pname}_{end}" in dtypes:
                    long = (
                        f"{alias}: {end} end of the 68.3 % profile-likelihood interval of {pname}"
                    )
                    out[f"{alias}_{pname}_{end}"] = {
                        "dtype": dtypes[f"{alias}_{pname}_{end}"],
                        "attrs": {"units": u, "long_name": long},
                    }
        for stat, (_, unit, long) in FIT_STATISTICS.items():
            attrs = {"units": unit, "long_name": f"{alias}: {long.format(method=method)}"}
            if stat == "status":
                attrs.update(_status_attrs())
            out[f"{alias}_{stat}"] = {"dtype": dtypes[f"{alias}_{stat}"], "attrs": attrs}
        for suffix, d in derived_outputs(m).items():
            out[f"{alias}_{suffix}"] = {
                "dtype": d["dtype"],
                "attrs": {**d["attrs"], "long_name": f"{alias}: {d['attrs']['long_name']}"},
            }
    aliases = list(models)
    out["best_model"] = {
        "dtype": dtypes["best_model"],
        "attrs": {
            "units": "1",
            "long_name": f"preferred model (rule: {best_model}); index into the aliases, -1 none",
            "flag_values": list(range(-1, len(aliases))),
            "flag_meanings": " ".join(["none", *aliases]),
            "rule": best_model,
        },
    }
    pairs = pair_variables(models)
    if best_model in ("lrt", "ftest"):
        # which tests chose inside each family of nested models, and what chose between them
        out["best_model"]["attrs"]["nested_pairs"] = " ".join(f"{a}:{b}" for a, b in pairs)
        out["best_model"]["attrs"]["nonnested"] = nonnested
    for (a, b), names in pairs.items():
        ref = (
            "simulated null (pure smaller model; same grid, dof, bin correlations and settings)"
            if method != "lsq" and models[a].null is not None
            else "chi2 with the number of extra parameters (approximate)"
        )  # (a smaller model declaring no null: the fit falls back to chi2 and warns)
        # test, null_model, alternative_model: what the field-wide step (field_variables)
        # reads to turn a test's significance into a choice between the pair's models
        pair_attrs = {"null_model": a, "alternative_model": b}
        extra = {
            "lrt_stat": {"long_name": f"likelihood-ratio statistic 2 (lnL_{b} - lnL_{a})"},
            "lrt_pvalue": {
                "long_name": f"LRT p-value of {a} inside {b}",
                "reference": ref,
                "test": "lrt",
                **pair_attrs,
            },
            "ftest_pvalue": {
                "long_name": f"F-test p-value of {a} inside {b} (dof p2-p1, n-p2)",
                "test": "ftest",
                **pair_attrs,
            },
        }
        for key, attrs in extra.items():
            name = names[key]
            out[name] = {"dtype": dtypes[name], "attrs": {"units": "1", **attrs}}
    missing = set(dtypes) - set(out)
    if missing:  # a kernel output the contract does not describe would be lost silently
        raise RuntimeError(f"results contract: no attrs for kernel outputs {sorted(missing)}")
    return out


#: The attr that marks a (y, x) map written by the field-wide step of :func:`finalise_store`
#: (``bh``: q-values, ``sidak``: global-level map, ``choice``: field-wide best model) rather
#: than tile by tile.
FIELD_CONTROL = "field_control"


def field_tests(variables: Mapping[str, dict]) -> list[str]:
    """The p-value maps under field-wide control, in declaration order.

    Every declared map named ``<stem>_pvalue`` (``lrt_pvalue``, ``ftest_pvalue`` and whatever
    model comparisons the fit declares), except the per-model goodness-of-fit p-values
    ``<alias>_gof_pvalue``: a small value there says the model misfits, not that a richer
    model is detected, and it is not a choice the field-wide maps feed.
    """
    return [n for n in variables if n.endswith("_pvalue") and not n.endswith("_gof_pvalue")]


def field_variables(
    variables: Mapping[str, dict],
    best_model: str,
    alpha: float,
    fdr_q: float,
    global_level: float,
) -> dict[str, dict]:
    """The maps the field-wide step writes once every tile is in (see :func:`finalise_store`).

    For each p-value map ``<stem>_pvalue`` of :func:`field_tests`: ``<stem>_qvalue``
    (float32, Benjamini-Hochberg q-values over the tested pixels of the whole field) and
    ``<stem>_global`` (int8: 1 where p passes the Sidak threshold ``1 - level^(1/N)`` of the
    global confidence ``global_level`` over the N tested pixels, 0 where not, -1 not tested).
    With a test rule (``best_model`` ``lrt`` or ``ftest``) and that test's p-value maps
    declaring their ``null_model`` and ``alternative_model``: ``best_model_fdr``, the same
    choice as ``best_model`` with the test's q-value at ``fdr_q`` in place of its p-value at
    ``alpha``. ``best_model`` itself stays the per-pixel choice.

    The settings ride in each map's attrs (with :data:`FIELD_CONTROL` saying which step
    writes it), so the finalise step needs nothing but the store.
    """
    out: dict[str, dict] = {}
    tests = field_tests(variables)
    for name in tests:
        stem = name[: -len("_pvalue")]
        out[f"{stem}_qvalue"] = {
            "dtype": np.dtype("float32"),
            "attrs": {
                "units": "1",
                "long_name": f"Benjamini-Hochberg q-value of {name} over the whole field "
                f"(significant at FDR {fdr_q} where q <= {fdr_q})",
                FIELD_CONTROL: "bh",
                "source": name,
                "fdr_q": float(fdr_q),
                "alpha": float(alpha),
            },
        }
        out[f"{stem}_global"] = {
            "dtype": np.dtype("int8"),
            "attrs": {
                "units": "1",
                "long_name": f"{name} significant at the global confidence level "
                f"{global_level} over the field (Sidak: p <= 1 - level^(1/N_tested))",
                "flag_values": [-1, 0, 1],
                "flag_meanings": "not_tested not_significant significant",
                FIELD_CONTROL: "sidak",
                "source": name,
                "global_level": float(global_level),
            },
        }
    choice = [
        f"{n[: -len('_pvalue')]}_qvalue"
        for n in tests
        if variables[n].get("attrs", {}).get("test") == best_model
        and {"null_model", "alternative_model"} <= set(variables[n].get("attrs", {}))
    ]
    if choice and "best_model" in variables:
        battrs = variables["best_model"].get("attrs", {})
        out["best_model_fdr"] = {
            "dtype": variables["best_model"]["dtype"],
            "attrs": {
                **{k: battrs[k] for k in ("units", "flag_values", "flag_meanings") if k in battrs},
                "long_name": f"preferred model with field-wide control: the {best_model} rule "
                f"with its Benjamini-Hochberg q-value <= {fdr_q} in place of p < {alpha}; "
                "index into the aliases, -1 none",
                "rule": f"{best_model} at FDR {fdr_q}",
                FIELD_CONTROL: "choice",
                "source": "best_model",
                "tests": choice,
                "fdr_q": float(fdr_q),
            },
        }
    return out


def spectral_variables(power_unit: str, box: int) -> dict[str, dict]:
    """The (freq, y, x) variables: ``power`` and, with box averaging, ``power_sigma``."""
    f32 = np.dtype("float32")
    out = {"power": {"dtype": f32, "attrs": {"long_name": "power", "units": power_unit}}}
    if box > 1:
        out["power_sigma"] = {
            "dtype": np.dtype("float32"),
            "attrs": {"long_name": "spread of the power across the box", "units": power_unit},
        }
    return out


#: The per-pixel chi-square dof of each power value (a coordinate of ``power``).
DOF_ATTRS = {
    "long_name": "chi-square degrees of freedom of each power value (one spectrum's x the "
    "box's effective number of independent pixels)",
    "units": "1",
}


def _json_bound(v: float) -> float | None:
    """A bound for JSON attrs: None (null) for an infinite bound, strict JSON has no inf."""
    return float(v) if np.isfinite(v) else None


def models_attr(models: dict[str, Any], power_unit: str) -> str:
    """The ``models`` attr: JSON ``{alias: {name, formula, params, units, bounds, base, roles,
    spectrum_unit_params, derived, components}}`` (the last four from ``Model.metadata``)."""
    return json.dumps(
        {
            alias: {
                "name": m.name,
                "formula": m.formula,
                "params": list(m.param_names),
                "units": [real_unit(u, power_unit) for u in m.units],
                "bounds": [[_json_bound(lo), _json_bound(hi)] for lo, hi in m.bounds],
                "base": m.base,
                **m.metadata(),  # roles, derived outputs: what viz and summary read
            }
            for alias, m in models.items()
        }
    )


#: The keys of :func:`spectra_attrs`.
SPECTRA_KEYS = (
    "segments",
    "segment_length",
    "overlap",
    "window",
    "detrend",
    "normalisation",
    "dof_per_spectrum",
    "window_vif",
    "box",
    "box_dof",
    "cadence",
)


def spectra_attrs(
    *,
    segments: int,
    segment_length: int,
    overlap: float,
    window: str,
    detrend: str,
    normalisation: str,
    dof_per_spectrum: float,
    box: int,
    cadence: float,
    box_dof: str = "auto",
) -> dict[str, Any]:
    """What a refit of stored spectra needs, as attrs of ``power`` and of a results Dataset.

    ``dof_per_spectrum`` is the chi-square dof of one spectrum before box averaging (``2 K`` or Welch's
    equivalent); ``window_vif`` the variance inflation of the bins' correlation (window and overlap);
    ``box_dof`` how the box's pixels were counted (``auto``: effective number estimated per
    box, :func:`specfit.kernels.tile.box_dof`; ``nominal``: every pixel). The per-pixel ``dof``
    coordinate holds the result; a Whittle fit uses ``dof / window_vif`` (see
    :func:`specfit.kernels.tile.fit_dof`).
    """
    from specfit.kernels.periodogram import window_vif

    return {
        "segments": int(segments),
        "segment_length": int(segment_length),
        "overlap": float(overlap),
        "window": str(window),
        "detrend": str(detrend),
        "normalisation": str(normalisation),
        "dof_per_spectrum": float(dof_per_spectrum),
        "window_vif": float(window_vif(window, int(segment_length), overlap, segments)),
        "box": int(box),
        "box_dof": str(box_dof),
        "cadence": float(cadence),
    }


FIELD_KEYS = ("alpha", "fdr_q", "global_level")


def fit_attrs(
    models: dict[str, Any], method: str, power_unit: str, spectra: dict, field: Mapping
) -> dict:
    """The Dataset attrs a fit returns (and a results store holds): the models, status
    codes, method, ``fit_dof`` (how the fit's dof follow from the ``dof`` coordinate),
    ``field_settings`` (``field``'s :data:`FIELD_KEYS`, the settings of the field-wide maps,
    as JSON) and :func:`spectra_attrs`."""
    from specfit.kernels.fitting import STATUS_CODES
    from specfit.kernels.tile import bin_layout, fit_dof_rule

    return {
        "models": models_attr(models, power_unit),
        "status_codes": json.dumps({str(k): v for k, v in STATUS_CODES.items()}),
        "method": method,
        "fit_dof": fit_dof_rule(method, *bin_layout(spectra)),
        "field_settings": json.dumps({k: float(field[k]) for k in FIELD_KEYS}),
        **spectra,
    }


@dataclass(frozen=True)
class StoreLayout:
    """Everything needed to create a results store before any tile is computed."""

    ny: int
    nx: int
    freq: np.ndarray
    tile: int
    variables: dict[str, dict]  # name -> {"dtype": dtype, "attrs": {...}} for (y, x) maps
    spectral: dict[str, dict]  # name -> {"dtype", "attrs"} for (freq, y, x) arrays
    coords2d: dict[str, np.ndarray]  # e.g. hpc_x, hpc_y (y, x)
    attrs: dict[str, Any]
    # the maps' pixel indices in the input frame (kept through a cutout, as the cube's and the
    # stage API's y/x are); None: 0 .. n - 1
    ys: np.ndarray | None = None
    xs: np.ndarray | None = None

    @property
    def ntiles(self) -> tuple[int, int]:
        return (-(-self.ny // self.tile), -(-self.nx // self.tile))

    def tile_slices(self, by: int, bx: int) -> tuple[slice, slice]:
        b = self.tile
        return slice(by * b, min((by + 1) * b, self.ny)), slice(bx * b, min((bx + 1) * b, self.nx))


def _fill_for(dtype: np.dtype) -> Any:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return -1 if dtype.kind == "i" else 0
    if dtype.kind == "b":
        return False
    return 0


def _json_safe(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, dict):
            v = _json_safe(v)
        out[str(k)] = v
    return out


def _consolidate(path: Path) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


# The first attr of an unfinished store, so that a plain ``xarray.open_zarr`` shows it at the
# top of the attributes; ``complete`` stays the flag that code reads.
INCOMPLETE_NOTE = (
    "incomplete: the run was interrupted or is still writing; tiles not yet written "
    "(tiles_done == 0) read as NaN (integer maps: -1). Finish it with `specfit run CONFIG "
    "--resume`"
)


def prepare_store(path: str | Path, layout: StoreLayout) -> None:
    """Create an empty results store (every value NaN / fill, no tile done).

    The group is created with its marker attrs (``specfit_kind``, unfinished), so a run
    killed (or out of disk) while creating the arrays leaves a store that ``--overwrite``
    recognises as specfit's. An empty folder at ``path`` (the user's, perhaps with its own
    permissions or group) is written into, not deleted and made again; an old store replaced
    (``--overwrite``) leaves its folder's permissions and group to the new one, so a shared
    project folder given as ``output.path`` stays shared.
    """
    import zarr

    from specfit.workspace import (
        is_empty_dir,
        refuse_foreign_entries,
        refuse_foreign_store,
        remove_specfit_tree,
    )

    path = Path(path)
    if path.exists() and not is_empty_dir(path):
        refuse_foreign_store(path)  # only specfit's own stores (or an empty folder) go
        refuse_foreign_entries(path, "output.path")  # and none holding a user's files
        was = path.stat()
        remove_specfit_tree(path)
        path.mkdir()
        # a group the user may not give, or a file system without modes (some CIFS/NFS
        # mounts): the defaults, as for any new folder
        with contextlib.suppress(OSError):
            os.chown(path, -1, was.st_gid)
        with contextlib.suppress(OSError):
            os.chmod(path, _stat.S_IMODE(was.st_mode))  # after chown, which may clear setgid
    b = layout.tile
    names = sorted({*layout.variables, *layout.spectral, *layout.coords2d})
    attrs = {
        "specfit_state": INCOMPLETE_NOTE,
        **layout.attrs,
        "specfit_kind": "results",
        "variables": names,
        "complete": False,
        "tile_size": b,
    }
    # "w-": create, never clear (zarr's "w" deletes the folder and makes it again). The attrs
    # (marker, config, inputs) come with the group, before any array: a store cut off while
    # its arrays are made is specfit's and says what it was for.
    root = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=_json_safe(attrs))
    ny, nx, nf = layout.ny, layout.nx, layout.freq.size

    def arr(name, shape, chunks, dtype, dims, attrs):
        a = root.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=_fill_for(dtype),
            dimension_names=dims,
        )
        a.attrs.update(_json_safe(attrs))
        return a

    for name, n, values, long_name in (
        ("y", ny, layout.ys, "pixel row"),
        ("x", nx, layout.xs, "pixel column"),
    ):
        index = np.arange(n) if values is None else np.asarray(values, dtype=np.int64)
        arr(name, (n,), (n,), "i4", (name,), {"units": "px", "long_name": long_name})[:] = index
    arr("freq", (nf,), (nf,), "f8", ("freq",), {"units": "Hz", "long_name": "frequency"})[:] = (
        layout.freq
    )
    for name, values in layout.coords2d.items():
        a = arr(name, (ny, nx), (b, b), "f8", ("y", "x"), {"units": "arcsec"})
        a[:] = values
    for name, spec in layout.variables.items():
        arr(name, (ny, nx), (b, b), spec["dtype"], ("y", "x"), spec.get("attrs", {}))
    for name, spec in layout.spectral.items():
        arr(
            name, (nf, ny, nx), (nf, b, b), spec["dtype"], ("freq", "y", "x"), spec.get("attrs", {})
        )
    nby, nbx = layout.ntiles
    done = arr(
        "tiles_done",
        (nby, nbx),
        (1, 1),
        "i1",
        ("tile_y", "tile_x"),
        {"long_name": "1 where the spatial tile is fully written", "tile_size": b},
    )
    done[:] = 0
    run = arr(
        "tiles_run",
        (nby, nbx),
        (1, 1),
        "i8",
        ("tile_y", "tile_x"),
        {"long_name": "run key (config + inputs) each tile was written under"},
    )
    run[:] = 0
    # The coordinate arrays need xarray's _ARRAY_DIMENSIONS-free v3 names only; consolidate so
    # that xarray.open_zarr opens a partial store without warnings too.
    _consolidate(path)


def write_tile(
    path: str | Path,
    by: int,
    bx: int,
    tile: int,
    data: dict[str, np.ndarray],
    run_key: str | None = None,
) -> None:
    """Write one spatial tile's arrays, then mark it done (the mark is written last).

    ``run_key`` (the store's ``run_key`` attr) is recorded for the tile first, so that
    :func:`finalise_store` can tell a tile written under another config or inputs.
    """
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    ys = slice(by * tile, by * tile + next(iter(data.values())).shape[-2])
    xs = slice(bx * tile, bx * tile + next(iter(data.values())).shape[-1])
    for name, values in data.items():
        a = root[name]
        if a.ndim == 3:
            a[:, ys, xs] = values
        else:
            a[ys, xs] = values
    if run_key is not None and "tiles_run" in root:
        root["tiles_run"][by, bx] = run_key_int(run_key)
    root["tiles_done"][by, bx] = 1


def tile_status(path: str | Path) -> tuple[int, int]:
    """(tiles done, tiles in all) of a results store."""

    done = done_tiles(path)
    return int(done.sum()), int(done.size)


def done_tiles(path: str | Path) -> np.ndarray:
    """The (tile_y, tile_x) int8 map of finished tiles."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    # Stores written before the unit of work was called a tile name it "blocks_done"; reading
    # their progress costs one name, so they still open (a resume of them is refused).
    name = "tiles_done" if "tiles_done" in root else "blocks_done"
    if name not in root:
        raise StoreError(
            f"{path} was cut off while it was being created (no tile was written): run the same "
            "command again, which makes it anew"
        )
    return np.asarray(root[name][:])


def store_attrs(path: str | Path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


def written_pixels(ds: Any) -> np.ndarray | None:
    """(y, x) True where an unfinished store's tile is written; None for a finished store
    (or one without tile bookkeeping). Unwritten tiles read as NaN, integer maps as -1 (which
    a flag map such as ``best_model`` also uses for a meaning of its own: "none")."""
    if ds.attrs.get("complete", True) or "tiles_done" not in ds:
        return None
    b = int(ds.attrs.get("tile_size", 0))
    if b <= 0:
        return None
    done = np.asarray(ds["tiles_done"].values) > 0
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    return np.repeat(np.repeat(done, b, axis=0), b, axis=1)[:ny, :nx]


def is_complete(path: str | Path) -> bool:
    """True if the store exists and every tile was written."""
    p = Path(path)
    if not (p / "zarr.json").exists():
        return False
    try:
        return bool(store_attrs(p).get("complete", False))
    except Exception:
        return False


def finalise_store(path: str | Path, extra_attrs: dict | None = None) -> None:
    """Mark a store complete once every tile is done under its own run key (refuses
    otherwise).

    Checked first: every variable listed in the ``variables`` attr exists with the store's
    (y, x) size, every tile is marked done, and every tile was written under the store's
    ``run_key`` (a tile from another run's config or inputs is never part of a complete
    store). Then the field-wide significance maps are written from the whole field
    (:func:`write_field_significance`), their counts go into the ``field_significance``
    attr, and the store is marked complete.
    """
    import zarr

    done, total = tile_status(path)
    if done != total:
        raise StoreError(f"{path}: only {done} of {total} tiles are written; not marking complete")
    # What is really in the store, not its consolidated summary (written at the start).
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    attrs = dict(root.attrs)
    ny, nx = root["y"].shape[0], root["x"].shape[0]
    members = set(root.array_keys())
    missing = [v for v in attrs.get("variables", []) if v not in members]
    wrong = [
        v
        for v in attrs.get("variables", [])
        if v in members and tuple(root[v].shape[-2:]) != (ny, nx)
    ]
    if missing or wrong:
        raise StoreError(
            f"{path}: variables missing ({', '.join(missing) or 'none'}) or of the wrong size "
            f"({', '.join(wrong) or 'none'}); not marking complete. Run again with --overwrite"
        )
    key = attrs.get("run_key")
    if key and "tiles_run" in members:
        runs = np.asarray(root["tiles_run"][:])
        foreign = int((runs != run_key_int(key)).sum())
        if foreign:
            raise StoreError(
                f"{path}: {foreign} of {total} tiles were written by another run (other config "
                "or inputs); not marking complete. Run again with --overwrite"
            )
    field = write_field_significance(root)
    if field:
        extra_attrs = {**(extra_attrs or {}), "field_significance": json.dumps(field)}
    root.attrs.update(
        _json_safe({**(extra_attrs or {}), "complete": True, "specfit_state": "complete"})
    )
    _consolidate(Path(path))


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    return v[np.isfinite(v)]


def _bands(ny: int, step: int) -> list[slice]:
    return [slice(y, min(y + step, ny)) for y in range(0, ny, step)]


def write_field_significance(root: Any) -> dict[str, dict]:
    """Write the field-wide maps of :func:`field_variables` from the finished tile maps.

    Run by :func:`finalise_store` once every tile is in, on the whole field's p-values, so the
    maps are the same whatever the tiling, cluster or resume. Memory: one p-value map's
    tested values at a time (16 bytes per tested pixel, see
    :class:`specfit.kernels.significance.BHTable`) plus one band of tile rows; maps are read
    and written band by band. Running it again gives the same maps (it reads only the tile
    maps), so a finalise interrupted here is simply run again.

    Parameters
    ----------
    root
        The results store's zarr group, open for writing.

    Returns
    -------
    dict
        Per tested p-value map: ``n_tested``, ``alpha`` and ``n_pixel`` (p < alpha, the
        per-pixel count), ``fdr_q`` and ``n_fdr`` (q <= fdr_q), ``global_level``,
        ``per_test_threshold`` and ``n_global``; and for ``best_model_fdr`` the share of each
        alias. Empty if the store declares no field-wide maps. These numbers also go into the
        maps' attrs.
    """
    from specfit.kernels.significance import BHTable, sidak_threshold

    # sorted: the store lists its arrays in the file system's order, which differs between
    # otherwise identical runs (and so did this attr's text)
    field = {
        n: dict(root[n].attrs) for n in sorted(root.array_keys()) if FIELD_CONTROL in root[n].attrs
    }
    if not field:
        return {}
    bands = _bands(root["y"].shape[0], int(root.attrs.get("tile_size") or 256))
    summary: dict[str, dict] = {}
    for source in dict.fromkeys(
        a["source"] for a in field.values() if a[FIELD_CONTROL] != "choice"
    ):
        src = root[source]
        table = BHTable(np.concatenate([_finite(src[b, :]) for b in bands]))
        info: dict[str, Any] = {"n_tested": table.n}
        for name, attrs in field.items():
            if attrs.get("source") != source:
                continue
            target = root[name]
            if attrs[FIELD_CONTROL] == "bh":
                q_level, alpha = attrs["fdr_q"], attrs["alpha"]
                info.update(fdr_q=q_level, n_fdr=table.count_at(q_level), alpha=alpha)
                info["n_pixel"] = int(np.searchsorted(table.p, alpha, side="left"))
                for b in bands:
                    target[b, :] = table.qvalues(src[b, :]).astype(np.float32)
                target.attrs.update({"n_tested": table.n, "n_significant": info["n_fdr"]})
            elif attrs[FIELD_CONTROL] == "sidak":
                level = attrs["global_level"]
                thr = sidak_threshold(level, table.n)
                n_sig = 0
                for b in bands:
                    p = np.asarray(src[b, :], dtype=np.float64)
                    g = np.where(np.isfinite(p), (p <= thr).astype(np.int8), np.int8(-1))
                    n_sig += int(np.count_nonzero(g == 1))
                    target[b, :] = g.astype(np.int8)
                info.update(global_level=level, per_test_threshold=thr, n_global=n_sig)
                target.attrs.update(
                    _json_safe(
                        {"n_tested": table.n, "per_test_threshold": thr, "n_significant": n_sig}
                    )
                )
        summary[source] = info
    for name, attrs in field.items():
        if attrs[FIELD_CONTROL] == "choice":
            summary[name] = _write_choice(root, name, attrs, bands)
    return summary


def _write_choice(root: Any, name: str, attrs: dict, bands: list[slice]) -> dict:
    """``best_model_fdr``: the fit's own choice rule with each test's q-value at ``fdr_q``.

    The same rule as ``best_model`` (:func:`specfit.kernels.fitting.choose_model`: walk each
    family of nested models by its tests, then compare the families' winners by the
    ``nonnested`` criterion stored per model), with the Benjamini-Hochberg q-values in place
    of the p-values and ``q <= fdr_q`` in place of ``p < alpha``; so a field-wide demotion
    inside one family is weighed against the other families again, as the fit would.
    """
    from specfit.kernels.fitting import choose_model

    aliases = list(json.loads(root.attrs.get("models", "{}")))
    battrs = dict(root[attrs["source"]].attrs)
    rule = battrs.get("rule", "lrt")
    nonnested = battrs.get("nonnested", "bic")
    qnames: dict[tuple[str, str], str] = {}
    for qname in attrs["tests"]:
        pattrs = root[root[qname].attrs["source"]].attrs
        qnames[(pattrs["null_model"], pattrs["alternative_model"])] = qname
    # q <= fdr_q as the rule's strict "p < alpha": the next float above fdr_q
    level = float(np.nextafter(np.float32(attrs["fdr_q"]), np.float32(np.inf)))
    counts = np.zeros(len(aliases) + 1, dtype=np.int64)  # last: none (-1)
    for b in bands:
        summary = {}
        for a in aliases:
            summary[a] = {
                "status": np.asarray(root[f"{a}_status"][b, :]).ravel(),
                "ll": np.asarray(root[f"{a}_loglike"][b, :], dtype=np.float64).ravel(),
                nonnested: np.asarray(root[f"{a}_{nonnested}"][b, :], dtype=np.float64).ravel(),
            }
        pvals = {
            pair: {rule: np.asarray(root[q][b, :], dtype=np.float64).ravel()}
            for pair, q in qnames.items()
        }
        shape = root[attrs["source"]][b, :].shape
        best = choose_model(aliases, summary, list(qnames), pvals, rule, level, nonnested)
        best = best.reshape(shape)
        root[name][b, :] = best
        counts += np.bincount(np.where(best < 0, len(aliases), best).ravel(), minlength=counts.size)
    total = max(int(counts.sum()), 1)
    out = {a: int(counts[i]) for i, a in enumerate(aliases)}
    root[name].attrs.update({"counts": out})
    return {"counts": out, "n_pixels": total}


def plots_folder(results: str | Path) -> Path:
    """Where the maps of a store are drawn by default (``specfit plot``, ``output.plots``):
    ``RESULTS_plots`` beside it, ``.zarr`` left out; any other suffix kept, so that
    ``res.v1`` and ``res.v2`` get their own folders."""
    path = Path(results).resolve()  # "." (a store's own folder) has no name to build on
    return path.with_name(path.name.removesuffix(".zarr") + "_plots")


def stored_input_path(path: str | Path) -> str | None:
    """The ``input.path`` of the config stored in the results store at ``path``; None when
    the store holds none or cannot be read (not a store: its reader says what it is)."""
    import yaml

    try:
        stored = yaml.safe_load(store_attrs(Path(path)).get("config", "")) or {}
        return (stored.get("input") or {}).get("path") or None
    except Exception:
        return None


def finish_hint(path: str | Path) -> str:
    """What to do about an incomplete store: wait for the run that is writing it now (its
    ``lock.json`` names a live process, or one on another host), else the command that
    resumes it (``specfit demo --out DIR --resume`` for a demo's store)."""
    from specfit.workspace import work_dir_for

    p = Path(path)
    lock = StoreLock(p)
    info = lock._read_info()
    if info and not lock._is_dead_local(info):
        here = info.get("host") == socket.gethostname()
        return (
            f"a specfit run ({StoreLock._describe(info)}) "
            + ("is writing it now" if here else "holds its lock, so may be writing it now")
            + f": wait for it to finish (its lock: {work_dir_for(p) / 'lock.json'})"
        )
    # a demo's store: DIR/results.zarr from the synthetic frames in DIR/synthetic
    source = stored_input_path(p)
    if (
        p.name == "results.zarr"
        and source
        and Path(source).resolve() == (p.parent / "synthetic").resolve()
    ):
        sets = "".join(f" --set {o}" for o in _demo_overrides(p))
        return f"finish it with `specfit demo --out {p.parent} --resume{sets}`"
    return "finish it with `specfit run CONFIG --resume` (the config that wrote it)"


def _demo_overrides(path: Path) -> list[str]:
    """The ``--set`` options (shell-quoted) a demo's store at ``path`` was run with: the
    science settings of its stored config that differ from the shipped demo config's (a
    resume without them is refused as another configuration)."""
    import shlex

    import yaml

    from specfit.config import SCIENCE_SECTIONS, load_config
    from specfit.examples import config_path

    try:
        stored = json.loads(store_attrs(path).get("config_json") or "{}")
        base = yaml.safe_load(config_path("demo").read_text())
        base["input"]["path"] = stored["input"]["path"]  # where it ran, not how
        default = load_config(base).model_dump(mode="json")
    except Exception:  # not readable as a demo's: the plain command
        return []
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{key}.{k}")
        elif a != b:
            text = yaml.safe_dump(a, default_flow_style=True, width=10**6)
            out.append(shlex.quote(f"{key}={text.strip().removesuffix('...').strip()}"))

    for section in SCIENCE_SECTIONS:
        walk(stored.get(section), default.get(section), section)
    return out


def open_results(path: str | Path, *, allow_incomplete: bool = False):
    """Open a results store as a lazy ``xarray.Dataset``.

    Parameters
    ----------
    path
        The ``results.zarr`` folder written by ``specfit run``.
    allow_incomplete
        Open a store whose run has not finished (unfinished tiles read as NaN).

    Raises
    ------
    NotFoundError, StoreError
        If the path is not a results store (NotFoundError is a FileNotFoundError), or the run
        has not finished.
    """
    import xarray as xr

    from specfit.errors import NotFoundError
    from specfit.workspace import is_specfit_cube, is_specfit_results

    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"results store {p} does not exist; run `specfit run` first")
    if not (p / "zarr.json").exists():
        inner = sorted(q.parent.name for q in p.glob("*/zarr.json") if is_specfit_results(q.parent))
        if p.is_dir() and inner:
            hint = f"it holds the results store {p / inner[0]}: give that"
        elif p.suffix in (".yaml", ".yml"):
            hint = "a config file names its results store in output.path: give that"
        else:
            hint = "run `specfit run` first"
        raise NotFoundError(f"{p} is not a results store (no zarr.json); {hint}")
    if not is_specfit_results(p):
        what = "specfit's intermediate cube" if is_specfit_cube(p) else "a Zarr store"
        raise StoreError(
            f"{p} is {what}, not a specfit results store (those are written to output.path "
            "by `specfit run`); give the results.zarr of a run"
        )
    if not allow_incomplete and not is_complete(p):
        done, total = tile_status(p)
        raise StoreError(
            f"{p} is incomplete ({done} of {total} tiles): {finish_hint(p)}; or, to look at "
            "what is there, `specfit explore --allow-incomplete` (in Python, "
            "allow_incomplete=True)"
        )
    if allow_incomplete and not is_complete(p):
        done, total = tile_status(p)
        warnings.warn(
            f"{p} is incomplete ({done} of {total} tiles written); the others read as NaN "
            f"(integer maps: -1); {finish_hint(p)}",
            IncompleteStoreWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        ds = xr.open_zarr(p, consolidated=True)
    # The consolidated metadata lists every array: one whose folder is gone (deleted, an
    # incomplete copy) read as all NaN and was summarised and exported without a word.
    gone = [str(n) for n in ds.variables if not (p / str(n) / "zarr.json").is_file()]
    if gone:
        raise StoreError(
            f"{p} is damaged: the array(s) {', '.join(gone[:5])}"
            f"{' ...' if len(gone) > 5 else ''} listed in its metadata are missing (no "
            f"{gone[0]}/zarr.json); copy the store again, or run `specfit run` again with "
            "--overwrite"
        )
    coords = [c for c in ("hpc_x", "hpc_y", "dof") if c in ds.data_vars]
    if coords:
        ds = ds.set_coords(coords)
    if "power" in ds and "config_json" in ds.attrs:
        # so that specfit.fit(ds["power"]) refits with the run's models and options
        fit_cfg = json.loads(ds.attrs["config_json"]).get("fit", {})
        ds["power"].attrs["fit_settings"] = json.dumps(fit_cfg)
    if "power" in ds and ds.attrs.get("wcs_header"):
        # the input frame's WCS, as the readers give it, so that a refit's maps carry their
        # grid's WCS (specfit.to_map, export) as the store's do
        ds["power"].attrs["wcs_header"] = _frame_wcs(ds.attrs["wcs_header"], ds.attrs)
    return ds


def _frame_wcs(text: str, attrs: Mapping) -> str:
    """The WCS header of the input frame from a store's ``wcs_header`` (its own grid's, whose
    pixel 0 lies at ``wcs_origin`` of the frame): the reference pixel moved back."""
    from astropy.io import fits

    x0, y0 = (list(attrs.get("wcs_origin") or []) + [0, 0])[:2]
    h = fits.Header.fromstring(text, sep="\n")
    h["CRPIX1"] = float(h.get("CRPIX1", 0.0)) + float(x0)
    h["CRPIX2"] = float(h.get("CRPIX2", 0.0)) + float(y0)
    return h.tostring(sep="\n")


def differing_variables(
    got: str | Path, want: str | Path, ignore: tuple[str, ...] = ()
) -> list[str]:
    """Names of the variables and coordinates, data variables first, that only one of two
    finished results stores has, or that are not bit-identical (NaN where NaN, same shape) in
    both; the values of those in ``ignore`` are not compared (e.g. ``tiles_done``,
    ``tiles_run``: the bookkeeping of another tiling), but they must exist in both. An empty
    list: the two runs agree on every value."""
    a, b = open_results(got), open_results(want)
    data = sorted(set(a.data_vars) | set(b.data_vars))
    coords = sorted((set(a.variables) | set(b.variables)) - set(data))
    out = []
    for name in data + coords:
        if name not in a.variables or name not in b.variables:
            out.append(name)
            continue
        if name in ignore:
            continue
        x, y = a[name].values, b[name].values
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            out.append(name)
    return out


# ----------------------------------------------------------------------------- one writer
class InputFolderLock:
    """One run at a time on a folder of synthetic frames (``input.kind: synthetic``): held for
    the whole run, because a run reads the frames lazily to its end, and a run with other
    ``input.synthetic`` settings rewrites them in place (two such runs side by side gave a
    store marked complete from the other run's frames). An OS file lock,
    ``<folder>/.specfit-lock``. Where no frames were made when the run ends (a run refused
    first, e.g. by a folder of someone else's files), the lock file goes again, and the
    folder too if the lock made it: specfit leaves no file in a folder it does not use."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._lock = None
        self._made = False
        self._new_file = False

    def __enter__(self) -> InputFolderLock:
        from filelock import FileLock, Timeout

        self._made = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._new_file = not (self.folder / ".specfit-lock").exists()
        lock = FileLock(str(self.folder / ".specfit-lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise StoreError(
                f"input.path {self.folder} is in use by another specfit run (its synthetic "
                "frames are being written or read); wait for it to finish, or give this run "
                "its own input.path"
            ) from None
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._new_file and not (self.folder / ".complete").exists():
            # no synthetic frames were made here (the marker is written first): not our folder
            with contextlib.suppress(OSError):
                (self.folder / ".specfit-lock").unlink()
                if self._made:
                    self.folder.rmdir()


class StoreLock:
    """One writer per results store: an OS file lock in the store's work folder.

    The lock file ``<results>.specfit-work/lock`` is locked with the ``filelock`` package
    (``flock``: the operating system releases it when the process ends, even on ``kill -9``);
    beside it ``lock.json`` says who holds it (host, pid, start time), so that a second run
    can name the first. Taken before anything is written to the store, held to the end.

    Parameters
    ----------
    results
        The results store the lock protects (need not exist yet), or a cube set by
        ``output.cube_path`` (its lock is then in ``<cube_path>.specfit-work``).
    label
        How messages name the path, e.g. ``"output.cube_path "``.
    busy
        What a refusal says the holder does with it (a shared cube's holder may only read it).
    """

    def __init__(
        self, results: str | Path, label: str = "", busy: str = "is being written"
    ) -> None:
        from specfit.workspace import work_dir_for

        self.results = Path(results)
        self.label = label
        self.busy = busy
        self.work = work_dir_for(self.results)
        self.lock_path = self.work / "lock"
        self.info_path = self.work / "lock.json"
        self._lock = None
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }

    def _read_info(self) -> dict | None:
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _wait_for_info(self, alive: bool, seconds: float = 2.0) -> dict | None:
        """The holder's ``lock.json``, waiting out the instant between its OS lock and the
        file's writing (a second run that tries then would otherwise name nobody, or the
        crashed run whose record the new holder has yet to replace). ``alive``: the OS
        lock proves the holder runs, so a record naming a dead process here is stale."""
        deadline = time.monotonic() + seconds
        while True:
            info = self._read_info()
            fresh = info is not None and not (alive and self._is_dead_local(info))
            if fresh or time.monotonic() >= deadline:
                return info if fresh else None
            time.sleep(0.05)

    @staticmethod
    def _describe(info: dict | None) -> str:
        if not info:
            return "host ?, pid ?, started ?"
        return f"host {info.get('host')}, pid {info.get('pid')}, started {info.get('started')}"

    def acquire(self) -> StoreLock:
        """Take the lock or raise :class:`StoreError` naming the run that holds it."""
        from filelock import FileLock, SoftFileLock, Timeout

        from specfit.workspace import ensure_work_dir

        ensure_work_dir(self.results, self.label.strip() or "output.path")
        lock = FileLock(str(self.lock_path), timeout=0)
        # An OS lock (flock) is released when its holder ends, so a taken one proves the holder
        # runs; only a soft lock (the lock file's existence) can outlive a crashed holder.
        soft = isinstance(lock, SoftFileLock)
        took_over = False
        for attempt in range(3):
            try:
                lock.acquire(timeout=0)
                break
            except Timeout:
                holder = self._wait_for_info(alive=not soft)
                if holder is None and attempt < 2:
                    continue  # the holder finished meanwhile (or never wrote lock.json): retry
                if soft and not took_over and self._is_dead_local(holder):
                    # A soft lock whose holder is gone: left behind by a crash on a file system
                    # without flock. Wait out the instant between a new holder's lock and its
                    # lock.json, then take it over.
                    time.sleep(0.5)
                    if self._read_info() == holder:
                        log.warning(
                            "taking over the lock of %s from a run that no longer exists (%s)",
                            self.results,
                            self._describe(holder),
                        )
                        self.lock_path.unlink(missing_ok=True)
                        took_over = True
                        continue
                raise StoreError(
                    f"{self.label}{self.results} {self.busy} by another specfit run "
                    f"({self._describe(holder)}); wait for it to finish or stop that run, "
                    "then run again"
                ) from None
        else:  # pragma: no cover - the last attempt either breaks or raises
            raise StoreError(f"{self.results}: could not take the lock {self.lock_path}")
        self._lock = lock
        stale = self._read_info()
        if stale and stale != self.info:
            # The OS released the lock of a run that ended without releasing it itself.
            log.warning(
                "%s: the previous run (%s) ended without finishing; this run takes over",
                self.results,
                self._describe(stale),
            )
        tmp = self.info_path.with_name(f".lock.json.{os.getpid()}")
        tmp.write_text(json.dumps(self.info) + "\n")
        os.replace(tmp, self.info_path)
        return self

    def _is_dead_local(self, holder: dict | None) -> bool:
        if not holder or holder.get("host") != socket.gethostname():
            return False
        try:
            from specfit.workspace import pid_alive

            return not pid_alive(int(holder["pid"]))
        except (KeyError, TypeError, ValueError):
            return False

    def release(self) -> None:
        """Say the run is over (remove ``lock.json``), then release the OS lock."""
        if self._lock is None:
            return
        if self._read_info() == self.info:
            self.info_path.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
