"""The command line end to end: run, info, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
