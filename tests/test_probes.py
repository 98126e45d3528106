"""Probe suite (issue 13): bad inputs, interruptions and exposure, each kept from regressing.

Every test here is fast and uses tiny data. Cases already covered elsewhere are listed in
the table at the end of this module's docstring instead of being tested twice:

- corrupt FITS header, frame shape mismatch, duplicate times, missing / bad time keys,
  zero exposure: tests/test_io_readers.py::test_fits_series_errors_name_file_and_fix
- bad YAML keys and values (CLI, one line, no traceback):
  tests/test_cli.py::test_bad_config_is_a_clear_error
- missing input folder (CLI): tests/test_cli.py::test_missing_input_is_a_clear_error
- kill -9 during the tiles, then --resume bit-identical (slow):
  tests/test_resume.py::test_sigkill_mid_fit_then_resume_gives_identical_results
"""

from __future__ import annotations

import psutil
import pytest

pytestmark = pytest.mark.probe


def _listening_sockets() -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of this process and its children."""
    me = psutil.Process()
    out = []
    for proc in [me, *me.children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                out.append((proc.pid, conn.laddr.ip, conn.laddr.port))
    return out


# ----------------------------------------------------------------------------- servers
@pytest.mark.timeout(120)
def test_local_cluster_listens_on_loopback_only():
    """The default local cluster (scheduler, nannies, workers, dashboard) binds 127.0.0.1."""
    from specfit.cluster import connect, dashboard_link
    from specfit.config import ClusterConfig

    before = set(_listening_sockets())
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        link = dashboard_link(client)
        sockets = [s for s in _listening_sockets() if s not in before]
    assert link is not None and link.startswith("http://127.0.0.1:")
    dash_port = int(link.split(":")[2].split("/")[0])
    assert dash_port in {port for _, _, port in sockets}, "the dashboard is not listening"
    # scheduler + dashboard in this process, nanny + worker in the child
    assert len(sockets) >= 3
    exposed = [s for s in sockets if s[1] not in ("127.0.0.1", "::1")]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_dashboard_address_is_a_config_key_defaulting_to_loopback():
    from specfit.config import load_config

    assert load_config({}).cluster.dashboard_address.startswith("127.0.0.1:")
    cfg = load_config({}, ["cluster.dashboard_address=0.0.0.0:8790"])
    assert cfg.cluster.dashboard_address == "0.0.0.0:8790"


# ----------------------------------------------------------------------------- no code from a store
# A user model module that leaves a marker file beside itself whenever it is imported.
MARKER_MODEL = '''
from pathlib import Path

from specfit.kernels.models import define_model, register_model

(Path(__file__).parent / "MARKER_{tag}").write_text("imported")


def probe_tail_{tag}(f, amplitude=1.0, index=2.0, tail=0.1):
    """P(f) = A f^-n + C"""
    return amplitude * f ** (-index) + tail


register_model(
    define_model(
        probe_tail_{tag},
        units={{"amplitude": "power", "index": "1", "tail": "power"}},
        bounds={{"amplitude": (0, float("inf")), "index": (0.0, 6.0), "tail": (0, float("inf"))}},
    )
)
'''


def _cli(*args: str, timeout: float = 120):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "specfit.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def store_naming_code(tmp_path_factory):
    """A finished store whose config names a marker-writing user model shipped inside it.

    A small run fits the shipped power law; its model record is then renamed to the user
    model (same parameters) and the config attr names the file inside the store, as a store
    received from someone else would (only the fit of the user model is skipped, to keep
    this fast). Nothing in this process has imported the file.
    """
    import json

    import yaml
    import zarr

    from conftest import tiny_config
    from specfit.pipeline import run
    from specfit.store import _consolidate

    tmp = tmp_path_factory.mktemp("code_store")
    tag = tmp.name.replace("-", "_")
    name = f"probe_tail_{tag}"
    cfg = tiny_config(
        tmp,
        input={"synthetic": {"shape": [8, 8], "n_frames": 128, "cadence": 12.0, "seed": 1}},
        fit={"models": {"m1": "powerlaw_tail"}},
    )
    run(cfg)
    store = tmp / "results.zarr"
    shipped = store / "models.py"
    shipped.write_text(MARKER_MODEL.format(tag=tag))
    root = zarr.open_group(str(store), mode="r+")
    conf = yaml.safe_load(root.attrs["config"])
    conf["fit"]["models"] = {"m1": name}
    conf["fit"]["user_models"] = [str(shipped)]
    root.attrs["config"] = yaml.safe_dump(conf)
    models = json.loads(root.attrs["models"])
    models["m1"]["name"] = name
    root.attrs["models"] = json.dumps(models)
    _consolidate(store)
    return store, shipped, name, tag


def test_opening_a_store_never_imports_its_code(store_naming_code, tmp_path):
    """info, plot, open_results and the explorer's pixel spectrum leave the store's code alone;
    the curve of the model the session lacks is reported unavailable."""
    from specfit.store import open_results
    from specfit.summary import summarise
    from specfit.viz.data import pixel_spectrum

    store, shipped, name, tag = store_naming_code
    marker = shipped.parent / f"MARKER_{tag}"
    ds = open_results(store)
    summarise(ds, path=str(store))
    spec = pixel_spectrum(ds, 3, 4)
    assert not marker.exists()
    u = spec.models["m1"]
    assert u.model is None and "not loaded" in u.error and "--models" in u.error
    assert str(shipped) in u.error  # named, so the user can decide to load it
    r = _cli("info", str(store))
    assert r.returncode == 0, r.stderr
    assert not marker.exists(), "specfit info imported the store's code"


@pytest.mark.slow  # ~25 s: the PNG and HTML export, not the check, takes the time
def test_plot_never_imports_the_stores_code(store_naming_code, tmp_path):
    store, shipped, name, tag = store_naming_code
    r = _cli("plot", str(store), "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert not (shipped.parent / f"MARKER_{tag}").exists(), "specfit plot imported the code"


def test_explicit_models_option_draws_the_curve(store_naming_code):
    from specfit.cli import _parser
    from specfit.store import open_results
    from specfit.viz import load_models
    from specfit.viz.data import pixel_spectrum

    store, shipped, name, tag = store_naming_code
    args = _parser().parse_args(["explore", str(store), "--models", str(shipped)])
    assert args.models == [str(shipped)]
    assert load_models(args.models) == [name]  # what serve(models=...) does first
    spec = pixel_spectrum(open_results(store), 3, 4)
    curve = spec.models["m1"]
    assert curve.error is None and curve.model is not None and curve.model.shape == spec.freq.shape
    assert (shipped.parent / f"MARKER_{tag}").exists()  # loaded because the user asked


# ----------------------------------------------------------------------------- readers
def _frames(folder, nt: int = 10, ny: int = 16, nx: int = 16, **header) -> list:
    """nt small float32 FITS frames 12 s apart; returns their paths (in time order)."""
    import numpy as np
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(nt):
        h = fits.Header()
        h["T_OBS"] = f"2020-01-01T00:{i * 12 // 60:02d}:{i * 12 % 60:02d}"
        h["EXPTIME"] = 2.0
        for k, v in header.items():
            h[k] = v
        p = folder / f"f{i:03d}.fits"
        fits.PrimaryHDU(rng.normal(100, 5, (ny, nx)).astype(np.float32), header=h).writeto(p)
        paths.append(p)
    return paths


def _truncate(path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_truncated_fits_frame_is_refused_at_plan_time_naming_the_file(tmp_path):
    from specfit.config import InputConfig
    from specfit.io import InputError, open_input

    paths = _frames(tmp_path / "f")
    _truncate(paths[4], 2880 + 512)  # header intact, half of the 16 x 16 float32 data
    with pytest.raises(InputError, match=r"f004\.fits: the file is truncated.*download"):
        open_input(InputConfig(path=str(tmp_path / "f")))


def test_truncated_compressed_frame_and_cube_are_refused(tmp_path):
    import numpy as np
    from astropy.io import fits

    from specfit.config import InputConfig
    from specfit.io import InputError, open_input

    d = tmp_path / "rice"
    d.mkdir()
    for i in range(3):
        h = fits.Header({"T_OBS": f"2020-01-01T00:00:{10 * i:02d}", "EXPTIME": 1.0})
        img = np.random.default_rng(i).normal(100, 5, (64, 64)).astype(np.float32)
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img, header=h)]).writeto(
            d / f"r{i}.fits"
        )
    _truncate(d / "r1.fits", (d / "r1.fits").stat().st_size - 2880 - 100)
    with pytest.raises(InputError, match=r"r1\.fits: the file is truncated"):
        open_input(InputConfig(path=str(d)))

    cube = tmp_path / "cube.fits"
    h = fits.Header({"DATE-OBS": "2020-01-01T00:00:00", "EXPTIME": 1.0, "CTYPE3": "Time"})
    h["CDELT3"] = 12.0
    fits.PrimaryHDU(np.ones((20, 8, 8), np.float32), header=h).writeto(cube)
    _truncate(cube, 2880 + 4 * 8 * 8 * 5)  # five frames of twenty
    with pytest.raises(InputError, match=r"cube\.fits: the file is truncated"):
        open_input(InputConfig(path=str(cube), kind="fits_cube"))


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_read_error_at_compute_time_names_the_file(tmp_path):
    """A frame damaged after planning (or unreadable in a way no header shows) fails when the
    data are read, through the Python API too, with the file named and no bare traceback."""
    from specfit.config import InputConfig
    from specfit.io import InputError, open_input

    paths = _frames(tmp_path / "f")
    arr = open_input(InputConfig(path=str(tmp_path / "f")))
    _truncate(paths[7], 2880 + 100)
    with pytest.raises(InputError, match=r"f007\.fits: cannot read the data.*replace it"):
        arr.isel(time=slice(6, 8)).compute(scheduler="synchronous")
    paths[7].write_bytes(b"SIMPLE  = garbage" * 400)
    with pytest.raises(InputError, match=r"f007\.fits: cannot read the data"):
        arr.isel(time=7).compute(scheduler="synchronous")


# ----------------------------------------------------------------------------- Ctrl-C
@pytest.mark.slow  # ~25 s on a busy 2-core machine: two runs and a local cluster
@pytest.mark.timeout(180)
def test_ctrl_c_during_run_prints_one_line_and_resume_finishes(tmp_path):
    """SIGINT while the tiles run (local cluster): exit 130, no traceback, the last line says
    how to resume, and that command finishes the store."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from conftest import tiny_config
    from specfit.store import block_status, is_complete

    cfg = tiny_config(
        tmp_path,
        input={"synthetic": {"shape": [32, 32], "n_frames": 300, "cadence": 12.0, "seed": 3}},
        cluster={"kind": "local", "n_workers": 1, "threads_per_worker": 1, "dashboard": False},
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "specfit.cli", "run", str(config), "--set", "fit.tol=1e-9"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group, as a terminal job has
        )
        try:
            deadline = time.monotonic() + 120
            while "fitting" not in err_path.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = err_path.read_text()
    assert code == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    last = text.strip().splitlines()[-1]
    resume = f"specfit run {config} --set fit.tol=1e-9 --resume"
    assert last.startswith("specfit: interrupted") and f"`{resume}`" in last, last
    results = tmp_path / "results.zarr"
    done, total = block_status(results)
    assert done < total and not is_complete(results)
    # The printed command finishes the run (on the synchronous scheduler here, for speed).
    r = _cli(*resume.split()[1:], "--cluster", "synchronous")
    assert r.returncode == 0, r.stderr
    assert is_complete(results)
