"""The built wheel works outside the clone: installed by file in a fresh venv, `specfit demo`
runs from an empty folder and `specfit config show` prints the shipped configs.

This is the CI step for the wheel (`.ci/run` runs it with the rest of the suite)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, env, timeout=900):
    r = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"{args}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_demo(tmp_path):
    try:
        import wheel  # noqa: F401  (setuptools < 70.1 needs it for bdist_wheel)
    except ImportError:
        import setuptools

        major, minor = (int(v) for v in setuptools.__version__.split(".")[:2])
        if (major, minor) < (70, 1):
            pytest.fail("building a wheel without isolation needs `wheel` (in the test extra)")
    # Build from a copy of what the wheel is made of, so the clone gets no build/ or egg-info.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "specfit", src / "specfit", ignore=shutil.ignore_patterns("__pycache__", "*.nb?")
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the clone must not leak
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src], tmp_path, env)
    (whl,) = dist.glob("specfit_solar-*.whl")
    venv = tmp_path / "venv"
    # The venv sees the system's dependencies; specfit itself only comes from the wheel.
    _run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv],
        tmp_path,
        env,
    )
    vpy = venv / "bin" / "python"
    _run([*pip, "--python", vpy, "install", "--no-deps", "-q", whl], tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    r = _run(
        [
            vpy,
            "-c",
            "import specfit, specfit.examples as e; print(specfit.__file__); print(e.config_dir())",
        ],
        work,
        env,
    )
    site = str(venv.resolve())
    for line in r.stdout.split():
        assert str(Path(line).resolve()).startswith(site), (line, "not from the venv's wheel")
    r = _run([venv / "bin" / "specfit", "config", "show", "aia1600"], work, env)
    assert r.stdout == (ROOT / "specfit" / "configs" / "aia1600.yaml").read_text()
    r = _run(
        [
            venv / "bin" / "specfit",
            "demo",
            "--out",
            "demo",
            "--set",
            "input.synthetic.shape=[16,16]",
            "--set",
            "input.synthetic.n_frames=200",
            "--set",
            "output.tile=8",
            "--cluster",
            "synchronous",
            "--no-plots",
        ],
        work,
        env,
    )
    assert "recovered vs true" in r.stdout and "m1_index" in r.stdout
    assert (work / "demo" / "results.zarr" / "zarr.json").exists()
