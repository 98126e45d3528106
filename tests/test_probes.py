"""Probe suite (issue 13): bad inputs, interruptions and exposure, each kept from regressing.

Run with ``pytest -m probe``. Every test is small; the three marked slow start local clusters
or export PNGs. Cases that other modules already test are not repeated; where each lives:

==========================================  ================================================
case                                        test
==========================================  ================================================
servers on loopback only                    test_local_cluster_listens_on_loopback_only,
                                            test_dashboard_address_is_a_config_key_...
no code from a store (info, open_results,   test_opening_a_store_never_imports_its_code,
explorer spectrum; plot; --models)          test_plot_never_imports_the_stores_code (slow),
                                            test_explicit_models_option_draws_the_curve
truncated FITS (frame, Rice, cube)          test_truncated_fits_frame_is_refused_at_plan_...,
                                            test_truncated_compressed_frame_and_cube_are_...
read error at compute time (API)            test_read_error_at_compute_time_names_the_file
deleted frame at compute time               test_io_readers::test_fits_series_sorted_...
Ctrl-C or SIGTERM then --resume            test_ctrl_c_during_run_prints_one_line_... (slow)
one line, exit 2, no traceback (CLI)        test_cli_prints_one_line_per_problem_and_no_...
``--set a..b=1``                            test_set_with_an_empty_key_part_is_refused
bad --set syntax                            test_config::test_bad_override_syntax
bad YAML / unknown keys / bad values        test_config::test_missing_and_malformed_files,
                                            test_cli::test_bad_config_is_a_clear_error
corrupt header, frame shape mismatch,       test_io_readers::test_fits_series_errors_name_
missing time key, missing exposure,         file_and_fix
duplicate times, empty / missing folder
bad time value, zero exposure               test_bad_time_value_and_zero_exposure_name_...
exposure far from the others                test_an_exposure_far_from_the_others_is_named
missing input folder (CLI)                  test_cli::test_missing_input_is_a_clear_error
too few frames                              test_too_few_frames_is_a_config_error,
                                            test_stages::test_the_stage_functions_bad_...
long dropout at the ends of the series      test_a_long_dropout_at_the_ends_is_left_out_...
float64 spectra out of float32's range      test_fit_refuses_float64_spectra_that_...,
                                            test_fit_leaves_out_of_range_pixels_beyond_...
truncated PNG / JPEG / TIFF frame           test_io_readers::test_a_truncated_image_...
frame far off in time, tiny/inf cadence,    test_a_frame_far_off_in_time_or_a_tiny_cadence_...
NaN time in a Zarr cube
all-NaN frame                               test_all_nan_frame_is_named_and_treated_as_...
long gap without drift warning              test_long_gap_alone_does_not_claim_a_drifting...
user model: scalar / wrong shape            test_user_model_of_the_wrong_shape_is_one_...
killed run's store seen by xarray           test_unfinished_store_says_so_to_xarray_and_...
NaN / constant / huge / inf pixels          test_nan_constant_and_huge_pixels_give_nan_...,
                                            test_pipeline::test_bad_pixels_become_nan_...,
                                            test_fitting::test_bad_pixels_get_status_...
kill -9 during tiles, --resume identical    test_resume::test_sigkill_mid_fit_then_resume_...
killed worker                               test_a_killed_worker_costs_nothing (slow)
==========================================  ================================================
"""

from __future__ import annotations

import contextlib

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
MARKER_MODEL = """
from pathlib import Path

from specfit.models import POWER_LAW, TAIL, register_model

(Path(__file__).parent / "MARKER_{tag}").write_text("imported")

register_model((POWER_LAW + TAIL).named("probe_tail_{tag}"))
"""


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
    from specfit.errors import InputError
    from specfit.io import open_input

    paths = _frames(tmp_path / "f")
    _truncate(paths[4], 2880 + 512)  # header intact, half of the 16 x 16 float32 data
    with pytest.raises(InputError, match=r"f004\.fits: the file is truncated.*download"):
        open_input(InputConfig(path=str(tmp_path / "f")))


def test_truncated_compressed_frame_and_cube_are_refused(tmp_path):
    import numpy as np
    from astropy.io import fits

    from specfit.config import InputConfig
    from specfit.errors import InputError
    from specfit.io import open_input

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
    from specfit.errors import InputError
    from specfit.io import open_input

    paths = _frames(tmp_path / "f")
    arr = open_input(InputConfig(path=str(tmp_path / "f")))
    _truncate(paths[7], 2880 + 100)
    with pytest.raises(InputError, match=r"f007\.fits: cannot read the data.*replace it"):
        arr.isel(time=slice(6, 8)).compute(scheduler="synchronous")
    paths[7].write_bytes(b"SIMPLE  = garbage" * 400)
    with pytest.raises(InputError, match=r"f007\.fits: cannot read the data"):
        arr.isel(time=7).compute(scheduler="synchronous")


# ----------------------------------------------------------------------------- Ctrl-C
@contextlib.contextmanager
def _terminal_run(args: list[str], err_path, marker: str, timeout: float = 120):
    """``specfit ARGS`` as a terminal job (its own process group, Ctrl-C not ignored: a test
    run under nohup or as a background job would otherwise hand SIGINT's SIG_IGN down to
    the run), its stderr in ``err_path``; yields the process once ``marker`` is printed, and
    kills the group if it is still running afterwards."""
    import os
    import signal
    import subprocess
    import sys
    import time

    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "specfit.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + timeout
            while marker not in err_path.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.01)
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow  # ~25 s on a busy 2-core machine: two runs and a local cluster
@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_during_run_prints_one_line_and_resume_finishes(tmp_path, how):
    """SIGINT to the process group while the tiles run (local cluster; what Ctrl-C does):
    exit 130; SIGTERM to the run alone (what timeout, kill and SLURM at the wall-time limit
    send): exit 143. No traceback, the last line says how to resume, and that command
    finishes the store."""
    import os
    import signal

    import yaml

    from conftest import tiny_config
    from specfit.store import is_complete, tile_status

    cfg = tiny_config(
        tmp_path,
        input={"synthetic": {"shape": [32, 32], "n_frames": 300, "cadence": 12.0, "seed": 3}},
        cluster={"kind": "local", "n_workers": 1, "threads_per_worker": 1, "dashboard": False},
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    err_path = tmp_path / "stderr.txt"
    args = ["run", str(config), "--set", "fit.tol=1e-9"]
    with _terminal_run(args, err_path, "fitting") as proc:
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = err_path.read_text()
    assert code == {"ctrl-c": 130, "sigterm": 143}[how], text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    last = text.strip().splitlines()[-1]
    resume = f"specfit run {config} --set fit.tol=1e-9 --resume"
    said = {"ctrl-c": "specfit: interrupted", "sigterm": "specfit: stopped by SIGTERM"}[how]
    assert last.startswith(said) and f"`{resume}`" in last, last
    results = tmp_path / "results.zarr"
    done, total = tile_status(results)
    assert done < total and not is_complete(results)
    # The printed command finishes the run (on the synchronous scheduler here, for speed).
    r = _cli(*resume.split()[1:], "--cluster", "synchronous")
    assert r.returncode == 0, r.stderr
    assert is_complete(results)


@pytest.mark.slow  # ~10 s: three local clusters started and stopped
@pytest.mark.timeout(180)
def test_ctrl_c_while_the_local_cluster_starts_prints_one_line(tmp_path):
    """Ctrl-C (SIGINT to the whole process group) while the local cluster's workers are still
    starting: before the fix, each worker still importing its libraries died with a
    KeyboardInterrupt traceback (~130 lines, found by a first-time-user review). Now the
    workers never see it and the client stops with its one line, exit 130; the client's
    Ctrl-C is deferred until the workers are up, not lost."""
    import os
    import signal
    import time

    import yaml

    from conftest import tiny_config

    for delay in (0.0, 0.5, 1.0):
        tmp = tmp_path / f"d{delay}"
        tmp.mkdir()
        cfg = tiny_config(
            tmp,
            cluster={"kind": "local", "n_workers": 2, "threads_per_worker": 1, "dashboard": False},
        )
        (tmp / "run.yaml").write_text(yaml.safe_dump(cfg))
        err_path = tmp / "stderr.txt"
        # the plan is printed just before the cluster starts
        with _terminal_run(["run", str(tmp / "run.yaml")], err_path, "frequencies", 60) as proc:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=60)
        text = err_path.read_text()
        assert code == 130, text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        assert text.strip().splitlines()[-1].startswith("specfit: interrupted"), text


