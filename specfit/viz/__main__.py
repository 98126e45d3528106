"""``python -m specfit.viz``: the explore/plot commands without the main CLI.

python -m specfit.viz RESULTS [--port 5006] [--address 127.0.0.1] [--show]
python -m specfit.viz plot RESULTS [--out DIR]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run ``explore`` (default) or ``plot``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plot":
        p = argparse.ArgumentParser(prog="python -m specfit.viz plot")
        p.add_argument("results", help="results.zarr")
        p.add_argument(
            "--out",
            default=None,
            help="output folder (default: RESULTS_plots beside it, .zarr left out)",
        )
        p.add_argument(
            "--pvalue", type=float, default=None, help="mask richer models where p > this"
        )
        a = p.parse_args(argv[1:])
        from specfit.store import plots_folder
        from specfit.viz.maps import plot_results

        out = a.out or plots_folder(a.results)
        for path in plot_results(a.results, out, pvalue_threshold=a.pvalue):
            print(path)
        return 0
    if argv and argv[0] == "explore":
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="python -m specfit.viz")
    p.add_argument("results", help="results.zarr")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.add_argument(
        "--models", action="append", default=[], metavar="FILE.py", help="user model file to load"
    )
    a = p.parse_args(argv)
    from specfit.viz.app import serve

    serve(a.results, port=a.port, address=a.address, show=a.show, models=a.models)
    return 0


def _main_one_line(argv: list[str] | None = None) -> int:
    """:func:`main`, with specfit's errors (a missing or unfinished store, a busy port) as one
    line and exit status 2, as ``specfit explore`` and ``specfit plot`` give them."""
    from specfit.errors import SpecfitError

    try:
        return main(argv)
    except (SpecfitError, FileNotFoundError) as exc:
        print(f"python -m specfit.viz: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_main_one_line())
