"""The results store (``results.zarr``): layout, block-by-block writes, resume bookkeeping.

Layout (a Zarr v3 group that ``xarray.open_zarr`` reads as a Dataset):

- coordinates ``y``, ``x`` (px), ``freq`` (Hz), and ``hpc_x``, ``hpc_y`` (arcsec) where known;
- every fit variable (``<alias>_<param>``, ``_err``, ``_status``, statistics, ``best_model``,
  ...) as (y, x), ``power`` (freq, y, x), ``power_sigma`` with box averaging, ``dof`` and
  ``mean_intensity`` (y, x);
- ``blocks_done`` (block_y, block_x) int8: 1 once a spatial block's every variable is written;
- ``blocks_run`` (block_y, block_x) int64: the run key (config + inputs) each block was
  written under, set just before its ``blocks_done`` mark;
- attrs: ``config`` (YAML), ``config_hash``, ``specfit_version``, ``models`` and
  ``status_codes`` (JSON text), ``cube_path``, ``specfit_kind`` ("results": what lets
  ``--overwrite`` replace it), ``run_key``, ``input_fingerprint``, ``variables``, ``complete``
  (true only when every block is in, written under this store's own run key).

Zarr chunks are the spatial blocks, so each block's write touches its own chunks only and the
tasks of one run never share a chunk. One run at a time writes a store: :class:`StoreLock`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specfit.errors import StoreError

__all__ = [
    "IncompleteStoreWarning",
    "StoreLayout",
    "open_results",
    "block_status",
    "is_complete",
    "prepare_store",
    "write_block",
    "finalise_store",
    "config_hash",
    "run_key_int",
    "StoreLock",
]

log = logging.getLogger("specfit")


class IncompleteStoreWarning(UserWarning):
    """A results store of an unfinished run was opened on purpose (``allow_incomplete``)."""


def config_hash(science: dict) -> str:
    """A stable hash of the science sections of a config (what changes the numbers)."""
    text = json.dumps(science, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_key_int(run_key: str) -> int:
    """The int64 form of a hex run key, as stored per block in ``blocks_run`` (never 0)."""
    return int(run_key[:15], 16) or 1


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

    from specfit.workspace import is_empty_dir, is_specfit_results

    path = Path(path)
    if path.exists():
        # Only specfit's own stores (or an empty folder) are ever replaced.
        if not (is_specfit_results(path) or is_empty_dir(path)):
            raise StoreError(
                f"{path} exists and is not a specfit results store; specfit does not replace "
                "it, choose another output.path"
            )
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
    run = arr(
        "blocks_run",
        (nby, nbx),
        (1, 1),
        "i8",
        ("block_y", "block_x"),
        {"long_name": "run key (config + inputs) each block was written under"},
    )
    run[:] = 0
    names = sorted({*layout.variables, *layout.spectral, *layout.coords2d})
    root.attrs.update(
        _json_safe(
            {
                "specfit_state": INCOMPLETE_NOTE,
                **layout.attrs,
                "specfit_kind": "results",
                "variables": names,
                "complete": False,
                "block_size": b,
            }
        )
    )
    # The coordinate arrays need xarray's _ARRAY_DIMENSIONS-free v3 names only; consolidate so
    # that xarray.open_zarr opens a partial store without warnings too.
    _consolidate(path)


def write_block(
    path: str | Path,
    by: int,
    bx: int,
    block: int,
    data: dict[str, np.ndarray],
    run_key: str | None = None,
) -> None:
    """Write one spatial block's arrays, then mark it done (the mark is written last).

    ``run_key`` (the store's ``run_key`` attr) is recorded for the block first, so that
    :func:`finalise_store` can tell a block written under another config or inputs.
    """
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
    if run_key is not None and "blocks_run" in root:
        root["blocks_run"][by, bx] = run_key_int(run_key)
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
    """Mark a store complete once every block is done under its own run key (refuses
    otherwise).

    Checked first: every variable listed in the ``variables`` attr exists with the store's
    (y, x) size, every block is marked done, and every block was written under the store's
    ``run_key`` (a block from another run's config or inputs is never part of a complete
    store).
    """
    import zarr

    done, total = block_status(path)
    if done != total:
        raise StoreError(f"{path}: only {done} of {total} blocks are written; not marking complete")
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
    if key and "blocks_run" in members:
        runs = np.asarray(root["blocks_run"][:])
        foreign = int((runs != run_key_int(key)).sum())
        if foreign:
            raise StoreError(
                f"{path}: {foreign} of {total} blocks were written by another run (other config "
                "or inputs); not marking complete. Run again with --overwrite"
            )
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


# ----------------------------------------------------------------------------- one writer
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


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
    """

    def __init__(self, results: str | Path, label: str = "") -> None:
        from specfit.workspace import work_dir_for

        self.results = Path(results)
        self.label = label
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

    @staticmethod
    def _describe(info: dict | None) -> str:
        if not info:
            return "host ?, pid ?, started ?"
        return f"host {info.get('host')}, pid {info.get('pid')}, started {info.get('started')}"

    def acquire(self) -> StoreLock:
        """Take the lock or raise :class:`StoreError` naming the run that holds it."""
        from filelock import FileLock, Timeout

        from specfit.workspace import ensure_work_dir

        ensure_work_dir(self.results, self.label.strip() or "output.path")
        lock = FileLock(str(self.lock_path), timeout=0)
        for attempt in range(2):
            try:
                lock.acquire(timeout=0)
                break
            except Timeout:
                holder = self._read_info()
                if attempt == 0 and self._is_dead_local(holder):
                    # A lock whose holder is gone although the OS lock is still taken: a file
                    # system without flock (filelock then falls back to the lock file's
                    # existence), left behind by a crash. Wait out the instant between a new
                    # holder's lock and its lock.json, then take it over.
                    time.sleep(0.5)
                    if self._read_info() == holder:
                        log.warning(
                            "taking over the lock of %s from a run that no longer exists (%s)",
                            self.results,
                            self._describe(holder),
                        )
                        self.lock_path.unlink(missing_ok=True)
                        continue
                raise StoreError(
                    f"{self.label}{self.results} is being written by another specfit run "
                    f"({self._describe(holder)}); wait for it to finish or stop that run, "
                    "then run again"
                ) from None
        else:  # pragma: no cover - the second attempt either breaks or raises
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
            return not _pid_alive(int(holder["pid"]))
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