def test_main_called_from_python_gives_back_the_callers_signal_handlers(tmp_path):
    """specfit.cli.main installs its Ctrl-C/SIGTERM handlers for a run, and puts the
    caller's back when it returns (a workflow engine's SIGTERM must not become a
    KeyboardInterrupt in its own code afterwards)."""
    import signal

    from specfit.cli import main

    def mine(signum, frame):
        pass

    before = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(["run", str(tmp_path / "missing.yaml")]) == 2
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_a_bar_left_open_by_an_interrupted_loop_ends_before_the_resume_line(capsys):
    """Ctrl-C in a loop's body leaves progress()'s generator suspended with its bar open at
    0/n; end_progress_lines (the CLI's, before its line) ends its line, and the bar stays
    silent when collected later."""
    import gc
    import sys

    from specfit import cluster

    gen = cluster.progress(list(range(16)), desc="tiles", unit="tile")
    next(gen)  # the loop's body is running: the bar shows 0/16, its line not ended
    gen2 = cluster.progress(list(range(4)), desc="ingest", unit="slab")
    next(gen2)
    cluster._OPEN_BARS[-1].disable = True  # a close cut short (tqdm disables first)
    cluster.end_progress_lines()
    print("specfit: interrupted", file=sys.stderr)
    del gen, gen2
    gc.collect()
    err = capsys.readouterr().err
    assert err.endswith("\nspecfit: interrupted\n"), err
    assert "tiles" in err and not cluster._OPEN_BARS
    # an ordinary loop leaves nothing open
    assert list(cluster.progress(range(3))) == [0, 1, 2] and not cluster._OPEN_BARS


def test_ctrl_c_while_a_bar_is_made_still_ends_its_line(monkeypatch, capsys):
    """SIGINT just after tqdm printed a new bar, inside its constructor: tqdm's close of such
    a half-made bar writes nothing, so its line stayed open and the resume line joined it
    (the cause of test_ctrl_c_during_run_...'s failures, 1 in 5-10 runs under load on
    2026-12-03). progress() makes the bar silent and draws it when it is whole."""
    import os
    import signal
    import sys

    import tqdm.auto

    from specfit import cluster

    class Interrupted(tqdm.auto.tqdm):
        def refresh(self, *args, **kwargs):
            out = super().refresh(*args, **kwargs)
            if not getattr(self, "_sent", False):  # Ctrl-C right after the first draw
                self._sent = True
                os.kill(os.getpid(), signal.SIGINT)
            return out

    monkeypatch.setattr(tqdm.auto, "tqdm", Interrupted)
    # Python's own Ctrl-C handler, whatever this process inherited: pytest started as a
    # background job of a non-interactive shell ignores SIGINT (SIG_IGN), and then no
    # KeyboardInterrupt would come at all (a CI run failed so, 2026-12-04).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        gen = cluster.progress(list(range(16)), desc="tiles", unit="tile")
        with pytest.raises(KeyboardInterrupt):
            next(gen)
    finally:
        signal.signal(signal.SIGINT, previous)
    cluster.end_progress_lines()
    print("specfit: interrupted", file=sys.stderr)
    del gen
    err = capsys.readouterr().err
    assert err.count("tiles") >= 1 and err.endswith("\nspecfit: interrupted\n"), err


# ----------------------------------------------------------------------------- small cases
def test_set_with_an_empty_key_part_is_refused():
    from specfit.config import load_config
    from specfit.errors import ConfigError

    for bad in ("spectra..segments=2", ".spectra.segments=2", "spectra.segments.=2"):
        with pytest.raises(ConfigError, match="empty part"):
            load_config(None, [bad])


def test_bad_time_value_and_zero_exposure_name_the_file(tmp_path):
    import numpy as np
    from astropy.time import Time

    from specfit.config import InputConfig
    from specfit.errors import InputError
    from specfit.io import open_input

    paths = _frames(tmp_path / "t", nt=4)
    from astropy.io import fits

    fits.setval(paths[2], "T_OBS", value="yesterday noon")
    with pytest.raises(InputError, match=r"f002\.fits: header key T_OBS.*not an ISO 8601") as e:
        open_input(InputConfig(path=str(tmp_path / "t")))
    assert "\n" not in str(e.value)  # one line, not astropy's list of every format it tried
    # seconds past the end of the minute: astropy only warned ("time is after end of day")
    # and carried them into the next minute, moving the frame in time (input reviewer)
    for name, bad in (("s", "2020-01-01T00:00:99.0"), ("l", "2020-01-01T00:00:60.5")):
        paths = _frames(tmp_path / name, nt=4)
        fits.setval(paths[1], "T_OBS", value=bad)
        with pytest.raises(InputError, match=r"f001\.fits: header key T_OBS.*past the end of"):
            open_input(InputConfig(path=str(tmp_path / name)))
    # TIMESYS: times in TAI (34 s ahead of UTC in 2012-2015, 37 s in 2020) were read as UTC,
    # so a folder mixing the two interleaved its frames (input reviewer); now converted
    paths = _frames(tmp_path / "tai", nt=4)
    for p in paths[1::2]:
        with fits.open(p, mode="update") as h:
            utc = h[0].header["T_OBS"]
            h[0].header["T_OBS"] = (Time(utc, scale="utc").tai).isot
            h[0].header["TIMESYS"] = "TAI"
    arr = open_input(InputConfig(path=str(tmp_path / "tai")))
    assert list(np.round(np.diff(arr["time"].values), 6)) == [12.0, 12.0, 12.0]
    fits.setval(paths[0], "TIMESYS", value="GPS")
    with pytest.raises(InputError, match=r"f000\.fits: header key TIMESYS = 'GPS' is not a"):
        open_input(InputConfig(path=str(tmp_path / "tai")))
    paths = _frames(tmp_path / "leap", nt=4)  # a real leap second is a time
    for i, p in enumerate(paths):
        fits.setval(p, "T_OBS", value=f"2016-12-31T23:59:{48 + 6 * i:02d}.5")
    fits.setval(paths[2], "T_OBS", value="2016-12-31T23:59:60.5")
    fits.setval(paths[3], "T_OBS", value="2017-01-01T00:00:06.5")
    arr = open_input(InputConfig(path=str(tmp_path / "leap")))
    assert list(np.round(np.diff(arr["time"].values), 6)) == [6.0, 6.0, 7.0]  # the leap counts
    paths = _frames(tmp_path / "e", nt=4)
    fits.setval(paths[1], "EXPTIME", value=0.0)
    with pytest.raises(InputError, match=r"f001\.fits: header key EXPTIME.*not positive"):
        open_input(InputConfig(path=str(tmp_path / "e")))


