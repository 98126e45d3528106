"""A pixel's results depend only on its spectrum, the config and the version.

Not on the block it is fitted in (tiles, chunks, LRT reference per dof value), not on the
process or call order (the LRT reference is seeded from its key and shared on disk), not on
the cluster, worker or thread counts (no BLAS reductions in the chain). The MPI and
kill-and-resume runs are compared with the same reference in test_mpi_pipeline.py and
test_resume.py; the stage chain on uneven chunks in test_tile_chain.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import KERNEL_FIT
from conftest_cluster import (
    assert_same_results,
    cli,
    pipeline_config,
    reference_run,
    write_config,
)
from specfit.kernels import fitting
from specfit.kernels.fitting import fit_block
from specfit.models import get_model

MODELS = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}


def _spectra(npix: int, nf: int = 120, seed: int = 1):
    rng = np.random.default_rng(seed)
    f = np.linspace(1 / 3000, 1 / 24, nf)
    amp = 10 ** rng.uniform(-6, -4, npix)
    index = rng.uniform(1, 3, npix)
    tail = 10 ** rng.uniform(0, 1, npix)
    m = amp[:, None] * f[None] ** -index[:, None] + tail[:, None]
    bump = rng.uniform(0, 3, npix)[:, None] * tail[:, None]
    m = m + bump * np.exp(-0.5 * ((np.log(f)[None] - np.log(3e-3)) / 0.2) ** 2)
    dof = rng.choice([2.0, 4.0, 6.0, 8.0, 10.0, 18.0], npix)  # > 4 distinct values
    return f, m * rng.gamma(dof[:, None] / 2, 2 / dof[:, None]), dof


def _same(a: dict, b: dict, rows=slice(None)) -> None:
    for k in a:
        np.testing.assert_array_equal(a[k][rows], b[k], err_msg=k)


def test_fit_block_pixel_results_do_not_depend_on_the_block(monkeypatch):
    monkeypatch.setattr(fitting, "_LRT_NSIM", 100)  # a cheap reference; the rule is the same
    f, power, dof = _spectra(30)
    opts = {**KERNEL_FIT, "multistart": 3}
    whole = fit_block(f, power, MODELS, dof=dof, **opts)
    assert np.isfinite(whole["lrt_pvalue"]).all()
    # uneven blocks, and single pixels: every variable bit for bit (once, a BLAS matmul in
    # the bump seeds and a block-median dof for the LRT reference made them differ)
    for size in (7, 1):
        for i in range(0, 30 if size > 1 else 8, size):
            part = fit_block(f, power[i : i + size], MODELS, dof=dof[i : i + size], **opts)
            _same(whole, part, slice(i, i + size))


def test_lrt_reference_is_seeded_by_its_key_and_shared_on_disk(tmp_path, monkeypatch):
    f = np.linspace(1 / 3000, 1 / 24, 60)
    small, big = get_model("powerlaw_tail"), get_model("powerlaw_tail_lorentzian")
    args = dict(method="whittle", max_iter=200, tol=1e-8, multistart=1, nsim=60)

    monkeypatch.setattr(fitting, "_LRT_CACHE", {})
    r4 = fitting.lrt_reference(f, 4.0, small, big, cache_dir=tmp_path, **args)
    r2 = fitting.lrt_reference(f, 2.0, small, big, cache_dir=tmp_path, **args)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(n.startswith("lrt-") and n.endswith(".npy") for n in files)
    assert not np.array_equal(r4.null, r2.null)

    # A fresh process (empty memory cache) reads the file: no simulation.
    def no_simulation(*a, **k):
        raise AssertionError("simulated although the reference is on disk")

    monkeypatch.setattr(fitting, "_LRT_CACHE", {})
    with monkeypatch.context() as m:
        m.setattr(fitting, "_lrt_simulate", no_simulation)
        np.testing.assert_array_equal(
            fitting.lrt_reference(f, 2.0, small, big, cache_dir=tmp_path, **args).null, r2.null
        )
    # Without the disk cache and in the other order: the same numbers (seeded by the key,
    # not by global state or call order).
    monkeypatch.setattr(fitting, "_LRT_CACHE", {})
    np.testing.assert_array_equal(fitting.lrt_reference(f, 2.0, small, big, **args).null, r2.null)
    np.testing.assert_array_equal(fitting.lrt_reference(f, 4.0, small, big, **args).null, r4.null)
    # An unreadable file is simulated again and replaced, whole.
    monkeypatch.setattr(fitting, "_LRT_CACHE", {})
    (tmp_path / files[0]).write_bytes(b"torn")
    fitting.lrt_reference(f, 2.0, small, big, cache_dir=tmp_path, **args)
    fitting.lrt_reference(f, 4.0, small, big, cache_dir=tmp_path, **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    for name in files:
        assert np.load(tmp_path / name).size > 50

    # Another fitting source (a development edit) keys another cache file, but the simulated
    # spectra are the same draw: with this solver, the same numbers.
    monkeypatch.setattr(fitting, "_LRT_CACHE", {})
    monkeypatch.setattr(fitting, "_SOURCE_HASH", ["edited"])
    again = fitting.lrt_reference(f, 2.0, small, big, cache_dir=tmp_path, **args)
    assert len(list(tmp_path.iterdir())) == 3
    np.testing.assert_array_equal(again.null, r2.null)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_local_cluster_other_tiles_and_threads_equal_the_reference(tmp_path, tmp_path_factory):
    data_dir, reference = reference_run(tmp_path_factory)  # synchronous, 8 px tiles
    # The local cluster, 1 worker with 2 threads, 16 px tiles (uneven at the edge), and BLAS
    # allowed 2 threads as in a user's shell: every variable equals the reference.
    results = tmp_path / "local16.zarr"
    cfg = pipeline_config(
        data_dir,
        results,
        output={"tile": 16},
        cluster={"n_workers": 1, "threads_per_worker": 2},
    )
    config = write_config(tmp_path / "local16.yaml", cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    env["SPECFIT_CACHE_DIR"] = str(tmp_path / "cache")
    res = cli(["run", str(config)], timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    assert_same_results(results, reference, ignore=("tiles_done", "tiles_run"))
    # The run shared its LRT references through its work folder.
    assert list((tmp_path / "local16.zarr.specfit-work" / "lrt").glob("lrt-*.npy"))


def test_fit_tiles_an_in_memory_array_for_every_core(monkeypatch):
    import dask.system
    import xarray as xr

    from specfit import stages

    f, power, _ = _spectra(20 * 24, nf=60)
    arr = xr.DataArray(
        power.T.reshape(60, 20, 24), dims=("freq", "y", "x"), coords={"freq": f}
    )  # numpy-backed: one chunk
    models = {"m1": "powerlaw_tail"}
    monkeypatch.setattr(dask.system, "CPU_COUNT", 2)
    tiled = stages.fit(arr, models=models)
    assert tiled["m1_index"].data.numblocks == (2, 2)  # 16 px tiles: ~4 tasks per core
    # a chunking the caller chose is kept
    assert stages.fit(arr.chunk({"y": 10}), models=models)["m1_index"].data.numblocks == (2, 1)
    with monkeypatch.context() as m:
        m.setattr(stages, "_spread_over_cores", lambda pw: pw)
        whole = stages.fit(arr, models=models)
        assert whole["m1_index"].data.numblocks == (1, 1)
        whole = whole.compute()
    tiled = tiled.compute()
    for name in whole.data_vars:
        np.testing.assert_array_equal(tiled[name].values, whole[name].values, err_msg=name)
