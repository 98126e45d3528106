"""Parameter maps back into the solar tool chain: FITS files with the field's WCS, sunpy Maps.

A results store made from input with a helioprojective WCS records, in its attrs, the 2-D WCS
header of its (y, x) grid (``wcs_header``): the derotation's reference frame and time when the
frames were derotated, else the middle frame's. :func:`export_fits` writes one FITS file per
map with that WCS, the map's unit in ``BUNIT`` and the run's config in ``HISTORY``;
:func:`to_map` returns a ``sunpy.map.Map`` (sunpy is imported only there).

A store without a WCS (image sequences such as JPGs, arrays without ``hpc_x``/``hpc_y``) exports
FITS files with pixel coordinates only; :func:`to_map` refuses it, because sunpy would invent a
solar position for it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from specfit.errors import StoreError
from specfit.workspace import check_product_folder

__all__ = ["field_wcs_header", "wcs_origin", "map_names", "map_header", "export_fits", "to_map"]

# Keys of the reference frame's header that describe that one exposure, not a parameter map.
_FRAME_ONLY = ("EXPTIME", "NAXIS", "NAXIS1", "NAXIS2", "T_OBS", "DATE_OBS")


def field_wcs_header(arr: Any) -> str | None:
    """The 2-D WCS header (as text) of ``arr``'s (y, x) grid, or None without a WCS.

    ``arr.attrs["wcs_header"]`` (set by the readers and by derotation) describes the input's
    full frame; the ``x``/``y`` coordinates of ``arr`` are pixel positions in that frame (kept
    through cutouts), so the reference pixel is moved by the first of them.

    Parameters
    ----------
    arr
        The preprocessed (time, y, x) DataArray of a run.
    """
    from astropy.io import fits

    text = arr.attrs.get("wcs_header")
    if not text:
        return None
    xs = np.asarray(arr["x"].values)
    ys = np.asarray(arr["y"].values)
    if np.any(np.diff(xs) != 1) or np.any(np.diff(ys) != 1):
        return None  # not a contiguous block of the input frame: no single linear WCS
    h = fits.Header.fromstring(text, sep="\n")
    h["CRPIX1"] = float(h.get("CRPIX1", 0.0)) - float(xs[0])
    h["CRPIX2"] = float(h.get("CRPIX2", 0.0)) - float(ys[0])
    h["NAXIS1"], h["NAXIS2"] = int(xs.size), int(ys.size)
    return h.tostring(sep="\n")


def _open(results: Any):
    """The results Dataset of a path or a Dataset, its maps in (y, x) order."""
    import xarray as xr

    from specfit.store import open_results

    if isinstance(results, xr.DataArray):
        raise StoreError(
            f"give the results Dataset (or its path) and a map name, not one DataArray "
            f"({results.name!r}): e.g. specfit.to_map(ds, {results.name!r})"
        )
    ds = open_results(results) if isinstance(results, str | Path) else results
    if "y" in ds.dims and "x" in ds.dims:  # a transposed Dataset: its maps are (y, x) again
        ds = ds.transpose(..., "y", "x")
    return ds


def map_names(ds: Any) -> list[str]:
    """The (y, x) maps of a results Dataset (every data variable with dims ``(y, x)``)."""
    return [k for k, v in ds.data_vars.items() if v.dims == ("y", "x")]


def _has_hpc(ds: Any) -> bool:
    return "hpc_x" in ds.variables and "hpc_y" in ds.variables


def wcs_origin(arr: Any) -> list[int]:
    """The ``x``/``y`` coordinates of the first pixel of ``arr``'s grid: where the pixel 0 of
    :func:`field_wcs_header`'s header lies in the input frame (recorded beside it as the attr
    ``wcs_origin``, so that a slice of the maps gets its own reference pixel)."""
    return [int(np.asarray(arr["x"].values)[0]), int(np.asarray(arr["y"].values)[0])]


def _wcs_text(ds: Any, where: str) -> str | None:
    """The WCS header of ``ds``'s own (y, x) grid: the recorded one, its reference pixel moved
    when ``ds`` is a slice of the grid it describes."""
    from astropy.io import fits

    text = ds.attrs.get("wcs_header")
    if not (text or _has_hpc(ds)):
        return None
    if ds.attrs.get("wcs_origin") is not None and not {"x", "y"} <= set(ds.coords):
        # they say where a slice lies in the field: without them the reference pixel would
        # be moved by the whole field's origin (72" off on a cutout)
        raise StoreError(
            f"{where} has lost its x/y coordinates (drop_vars, reset_coords), which say where "
            "its pixels lie in the field; keep them (slice with isel/sel instead)"
        )
    xs = np.asarray(ds["x"].values) if "x" in ds.coords else np.arange(ds.sizes["x"])
    ys = np.asarray(ds["y"].values) if "y" in ds.coords else np.arange(ds.sizes["y"])
    if np.any(np.diff(xs) != 1) or np.any(np.diff(ys) != 1):
        raise StoreError(
            f"{where}: its x/y coordinates are not a contiguous block of the field (a strided "
            "or reversed slice, e.g. isel(x=slice(0, None, 2))), which no single linear WCS "
            "describes; convert the whole map (specfit.to_map) and cut or resample the sunpy "
            "Map (Map.submap, Map.superpixel), or slice with step 1"
        )
    if not text:
        # hpc_x/hpc_y without the header: a store written before the WCS was recorded.
        raise StoreError(
            f"{where} has hpc_x/hpc_y but no recorded WCS header (written by an older specfit); "
            "run it again with `specfit run CONFIG --overwrite` to record the field's WCS"
        )
    h = fits.Header.fromstring(text, sep="\n")
    whole = (xs.size, ys.size) == (h.get("NAXIS1"), h.get("NAXIS2"))
    origin = ds.attrs.get("wcs_origin")
    if origin is None:
        if whole:
            return text
        raise StoreError(
            f"{where} is a slice of maps written before specfit recorded where their WCS "
            "starts (attr wcs_origin), so its reference pixel cannot be moved to the slice; "
            "convert the whole map and cut the sunpy Map (Map.submap), or re-run the store "
            "with `specfit run CONFIG --overwrite`"
        )
    dx, dy = int(xs[0]) - int(origin[0]), int(ys[0]) - int(origin[1])
    if whole and dx == 0 and dy == 0:
        return text
    h["CRPIX1"] = float(h.get("CRPIX1", 0.0)) - dx
    h["CRPIX2"] = float(h.get("CRPIX2", 0.0)) - dy
    h["NAXIS1"], h["NAXIS2"] = int(xs.size), int(ys.size)
    return h.tostring(sep="\n")


def _bunit(units: str, ds: Any) -> str:
    """A FITS BUNIT for a variable's ``units`` attr (:func:`specfit.store.fits_unit`)."""
    from specfit.store import POWER_ROLE, fits_unit

    if units == POWER_ROLE and "power" in ds.variables:
        # Stores written before real units: amplitudes and tails carried the role "power".
        units = str(ds["power"].attrs.get("units", units))
    return fits_unit(units)


