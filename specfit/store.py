"""The results store (``results.zarr``): layout, block-by-block writes, resume bookkeeping.

Layout (a Zarr v3 group that ``xarray.open_zarr`` reads as a Dataset):

- coordinates ``y``, ``x`` (px), ``freq`` (Hz), and ``hpc_x``, ``hpc_y`` (arcsec) where known;
- every fit variable (``<alias>_<param>``, ``_err``, ``_status``, statistics, ``best_model``,
  ...) as (y, x), ``power`` (freq, y, x), ``power_sigma`` with box averaging, ``dof`` and
  ``mean_intensity`` (y, x);
- ``blocks_done`` (block_y, block_x) int8: 1 once a spatial block's every variable is written;
- attrs: ``config`` (YAML), ``config_hash``, ``specfit_version``, ``models`` and
  ``status_codes`` (JSON text), ``cube_path``, ``complete`` (true only when every block is in).

Zarr chunks are the spatial blocks, so each block's write touches its own chunks only and
concurrent writers never share a chunk (no locks, no lost data).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "StoreError",
    "IncompleteStoreWarning",
    "StoreLayout",
    "open_results",
    "block_status",
    "is_complete",
    "prepare_store",
    "write_block",
    "finalise_store",
    "config_hash",
]


class StoreError(RuntimeError):
    """A results store cannot be used as asked (exists, incomplete, or from another config)."""


class IncompleteStoreWarning(UserWarning):
    """A results store of an unfinished run was opened on purpose (``allow_incomplete``)."""


def config_hash(science: dict) -> str:
    """A stable hash of the science sections of a config (what changes the numbers)."""
    text = json.dumps(science, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StoreLayout:
    """Everything needed to create a results store before any block is computed."""

    ny: int
    nx: int
    freq: np.ndarray
    block: int
    variables: dict[str, dict]  # name -> {"dtype": dtype, "attrs": {...}} for (y, x) maps
    spectral: dict[str, dict]  # name -> {"dtype", "attrs"} for (freq, y, x) arrays
    coords2d: dict[str, np.ndarray]  # e.g. hpc_x, hpc_y (y, x)
    attrs: dict[str, Any]

    @property
    def nblocks(self) -> tuple[int, int]:
        return (-(-self.ny // self.block), -(-self.nx // self.block))

    def block_slices(self, by: int, bx: int) -> tuple[slice, slice]:
        b = self.block
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
    "(blocks_done == 0) read as NaN. Finish it with `specfit run CONFIG --resume`"
)


def prepare_store(path: str | Path, layout: StoreLayout) -> None:
    """Create an empty results store (every value NaN / fill, no block done)."""
    import zarr

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    b = layout.block
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

    arr("y", (ny,), (ny,), "i4", ("y",), {"units": "px", "long_name": "pixel row"})[:] = np.arange(
        ny
    )
    arr("x", (nx,), (nx,), "i4", ("x",), {"units": "px", "long_name": "pixel column"})[:] = (
        np.arange(nx)
    )
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
    nby, nbx = layout.nblocks
    done = arr(
        "blocks_done",
        (nby, nbx),
        (1, 1),
        "i1",
        ("block_y", "block_x"),
        {"long_name": "1 where the spatial block is fully written", "block_size": b},
    )
    done[:] = 0
    root.attrs.update(
        _json_safe(
            {"specfit_state": INCOMPLETE_NOTE, **layout.attrs, "complete": False, "block_size": b}
        )
    )
    # The coordinate arrays need xarray's _ARRAY_DIMENSIONS-free v3 names only; consolidate so
    # that xarray.open_zarr opens a partial store without warnings too.
    _consolidate(path)


def write_block(
    path: str | Path, by: int, bx: int, block: int, data: dict[str, np.ndarray]
) -> None:
    """Write one spatial block's arrays, then mark it done (the mark is written last)."""
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    ys = slice(by * block, by * block + next(iter(data.values())).shape[-2])
    xs = slice(bx * block, bx * block + next(iter(data.values())).shape[-1])
    for name, values in data.items():
        a = root[name]
        if a.ndim == 3:
            a[:, ys, xs] = values
        else:
            a[ys, xs] = values
    root["blocks_done"][by, bx] = 1


def block_status(path: str | Path) -> tuple[int, int]:
    """(blocks done, blocks in all) of a results store."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    done = np.asarray(root["blocks_done"][:])
    return int(done.sum()), int(done.size)


def done_blocks(path: str | Path) -> np.ndarray:
    """The (block_y, block_x) int8 map of finished blocks."""
    import zarr

    return np.asarray(zarr.open_group(str(path), mode="r")["blocks_done"][:])


def store_attrs(path: str | Path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


def is_complete(path: str | Path) -> bool:
    """True if the store exists and every block was written."""
    p = Path(path)
    if not (p / "zarr.json").exists():
        return False
    try:
        return bool(store_attrs(p).get("complete", False))
    except Exception:
        return False


def finalise_store(path: str | Path, extra_attrs: dict | None = None) -> None:
    """Mark a store complete once every block is done (refuses otherwise)."""
    import zarr

    done, total = block_status(path)
    if done != total:
        raise StoreError(f"{path}: only {done} of {total} blocks are written; not marking complete")
    root = zarr.open_group(str(path), mode="r+")
    root.attrs.update(
        _json_safe({**(extra_attrs or {}), "complete": True, "specfit_state": "complete"})
    )
    _consolidate(Path(path))


def open_results(path: str | Path, *, allow_incomplete: bool = False):
    """Open a results store as a lazy ``xarray.Dataset``.

    Parameters
    ----------
    path
        The ``results.zarr`` folder written by ``specfit run``.
    allow_incomplete
        Open a store whose run has not finished (unfinished blocks read as NaN).

    Raises
    ------
    FileNotFoundError, StoreError
        If the path is not a results store, or the run has not finished.
    """
    import xarray as xr

    p = Path(path)
    if not (p / "zarr.json").exists():
        raise FileNotFoundError(
            f"{p} is not a results store (no zarr.json); run `specfit run` first"
        )
    if not allow_incomplete and not is_complete(p):
        done, total = block_status(p)
        raise StoreError(
            f"{p} is incomplete ({done} of {total} blocks): finish it with `specfit run CONFIG "
            "--resume`, or pass allow_incomplete=True to look at what is there"
        )
    if allow_incomplete and not is_complete(p):
        done, total = block_status(p)
        warnings.warn(
            f"{p} is incomplete ({done} of {total} tiles written); the others read as NaN. "
            "Finish it with `specfit run CONFIG --resume`",
            IncompleteStoreWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        ds = xr.open_zarr(p, consolidated=True)
    coords = [c for c in ("hpc_x", "hpc_y") if c in ds.data_vars]
    if coords:
        ds = ds.set_coords(coords)
    return ds
