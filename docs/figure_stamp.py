"""Provenance for the JSON the figure scripts in docs/ write, and their common driver."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit_stamp(script: str) -> str:
    """The checked-out commit, "+changes" when the code, configs or ``script`` that ran
    differ from it (the figure scripts in docs/ stamp their JSON with it)."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run(
            git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        code = ["specfit", "configs", script]
        dirty = subprocess.run(git + ["diff", "--quiet", "HEAD", "--", *code]).returncode
    except OSError:
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")


def library_versions() -> str:
    """The numerical libraries a figure's numbers depend on, as "numpy 2.4.6, ..."."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("numpy", "scipy", "numba", "llvmlite"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} absent")
    return ", ".join(out)


def stamp(script: str, cpu_seconds: float | None = None) -> dict:
    """When, on which commit and machine a figure was measured (and its CPU time, if given)."""
    out = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit_stamp(script),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        # the same commit can round differently with other builds of these (2026-12-06: a
        # fresh numba/llvmlite moved single pixels of scipy- and crawl-sensitive figures)
        "libraries": library_versions(),
    }
    if cpu_seconds is not None:
        out["cpu_seconds"] = round(cpu_seconds, 1)
    return out


def run_parts(
    parts: dict[str, Callable[[], dict]], script: str, doc: str, argv: list[str] | None
) -> dict:
    """The command line of a script made of independent parts: ``--only`` re-runs some of
    them and keeps the other parts' entries in the JSON, each part stamped on its own."""
    name = Path(script).stem
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--only", default=",".join(parts), help="comma-separated: " + ", ".join(parts))
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / f"{name}.json")
    args = ap.parse_args(argv)
    result = json.loads(args.json.read_text()) if args.json.exists() else {}
    for part in args.only.split(","):
        t0 = time.process_time()
        entry = parts[part]()
        entry["stamp"] = stamp(script, time.process_time() - t0)
        result[part] = entry
        print(part, json.dumps(entry, indent=1), flush=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return result
