"""Fixtures for the viz tests: small results stores that follow DESIGN.md's results contract.

The stores are built here from known per-pixel parameters with the model formulas written out
independently of ``specfit.models``, so the tests can compare what the viz layer draws
against a reference that does not share code with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

# --- reference formulas (DESIGN.md "Spectral models shipped"), f in Hz ------------------------


def ref_powerlaw_tail(f: np.ndarray, amplitude, index, tail) -> np.ndarray:
    """P(f) = A f^-n + C."""
    return amplitude * f ** (-index) + tail


def ref_lorentzian_bump(f: np.ndarray, bump_amplitude, bump_center, bump_width) -> np.ndarray:
    """alpha / (1 + ((ln f - beta) / sigma)^2)."""
    return bump_amplitude / (1.0 + ((np.log(f) - bump_center) / bump_width) ** 2)


def ref_model(name: str, f: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """Evaluate one of the two reference models from named parameters."""
    out = ref_powerlaw_tail(f, params["amplitude"], params["index"], params["tail"])
    if name == "powerlaw_tail_lorentzian":
        out = out + ref_lorentzian_bump(
            f, params["bump_amplitude"], params["bump_center"], params["bump_width"]
        )
    return out


MODELS = {
    "m1": {
        "name": "powerlaw_tail",
        "formula": "A f^-n + C",
        "params": ["amplitude", "index", "tail"],
    },
    "m2": {
        "name": "powerlaw_tail_lorentzian",
        "formula": "A f^-n + C + alpha / (1 + ((ln f - beta)/sigma)^2)",
        "params": ["amplitude", "index", "tail", "bump_amplitude", "bump_center", "bump_width"],
    },
}
POWER_UNITS = "(DN/s)^2/Hz"  # specfit.store.power_units("DN/s", "density")
UNITS = {
    "amplitude": POWER_UNITS,
    "index": "1",
    "tail": POWER_UNITS,
    "bump_amplitude": POWER_UNITS,
    "bump_center": "ln(Hz)",
    "bump_width": "1",
}
# The rest of the contract's ``models`` attr (see specfit.store.models_attr).
for _alias, _base in (("m1", None), ("m2", "powerlaw_tail")):
    MODELS[_alias]["units"] = [UNITS[p] for p in MODELS[_alias]["params"]]
    MODELS[_alias]["bounds"] = [[None, None] for _ in MODELS[_alias]["params"]]
    MODELS[_alias]["base"] = _base
STATUS_CODES = {
    "0": "converged",
    "1": "max_iter: not converged within max_iter steps",
    "2": "invalid input (NaN spectrum)",
    "7": "at_bound: converged with a parameter on a bound",
}
CONVERGED = [0, 7]


def make_results_store(
    path: Path,
    ny: int = 12,
    nx: int = 16,
    nfreq: int = 60,
    nt: int = 150,
    cadence: float = 12.0,
    seed: int = 1,
    with_hpc: bool = True,
    with_cube: bool = True,
) -> Path:
    """Write a contract-conforming results.zarr (and cube.zarr beside it) with known truth.

    Parameters vary smoothly across the map so that a map picture has real structure; the
    stored spectrum of each pixel is its M2 model times seeded chi-square(2)/2 noise, pixel
    (y=0, x=nx-1) is a failed fit (NaN parameters, status 2).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    freq = np.arange(1, nfreq + 1) / (nt * cadence)
    truth = {
        "amplitude": 1e-3 * (1.0 + 0.5 * xx / nx),
        "index": 1.2 + 1.0 * xx / max(nx - 1, 1) + 0.2 * yy / max(ny - 1, 1),
        "tail": 0.05 + 0.01 * yy,
        "bump_amplitude": 40.0 + 10.0 * np.sin(yy / 3.0),
        "bump_center": np.log(1.0 / (240.0 + 10.0 * yy)),  # periods 4 to ~6 minutes
        "bump_width": 0.15 + 0.01 * xx,
    }
    f = freq[:, None, None]
    p2 = {k: v[None] for k, v in truth.items()}
    clean = ref_model("powerlaw_tail_lorentzian", f, p2)
    power = clean * rng.chisquare(2, size=clean.shape) / 2.0
    power[:, 0, nx - 1] = np.nan

    data: dict[str, tuple] = {}
    for alias, info in MODELS.items():
        status = np.zeros((ny, nx), np.int8)
        status[0, nx - 1] = 2
        status[ny - 1, 0] = 1
        status[ny - 1, nx - 1] = 7  # converged at a bound: still shown by the status mask
        for p in info["params"]:
            # m1's amplitude differs a little from the truth: the fit without a bump is biased.
            val = truth[p] * (1.1 if (alias == "m1" and p == "amplitude") else 1.0)
            val = val.astype(np.float32)
            val[0, nx - 1] = np.nan
            err = (0.05 * np.abs(val)).astype(np.float32)
            attrs = {"units": UNITS[p], "long_name": f"{info['name']} {p.replace('_', ' ')}"}
            data[f"{alias}_{p}"] = (("y", "x"), val, attrs)
            data[f"{alias}_{p}_err"] = (
                ("y", "x"),
                err,
                {"units": UNITS[p], "long_name": f"uncertainty of {alias}_{p}"},
            )
        data[f"{alias}_status"] = (
            ("y", "x"),
            status,
            {"long_name": "fit status", "status_codes": json.dumps(STATUS_CODES)},
        )
        npar = len(info["params"])
        loglike = (-50.0 - rng.normal(0, 1, (ny, nx)) - 3 * (alias == "m1")).astype(np.float32)
        stats = {
            "loglike": (loglike, "", "log-likelihood"),
            "chi2red": (rng.uniform(0.8, 1.3, (ny, nx)).astype(np.float32), "", "reduced chi2"),
            "aic": ((2 * npar - 2 * loglike).astype(np.float32), "", "AIC"),
            "bic": ((npar * np.log(nfreq) - 2 * loglike).astype(np.float32), "", "BIC"),
            "nfev": (rng.integers(5, 40, (ny, nx)).astype(np.int32), "", "function evaluations"),
            "gof_pvalue": (rng.uniform(0, 1, (ny, nx)).astype(np.float32), "", "GOF p-value"),
        }
        for s, (arr, units, long_name) in stats.items():
            arr = arr.copy()
            if arr.dtype.kind == "f":
                arr[0, nx - 1] = np.nan
            data[f"{alias}_{s}"] = (("y", "x"), arr, {"units": units, "long_name": long_name})
    period = (np.exp(-truth["bump_center"]) / 60.0).astype(np.float32)
    period[0, nx - 1] = np.nan
    data["m2_bump_period"] = (
        ("y", "x"),
        period,
        {"units": "min", "long_name": "bump period"},
    )
    lrt = rng.uniform(0, 0.2, (ny, nx)).astype(np.float32)
    lrt[:, : nx // 4] = 0.5  # a band where the bump is not significant
    data["lrt_pvalue"] = (("y", "x"), lrt, {"units": "", "long_name": "LRT p-value m2 vs m1"})
    data["ftest_pvalue"] = (("y", "x"), lrt, {"units": "", "long_name": "F-test p-value"})
    data["best_model"] = (
        ("y", "x"),
        np.where(lrt < 0.05, 1, 0).astype(np.int8),
        {"long_name": "best model", "models": "m1,m2"},
    )
    data["power"] = (("freq", "y", "x"), power.astype(np.float32), {"units": POWER_UNITS})
    mean = (100 + 10 * np.hypot(yy - ny / 2, xx - nx / 2)).astype(np.float32)
    data["mean_intensity"] = (("y", "x"), mean, {"units": "DN/s", "long_name": "mean intensity"})

    coords = {
        "y": np.arange(ny),
        "x": np.arange(nx),
        "freq": ("freq", freq, {"units": "Hz"}),
    }
    if with_hpc:
        coords["hpc_x"] = (("y", "x"), -400.0 + 0.6 * xx, {"units": "arcsec"})
        coords["hpc_y"] = (("y", "x"), 200.0 + 0.6 * yy, {"units": "arcsec"})
    ds = xr.Dataset(
        {k: xr.Variable(v[0], v[1], v[2]) for k, v in data.items()},
        coords=coords,
    )
    cube_path = path.parent / (path.stem + "_cube.zarr")
    ds.attrs = {
        "config": "fit:\n  models: {m1: powerlaw_tail, m2: powerlaw_tail_lorentzian}\n",
        "specfit_version": "0.1.0",
        "models": json.dumps(MODELS),
        "status_codes": json.dumps(STATUS_CODES),
        "complete": True,  # what specfit.store.open_results checks before opening
        "specfit_kind": "results",  # and that it is a results store
    }
    if with_cube:
        t = np.arange(nt) * cadence
        inten = (
            100 + rng.normal(0, 1, (nt, ny, nx)) + 5 * np.sin(2 * np.pi * t / 300.0)[:, None, None]
        )
        cube = xr.Dataset(
            {"intensity": (("time", "y", "x"), inten.astype(np.float32))},
            coords={"time": ("time", t, {"units": "s"}), "y": np.arange(ny), "x": np.arange(nx)},
        )
        cube.to_zarr(cube_path, mode="w")
        ds.attrs["cube_path"] = str(cube_path)
    ds.to_zarr(path, mode="w")
    return path


@pytest.fixture(scope="session")
def viz_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12 x 16 px results store with hpc coordinates and a kept cube."""
    return make_results_store(tmp_path_factory.mktemp("viz") / "results.zarr")


@pytest.fixture(scope="session")
def viz_store_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store without hpc coordinates and without a cube (optional parts absent)."""
    return make_results_store(
        tmp_path_factory.mktemp("viz_plain") / "results.zarr",
        ny=9,
        nx=7,
        with_hpc=False,
        with_cube=False,
        seed=2,
    )


def make_large_store(path: Path, n: int = 4096, nfreq: int = 64, chunk: int = 256) -> Path:
    """A contract-conforming n x n results store written with zarr directly, without ever
    holding a full array: unwritten chunks read as the fill value (NaN, status 0), and only
    two spatial chunks (a corner one and the central one) hold real maps and spectra.

    On disk it is a few MB; read in full it would be ``nfreq * n * n * 4`` bytes of power
    (4.3 GB for the defaults), which is what the explorer must never do.
    """
    import zarr

    rng = np.random.default_rng(7)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    freq = np.arange(1, nfreq + 1) / (nfreq * 2 * 12.0)

    def arr(name, shape, chunks, dtype, dims, fill, attrs=None):
        a = root.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, dimension_names=dims
        )
        a.attrs.update(attrs or {})
        return a

    arr("y", (n,), (n,), "int32", ("y",), 0)[:] = np.arange(n, dtype=np.int32)
    arr("x", (n,), (n,), "int32", ("x",), 0)[:] = np.arange(n, dtype=np.int32)
    arr("freq", (nfreq,), (nfreq,), "float64", ("freq",), 0.0, {"units": "Hz"})[:] = freq
    truth = {"amplitude": (1e-3, POWER_UNITS), "index": (1.8, "1"), "tail": (0.1, POWER_UNITS)}
    tiles = [(slice(0, chunk), slice(0, chunk))]
    c0 = (n // 2 // chunk) * chunk
    tiles.append((slice(c0, c0 + chunk), slice(c0, c0 + chunk)))
    params = {}
    for p, (value, units) in truth.items():
        a = arr(f"m1_{p}", (n, n), (chunk, chunk), "float32", ("y", "x"), np.nan, {"units": units})
        e = arr(
            f"m1_{p}_err", (n, n), (chunk, chunk), "float32", ("y", "x"), np.nan, {"units": units}
        )
        for sy, sx in tiles:
            values = (value * rng.uniform(0.8, 1.2, (chunk, chunk))).astype(np.float32)
            a[sy, sx] = values
            e[sy, sx] = 0.05 * values
            params.setdefault((sy.start, sx.start), {})[p] = values
    arr("m1_status", (n, n), (chunk, chunk), "int8", ("y", "x"), 0)
    mean = arr("mean_intensity", (n, n), (chunk, chunk), "float32", ("y", "x"), np.nan)
    power = arr(
        "power", (nfreq, n, n), (nfreq, chunk, chunk), "float32", ("freq", "y", "x"), np.nan
    )
    for sy, sx in tiles:
        pr = params[(sy.start, sx.start)]
        clean = ref_powerlaw_tail(freq[:, None, None], pr["amplitude"], pr["index"], pr["tail"])
        power[:, sy, sx] = (clean * rng.chisquare(2, clean.shape) / 2).astype(np.float32)
        mean[sy, sx] = rng.uniform(90, 110, (chunk, chunk)).astype(np.float32)
    root.attrs.update(
        {
            "config": "fit:\n  models: {m1: powerlaw_tail}\n",
            "specfit_version": "0.1.0",
            "models": json.dumps({"m1": MODELS["m1"]}),
            "status_codes": json.dumps(STATUS_CODES),
            "complete": True,
            "specfit_kind": "results",
        }
    )
    zarr.consolidate_metadata(str(path))
    return path