def map_header(ds: Any, name: str, where: str = "results") -> Any:
    """The FITS header of map ``name``: the field's WCS, BUNIT, and the config in HISTORY.

    Raises
    ------
    StoreError
        Unknown map name, or a store with ``hpc_x``/``hpc_y`` but no recorded WCS.
    """
    from astropy.io import fits

    from specfit._version import __version__

    names = map_names(ds)
    if name not in names:
        raise StoreError(f"{where} has no map {name!r}; maps: {', '.join(names)}")
    var = ds[name]
    h = fits.Header()
    text = _wcs_text(ds, where)
    if text:
        for card in fits.Header.fromstring(text, sep="\n").cards:
            if card.keyword not in _FRAME_ONLY:
                h.append(card)
    ny, nx = var.shape
    from specfit.store import NO_UNIT

    units = _bunit(str(var.attrs.get("units", "")), ds)
    if re.search(rf"\b{NO_UNIT}\b", units):
        # the input gave no unit ("intensity" stands for it): not a unit FITS readers parse
        h["COMMENT"] = f"{name} in {units}: the input gave no unit, so BUNIT is not set"
    else:
        h["BUNIT"] = units
    h["BTYPE"] = (name, "specfit map")
    if var.attrs.get("long_name"):
        h["COMMENT"] = f"{name}: {var.attrs['long_name']}"
    if ds.attrs.get("time_note"):
        # relative times only: the store's start_time is nominal, not a time of observation
        h["COMMENT"] = f"times: {ds.attrs['time_note']}; DATE-BEG not set"
    elif ds.attrs.get("start_time"):
        h["DATE-BEG"] = (str(ds.attrs["start_time"]).rstrip("Z"), "first frame of the series")
    h["ORIGIN"] = "specfit"
    h["SPECFITV"] = (str(ds.attrs.get("specfit_version", __version__)), "specfit version")
    if not text:
        h["COMMENT"] = "no WCS: the input had none; pixel coordinates only"
    h["HISTORY"] = "specfit run with this config (YAML):"
    for line in str(ds.attrs.get("config", "")).splitlines():
        h["HISTORY"] = line
    return h


def _map_data(var: Any) -> np.ndarray:
    data = np.asarray(var.values)
    if data.dtype == np.int8:
        data = data.astype(np.int16)  # FITS has no signed 8-bit type (BZERO tricks otherwise)
    elif data.dtype == np.float64:
        data = data.astype(np.float32)
    return data


def _exported_map(path: Path) -> bool:
    """Whether ``path`` is a regular FITS file whose primary header says specfit wrote it
    (``ORIGIN = 'specfit'``, as ``map_header`` sets)."""
    from astropy.io import fits

    if path.is_symlink() or not path.is_file():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.getheader(path, 0).get("ORIGIN") == "specfit"
    except Exception:  # not FITS, truncated, unreadable: not ours
        return False


