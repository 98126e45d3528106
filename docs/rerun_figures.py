"""Re-run every figure script that the README and docs quote, in two chains side by side.

    python docs/rerun_figures.py WORKDIR [--only NAME,NAME] [--list]

The figures in README.md and docs/ are quoted only from runs made on the day they are
quoted; this runs the scripts that make them (each writes its JSON in docs/ and, where it
draws one, its picture in docs/img/), logs each to ``WORKDIR/logs/NAME.log`` and prints how
long each took and whether it failed. Stores and inputs go under ``WORKDIR``, never into the
repository. ``git diff docs/`` then shows which figures moved; edit the prose that quotes
them (and its date) by hand.

The two chains run at ``nice 19`` side by side (about 80 min on two cores, the longest part
being ``recovery``). The timing benchmarks in ``benchmarks/`` are not run here: they need a
quiet machine, see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# (name, command) in order; "{w}" is WORKDIR. The legacy store with specfit's own solver
# must exist before legacy_m2_choice, and make_realdata_figures' legacy run before
# legacy_pipeline_choice, so they keep their order within a chain.
CHAINS: list[list[tuple[str, list[str]]]] = [
    [
        ("recovery", [PY, "docs/recovery.py", "--json", "docs/recovery.json"]),
        ("lrt_calibration", [PY, "docs/lrt_calibration.py"]),
        ("lrt_tail", [PY, "docs/lrt_tail.py"]),
    ],
    [
        ("realdata", [PY, "docs/make_realdata_figures.py", "--out", "{w}/realdata"]),
        (
            "legacy_specfit_run",
            [
                PY, "-m", "specfit.cli", "run", "configs/legacy.yaml",
                "--set", "fit.optimizer=specfit",
                "--set", "output.path={w}/legacy_specfit/results.zarr",
                "--set", "cluster.dashboard=false", "--overwrite",
            ],
        ),
        ("legacy_m2_choice", [PY, "docs/legacy_m2_choice.py", "{w}/legacy_specfit/results.zarr"]),
        (
            "legacy_pipeline_choice",
            [
                PY, "docs/legacy_m2_choice.py", "{w}/legacy_specfit/results.zarr",
                "--every", "8", "--run", "{w}/realdata/legacy/results.zarr",
                "--json", "docs/legacy_pipeline_choice.json",
            ],
        ),
        ("box_dof_aia", [PY, "docs/box_dof_aia.py", "--out", "{w}/box_dof_aia"]),
        ("hf_steepening", [PY, "docs/hf_steepening.py"]),
        (
            "significance_null_field",
            [PY, "docs/significance_null_field.py", "{w}/null_field", "--seeds", "1", "2", "3",
             "4", "5", "6"],
        ),
        (
            "significance_null_field_12.01",
            [PY, "docs/significance_null_field.py", "{w}/null_field_1201", "--seeds", "3",
             "--cadence", "12.01"],
        ),
        ("fitting_simulations", [PY, "docs/fitting_simulations.py"]),
        ("spectra_simulations", [PY, "docs/spectra_simulations.py"]),
        (
            "cluster_kinds",
            [PY, "docs/cluster_kinds.py", "{w}/cluster_kinds", "--json",
             "docs/cluster_kinds.json"],
        ),
    ],
]  # fmt: skip


def run_chain(chain, workdir: Path, only: set[str] | None, results: dict) -> None:
    """Run one chain's commands in order, each logged; a failure does not stop the chain."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name, cmd in chain:
        if only and name not in only:
            continue
        argv = ["nice", "-n", "19"] + [c.replace("{w}", str(workdir)) for c in cmd]
        log = workdir / "logs" / f"{name}.log"
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        results[name] = (rc.returncode, time.perf_counter() - t0)
        state = "ok" if rc.returncode == 0 else f"FAILED (exit {rc.returncode}), see {log}"
        print(f"{name}: {state}, {results[name][1]:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path, help="a folder for the runs' stores and logs")
    ap.add_argument("--only", default=None, help="comma-separated step names (see --list)")
    ap.add_argument("--list", action="store_true", help="print the steps and stop")
    args = ap.parse_args(argv)
    if args.list:
        for i, chain in enumerate(CHAINS, 1):
            for name, cmd in chain:
                print(f"chain {i}: {name}: {' '.join(Path(c).name if c == PY else c for c in cmd)}")
        return 0
    only = set(args.only.split(",")) if args.only else None
    known = {name for chain in CHAINS for name, _ in chain}
    if only and only - known:
        ap.error(f"unknown step(s) {sorted(only - known)}; --list shows the steps")
    (args.workdir / "logs").mkdir(parents=True, exist_ok=True)
    results: dict = {}
    threads = [
        threading.Thread(target=run_chain, args=(c, args.workdir.resolve(), only, results))
        for c in CHAINS
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = sorted(n for n, (rc, _) in results.items() if rc)
    print("failed: " + (", ".join(failed) if failed else "none"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
