"""The command line end to end: run, info, errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "specfit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_run_then_info(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    r = _cli("run", str(cfg), "--set", "spectra.window=none")
    assert r.returncode == 0, r.stderr
    assert "m1_index" in r.stdout and "best_model" in r.stdout
    r = _cli("info", str(tmp_path / "results.zarr"))
    assert r.returncode == 0, r.stderr
    assert "state: complete" in r.stdout and "m1_index" in r.stdout
    # A second run without --overwrite is refused with the fix in the message.
    r = _cli("run", str(cfg))
    assert r.returncode == 2 and "--overwrite" in r.stderr


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("spectra:\n  segmnts: 2\nfit:\n  method: bayes\n")
    r = _cli("run", str(cfg))
    assert r.returncode == 2
    assert "spectra.segmnts: unknown key" in r.stderr and "segments" in r.stderr
    assert "fit.method" in r.stderr and "whittle" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_input_is_a_clear_error(tmp_path):
    r = _cli(
        "run",
        str(ROOT / "configs" / "demo.yaml"),
        "--set",
        f"input.path={tmp_path}/x",
        "--set",
        "input.kind=fits_series",
        "--set",
        f"output.path={tmp_path}/r.zarr",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "input" in r.stderr


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    """The run failed with exit 2 and one `specfit: error:` line, and no traceback."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("specfit: error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def _tiny(tmp_path: Path) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    return cfg


def test_mpi_outside_mpiexec_is_one_line(tmp_path):
    line = _one_error_line(_cli("run", str(_tiny(tmp_path)), "--cluster", "mpi"))
    # Either mpi4py is missing (install hint) or the job has 1 rank (mpiexec hint).
    assert "mpiexec" in line or "specfit-solar[mpi]" in line
    assert not (tmp_path / "results.zarr").exists()


def test_unreachable_scheduler_fails_fast_in_one_line(tmp_path):
    from conftest import free_port

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    r = _cli("run", str(_tiny(tmp_path)), "--cluster", address)
    assert time.perf_counter() - t0 < 20  # the dask client alone would retry for 30 s
    line = _one_error_line(r)
    assert f"cannot reach the dask scheduler at {address}" in line
    # Checked before the inputs are prepared: nothing was written.
    assert not (tmp_path / "synthetic").exists() and not (tmp_path / "results.zarr").exists()


def test_store_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    cfg = _tiny(tmp_path)
    (tmp_path / "results.zarr").mkdir()
    (tmp_path / "results.zarr" / "mine.txt").write_text("not specfit's")
    line = _one_error_line(_cli("run", str(cfg)))
    assert "is not a specfit results store" in line and "output.path" in line
    # --debug (before or after the command) adds the traceback, ending in the error's class.
    for args in (("--debug", "run", str(cfg)), ("run", str(cfg), "--debug")):
        r = _cli(*args)
        assert r.returncode == 2 and "Traceback" in r.stderr
        assert "specfit.errors.StoreError: " in r.stderr
    assert (tmp_path / "results.zarr" / "mine.txt").read_text() == "not specfit's"


def test_config_and_input_errors_are_one_line_of_their_class(tmp_path):
    cfg = _tiny(tmp_path)
    r = _cli("run", str(cfg), "--set", "fit.method=bayes")
    # One error; its message lists one line per bad key under a heading naming the file.
    assert str(cfg) in _one_error_line(r) and "fit.method: must be one of" in r.stderr
    r = _cli("--debug", "run", str(cfg), "--set", "fit.method=bayes")
    assert "specfit.errors.ConfigError: " in r.stderr
    bad_input = ("--set", f"input.path={tmp_path}/none", "--set", "input.kind=fits_series")
    line = _one_error_line(_cli("run", str(cfg), *bad_input))
    assert f"{tmp_path}/none" in line
    r = _cli("--debug", "run", str(cfg), *bad_input)
    assert "specfit.errors.InputError: " in r.stderr