def export_fits(
    results: Any,
    out_dir: str | Path,
    maps: list[str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write one FITS file per map (``DIR/<map>.fits``) with the field's WCS.

    Parameters
    ----------
    results
        A ``results.zarr`` path or an opened results Dataset.
    out_dir
        Folder for the files (created if missing).
    maps
        Map names (default: every (y, x) map of the store).
    overwrite
        Replace existing maps of the same names that an earlier export wrote (otherwise they
        stop the export before anything is written); files specfit did not write always do.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    StoreError
        Unknown map names, existing files without ``overwrite``, or a store with
        ``hpc_x``/``hpc_y`` but no recorded WCS.
    """
    from astropy.io import fits

    where = str(results) if isinstance(results, str | Path) else "results"
    ds = _open(results)
    if maps is not None and not list(maps):
        raise StoreError(
            "--maps names no map; give names such as m1_index,m2_bump_period, or leave it out "
            "to export every map"
        )
    names = list(dict.fromkeys(maps)) if maps else map_names(ds)  # a name given twice: once
    unknown = [n for n in names if n not in map_names(ds)]
    if unknown:
        raise StoreError(
            f"{where} has no map(s) {', '.join(unknown)} (--maps); maps: {', '.join(map_names(ds))}"
        )
    out = Path(out_dir)
    check_product_folder(out, ds, "--fits")
    targets = [out / f"{n}.fits" for n in names]
    existing = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        raise StoreError(
            f"{existing[0]} exists ({len(existing)} file(s) in all); pass --overwrite "
            "(overwrite=True) to replace them, or choose another folder"
        )
    theirs = [t for t in existing if not _exported_map(Path(t))]
    if theirs:  # --overwrite replaces only maps an earlier export wrote
        more = f" (and {len(theirs) - 1} more)" if len(theirs) > 1 else ""
        raise StoreError(
            f"{theirs[0]}{more} was not written by specfit export (no FITS header with "
            "ORIGIN = 'specfit'); specfit never overwrites files it did not write: move it "
            "or choose another folder"
        )
    headers = [map_header(ds, n, where) for n in names]  # errors before any file is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a regular file there, or below one
        raise StoreError(
            f"cannot make the folder {out} ({exc.strerror or exc}); choose another --fits folder"
        ) from None
    for n, h, t in zip(names, headers, targets, strict=True):
        hdu = fits.PrimaryHDU(_map_data(ds[n]), header=h)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)  # long HISTORY lines
            hdu.writeto(t, overwrite=overwrite)
    _warn_other_runs(out, targets, headers[0] if headers else None)
    return targets


def _warn_other_runs(out: Path, targets: list[Path], header: Any) -> None:
    """Name the maps in ``out`` that an export of another run wrote (their HISTORY holds
    another config): they stay, beside this run's maps of other names (a probe found a 16 x
    16 px m1_index beside a 164 x 287 px m2_index). Maps of this run exported before under
    other names are not named."""
    import logging

    from astropy.io import fits

    if header is None:
        return
    mine = list(header.get("HISTORY", []))
    written = {t.name for t in targets}
    other = []
    for path in sorted(out.glob("*.fits")):
        if path.name in written or not _exported_map(path):
            continue
        try:
            theirs = list(fits.getheader(path, 0).get("HISTORY", []))
        except (OSError, ValueError):
            continue
        if theirs != mine:
            other.append(path.name)
    if other:
        shown = ", ".join(other[:4]) + (f" and {len(other) - 4} more" if len(other) > 4 else "")
        logging.getLogger("specfit").warning(
            "%s also holds %d map(s) exported from another run (another config in their "
            "HISTORY: %s); they stay: remove them, or export into an empty folder",
            out,
            len(other),
            shown,
        )


def to_map(results: Any, name: str) -> Any:
    """Map ``name`` of a results store as a ``sunpy.map.Map`` (needs the ``solar`` extra).

    Parameters
    ----------
    results
        A ``results.zarr`` path or an opened results Dataset.
    name
        A (y, x) map, e.g. ``"m1_index"``.

    Raises
    ------
    ImportError
        sunpy is not installed.
    StoreError
        Unknown map, or a store without a helioprojective WCS.
    """
    try:
        import sunpy.map
    except ImportError as exc:
        raise ImportError(
            f"specfit.to_map needs sunpy ({exc}); pip install 'specfit-solar[solar]'"
        ) from None
    where = str(results) if isinstance(results, str | Path) else "results"
    ds = _open(results)
    if not _wcs_text(ds, where):
        raise StoreError(
            f"{where} has no WCS (the input had no helioprojective coordinates), so it cannot "
            "be a sunpy Map; use ds[name] as an array, or `specfit export --fits` for "
            "pixel-only FITS"
        )
    h = map_header(ds, name, where)
    return sunpy.map.Map(_map_data(ds[name]), h)