def test_an_exposure_far_from_the_others_is_named(tmp_path):
    """A positive but wrong EXPTIME (1e-30, or 290 s among 2 s) scales its frame by that
    factor in every pixel's series: a warning names it; 20x (within automatic exposure
    control's range) and an unnormalised series say nothing."""
    import warnings

    from astropy.io import fits

    from specfit.config import InputConfig
    from specfit.io import open_input

    paths = _frames(tmp_path / "e", nt=6)
    fits.setval(paths[2], "EXPTIME", value=1e-30)
    fits.setval(paths[4], "EXPTIME", value=200.0)
    with pytest.warns(UserWarning, match=r"EXPTIME of f002.fits \(1e-30 s\), f004.fits \(200 s\)"):
        open_input(InputConfig(path=str(tmp_path / "e")))
    fits.setval(paths[2], "EXPTIME", value=40.0)
    fits.setval(paths[4], "EXPTIME", value=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_input(InputConfig(path=str(tmp_path / "e")))
        fits.setval(paths[2], "EXPTIME", value=1e-30)
        open_input(InputConfig(path=str(tmp_path / "e"), normalise_exposure=False))


def _fits_run_config(tmp_path, folder, **sections) -> dict:
    cfg = {
        "input": {"path": str(folder), "kind": "fits_series"},
        "resample": {"cadence": 12.0},
        "spectra": {"window": "none", "detrend": "mean"},
        "fit": {"models": {"m1": "powerlaw_tail"}},
        "output": {"path": str(tmp_path / "results.zarr"), "tile": 8},
        "cluster": {"kind": "synchronous"},
    }
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def test_too_few_frames_is_a_config_error(tmp_path):
    from specfit.errors import ConfigError
    from specfit.pipeline import run

    _frames(tmp_path / "f", nt=6)
    with pytest.raises(ConfigError, match="only 6 frames found; at least 8"):
        run(_fits_run_config(tmp_path, tmp_path / "f"))
    cfg = _fits_run_config(tmp_path, tmp_path / "f")
    with pytest.raises(ConfigError, match=r"only 4 frames found \(input.max_frames=4 keeps"):
        run({**cfg, "input": {**cfg["input"], "max_frames": 4}})


def test_a_cadence_or_box_beyond_the_data_is_a_config_error(tmp_path):
    """Not an IndexError from the planner, nor a hint about segments: the key and the fix."""
    from specfit.errors import ConfigError
    from specfit.pipeline import run

    _frames(tmp_path / "f", nt=12)
    cfg = _fits_run_config(tmp_path, tmp_path / "f")
    for cadence in (1000.0, 500.0):
        with pytest.raises(ConfigError, match=rf"resample.cadence={cadence:g} s gives \d sample"):
            run({**cfg, "resample": {"cadence": cadence}})
    with pytest.raises(
        ConfigError, match=r"spectra.box=17 is larger than the image \(16 x 16 px\).* at most 15 px"
    ):
        run({**cfg, "spectra": {**cfg["spectra"], "box": 17}})
    # a Welch segment under 3 samples: the seconds, the cadence and the shortest that works
    with pytest.raises(ConfigError, match=r"spectra: segment_length of 12 s is 1 samples"):
        run({**cfg, "spectra": {**cfg["spectra"], "segment_length": 12.0}})


def test_a_frame_far_off_in_time_or_a_tiny_cadence_is_refused_before_any_grid(tmp_path):
    """One frame dated 1970 among frames 12 s apart would make a grid of 1e8 samples (a
    MemoryError from deep inside); a cadence of 1e-6 s one of 1e8; an infinite cadence a
    ValueError. Each is one line before any grid is made, naming the frames or the key."""
    import numpy as np
    import xarray as xr
    from astropy.io import fits

    from specfit.errors import ConfigError, InputError
    from specfit.init import init_config
    from specfit.pipeline import run

    paths = _frames(tmp_path / "f", nt=12)
    cfg = _fits_run_config(tmp_path, tmp_path / "f")
    with pytest.raises(ConfigError, match=r"resample.cadence=1e-06 s gives 1.\d+e\+0[78] samples"):
        run({**cfg, "resample": {"cadence": 1e-6}})
    with pytest.raises(ConfigError, match="resample.cadence: Input should be a finite number"):
        run({**cfg, "resample": {"cadence": float("inf")}})
    fits.setval(paths[0], "T_OBS", value="1970-01-01T00:00:00")
    far = r"frame 0 \(f000.fits\) and frame 1 \(f001.fits\) are 1.57784e\+09 s apart"
    for cadence in (12.0, None):
        with pytest.raises(InputError, match=far):
            run({**cfg, "resample": {"cadence": cadence}})
    with pytest.raises(InputError, match=far):
        init_config(str(tmp_path / "f"), str(tmp_path / "c.yaml"))
    # no single spacing dominates, but gaps are 96 % of the span (four 4-minute stretches
    # over 6 h): the gaps are named, not resample.cadence (set or not)
    from specfit.stages import check_grid_size

    t = np.concatenate([np.arange(20) * 12.0 + k * 7200 for k in range(4)])
    names = [f"g{i:03d}.fits" for i in range(t.size)]
    for cadence in (None, 12.0):
        with pytest.raises(InputError, match=r"gaps make up 96 % .* 6972 s after frame 19 \(g019"):
            check_grid_size(t, cadence, names)
    assert not (tmp_path / "results.zarr").exists()
    # a Zarr cube whose time coordinate has a NaN: named by its own index, not the sorted one
    t = np.arange(12) * 12.0
    t[4] = np.nan
    xr.Dataset(
        {"intensity": (("time", "y", "x"), np.ones((12, 8, 8), "f4"))},
        coords={"time": ("time", t, {"start_time": "2024-01-01T00:00:00"})},
    ).to_zarr(tmp_path / "nan.zarr", consolidated=False)
    with pytest.raises(InputError, match=r"nan.zarr: the time coordinate .* at frame\(s\) \[4\]"):
        run({**cfg, "input": {"kind": "zarr", "path": str(tmp_path / "nan.zarr")}})


def test_a_pixel_missing_over_a_stretch_is_mapped_and_named(tmp_path, caplog):
    """A pixel whose own samples are missing over a long stretch (the other pixels have
    them) is still fitted, across a straight line: the run says how many such pixels there
    are and names the worst, and the map ``longest_gap`` holds each pixel's longest bridged
    stretch (the frame spacing where it is complete)."""
    import numpy as np
    from astropy.io import fits

    from specfit.pipeline import run

    paths = _frames(tmp_path / "f", nt=40)
    for i in range(10, 30):  # frames 10-29 lose pixel (3, 5): 21 cadences bridged
        with fits.open(paths[i], mode="update") as h:
            h[0].data[3, 5] = np.nan
    with fits.open(paths[20], mode="update") as h:
        h[0].data[9, 2] = np.nan  # one sample: bridged over 2 cadences, not reported
    for i in range(0, 15):  # missing at the start: no spectrum, not fitted, not reported
        with fits.open(paths[i], mode="update") as h:
            h[0].data[1, 1] = np.nan
    with fits.open(paths[35], mode="update") as h:
        h[0].data[:] = np.nan  # a frame empty everywhere: every pixel bridges 2 cadences
    with caplog.at_level("WARNING", logger="specfit"):
        ds = run(_fits_run_config(tmp_path, tmp_path / "f"))
    msgs = [r.getMessage() for r in caplog.records if "miss samples of their own" in r.getMessage()]
    assert len(msgs) == 1, [r.getMessage() for r in caplog.records]
    assert msgs[0].startswith("1 pixel(s)") and "252 s = 21 cadences" in msgs[0], msgs[0]
    assert "longest spacing, 24 s" in msgs[0], msgs[0]
    assert "at pixel y=3, x=5" in msgs[0] and "longest_gap" in msgs[0], msgs[0]
    gap = ds["longest_gap"].values
    assert ds["longest_gap"].attrs["units"] == "s"
    np.testing.assert_allclose(gap[3, 5], 21 * 12.0, rtol=1e-6)
    np.testing.assert_allclose(gap[9, 2], 2 * 12.0, rtol=1e-6)
    assert ds["m1_status"].values[1, 1] == 2  # nonfinite_input
    assert np.isnan(gap[1, 1])  # no spectrum of its own enters a fit
    others = np.ones(gap.shape, bool)
    others[3, 5] = others[1, 1] = False
    np.testing.assert_allclose(gap[others], 24.0, rtol=1e-6)  # frame 35's gap
    assert np.isfinite(ds["m1_index"].values[3, 5])  # fitted, across the line


def test_a_damaged_frame_is_named(tmp_path, caplog):
    """A frame whose lower half was filled with zeros (a damaged file that still reads) moved
    hundreds of pixels' indices without a word (an adversarial review). The run names it
    with the share of its pixels that jump away from both neighbouring frames; the sound
    frames of the same run are not named (noise never reaches 10x a pixel's own scatter)."""
    from astropy.io import fits

    from specfit.pipeline import run

    paths = _frames(tmp_path / "f", nt=40)
    with fits.open(paths[20], mode="update") as h:
        h[0].data[8:] = 0.0
    with caplog.at_level("WARNING", logger="specfit"):
        run(_fits_run_config(tmp_path, tmp_path / "f"))
    msgs = [r.getMessage() for r in caplog.records if "differ sharply" in r.getMessage()]
    assert len(msgs) == 1, [r.getMessage() for r in caplog.records]
    assert msgs[0].startswith("1 frame(s)") and "frame 20 (t=240 s, " in msgs[0], msgs[0]
    import re

    share = int(re.search(r"f020\.fits: (\d+) %\)", msgs[0]).group(1))
    assert 40 <= share <= 50, msgs[0]  # half the frame's pixels, nearly all of them caught
    # the fix for a folder of frames (a cube's, max_frames, is said for cubes: a probe found
    # input.pattern offered for an IRIS cube, where it cannot leave a frame out)
    assert "move its file out of the folder, or narrow input.pattern" in msgs[0], msgs[0]
    from specfit.pipeline import _how_to_leave_out

    cube = type("A", (), {"attrs": {"kind": "fits_cube"}})()
    assert _how_to_leave_out(cube).startswith("input.max_frames keeps the first N frames")


def test_all_nan_frame_is_named_and_treated_as_missing(tmp_path, caplog):
    import numpy as np
    from astropy.io import fits

    from specfit.pipeline import run

    paths = _frames(tmp_path / "f", nt=40)
    with fits.open(paths[17], mode="update") as h:
        h[0].data[:] = np.nan
    with caplog.at_level("WARNING", logger="specfit"):
        ds = run(_fits_run_config(tmp_path, tmp_path / "f"))
    msgs = [r.getMessage() for r in caplog.records if "no finite pixel" in r.getMessage()]
    assert len(msgs) == 1, [r.getMessage() for r in caplog.records]
    assert "frame 17 at t=204 s (f017.fits)" in msgs[0] and "treated as missing" in msgs[0]
    assert np.isfinite(ds["m1_index"].values).all()  # interpolated across, not lost
    # A rerun that reuses the cube says it again.
    caplog.clear()
    with caplog.at_level("WARNING", logger="specfit"):
        run(_fits_run_config(tmp_path, tmp_path / "f"), overwrite=True)
    assert any("frame 17" in r.getMessage() for r in caplog.records)


def test_a_series_without_any_finite_frame_says_there_is_nothing_to_fit(tmp_path, caplog):
    import numpy as np
    from astropy.io import fits

    from specfit.pipeline import run

    for p in _frames(tmp_path / "f", nt=12):
        with fits.open(p, mode="update") as h:
            h[0].data[:] = np.nan
    # refused before any work (it was a warning after the cube was written, then a complete
    # store of NaN maps; a probe's finding, also for input.missing_below above every value)
    from specfit.errors import InputError

    cfg = _fits_run_config(tmp_path, tmp_path / "f")
    with pytest.raises(InputError, match="no frame of the 12 has a finite pixel.*nothing to fit"):
        run(cfg)
    assert not (tmp_path / "results.zarr").exists()


def test_an_all_zero_frame_is_a_dropout_treated_as_missing(tmp_path, caplog):
    """A frame of zeros (a dropout) is not data: without the rule its zeros went into every
    pixel's spectrum (the tail x8 on a probe). It is named and interpolated across, and the
    maps equal those of the same series with that frame NaN; a frame with zeros beside real
    values is data."""
    import numpy as np
    from astropy.io import fits

    from specfit.config import InputConfig
    from specfit.io import open_input
    from specfit.pipeline import run

    paths = _frames(tmp_path / "z", nt=40)
    with fits.open(paths[9], mode="update") as h:
        h[0].data[:] = 0.0
    with fits.open(paths[20], mode="update") as h:
        h[0].data[:4] = 0.0  # a dark strip: kept
    arr = open_input(InputConfig(path=str(tmp_path / "z"), exposure_key="EXPTIME"))
    frames = arr.values
    assert np.isnan(frames[9]).all() and (frames[20][:4] == 0).all()
    assert np.isfinite(np.delete(frames, 9, axis=0)).all()
    with caplog.at_level("WARNING", logger="specfit"):
        ds = run(_fits_run_config(tmp_path, tmp_path / "z"))
    msg = [r.getMessage() for r in caplog.records if "no finite pixel" in r.getMessage()]
    assert len(msg) == 1 and "all zero" in msg[0] and "frame 9 " in msg[0], msg
    paths = _frames(tmp_path / "n", nt=40)
    for i, p in enumerate(paths):  # the same series with frame 9 NaN
        if i in (9, 20):
            with fits.open(p, mode="update") as h:
                if i == 9:
                    h[0].data[:] = np.nan
                else:
                    h[0].data[:4] = 0.0
    cfg = _fits_run_config(tmp_path / "other", tmp_path / "n")
    want = run(cfg)
    np.testing.assert_array_equal(ds["m1_index"].values, want["m1_index"].values)


def test_gaps_covering_much_of_the_series_are_said_to_be_interpolation(tmp_path, caplog):
    """A series whose second half starts an hour later is mostly interpolation: the run says
    how much, beside the gap itself (a probe's index came out 2.2 on white noise)."""
    from astropy.io import fits

    from specfit.pipeline import run

    paths = _frames(tmp_path / "f", nt=40)
    for i, p in enumerate(paths[20:]):
        with fits.open(p, mode="update") as h:
            h[0].header["T_OBS"] = f"2020-01-01T01:{(240 + 12 * i) // 60:02d}:{12 * i % 60:02d}"
    with caplog.at_level("WARNING", logger="specfit"):
        run(_fits_run_config(tmp_path, tmp_path / "f"))
    msgs = [r.getMessage() for r in caplog.records]
    share = [m for m in msgs if "of the series" in m]
    assert len(share) == 1 and "cover 89 %" in share[0], msgs  # 3612 s of 4068 s
    caplog.clear()
    paths = _frames(tmp_path / "g", nt=40)  # the same frames without the gap: no such line
    with caplog.at_level("WARNING", logger="specfit"):
        run(_fits_run_config(tmp_path / "o", tmp_path / "g"))
    assert not any("of the series" in r.getMessage() for r in caplog.records)


def test_long_gap_alone_does_not_claim_a_drifting_grid():
    import numpy as np

    from specfit.kernels.resample import interpolation_nyquist_gain, uniform_times

    t = np.arange(300) * 12.0
    gapped = np.concatenate([t[:100], t[160:]])  # 60 frames (12 min) missing, on the grid
    grid = uniform_times(gapped, 12.0)
    assert interpolation_nyquist_gain(gapped, grid) == pytest.approx(1.0)
    # A grid that really drifts against jittered frames is still flagged.
    rng = np.random.default_rng(0)
    jittered = t + rng.uniform(-4, 4, t.size)
    assert interpolation_nyquist_gain(jittered, uniform_times(jittered, None)) < 0.9


USER_MODEL_BAD = '''
import numpy as np

from specfit.models import Component, Parameter, register_model


def level(lnf, level):
    """c"""
    return level, 1.0


def short_power_law(lnf, amplitude, index):
    """A f^-n, one value short"""
    v = amplitude * np.exp(-index * lnf)
    return v[..., :-1], v[..., :-1], v[..., :-1]


register_model(Component("c", level, (Parameter("level", "power"),)).named("probe_scalar"))
register_model(
    Component("p", short_power_law, (Parameter("amplitude", "power"), Parameter("index")))
    .named("probe_short")
)
'''


@pytest.mark.parametrize(
    "model,got", [("probe_scalar", "returned a scalar"), ("probe_short", "array of shape")]
)
def test_user_model_of_the_wrong_shape_is_one_error_naming_model_and_file(tmp_path, model, got):
    from specfit.errors import ConfigError
    from specfit.pipeline import run

    src = tmp_path / "bad_models.py"
    src.write_text(USER_MODEL_BAD)
    _frames(tmp_path / "f", nt=40)
    cfg = _fits_run_config(
        tmp_path, tmp_path / "f", fit={"models": {"u": model}, "user_models": [str(src)]}
    )
    with pytest.raises(ConfigError) as info:
        run(cfg)
    text = str(info.value)
    assert f"fit.models.u: model '{model}' (defined in {src})" in text and got in text
    assert not (tmp_path / "results.zarr").exists()  # refused before any work


USER_MODEL_NUMBA = '''
import numpy as np
from scipy.special import expit

from specfit.models import POWER_LAW, TAIL, Component, Parameter, register_model


def sigmoid(lnf, a):
    """a expit(ln f): scipy, which numba cannot compile"""
    e = expit(lnf)
    return a * e, e


def level(lnf, a):
    """a, its derivative written as v / a (0 / 0 at the bound a = 0)"""
    v = a + 0.0 * lnf
    return v, v / a


register_model((POWER_LAW + TAIL + Component("s", sigmoid, (Parameter("a", "power"),))).named("probe_scipy"))
register_model((POWER_LAW + Component("l", level, (Parameter("a", "power", default=0.0),))).named("probe_div"))
'''


def test_user_models_numba_cannot_run_are_refused_and_a_division_by_zero_is_per_pixel(tmp_path):
    """A shape numba cannot compile passed the numpy check and failed in every tile; a
    shape dividing by a parameter at its bound 0 failed its tile with ZeroDivisionError. The
    first is refused before any work, the second fits (numpy's division: inf/nan, which the
    solver handles per pixel)."""
    import numpy as np

    from specfit.errors import ConfigError
    from specfit.pipeline import run

    src = tmp_path / "numba_models.py"
    src.write_text(USER_MODEL_NUMBA)
    _frames(tmp_path / "f", nt=40)
    cfg = _fits_run_config(
        tmp_path, tmp_path / "f", fit={"models": {"u": "probe_scipy"}, "user_models": [str(src)]}
    )
    with pytest.raises(ConfigError, match="model 'probe_scipy': numba cannot compile or run"):
        run(cfg)
    assert not (tmp_path / "results.zarr").exists()
    cfg["fit"]["models"] = {"u": "probe_div"}
    ds = run(cfg)
    assert ds.attrs["complete"] and np.isin(ds["u_status"].values, list(range(10))).all()


def test_unfinished_store_says_so_to_xarray_and_open_results(tmp_path):
    import warnings

    import xarray as xr

    from conftest import tiny_config
    from specfit.errors import StoreError
    from specfit.pipeline import run
    from specfit.store import IncompleteStoreWarning, open_results

    cfg = tiny_config(
        tmp_path, input={"synthetic": {"shape": [16, 8], "n_frames": 64, "cadence": 12.0}}
    )
    cfg["fit"]["models"] = {"m1": "powerlaw_tail"}
    run(cfg)
    store = tmp_path / "results.zarr"
    assert xr.open_zarr(store).attrs["specfit_state"] == "complete"
    import zarr

    from specfit.store import _consolidate

    root = zarr.open_group(str(store), mode="r+")  # as if killed after the first tile
    root["tiles_done"][1, 0] = 0
    root["m1_status"][8:, :] = -1  # what an unwritten tile reads as (its fill values)
    root["m1_index"][8:, :] = float("nan")
    root.attrs.update({"complete": False, "specfit_state": "incomplete: x"})
    _consolidate(store)
    with pytest.raises(StoreError, match=r"incomplete \(1 of 2"):
        open_results(store)
    with pytest.warns(IncompleteStoreWarning, match=r"1 of 2 tiles written.*--resume"):
        open_results(store, allow_incomplete=True)
    r = _cli("info", str(store))
    assert r.returncode == 0 and "Warning" not in r.stderr
    assert "INCOMPLETE: 1 of 2 tiles written" in r.stdout, r.stdout
    # the figures cover the written tile only: no fill value (-1) counted as a status code
    status = next(line for line in r.stdout.splitlines() if "m1_status:" in line)
    assert "-1" not in status and "%" in status, status
    index = next(line for line in r.stdout.splitlines() if line.strip().startswith("m1_index"))
    assert index.split()[-1] == "0.0", index  # no NaN share from the unwritten tile
    root["tiles_done"][1, 0] = 1  # every tile written, killed before it was finalised
    _consolidate(store)
    r = _cli("info", str(store))  # it read "2 of 2 tiles written" as the reason (docs probe)
    assert "INCOMPLETE: every tile written, the field-wide maps not yet" in r.stdout, r.stdout
    root["tiles_done"][1, 0] = 0
    root["tiles_done"][0, 0] = 0  # nothing written yet: the state line alone
    _consolidate(store)
    r = _cli("info", str(store))
    assert "INCOMPLETE: 0 of 2 tiles written" in r.stdout and "m1_status" not in r.stdout
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = next(iter(xr.open_zarr(store).attrs))
    assert first == "specfit_state"
    # What to do about it (the explorer reviewer: every message said `specfit run CONFIG
    # --resume`, also for a demo's store, which `specfit demo --out DIR --resume` finishes,
    # and for a store a live run was writing, where resuming only met that run's lock).
    # This store's input is its folder's synthetic/, as a demo's is:
    with pytest.raises(StoreError, match=f"specfit demo --out {tmp_path} --resume"):
        open_results(store)
    lock = tmp_path / "results.zarr.specfit-work" / "lock.json"
    import json
    import os
    import socket

    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "t"}))
    with pytest.raises(StoreError, match=rf"pid {os.getpid()}, started t\) is writing it now"):
        open_results(store)
    r = _cli("info", str(store))
    assert "is writing it now" in r.stdout, r.stdout
    dead = json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "started": "t"})
    lock.write_text(dead)  # a crashed run's record: resuming is the fix again
    with pytest.raises(StoreError, match="--resume"):
        open_results(store)
    moved = tmp_path / "elsewhere" / "mine.zarr"
    moved.parent.mkdir()
    os.rename(store, moved)  # not a demo's folder layout
    with pytest.raises(StoreError, match=r"specfit run CONFIG --resume` \(the config"):
        open_results(moved)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_nan_constant_and_huge_pixels_give_nan_and_a_status(tmp_path):
    """Bad pixels in the frames never crash a run nor get finite parameters with status 0."""
    import numpy as np
    from astropy.io import fits

    from specfit.pipeline import run

    _frames(tmp_path / "clean", nt=40)
    clean = run(_fits_run_config(tmp_path / "c", tmp_path / "clean"))
    paths = _frames(tmp_path / "f", nt=40)
    for i, p in enumerate(paths):
        with fits.open(p, mode="update") as h:
            h[0].data[1, 2] = np.nan  # dead
            h[0].data[3, 4] = 7.0  # constant
            h[0].data[5, 6] = 3e38 if i % 2 else -3e38  # at the float32 limit
            h[0].data[7, 8] = np.inf
    ds = run(_fits_run_config(tmp_path, tmp_path / "f"))
    status = ds["m1_status"].values
    for y, x in ((1, 2), (3, 4), (5, 6), (7, 8)):
        assert status[y, x] != 0 and np.isnan(ds["m1_index"].values[y, x]), (y, x)
    # every other pixel is fitted exactly as without the bad ones
    bad = np.zeros(status.shape, bool)
    bad[[1, 3, 5, 7], [2, 4, 6, 8]] = True
    for name in ("m1_index", "m1_status", "m1_amplitude"):
        np.testing.assert_array_equal(ds[name].values[~bad], clean[name].values[~bad])