def test_interrupt_hint_follows_what_the_store_holds(demo_store, tmp_path):
    """Ctrl-C's advice: --resume only where an unfinished store of this run exists; an
    --overwrite run stopped before it replaced a finished store, or a first run stopped before
    any tile, is told to run again (a --resume there would be refused)."""
    import argparse
    import json
    import shutil

    import yaml

    from specfit.cli import _resume_hint

    store = tmp_path / "r.zarr"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output": {"path": str(store)}}))
    args = argparse.Namespace(
        command="run", config=str(config), overrides=["spectra.segments=2"], cluster=None
    )
    assert "(no results): run `specfit run" in _resume_hint(args)
    assert "--resume" not in _resume_hint(args)
    shutil.copytree(demo_store, store)
    args.overwrite = True
    hint = _resume_hint(args)
    assert (
        "previous results are unchanged" in hint and "--set spectra.segments=2 --overwrite`" in hint
    )
    # Ctrl-C after this run had finished the store (while it printed its summary, say): the
    # hint said "stopped before any tile was saved (the previous results are unchanged)" and
    # to run again (the first-user reviewer); the store this run wrote is complete
    from specfit.cli import _store_stamp

    args.store_stamp = None  # no store when the run began
    assert f"{store} was finished by this run before the interrupt" in _resume_hint(args)
    args.store_stamp = _store_stamp(args)  # the same complete store as when it began
    assert "previous results are unchanged" in _resume_hint(args)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["complete"] = False
    (store / "zarr.json").write_text(json.dumps(meta))
    assert "--set spectra.segments=2 --resume` to complete it" in _resume_hint(args)
    # an --overwrite run stopped before it replaced an unfinished store (another config's):
    # the hint said --resume, which that store's config difference refuses (lifecycle reviewer)
    args.store_stamp = _store_stamp(args)  # the unfinished store, as when this run began
    hint = _resume_hint(args)
    assert f"stopped before {store} was replaced" in hint and "--resume" not in hint
    assert "--set spectra.segments=2 --overwrite` again" in hint


def test_the_demo_interrupt_hint_follows_output_path(tmp_path, monkeypatch):
    """`specfit demo --set output.path=elsewhere.zarr`, interrupted with tiles saved: the hint
    looked at DIR/results.zarr, said "no results" and to run again, which replaced them."""
    import argparse

    from specfit.cli import _results_path

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        command="demo", out=str(tmp_path / "d3"), overrides=["output.path=elsewhere.zarr"]
    )
    assert _results_path(args).resolve() == tmp_path / "elsewhere.zarr"
    args.overrides = []
    assert _results_path(args) == tmp_path / "d3" / "results.zarr"


def test_commands_on_a_zarr_that_is_not_a_results_store_say_so(tmp_path):
    """info/plot/export on another Zarr store (a synthetic truth, specfit's own cube) give one
    line, not a KeyError traceback."""
    import numpy as np
    import xarray as xr

    other = tmp_path / "truth.zarr"
    xr.Dataset({"index": (("y", "x"), np.ones((2, 2)))}).to_zarr(other)
    for cmd in (
        ["info", str(other)],
        ["plot", str(other)],
        ["export", str(other), "--fits", str(tmp_path / "f")],
    ):
        r = _cli(*cmd)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "is a Zarr store, not a specfit results store" in r.stderr, r.stderr


