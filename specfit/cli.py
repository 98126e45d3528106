"""``specfit run | demo | init | plot | explore | info | config | export``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path

__all__ = ["main"]


def _positive_minutes(text: str) -> float:
    """argparse type of --longest-period: a positive, finite number of minutes."""
    import math

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of minutes (e.g. 30)")
    return v


def _probability(text: str) -> float:
    """argparse type of --pvalue: a p-value (or q-value) threshold in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a threshold in (0, 1] (e.g. 0.05)")
    return v


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set spectra.segments=2",
    )
    p.add_argument(
        "--cluster",
        default=None,
        help="local (default) | mpi (under mpiexec, >= 3 ranks) | synchronous | "
        "tcp://host:port | path/to/scheduler.json",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace an existing results store")
    g.add_argument("--resume", action="store_true", help="finish an interrupted run")
    p.add_argument("--report", default=None, metavar="FILE.html", help="dask performance report")


_DEBUG_HELP = "on an error, print the full traceback after the one-line message"


def _parser() -> argparse.ArgumentParser:
    from specfit._version import __version__

    ap = argparse.ArgumentParser(
        prog="specfit",
        description="Fit spectral models to the power spectrum of every pixel of an image series.",
    )
    ap.add_argument("--version", action="version", version=f"specfit {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a pipeline from a YAML config")
    p.add_argument("config", help="YAML config file (see configs/)")
    _add_run_flags(p)

    p = sub.add_parser("demo", help="synthetic frames -> full pipeline -> recovered vs true table")
    p.add_argument("--out", default="specfit-demo", help="output folder (default: specfit-demo)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG heatmaps")
    _add_run_flags(p)

    p = sub.add_parser(
        "init", help="inspect a folder of frames (metadata only) and write a commented config"
    )
    p.add_argument(
        "folder",
        help="folder of FITS frames or images, a quoted glob of them ('frames/*_1600_*.fits'), "
        "or a cube file",
    )
    p.add_argument("--out", default=None, help="config file to write (default: print it)")
    p.add_argument(
        "--longest-period",
        type=_positive_minutes,
        default=30.0,
        metavar="MIN",
        help="longest period of interest in minutes; sets spectra.segments (default 30)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--times",
        default=None,
        metavar="FILE",
        help="frame times of a .npy cube (a .npy of seconds, timedelta64 or datetime64, one per frame)",
    )

    p = sub.add_parser("info", help="summarise a results store")
    p.add_argument("results", help="a results store (the results.zarr that output.path names)")

    p = sub.add_parser("plot", help="PNG per map and one HTML page of all maps")
    p.add_argument("results", help="a results store (the results.zarr that output.path names)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: RESULTS_plots beside it, .zarr left out)",
    )
    p.add_argument(
        "--pvalue",
        type=_probability,
        default=None,
        help="hide the richer models' maps where their model-comparison p-value exceeds this "
        "(with --mask fdr: where the q-value exceeds it)",
    )
    p.add_argument(
        "--mask",
        choices=["none", "pixel", "fdr", "global"],
        default=None,
        help="significance mask of the richer models' maps: pixel = per-pixel p-value "
        "(--pvalue, default fit.alpha), fdr = field-wide Benjamini-Hochberg q-value (--pvalue, "
        "default fit.fdr_q), global = field-wide global level (fit.global_level); default "
        "pixel with --pvalue, else none (docs/significance.md)",
    )

    p = sub.add_parser("explore", help="browser explorer of a results store")
    p.add_argument("results", help="a results store (the results.zarr that output.path names)")
    p.add_argument(
        "--port", type=int, default=5006, help="port to serve on (default 5006; 0: a free one)"
    )
    p.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="FILE.py",
        help="user model file (or module) to load for the spectrum view (repeatable); files "
        "named inside the store are never imported",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="show a run still being written, as far as it has got (its other pixels missing)",
    )

    p = sub.add_parser("config", help="the example configs shipped with specfit")
    csub = p.add_subparsers(dest="config_command", required=True)
    csub.add_parser("list", help="names and one-line descriptions")
    c = csub.add_parser("show", help="print one shipped config")
    c.add_argument("name", help="a name from `specfit config list`")
    c = csub.add_parser("copy", help="copy a shipped config to a file or folder, to edit")
    c.add_argument("name", help="a name from `specfit config list`")
    c.add_argument("dest", help="a file, or an existing folder (NAME.yaml in it)")

    p = sub.add_parser("export", help="parameter maps as FITS files with the field's WCS")
    p.add_argument("results", help="a results store (the results.zarr that output.path names)")
    p.add_argument("--fits", required=True, metavar="DIR", help="folder for one FITS file per map")
    p.add_argument(
        "--maps",
        default=None,
        metavar="NAME,...",
        help="comma-separated map names (default: every (y, x) map of the store)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace FITS maps an earlier export wrote"
    )
    for p in sub.choices.values():
        # --debug after the command too (`specfit run CONFIG --debug`); SUPPRESS keeps the
        # subcommand from resetting a --debug given before it.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return ap