# ----------------------------------------------------------------------------- killed worker
@pytest.mark.slow  # a local-cluster run of the shared cluster-test data (~30 s)
@pytest.mark.timeout(300)
def test_a_killed_worker_costs_nothing(tmp_path, tmp_path_factory):
    """SIGKILL one of two workers while the tiles run: the run finishes on its own (exit 0)
    and every result equals the synchronous reference."""
    import subprocess
    import sys
    import time

    from conftest_cluster import (
        assert_same_results,
        kill_group,
        pipeline_config,
        reference_run,
        write_config,
    )

    data_dir, reference = reference_run(tmp_path_factory)
    results = tmp_path / "r.zarr"
    config = write_config(tmp_path / "run.yaml", pipeline_config(data_dir, results))
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "specfit.cli", "run", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while "fitting" not in err_path.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.05)
            workers = [
                c
                for c in psutil.Process(proc.pid).children(recursive=True)
                if "spawn_main" in " ".join(c.cmdline())
            ]
            assert len(workers) == 2, [c.cmdline() for c in workers]
            workers[0].kill()
            code = proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                kill_group(proc)
    assert code == 0, err_path.read_text()[-3000:]
    assert_same_results(results, reference)


# ----------------------------------------------------------------------------- the CLI's one line
def test_cli_prints_one_line_per_problem_and_no_traceback(tmp_path):
    """Truncated frame, empty --set key part, wrong-shaped user model: exit 2, one line."""
    import yaml

    paths = _frames(tmp_path / "f", nt=12)
    _truncate(paths[3], 2880 + 64)
    src = tmp_path / "bad_models.py"
    src.write_text(USER_MODEL_BAD)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_fits_run_config(tmp_path, tmp_path / "f")))
    good = tmp_path / "g"
    _frames(good, nt=12)
    cases = {
        "f003.fits: the file is truncated": [],
        "empty part": ["--set", "spectra..segments=2"],
        "returned a scalar": [
            "--set",
            f"input.path={good}",
            "--set",
            "fit.models={u: probe_scalar}",
            "--set",
            f"fit.user_models=[{src}]",
        ],
    }
    for expected, extra in cases.items():
        r = _cli("run", str(config), *extra)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, r.stderr
        assert len(lines) == 1 and lines[0].startswith("specfit: error: "), r.stderr
        assert expected in lines[0]