def test_python_dash_m_specfit_is_the_cli(tmp_path):
    """`python -m specfit` works as `specfit` does (it said 'No module named
    specfit.__main__'), errors included."""
    import specfit

    r = subprocess.run(
        [sys.executable, "-m", "specfit", "--version"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and specfit.__version__ in r.stdout + r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "specfit", "info", str(tmp_path / "none.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.startswith("specfit: error:"), r.stderr


def test_specfit_warnings_are_one_plain_line(tmp_path):
    """specfit's own warnings print as its log lines do (`specfit: WARNING: ...`), without
    Python's path, line number and source line of the code that warned."""
    from astropy.io import fits

    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=32, seed=1).frames
    files = sorted(Path(frames).glob("*.fits"))
    first = files[3]
    with fits.open(first, mode="update") as h:
        h[0].header["QUALITY"] = 1 << 13  # eclipse
        h[0].header["TELESCOP"] = "SDO/AIA"  # whose bits these are
    r = _cli("init", str(frames))
    assert r.returncode == 0, r.stderr
    line = (
        f"specfit: WARNING: left out 1 of {len(files)} frames whose QUALITY has bit 13 (1) set "
        f"(AIA's bad-frame bits; first: {first.name})"
    )
    assert line in r.stderr and "UserWarning" not in r.stderr, r.stderr
    n = len(files) - 1
    assert (
        f"fits_series: {n} single-frame FITS files (*.fits), 1 more left out for their QUALITY"
        in (r.stderr)
    )


def test_output_piped_to_a_reader_that_leaves_is_not_a_traceback(demo_store):
    """`specfit info STORE | head -3` ended with a BrokenPipeError traceback (the helper's
    finding); the reader leaving is not an error of ours."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "specfit", "info", str(demo_store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader leaves before we write (head after its lines)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_run_whose_output_reader_leaves_finishes_its_store(tmp_path):
    """`specfit run CONFIG 2>&1 | head -6`: the reader left, the next progress line raised
    BrokenPipeError, and the run stopped half way with exit status 0 and an unfinished store
    (a helper's finding). The run now goes on with its output to nowhere and finishes."""
    import shlex
    import subprocess
    import sys

    import xarray as xr

    cfg = _tiny(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "specfit", "run", str(cfg), "--cluster", "synchronous"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader leaves before the first line
    proc.stderr.close()
    assert proc.wait(timeout=600) == 0
    ds = xr.open_zarr(tmp_path / "results.zarr")
    assert ds.attrs["complete"] and int(ds["tiles_done"].sum()) > 0
    # stdout closed from the start (`>&-`: Python's sys.stdout is None) runs as before (the
    # first version of the fix wrapped that None and failed; the diff reviewer's finding)
    other = tmp_path / "closed" / "results.zarr"
    cmd = (
        f"{shlex.quote(sys.executable)} -m specfit run {shlex.quote(str(cfg))} --cluster "
        f"synchronous --set output.path={shlex.quote(str(other))} >&- 2>/dev/null"
    )
    assert subprocess.run(["bash", "-c", cmd], timeout=600).returncode == 0
    assert xr.open_zarr(other).attrs["complete"]


def test_info_prints_long_units_whole():
    """IRIS's power unit "(Corrected DN / s)^2/Hz" was cut to 14 characters in the map table
    (a reviewer's finding); the column is as wide as the longest unit."""
    import numpy as np
    import xarray as xr

    from specfit.summary import summarise

    unit = "(Corrected DN / s)^2/Hz"
    ds = xr.Dataset(
        {
            "m1_amplitude": (("y", "x"), np.ones((2, 3)), {"units": unit}),
            "m1_index": (("y", "x"), np.full((2, 3), 2.0), {"units": "1"}),
        }
    )
    rows = [ln for ln in summarise(ds).splitlines() if ln.strip().startswith(("map", "m1_"))]
    assert any(unit in ln for ln in rows), rows
    # the columns stay aligned: every row of the table has the same width
    assert len({len(ln) for ln in rows}) == 1, rows


def test_a_full_disk_is_one_line_with_what_to_do(tmp_path, capsys, monkeypatch):
    """A full disk while writing the cube (or finishing the store: outside the tile tasks,
    whose failures are per tile) ended in a ~90-line traceback of zarr and dask internals
    (a reviewer's finding, on a small tmpfs). It is now one line naming the file, exit 2."""
    from specfit import pipeline
    from specfit.cli import main

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "cube.zarr" / "c" / "0"))

    monkeypatch.setattr(pipeline, "_write_cube", full)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, cluster={"kind": "synchronous"})))
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("specfit: error")]
    assert len(lines) == 1 and "No space left on device writing" in lines[0], err
    assert "cube.zarr/c/0: free space" in lines[0] and "Traceback" not in err
    # zarr's own writes raise it without a file name: the store the run writes is named
    # (it said only "No space left on device"; lifecycle reviewer)

    def unnamed(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "_write_cube", unnamed)
    assert main(["run", str(cfg)]) == 2
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("specfit: e"))
    assert f"No space left on device writing {tmp_path / 'results.zarr'} (or its cube)" in line


def test_info_names_a_status_count_that_rounds_to_nothing():
    """specfit info printed "max_iter: 0.0%" for 1 pixel of 37,098 (the significance
    reviewer): a status that is there is not shown as none."""
    from specfit.summary import _share

    assert _share(1, 37098) == "1 px (<0.1%)"
    assert _share(0, 37098) == "0.0%" and _share(400, 37098) == "1.1%"


def _headline_line(summary: str, alias: str) -> str:
    lines = summary.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("headline"))
    return next(ln for ln in lines[start:] if ln.strip().startswith(f"{alias}:"))


