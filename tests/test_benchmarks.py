"""The benchmark scripts run end to end in their tiny ``--quick`` modes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_fit_speed_and_headline_quick(tmp_path):
    pytest.importorskip("distributed")
    out = _run("fit_speed.py", "--peers", "xarray")
    # one README-ready line per comparison, each naming its target where the issue sets one
    assert "specfit at its defaults" in out and "target >= 25x" in out
    assert "bare kernel M1" in out
    work = tmp_path / "hl"
    out = _run("headline.py", "--workdir", str(work), "--inputs", "zarr")
    assert "zarr input, 32² x" in out and "the floor of" in out
    # only what the script made is removed, and it removes all of it
    assert work.exists() and not any(work.iterdir())