def test_empty_frames_at_the_ends_are_left_out_not_every_pixel(tmp_path, caplog):
    """A dropout at the start or the end of the series (all zero, or all NaN): nothing lies
    beyond it to interpolate from, so every pixel's series began with a missing sample and no
    pixel was fitted while the run ended 'complete'. The series now runs from the first to
    the last frame with data, and the run names the frames it left out."""
    import numpy as np
    from astropy.io import fits

    from specfit.pipeline import run

    paths = _frames(tmp_path / "f", nt=40)
    for i, fill in ((0, 0.0), (1, np.nan), (39, 0.0)):
        with fits.open(paths[i], mode="update") as h:
            h[0].data[:] = fill
    with caplog.at_level("WARNING", logger="specfit"):
        ds = run(_fits_run_config(tmp_path, tmp_path / "f"))
    said = [r.getMessage() for r in caplog.records]
    (msg,) = [m for m in said if "at the start and end of the series" in m]
    assert msg.startswith("3 frame(s)") and "frame 0 at t=0 s (f000.fits)" in msg, msg
    assert "frame 39 at t=468 s (f039.fits)" in msg and "from frame 2 to frame 38" in msg
    assert not [m for m in said if "no frame has a finite pixel" in m]
    assert ds.attrs["n_frames"] == 37
    assert not np.isin(ds["m1_status"].values, [2, 3, 4, 5, 9]).any()  # before: 2 everywhere
    assert np.isfinite(ds["m1_index"].values).all()