def test_info_headline_says_how_many_preferred_fits_did_not_converge(tmp_path):
    """specfit info's headline medians count every preferred pixel, while `specfit plot` and
    the explorer hide those whose fit did not converge; the summary said nothing about them
    (stop 42's note). It names their share; a store where all converged keeps its line."""
    import json

    import numpy as np

    from specfit.pipeline import run
    from specfit.store import open_results
    from specfit.summary import headline, summarise

    cfg = tiny_config(tmp_path, cluster={"kind": "synchronous"})
    run(cfg)
    ds = open_results(tmp_path / "results.zarr").load()
    codes = {int(k): v for k, v in json.loads(ds.attrs["status_codes"]).items()}
    not_converged = next(c for c, t in codes.items() if "not converged" in t.lower())
    best = ds["best_model"].values
    m1_pixels = np.argwhere(best == 0)
    assert len(m1_pixels) >= 4
    line = _headline_line(summarise(ds), "m1")
    assert "did not converge" not in line or headline(ds)["m1_unconverged_percent"] > 0
    status = ds["m1_status"].values.copy()
    status[best == 0] = 0
    for y, x in m1_pixels[:2]:
        status[y, x] = not_converged
    ds["m1_status"].values = status
    share = 100.0 * 2 / len(m1_pixels)
    assert headline(ds)["m1_unconverged_percent"] == pytest.approx(share)
    line = _headline_line(summarise(ds), "m1")
    assert f"{share:.1f}% of those did not converge" in line, line
    status[best == 0] = 0
    ds["m1_status"].values = status
    line = _headline_line(summarise(ds), "m1")
    assert "did not converge" not in line, line
    # one pixel of many is named as such, not rounded to "0.0%" (the diff reviewer)
    from specfit import summary

    real = summary.headline

    def one_of_many(d):
        h = real(d)
        h.update(m1_unconverged_percent=100 / 33415, m1_unconverged_pixels=1.0)
        h.update(m1_preferred_pixels=33415.0)
        return h

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(summary, "headline", one_of_many)
        line = _headline_line(summarise(ds), "m1")
    assert "1 px (<0.1%) of those did not converge" in line, line


def test_info_headline_of_a_model_preferred_nowhere_says_so(demo_store):
    """A model preferred in no pixel printed "index median nan (1st-99th percentile nan-nan);
    preferred in 0.0% of pixels" (a helper's finding, legacy.yaml on a 20 px cutout)."""
    import numpy as np

    from specfit.store import open_results
    from specfit.summary import summarise

    ds = open_results(demo_store).load()
    ds["best_model"].values = np.where(np.isfinite(ds["m1_index"].values), 1, -1).astype(
        ds["best_model"].dtype
    )
    assert _headline_line(summarise(ds), "m1").strip() == "m1: preferred in no pixel"
    assert "nan" not in _headline_line(summarise(ds), "m2")


def test_a_path_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """A file where `specfit demo --out` or `config copy` needs a folder was a Python
    traceback (FileExistsError, NotADirectoryError; the config reviewer): one line naming
    the path, and the file is left as it was."""
    from specfit.cli import main

    afile = tmp_path / "notes.txt"
    afile.write_text("precious\n")
    for argv in (
        ["demo", "--out", str(afile)],
        ["demo", "--out", str(afile / "sub")],
        ["config", "copy", "demo", str(afile / "x.yaml")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("specfit: error: ") and str(afile) in err, err
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert afile.read_text() == "precious\n"


def test_a_store_missing_an_array_is_refused_not_read_as_nan(tmp_path, capsys):
    """A store whose m1_index folder was deleted (or not copied) was summarised with
    m1_index all NaN and exported as an all-NaN map without a word (the config reviewer):
    the consolidated metadata still listed it. Refused naming the array."""
    import shutil

    from specfit.cli import main
    from specfit.pipeline import run

    run(tiny_config(tmp_path))
    broken = tmp_path / "copy.zarr"
    shutil.copytree(tmp_path / "results.zarr", broken)
    shutil.rmtree(broken / "m1_index")
    for argv in (["info", str(broken)], ["export", str(broken), "--fits", str(tmp_path / "f")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "is damaged: the array(s) m1_index listed in its metadata are missing" in err
    assert not (tmp_path / "f").exists()