class _ReaderMayLeave:
    """A text stream for ``run`` and ``demo`` that goes on when its reader leaves: a closed
    pipe (``specfit run ... 2>&1 | head``, a ``tee`` or pager that exits) made the next
    progress line raise BrokenPipeError, which stopped the run half way with exit status 0.
    From the first such write on, the stream's file descriptor writes to os.devnull, and the
    run finishes its store."""

    def __init__(self, stream):
        self._stream = stream
        self._gone = False

    def _leave(self) -> None:
        self._gone = True
        # no file descriptor (or no fileno at all): the writes are dropped
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(fd, self._stream.fileno())
            finally:
                os.close(fd)

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._leave()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._leave()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    streams = sys.stdout, sys.stderr
    if args.command in ("run", "demo"):
        # (a stream that is None, closed at start: `>&-`, stays None, as Python made it)
        sys.stdout, sys.stderr = (s if s is None else _ReaderMayLeave(s) for s in streams)
    try:
        return _command(args)
    finally:  # main() called from Python: the caller's own streams again
        sys.stdout, sys.stderr = streams


def _command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="specfit: %(levelname)s: %(message)s",
    )
    from specfit.errors import SpecfitError, disk_full

    _plain_warnings()
    previous: dict = {}
    if args.command in ("run", "demo"):
        previous = _quiet_on_interrupt()
        _quiet_resource_tracker()
        args.store_stamp = _store_stamp(args)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # the reader of our output left (`specfit info STORE | head -3`): not an error of
        # ours; stdout goes nowhere from here so that Python's flush at exit is quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        # (An MPI job's scheduler and worker ranks never get here: on a signal they wait for
        # the client's close, see cluster.start_mpi, so only the client prints this line.)
        # Ctrl-C is a normal way to stop: one line on how to go on, no traceback (--debug shows
        # it).
        import traceback

        if args.debug:
            traceback.print_exc()
        # Release the interrupted frames now: a progress bar held there is closed (it ends
        # its line) before our line, not after it when the traceback is freed.
        traceback.clear_frames(exc.__traceback__)
        from specfit.cluster import end_progress_lines

        end_progress_lines()  # and a bar still held elsewhere: not on our line, not after it
        if isinstance(exc, _Terminated):
            # what SLURM (at the wall-time limit), timeout and kill send: the same line
            print(f"specfit: stopped by SIGTERM{_resume_hint(args)}", file=sys.stderr)
            return 143
        print(f"specfit: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except (SpecfitError, FileNotFoundError) as exc:
        # Every specfit error (and a missing file) is a message for the user naming the file
        # or key and the fix: printed alone (a config error lists one line per bad key), no
        # traceback unless asked for.
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"specfit: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        full = disk_full(exc)
        if full is None:
            said = _path_refused(exc)
            if said is None:
                raise
            # a folder that cannot be written (read-only, not a folder, no permission) for
            # plot, config copy or demo --out: one line naming it (it was a traceback)
            if args.debug:
                import traceback

                traceback.print_exc()
            print(f"specfit: error: {said}", file=sys.stderr)
            return 2
        # a full disk (or quota, or file-size limit) while writing the cube or finishing the
        # store: one line with what to do, not ~90 lines of zarr and dask internals
        if args.debug:
            import traceback

            traceback.print_exc()
        where = f" writing {full.filename}" if full.filename else ""
        store = None if full.filename else _results_path(args)
        if store is not None:  # zarr's own writes name no file: where the run was writing
            where = f" writing {store} (or its cube)"
        then = _resume_hint(args) or ", then run the command again"
        print(
            f"specfit: error: {full.strerror or full}{where}: free space (or raise the "
            f"limit){then}",
            file=sys.stderr,
        )
        return 2
    finally:
        # main() called from Python: the caller's own signal handlers again
        import signal

        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _plain_warnings() -> None:
    """specfit's own warnings as its log lines are printed, ``specfit: WARNING: <message>``
    (Python's default adds the path and line of the code that warned and that line's source,
    which say nothing to a user); other packages' warnings keep Python's form."""
    import warnings

    default = warnings.showwarning
    package = Path(__file__).resolve().parent

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, UserWarning) or package not in Path(filename).resolve().parents:
            return default(message, category, filename, lineno, file, line)
        print(f"specfit: WARNING: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = show


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (the cluster shut down, one line on how to go on)."""


def _quiet_on_interrupt() -> dict:
    """Ctrl-C and SIGTERM: silence the cluster's shutdown chatter first, then interrupt.

    Done in the handler (main thread, before KeyboardInterrupt is raised) because the dask
    client's event-loop thread starts logging the moment a waiting call is interrupted.
    SIGTERM (SLURM at the wall-time limit, ``timeout``, ``kill``) raises :class:`_Terminated`,
    a KeyboardInterrupt, so it takes Ctrl-C's path: the cluster is shut down and one line
    says how to resume, instead of the process vanishing without a word. Returns the
    handlers replaced, for :func:`main` to put back.
    """
    import signal

    def handler(signum: int, frame: object) -> None:
        from specfit.cluster import quiet_interrupted_cluster

        quiet_interrupted_cluster()
        raise _Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # a signal the process was started to ignore (nohup, a background job) stays ignored
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    return previous


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with its leak warning off.

    After Ctrl-C the local cluster's processes are stopped mid-task and a semaphore of theirs
    can outlive them; the tracker (a separate process, also on this terminal) removes it and
    says so after the line that tells how to resume. It takes its warning filters from the
    command line it is started with, so it is started here, before any cluster, with that
    one warning ignored; nothing else changes for it or for this process.
    """
    from multiprocessing import resource_tracker

    flag = "ignore:resource_tracker:UserWarning"
    sys.warnoptions.append(flag)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(flag)


def _path_refused(exc: OSError) -> str | None:
    """One line for an OSError that says a path cannot be used (read-only file system, no
    permission, a file where a folder is needed), naming it; None for others. The same
    words whether it was read or written."""
    import errno

    codes = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
    if exc.errno not in codes or not exc.filename:
        return None
    what = {
        errno.ENOTDIR: "a file is in the way of a folder",
        errno.EEXIST: "a file is in the way of a folder",
        errno.EISDIR: "it is a folder",
    }.get(exc.errno, exc.strerror or str(exc))
    return f"cannot use {exc.filename}: {what}; choose another path (or fix its permissions)"


def _resume_hint(args: argparse.Namespace) -> str:
    """How to finish an interrupted run or demo: the same command with --resume."""
    if args.command not in ("run", "demo"):
        return ""
    from specfit.cluster import mpi_ranks

    ranks = mpi_ranks()  # an MPI run resumes under mpiexec too
    cmd = ["mpiexec", "-n", str(ranks)] if ranks else []
    cmd += ["specfit", args.command]
    cmd += [args.config] if args.command == "run" else ["--out", args.out]
    for item in args.overrides:
        cmd += ["--set", item]
    if args.cluster:
        cmd += ["--cluster", args.cluster]
    store = _results_path(args)
    if store is not None:
        from specfit.store import is_complete
        from specfit.workspace import is_specfit_results

        complete = is_complete(store)
        before = getattr(args, "store_stamp", "not recorded")
        if getattr(args, "overwrite", False) and before not in (None, "not recorded"):
            if not complete and _store_stamp(args) == before:
                # an --overwrite run stopped before it replaced an unfinished store (another
                # config's, say): resuming that one is not what was asked
                return (
                    f"; stopped before {store} was replaced (it is as it was): run "
                    f"`{shlex.join(cmd)} --overwrite` again to start over"
                )
        if complete and before != "not recorded" and _store_stamp(args) != before:
            # the interrupt came after this run had finished the store (while it said so, or
            # shut its cluster down): nothing to redo
            return f"; {store} was finished by this run before the interrupt: it is complete"
        if complete or not is_specfit_results(store):
            # stopped before the new store was made (an --overwrite run still in its cube
            # stage, or a first run): there is nothing of this run to resume
            over = " --overwrite" if getattr(args, "overwrite", False) else ""
            kept = "the previous results are unchanged" if complete else "no results"
            return (
                f"; stopped before any tile was saved ({kept}): run `{shlex.join(cmd)}{over}` "
                "again to start over"
            )
    return f"; the finished part is kept: run `{shlex.join([*cmd, '--resume'])}` to complete it"


def _store_stamp(args: argparse.Namespace) -> tuple | None:
    """(complete, modification time of its metadata) of the store a run or demo writes, to
    tell afterwards whether this run finished it; None if there is none (yet)."""
    store = _results_path(args)
    if store is None:
        return None
    from specfit.store import is_complete

    try:
        return is_complete(store), (store / "zarr.json").stat().st_mtime_ns
    except OSError:
        return None


def _results_path(args: argparse.Namespace):
    """The results store an interrupted run or demo was writing, or None if unknown."""
    try:
        from specfit.config import load_config

        if args.command == "demo":  # where its --set options put it (output.path among them)
            from specfit.demo import config_for

            config = config_for(Path(args.out).resolve())
            return Path(load_config(config, args.overrides).output.path)
        return Path(load_config(args.config, args.overrides).output.path)
    except Exception:
        return None


def _dispatch(args) -> int:
    if args.command == "run":
        from specfit.pipeline import run

        ds = run(
            args.config,
            args.overrides,
            overwrite=args.overwrite,
            resume=args.resume,
            cluster=args.cluster,
            report=args.report,
        )
        from specfit.summary import summarise

        print(summarise(ds))
        return 0
    if args.command == "demo":
        from specfit.demo import demo

        demo(
            args.out,
            overrides=args.overrides,
            cluster=args.cluster,
            overwrite=args.overwrite,
            resume=args.resume,
            plots=not args.no_plots,
            report=args.report,
        )
        return 0
    if args.command == "init":
        from specfit.init import init_config

        report, text = init_config(
            args.folder,
            args.out,
            longest_period=60.0 * args.longest_period,
            force=args.force,
            times=args.times,
        )
        if args.out:
            print(report)
            print(f"wrote {args.out}; check it, then: specfit run {shlex.quote(str(args.out))}")
        else:  # the config on stdout (to redirect), the findings on stderr
            print(report, file=sys.stderr)
            print(text, end="")
        return 0
    if args.command == "info":
        import warnings

        from specfit.store import IncompleteStoreWarning, open_results
        from specfit.summary import summarise

        with warnings.catch_warnings():
            # The summary's "state:" line says it, with the fix.
            warnings.simplefilter("ignore", IncompleteStoreWarning)
            ds = open_results(args.results, allow_incomplete=True)
        print(summarise(ds, path=args.results))
        return 0
    if args.command == "plot":
        from specfit.viz import plot_results

        if args.mask == "global" and args.pvalue is not None:
            print(
                "specfit: error: --mask global uses the run's fit.global_level; drop --pvalue "
                "(it sets the threshold of --mask pixel or fdr)",
                file=sys.stderr,
            )
            return 2
        from specfit.store import plots_folder

        out = args.out or str(plots_folder(args.results))
        files = plot_results(
            args.results, out, pvalue_threshold=args.pvalue, significance=args.mask
        )
        print(f"wrote {len(files)} files to {out}")
        return 0
    if args.command == "explore":
        from specfit.viz import serve

        serve(
            args.results, port=args.port, address=args.address, show=args.show,
            models=args.models, allow_incomplete=args.allow_incomplete,
        )  # fmt: skip
        return 0
    if args.command == "config":
        return _config_command(args)
    if args.command == "export":
        from specfit.export import export_fits

        given = args.maps is not None  # "--maps ," names no map: refused, not every map
        maps = [m.strip() for m in args.maps.split(",") if m.strip()] if given else None
        files = export_fits(args.results, args.fits, maps=maps, overwrite=args.overwrite)
        print(f"wrote {len(files)} FITS file(s) to {args.fits}")
        return 0
    raise AssertionError(args.command)


def _config_command(args) -> int:
    from specfit import examples

    if args.config_command == "list":
        names = examples.list_configs()
        width = max(map(len, names), default=0)
        print(f"shipped configs (in {examples.config_dir()}):")
        for name, text in names.items():
            print(f"  {name:{width}s}  {text}")
        print(
            "print one: specfit config show NAME; copy one to edit: specfit config copy NAME DEST"
        )
        return 0
    if args.config_command == "show":
        print(examples.config_path(args.name).read_text(), end="")
        return 0
    target = examples.copy_config(args.name, args.dest)
    from specfit.config import load_config

    cfg = load_config(target)
    print(f"wrote {target}; its relative paths now resolve from {target.parent}:")
    print(f"  input.path:  {cfg.input.path}")
    print(f"  output.path: {cfg.output.path}")
    if cfg.input.kind != "synthetic" and not (cfg.input.path and Path(cfg.input.path).exists()):
        print("  (input.path does not exist here: edit it to point at your frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