def test_a_long_dropout_at_the_ends_is_left_out_and_too_little_left_is_refused(tmp_path, caplog):
    """More empty frames at an end than are read one by one (pipeline._EMPTY_ENDS_MAX): the
    scan stopped there, trimmed nothing, and every pixel came out status 2 under a warning
    that they would be interpolated (a helper's finding: 20 empty leading frames of 128).
    The scan now goes on to the first frame with data; when fewer than 8 frames are left,
    the run is refused before any work, saying why."""
    import numpy as np
    from astropy.io import fits

    from specfit.errors import ConfigError
    from specfit.pipeline import _EMPTY_ENDS_BLOCK, _EMPTY_ENDS_MAX, run

    lead, tail, nt = _EMPTY_ENDS_MAX + _EMPTY_ENDS_BLOCK + 3, _EMPTY_ENDS_MAX + 1, 130
    paths = _frames(tmp_path / "f", nt=nt, ny=8, nx=8)
    for i in [*range(lead), *range(nt - tail, nt)]:
        with fits.open(paths[i], mode="update") as h:
            h[0].data[:] = np.nan if i % 2 else 0.0
    with caplog.at_level("WARNING", logger="specfit"):
        ds = run(_fits_run_config(tmp_path, tmp_path / "f"))
    said = [r.getMessage() for r in caplog.records]
    (msg,) = [m for m in said if "at the start and end of the series" in m]
    assert msg.startswith(f"{lead + tail} frame(s)"), msg
    assert f"from frame {lead} to frame {nt - tail - 1}" in msg, msg
    assert not [m for m in said if "interpolated across them" in m]
    assert ds.attrs["n_frames"] == nt - lead - tail
    assert (ds["m1_status"].values != 2).all() and np.isfinite(ds["m1_index"].values).all()
    # the same with fewer than 8 frames between the dropouts: refused, naming the cause
    for i in range(nt - tail - 16, nt - tail):
        with fits.open(paths[i], mode="update") as h:
            h[0].data[:] = np.nan
    cfg = _fits_run_config(tmp_path, tmp_path / "f", output={"path": str(tmp_path / "r2.zarr")})
    with pytest.raises(ConfigError, match=rf"only 6 frames found \(of {nt} frames, {nt - 6} at"):
        run(cfg)
    assert not (tmp_path / "r2.zarr").exists()


