"""Deployment files (docker/, environment.yml, workflows/slurm_mpi.sh) agree with the package.

No Docker engine or SLURM runs in CI, so these check what can be checked statically: that
the conda environment lists every dependency of pyproject.toml with the same lower bound,
that the compose file wires a scheduler, scaled workers and a runner onto one image and one
data volume, and that the batch script is valid bash that launches ``--cluster mpi``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# pip name -> conda-forge name, where they differ (none so far; extras like dask[array]
# are handled by _req, and dask[distributed] below).
CONDA_NAME: dict[str, str] = {}


def _req(spec: str) -> tuple[str, str | None]:
    """'dask[array]>=2024.8' -> ('dask', '2024.8')."""
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(?:>=\s*([^,;\s]+))?", spec)
    assert m, spec
    return m.group(1).lower(), m.group(3)


def _pyproject_requirements() -> dict[str, str | None]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for items in meta.get("optional-dependencies", {}).values():
        # Extras that name the project itself (all = [NAME[solar,...]]) are not packages.
        reqs += [r for r in items if not r.startswith(f"{meta['name']}[")]
    out: dict[str, str | None] = {}
    for r in reqs:
        name, low = _req(r)
        out[CONDA_NAME.get(name, name)] = low
    # dask[distributed] is the separate `distributed` package on conda-forge.
    if any(r.replace(" ", "").startswith("dask[") and "distributed" in r for r in reqs):
        out["distributed"] = out["dask"]
    return out


def _pyproject_pins() -> dict[str, str]:
    """Requirements pinned to one version (``name==x.y``), by name."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [r for items in meta.get("optional-dependencies", {}).values() for r in items]
    return {r.split("==")[0].strip().lower(): r.replace(" ", "") for r in reqs if "==" in r}


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda: dict[str, str | None] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, low = _req(dep)
            conda[name] = low
    # a package conda-forge does not have is installed by the environment's pip section
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {r.split("==")[0].lower(): r for r in pip_section if "==" in r}
    wanted = _pyproject_requirements()
    missing = sorted(set(wanted) - set(conda) - set(pinned))
    assert not missing, f"environment.yml lacks {missing}; add them under dependencies"
    for name, spec in _pyproject_pins().items():
        assert pinned.get(name) == spec, (
            f"{name}: pyproject {spec}, environment.yml {pinned.get(name)}"
        )
    for name, low in wanted.items():
        if name in pinned:
            continue
        assert conda[name] == low, f"{name}: pyproject >= {low}, environment.yml >= {conda[name]}"
    py_low = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert conda["python"] == py_low.removeprefix(">=")
    assert "-e ." in pip_section and "--no-deps" in pip_section


def test_compose_wires_scheduler_workers_and_runner():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"scheduler", "worker", "runner"}
    images = {s["image"] for s in services.values()}
    assert len(images) == 1, "scheduler, workers and runner must run one image (same versions)"
    build = services["scheduler"]["build"]
    assert (ROOT / "docker" / build["context"] / build["dockerfile"]).resolve() == (
        ROOT / "docker" / "Dockerfile"
    )
    # Every service sees the data at the same path: workers write results.zarr blocks.
    mounts = {tuple(s["volumes"]) for s in services.values()}
    assert len(mounts) == 1 and next(iter(mounts))[0].endswith(":/data")
    sched_cmd = services["scheduler"]["command"]
    port = sched_cmd[sched_cmd.index("--port") + 1]
    assert "replicas" in services["worker"]["deploy"]
    assert f"tcp://scheduler:{port}" in services["worker"]["command"]
    runner = services["runner"]["command"]
    assert runner[:2] == ["specfit", "run"]
    assert runner[runner.index("--cluster") + 1] == f"tcp://scheduler:{port}"


def test_dockerfile_installs_all_extras_on_python311_slim():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert 'pip install ".[all]"' in text
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    # Every file the Dockerfile copies is let through the ignore file.
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for name in src.split():
            assert f"!{name}" in ignore or f"!{name}/" in ignore, name


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not found")
def test_slurm_script_is_valid_bash_and_launches_mpi(tmp_path):
    script = ROOT / "workflows" / "slurm_mpi.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--cluster mpi" in text and "#SBATCH" in text
    # Too few tasks is refused before anything is launched.
    res = subprocess.run(
        ["bash", str(script), "cfg.yaml"],
        env={"PATH": "/usr/bin:/bin", "SLURM_NTASKS": "2"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and ">= 3 MPI tasks" in res.stderr
    # The launch line: a fake `mpiexec` on PATH records its arguments.
    fake = tmp_path / "mpiexec"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args"\n')
    fake.chmod(0o755)
    res = subprocess.run(
        ["bash", str(script), "cfg.yaml", "--resume"],
        env={
            "PATH": f"{tmp_path}:/usr/bin:/bin",
            "SLURM_NTASKS": "8",
            "SLURM_CPUS_PER_TASK": "2",
            "SLURM_MEM_PER_CPU": "3000",
            "SPECFIT_LAUNCHER": "mpiexec",
            "SPECFIT_INTERFACE": "ib0",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    args = (tmp_path / "args").read_text().split()
    assert args[:5] == ["-n", "8", "specfit", "run", "cfg.yaml"]
    assert args[args.index("--cluster") + 1] == "mpi"
    assert "cluster.memory_limit=6000MiB" in args
    assert "cluster.threads_per_worker=2" in args
    assert "cluster.interface=ib0" in args
    assert args[-1] == "--resume"
