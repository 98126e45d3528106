"""Shared fixtures: the real data folder (or a clean skip) and a small real results store."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT / ".." / "shared" / "data"

# Worker processes started by tests inherit this: keep numba/BLAS to one thread per worker so
# parallel test runs on a 2-core machine do not oversubscribe it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# specfit.fit caches LRT references in $SPECFIT_CACHE_DIR: the tests' own, not the user's cache.
os.environ.setdefault("SPECFIT_CACHE_DIR", tempfile.mkdtemp(prefix="specfit-tests-cache-"))


def page_text(path: str) -> str:
    """A page of the repository (``README.md``, ``docs/fitting.md``) with its whitespace
    normalised, so that a quoted sentence matches across line breaks."""
    return " ".join((ROOT / path).read_text().split())


def assert_docs_quote(page: str, fragment: str) -> None:
    """docs/<page> says ``fragment`` (whitespace-normalised): a test that re-measures a figure
    the docs quote checks the quote, at the docs' rounding (issue 12 item 5)."""
    text = page_text(f"docs/{page}")
    assert fragment in text, f"docs/{page} should say {fragment!r} (re-measured by this test)"


def docs_script(name: str):
    """Import ``docs/<name>.py`` (the figure scripts docs/ quote), with docs/ on the path for
    their shared helpers (``figure_stamp``)."""
    import importlib.util
    import sys

    docs = ROOT / "docs"
    sys.path.insert(0, str(docs))
    try:
        spec = importlib.util.spec_from_file_location(f"docs_{name}", docs / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(docs))
    return module


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repo, or a skip saying why."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA.resolve()} is absent (only in the dev setup)")
    return SHARED_DATA.resolve()


# The settings the kernel tests were written for. The kernels have no defaults of their own
# (the config is the one source of defaults); these are the tests' choice, not the product's.
KERNEL_PERIODOGRAM = dict(
    segments=1, overlap=0.0, window="hann", detrend="linear", normalisation="density"
)
KERNEL_FIT = dict(
    method="whittle",
    max_iter=200,
    tol=1e-8,
    multistart=1,
    best_model="lrt",
    alpha=0.05,
    weights="sigma",
    nonnested="bic",
    optimizer="specfit",
    intervals=(),
    bin_rho=(),  # the tests' chi^2 spectra have independent bins (no window)
)

TINY = {
    "input": {
        "kind": "synthetic",
        "synthetic": {"shape": [20, 24], "n_frames": 300, "cadence": 12.0, "seed": 3},
    },
    "resample": {"cadence": 12.0},
    "spectra": {"segments": 1, "window": "none", "detrend": "mean"},
    "fit": {"models": {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}},
    "output": {"tile": 8},
    "cluster": {"kind": "synchronous"},
}


def tiny_config(tmp: Path, **sections) -> dict:
    """A small synthetic run config writing under ``tmp`` (sections override TINY's)."""
    import copy

    cfg = copy.deepcopy(TINY)
    cfg["input"]["path"] = str(tmp / "synthetic")
    cfg["output"]["path"] = str(tmp / "results.zarr")
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Path:
    """A real results.zarr from a small synthetic run of the whole pipeline (made once)."""
    from specfit.pipeline import run

    tmp = tmp_path_factory.mktemp("demo_store")
    run(tiny_config(tmp))
    return tmp / "results.zarr"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