def test_interpolation_warning_for_alternating_spacing_names_an_fmax(tmp_path, caplog):
    """Frames spaced alternately 12 and 25 s (as IRIS SJI's 18.7 / 37.5 s) have no single
    nominal cadence, so 'set resample.cadence' alone could not be followed (the helper's
    finding): the warning also names the spectra.fmax below the long steps' Nyquist."""
    from astropy.io import fits

    from specfit.config import load_config
    from specfit.pipeline import _describe_plan, plan_run

    paths = _frames(tmp_path / "f", nt=60)
    t = 0
    for i, p in enumerate(paths):
        with fits.open(p, mode="update") as h:
            h[0].header["T_OBS"] = f"2020-01-01T00:{t // 60:02d}:{t % 60:02d}"
        t += 12 if i % 2 == 0 else 25
    cfg = load_config(_fits_run_config(tmp_path, tmp_path / "f", resample={"cadence": None}))
    with caplog.at_level("WARNING", logger="specfit"):
        _describe_plan(cfg, plan_run(cfg))
    (msg,) = [r.getMessage() for r in caplog.records if "Nyquist" in r.getMessage()]
    assert "spacing alternates (here up to 25 s)" in msg and "spectra.fmax: 0.02" in msg, msg


@pytest.mark.parametrize(
    "factor,side,scaled",
    [
        (1e-24, "below", "first"),
        (1e17, "above", "first"),
        (1e17, "above", "last"),
        (1.0, None, "first"),
    ],
)
def test_input_whose_spectra_leave_float32_range_is_refused_before_work(
    tmp_path, factor, side, scaled
):
    """Spectra are stored and fitted as float32: data ~3e-22 (a radio flux in SI units)
    underflowed (index off by 0.07-0.7 with status 0, or a ZeroDivisionError), data ~1e19
    overflowed (every pixel 'NaN or inf in the spectrum'), silently (the helper's finding).
    Such input is now refused before any work, with the factor to rescale by. The first and
    the last frame are checked: a series whose last 10 frames alone are scaled is refused
    too (with the first frame only, it ran)."""
    from astropy.io import fits

    from specfit.config import load_config
    from specfit.errors import ConfigError
    from specfit.pipeline import plan_run

    paths = _frames(tmp_path / "f", nt=40)
    for p in paths if scaled == "first" else paths[30:]:
        with fits.open(p, mode="update") as h:
            h[0].data = (h[0].data * factor).astype("float32")
    cfg = load_config(_fits_run_config(tmp_path, tmp_path / "f"))
    if side is None:
        plan_run(cfg)
        return
    with pytest.raises(ConfigError, match=f"spectra {side} float32's range.*rescale the data") as e:
        plan_run(cfg)
    assert f"({scaled} frame)" in str(e.value)
    variance = load_config(
        _fits_run_config(tmp_path, tmp_path / "f", spectra={"normalisation": "variance"})
    )
    plan_run(variance)  # the scale divides out
    assert not (tmp_path / "results.zarr").exists()


@pytest.mark.parametrize("factor, side", [(1e-22, "below"), (1e19, "above")])
def test_the_stage_api_refuses_spectra_beyond_float32_too(factor, side):
    """specfit.power_spectra stores float32 as a run does, but did not check the range: data
    ~1e-22 (a radio flux in W m^-2 Hz^-1) fitted with an index off by 0.12 and status 0, or
    status 7/3 at 1e-25; ~1e17 and above read 'NaN or inf in the spectrum' (the API reviewer's
    finding). It now refuses before any work, as a run does."""
    import numpy as np
    import xarray as xr

    import specfit
    from specfit.errors import ConfigError

    rng = np.random.default_rng(1)
    walk = 100.0 + np.cumsum(rng.normal(0, 1, (64, 3, 4)), axis=0)
    arr = xr.DataArray(walk, dims=("time", "y", "x"), coords={"time": np.arange(64) * 12.0})
    series = specfit.resample(arr)
    specfit.power_spectra(series)  # in range: runs
    with pytest.raises(ConfigError, match=f"spectra {side} float32's range.*rescale the data"):
        specfit.power_spectra(series * factor)
    specfit.power_spectra(series * factor, normalisation="variance")  # the scale divides out


@pytest.mark.parametrize("scale, side", [(1e-44, "smallest"), (1e45, "largest")])
def test_fit_refuses_float64_spectra_that_float32_maps_cannot_hold(scale, side):
    """specfit.fit stores every amplitude and error as float32, but did not check spectra
    handed to it in float64: at a level of 1e-44 every amplitude and tail was stored as 0, at
    1e45 as inf, with status 0. Such spectra are now refused before any work, with the factor
    that brings them in range; that factor makes the same fit run."""
    import re

    import numpy as np
    import xarray as xr

    import specfit
    from specfit.errors import ConfigError

    rng = np.random.default_rng(3)
    f = np.arange(1, 101) / (200 * 12.0)
    level = (f / f[0]) ** -2.0 + 1e-2
    p = level[:, None, None] * rng.exponential(size=(100, 2, 2))
    da = xr.DataArray(p * scale, dims=("freq", "y", "x"), coords={"freq": f})
    with pytest.raises(ConfigError, match=f"too near float32's {side} value.*rescale") as e:
        specfit.fit(da, models={"M1": "powerlaw_tail"})
    factor = float(re.search(r"power \* (1e-?\d+)", str(e.value)).group(1))
    res = specfit.fit(da * factor, models={"M1": "powerlaw_tail"})
    tail = res["M1_tail"].values
    assert np.isfinite(tail).all() and (tail > 0).all()
    # the answer depends on the data, not the chunks: one odd pixel among in-range ones is
    # status 4 in one chunk and in 1 x 1 px chunks alike (the first chunk was the sample)
    many = level[:, None, None] * rng.exponential(size=(100, 16, 16))
    odd = xr.DataArray(many, dims=("freq", "y", "x"), coords={"freq": f})
    odd[:, 0, 0] *= scale
    whole = specfit.fit(odd, models={"M1": "powerlaw_tail"}).compute()
    pixels = specfit.fit(odd.chunk({"y": 1, "x": 1}), models={"M1": "powerlaw_tail"}).compute()
    assert whole["M1_status"].values[0, 0] == 4
    for v in whole.data_vars:
        np.testing.assert_array_equal(whole[v].values, pixels[v].values, err_msg=v)


@pytest.mark.parametrize("scale", [1e-45, 1e45])
def test_fit_leaves_out_of_range_pixels_beyond_the_first_tile_unfitted(scale):
    """The range check before work reads the first 32 x 32 px only (whatever the chunks):
    spectra out of float32's range in other tiles (here beside a first tile that is all NaN,
    or in range) were fitted and stored with amplitudes of 0 (or inf) and status 0 (a
    helper's finding). Such pixels now get status 4, not fitted, and every other pixel's
    maps are the same as without them."""
    import numpy as np
    import xarray as xr

    import specfit

    rng = np.random.default_rng(4)
    f = np.arange(1, 101) / (200 * 12.0)
    level = (f / f[0]) ** -2.0 + 1e-2
    p = level[:, None, None] * rng.exponential(size=(100, 16, 48))
    bad = np.zeros((16, 48), bool)
    bad[8:, 40:] = True  # the last of 12 8 x 8 tiles, beyond the checked 32 x 32 px
    scaled = np.where(bad, p * scale, p)
    models = {"M1": "powerlaw_tail"}
    for first in ("in range", "all NaN"):
        q = scaled.copy()
        if first == "all NaN":
            q[:, :8, :8] = np.nan
        da = xr.DataArray(q, dims=("freq", "y", "x"), coords={"freq": f})
        res = specfit.fit(da.chunk({"freq": -1, "y": 8, "x": 8}), models=models).compute()
        clean = specfit.fit(
            da.where(~xr.DataArray(bad, dims=("y", "x"))).chunk({"freq": -1, "y": 8, "x": 8}),
            models=models,
        ).compute()
        st = res["M1_status"].values
        assert (st[bad] == 4).all(), np.unique(st[bad])
        assert np.isnan(res["M1_amplitude"].values[bad]).all()
        for v in res.data_vars:
            a, b = res[v].values[~bad], clean[v].values[~bad]
            if v != "M1_status":
                np.testing.assert_array_equal(a, b, err_msg=f"{v}, first tile {first}")
        assert (clean["M1_status"].values[bad] == 2).all()
        assert np.array_equal(st[~bad], clean["M1_status"].values[~bad])
    # float32 spectra are never left out for their level: those float32 holds are fitted (a
    # first version of this check gave status 4 to float32 spectra near its limits; the
    # diff reviewer's finding)
    near = 6e-37 if scale < 1 else 3e35
    da32 = xr.DataArray((p * near).astype(np.float32), dims=("freq", "y", "x"), coords={"freq": f})
    res32 = specfit.fit(da32.chunk({"freq": -1, "y": 8, "x": 8}), models=models).compute()
    assert not (res32["M1_status"].values == 4).any()


def test_welch_segments_that_leave_much_of_the_series_out_are_named(tmp_path, caplog):
    """spectra.segment_length of 500 s on 60 frames at 12 s: one 42-sample segment, the last
    18 samples (3.6 minutes) in none, without a word (a probe). The run says so before any
    work; segments that tile the series are not named."""
    from specfit.pipeline import run

    _frames(tmp_path / "f", nt=60)
    for length, named in ((500.0, True), (360.0, False)):
        cfg = _fits_run_config(
            tmp_path, tmp_path / "f", spectra={"segment_length": length, "segments": 1}
        )
        cfg["output"]["path"] = str(tmp_path / f"r{int(length)}.zarr")
        caplog.clear()
        with caplog.at_level("WARNING", logger="specfit"):
            run(cfg)
        said = [r.getMessage() for r in caplog.records if "in no segment" in r.getMessage()]
        assert bool(said) == named, said
        if named:
            assert "cover 42 of the 60 samples; the last 18 (216 s, 30 %" in said[0], said[0]


def test_frames_beside_a_long_gap_are_not_called_damaged(tmp_path, caplog):
    """Two sound frames either side of a long gap, across which the scene changed, were named
    as damaged frames (a probe: 100 + 100 AIA frames 2 h 40 min apart); a damaged frame away
    from the gap still is."""
    import numpy as np
    from astropy.io import fits

    from specfit.pipeline import run

    folder = tmp_path / "f"
    folder.mkdir()
    rng = np.random.default_rng(0)
    times = [12.0 * i for i in range(30)] + [12.0 * i + 3600.0 for i in range(30, 60)]
    for i, t in enumerate(times):
        h = fits.Header()
        h["T_OBS"] = f"2020-01-01T{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"
        h["EXPTIME"] = 2.0
        level = 100.0 if i < 30 else 400.0  # the scene changed during the gap
        data = rng.normal(level, 5, (16, 16))
        if i == 45:
            data[8:] = 0.0  # a damaged frame, away from the gap
        fits.PrimaryHDU(data.astype(np.float32), header=h).writeto(folder / f"f{i:03d}.fits")
    with caplog.at_level("WARNING", logger="specfit"):
        run(_fits_run_config(tmp_path, folder))
    msgs = [r.getMessage() for r in caplog.records if "differ sharply" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].startswith("1 frame(s)"), msgs
    assert "frame 45 (" in msgs[0] and "frame 29 (" not in msgs[0] and "frame 30 (" not in msgs[0]
