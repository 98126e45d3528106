"""Where a run may write, what it may delete, and how its inputs are recognised.

specfit deletes or replaces only what it created itself:

- the **work folder** ``<output.path>.specfit-work/`` beside the results (marked by the file
  ``specfit-work.json`` written when specfit creates it) holds the intermediate cube
  (``cube.zarr``) and the run lock; nothing else is ever put there;
- a **cube** (``cube.zarr``, or ``output.cube_path``) is specfit's when its root attrs say
  ``specfit_kind: cube``, written together with its first metadata;
- a **results store** is specfit's when its root attrs say ``specfit_kind: results`` (or, for
  stores of earlier versions, when it has ``specfit_version``, ``config_hash`` and the
  ``blocks_done`` array).

:func:`check_paths` compares every path a run writes with every path it reads before any
cluster starts or any byte is written, and :func:`input_fingerprint` records the inputs (file
names, sizes, modification times; a Zarr input's metadata and chunk listing) so that a cube or
an unfinished store is reused only for the inputs it was made from.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from specfit.config import Config
from specfit.errors import ConfigError, StoreError

__all__ = [
    "WORK_SUFFIX",
    "work_dir_for",
    "default_cube_path",
    "ensure_work_dir",
    "first_missing",
    "discard_new_work_dir",
    "zarr_attrs",
    "is_specfit_cube",
    "is_specfit_results",
    "is_empty_dir",
    "refuse_foreign_store",
    "foreign_entries",
    "refuse_foreign_entries",
    "remove_specfit_cube",
    "remove_specfit_tree",
    "check_paths",
    "glob_base",
    "check_report_path",
    "check_product_folder",
    "refuse_inside_specfit_folder",
    "input_fingerprint",
    "describe_change",
]

WORK_SUFFIX = ".specfit-work"
WORK_MARKER = "specfit-work.json"
_ZARR_META = {"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"}
_OS_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # written by file browsers
# written by remove_specfit_tree into a folder of specfit's it is about to delete (and kept to
# the end of the deletion): what lets a later run finish an interrupted deletion
REMOVING_MARKER = ".specfit-removing"

log = logging.getLogger("specfit")


def work_dir_for(results: str | Path) -> Path:
    """The folder specfit owns beside a results store: ``<results>.specfit-work``."""
    res = Path(results)
    return res.with_name(res.name + WORK_SUFFIX)


def default_cube_path(results: str | Path) -> Path:
    """Where the intermediate cube goes unless ``output.cube_path`` is set."""
    return work_dir_for(results) / "cube.zarr"


def is_empty_dir(path: Path) -> bool:
    """True for an existing folder with nothing in it."""
    return path.is_dir() and not any(path.iterdir())


def zarr_attrs(path: Path) -> dict | None:
    """Root attrs of a Zarr v3 group (read from its ``zarr.json``), or None if there is none."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def is_specfit_cube(path: Path) -> bool:
    """True if ``path`` is a cube specfit wrote (its marker attr is present)."""
    attrs = zarr_attrs(path)
    return bool(attrs) and attrs.get("specfit_kind") == "cube"


def is_specfit_results(path: Path) -> bool:
    """True if ``path`` is a results store specfit wrote (marker attr, or an earlier
    version's unmistakable layout)."""
    attrs = zarr_attrs(path)
    if not attrs:
        return False
    if attrs.get("specfit_kind") == "results":
        return True
    return (
        "specfit_version" in attrs
        and "config_hash" in attrs
        and (path / "blocks_done" / "zarr.json").exists()
    )


def refuse_foreign_store(path: Path) -> None:
    """Raise :class:`StoreError` if ``path`` is a folder that is neither a specfit results
    store nor empty: specfit never replaces such a folder, not even with ``--overwrite``."""
    if path.is_dir() and not (is_specfit_results(path) or is_empty_dir(path)):
        raise StoreError(
            f"{path} exists and is not a specfit results store; specfit never replaces it (not "
            "even with --overwrite): choose another output.path"
        )


# arrays of every results store besides its declared ``variables`` (``blocks_done``: stores
# written before tiles were named so)
_STORE_ARRAYS = {"y", "x", "freq", "tiles_done", "tiles_run", "blocks_done"}


def _chunk_layout(array: Path) -> tuple[str, str, tuple[int, ...]] | None:
    """How an array folder's chunks are named: (prefix, separator, chunk-grid extents), e.g.
    ``("c", "/", (2, 3))`` for a Zarr v3 array (``c/1/2``) or ``("", ".", (2, 3))`` for v2
    (``1.2``); None if its metadata cannot be read (then no chunk name is assumed)."""
    try:
        if (array / "zarr.json").is_file():
            meta = json.loads((array / "zarr.json").read_text())
            grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
            enc = meta.get("chunk_key_encoding", {})
            sep = enc.get("configuration", {}).get("separator")
            if enc.get("name", "default") == "default":
                prefix, sep = "c", sep or "/"
            else:  # "v2" key encoding inside a v3 array
                prefix, sep = "", sep or "."
        else:
            meta = json.loads((array / ".zarray").read_text())
            grid = meta["chunks"]
            prefix, sep = "", meta.get("dimension_separator") or "."
        shape = meta["shape"]
        extents = tuple(-(-int(n) // max(int(c), 1)) for n, c in zip(shape, grid, strict=True))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return prefix, sep, extents


def _chunk_key(rel: str, layout: tuple[str, str, tuple[int, ...]] | None, whole: bool) -> bool:
    """True if ``rel`` (a path inside an array folder, "/"-separated) is one of its chunks
    (``whole``) or a folder on the way to one (not ``whole``)."""
    if layout is None:
        return False
    prefix, sep, extents = layout
    if prefix:
        if rel == prefix:
            # a 0-d array's one chunk is "c" itself; "c/" is the folder of "c/i/j" chunks
            return not extents if whole else sep == "/"
        if not rel.startswith(prefix + sep):  # "c/1/2", or "c.1.2" with separator "."
            return False
        rel = rel[len(prefix) + len(sep) :]
    parts = rel.split(sep) if rel else []
    if sep != "/" and "/" in rel:
        return False
    if not extents:
        return whole and parts == ["0"] and not prefix
    if (len(parts) != len(extents)) if whole else not (0 < len(parts) < len(extents)):
        return False
    # zarr writes indices as plain decimals: "01", "00" or "²" (isdigit, not int's) are not
    return all(
        p.isascii() and p.isdigit() and p == str(int(p)) and int(p) < n
        for p, n in zip(parts, extents, strict=False)
    )


def _array_foreign(array: Path) -> list[str]:
    """What an array's folder holds besides its metadata and the chunks its chunk grid can
    have (paths relative to the folder; folders end in "/")."""
    layout = _chunk_layout(array)
    out = []
    for folder, dirs, files in os.walk(array):
        base = Path(folder).relative_to(array).as_posix()
        base = "" if base == "." else base + "/"
        for d in sorted(dirs):
            if not _chunk_key(base + d, layout, whole=False):
                out.append(base + d + "/")
        dirs[:] = sorted(d for d in dirs if _chunk_key(base + d, layout, whole=False))
        for f in sorted(files):
            if f in _OS_FILES or (not base and f in _ZARR_META):
                continue
            if not _chunk_key(base + f, layout, whole=True):
                out.append(base + f)
    return sorted(out)


def foreign_entries(path: Path) -> list[str]:
    """What a Zarr store (a specfit results store or cube) holds that specfit did not write:
    at its top, anything but the group's metadata and its arrays (folders with metadata); in a
    results store, arrays it does not declare (a user's own, added with zarr); and at the top
    of each array's folder, anything but the array's metadata and chunks. File browsers'
    bookkeeping (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``) aside."""
    if not path.is_dir():
        return []
    attrs = zarr_attrs(path) or {}
    declared = attrs.get("variables") if attrs.get("specfit_kind") == "results" else None
    known = None if not isinstance(declared, list) else {*declared, *_STORE_ARRAYS}
    out = []
    for e in sorted(path.iterdir(), key=lambda e: e.name):
        if e.name in _OS_FILES or e.name == REMOVING_MARKER:
            continue  # a file browser's own bookkeeping (or specfit's), not the user's work
        array = e.is_dir() and any((e / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup"))
        if not (e.name in _ZARR_META or array):
            out.append(e.name + ("/" if e.is_dir() else ""))
            continue
        if not array:
            continue
        if known is not None and e.name not in known:
            out.append(f"{e.name}/ (an array specfit did not write)")
            continue
        out += [f"{e.name}/{rel}" for rel in _array_foreign(e)]
    return out


def refuse_foreign_entries(path: Path, key: str, error=StoreError) -> None:
    """Raise ``error`` if specfit's store or cube ``path`` holds files specfit did not write:
    replacing or removing it would delete them, and specfit never deletes what it did not
    create. ``key``: the config key (or flag) the message names."""
    extra = foreign_entries(path)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise error(
            f"{key}: {path} holds files specfit did not write ({shown}); specfit would replace "
            "this folder and never deletes what it did not create: move them out of it, then "
            "run again"
        )


def _is_work_dir(path: Path) -> bool:
    """Specfit's work folder: it has the marker, or only temporary markers (a run marking it
    at this moment: a second run started with it saw "not made by specfit"), beside the
    mark of a run about to delete it."""
    if (path / WORK_MARKER).is_file():
        return True
    try:
        names = os.listdir(path)
    except OSError:
        return False
    tmp = f".{WORK_MARKER}."
    # (and the mark of a run deleting it: it writes REMOVING_MARKER before its rename)
    making = [n for n in names if n != REMOVING_MARKER]
    return bool(making) and all(n.startswith(tmp) and n[len(tmp) :].isdigit() for n in making)


def lrt_cache_dir(results: str | Path | None = None) -> Path:
    """Where LRT null references are cached on disk (:func:`specfit.kernels.fitting.lrt_reference`).

    A run keeps them in its work folder (``<output.path>.specfit-work/lrt``), shared by all its
    workers; the stage API in ``$SPECFIT_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/specfit/lrt`` (default ``~/.cache/specfit/lrt``). The values never
    depend on the folder: a reference is a pure function of its key.
    """
    if results is not None:
        return work_dir_for(results) / "lrt"
    env = os.environ.get("SPECFIT_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "lrt"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "specfit" / "lrt"


def ensure_work_dir(results: str | Path, key: str = "output.path") -> Path:
    """Create (or reuse) the work folder beside ``results`` and mark it as specfit's.

    ``key`` is the config key that messages name (``output.path`` or ``output.cube_path``).

    Raises
    ------
    ConfigError
        If the folder exists and is not specfit's, or cannot be created.
    """
    work = work_dir_for(results)
    sweep_removals(Path(results))
    if work.exists() and not (_is_work_dir(work) or is_empty_dir(work)):
        raise ConfigError(
            f"{key}: {work} exists and was not made by specfit; specfit keeps its work "
            f"files there, so move that folder away or choose another {key}"
        )
    created = not work.exists()
    tmp = work / f".{WORK_MARKER}.{os.getpid()}"
    try:
        work.mkdir(parents=True, exist_ok=True)
        marker = work / WORK_MARKER
        if not marker.exists():
            tmp.write_text(
                json.dumps(
                    {
                        "created_by": "specfit",
                        "results": str(Path(results)),
                        "note": "specfit's intermediate files for these results; safe to delete "
                        "when no run is going on",
                    },
                    indent=1,
                )
                + "\n"
            )
            os.replace(tmp, marker)
    except OSError as exc:
        # what this call made goes again (a full disk left the folder with an empty temporary
        # marker, which every later run then refused as "not made by specfit")
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            if created:
                work.rmdir()
        fix = (
            "free space on that disk (or raise the quota), or choose another folder"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "choose a folder you can write to"
        )
        raise ConfigError(f"{key}: cannot create {work} ({exc.strerror or exc}); {fix}") from None
    return work


def first_missing(path: str | Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet, or None."""
    p = _resolved(path)
    out = None
    while not p.exists() and p != p.parent:
        out, p = p, p.parent
    return out


def discard_new_work_dir(results: str | Path, created: Path | None) -> None:
    """After a run that stopped before writing anything (a refusal), remove what it made: its
    work folder, if it holds nothing but specfit's marker and lock, and the folders above it
    that the run created (``created``: :func:`first_missing` of the work folder, taken before
    the run) while they are empty. Nothing that existed before is touched."""
    work = work_dir_for(results)
    if created is None or not work.is_dir():
        return
    if not {e.name for e in work.iterdir()} <= {WORK_MARKER, "lock", "lock.json"}:
        return
    shutil.rmtree(work)
    p, stop = _resolved(work).parent, _resolved(created)
    while p == stop or stop in p.parents:
        try:
            p.rmdir()  # only an empty folder
        except OSError:
            return
        p = p.parent


def remove_specfit_cube(path: Path) -> bool:
    """Delete a cube only if specfit's marker says it wrote it and nothing else was put in it;
    returns True if deleted."""
    if path.is_dir() and is_specfit_cube(path) and not foreign_entries(path):
        remove_specfit_tree(path)
        return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


_REMOVING = ".specfit-removing-"


def sweep_removals(path: Path) -> None:
    """Delete what an interrupted :func:`remove_specfit_tree` of ``path`` left: the folders
    ``.<name>.specfit-removing-<host>-<pid>`` beside it whose process on this host is gone (a store renamed by
    specfit to be deleted; Ctrl-C during the deletion left it, hidden, at full size). Those
    of a live process are its deletion going on, and are left to it."""
    import socket

    path = Path(path)
    prefix = f".{path.name}{_REMOVING}"
    try:
        found = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return
    for trash in found:
        host, _, pid = trash.name[len(prefix) :].rpartition("-")
        if host and host != socket.gethostname():
            continue  # another machine's (a shared file system): its pid says nothing here
        # this process has none going on (it deletes its own in the call that makes it): one
        # of its pid is an earlier process's (pid 1 in every container run)
        live = pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))
        if not pid.isdigit() or live:
            continue
        if not (trash / REMOVING_MARKER).is_file():
            # a folder of that name that specfit did not mark (a user's, or one left by a
            # version before the marker): specfit never deletes what it did not create
            log.warning(
                "left %s: named like the rest of an interrupted replacement, but it does not "
                "carry specfit's mark (%s); delete it yourself if it is not yours",
                trash,
                REMOVING_MARKER,
            )
            continue
        try:
            _delete_marked(trash)
        except OSError as exc:
            log.warning("could not delete %s, left by an interrupted run (%s)", trash, exc)
        else:
            log.info("deleted %s, the rest of a replacement an interrupted run began", trash)


def _delete_marked(trash: Path) -> None:
    """Delete a folder marked with :data:`REMOVING_MARKER`, the mark last: a deletion cut
    short leaves a folder that still says it is specfit's to delete."""
    for entry in trash.iterdir():
        if entry.name == REMOVING_MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (trash / REMOVING_MARKER).unlink(missing_ok=True)
    trash.rmdir()


def remove_specfit_tree(path: Path) -> None:
    """Delete a store or cube of specfit's (the caller has checked that) without ever leaving
    a half-deleted one where it was: the folder is first renamed beside itself (atomic), then
    deleted. A deletion that fails (a file that cannot be removed) leaves the whole renamed
    folder, never a store at ``path`` that still says it is complete.

    Raises
    ------
    StoreError
        If the folder cannot be renamed or deleted, naming it and the cause.
    """
    path = Path(path)
    # a folder whose entries cannot be deleted (no write permission) would stop rmtree half
    # way: the old store half gone and no new one; so look first and delete nothing
    for folder, _, _ in os.walk(path):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot replace {path}: {folder} is not writable, so its files cannot be "
                "deleted; nothing was deleted: make it writable (chmod -R u+w) or choose "
                "another output.path"
            )
    sweep_removals(path)
    import socket

    trash = path.with_name(f".{path.name}{_REMOVING}{socket.gethostname()}-{os.getpid()}")
    try:
        # the mark travels with the rename: an interrupted deletion is then recognisably
        # specfit's (sweep_removals deletes only marked folders)
        (path / REMOVING_MARKER).write_text(f"{path}\n")
        os.replace(path, trash)
    except OSError as exc:
        raise StoreError(
            f"cannot replace {path}: renaming it to delete it failed ({exc.strerror or exc}); "
            "nothing was deleted: check the permissions of its folder"
        ) from None
    try:
        _delete_marked(trash)
    except OSError as exc:
        raise StoreError(
            f"cannot delete the old {path.name}, moved to {trash} to replace it "
            f"({exc.strerror or exc}: {exc.filename}); {path} is free: delete {trash} by hand "
            "once its permissions allow"
        ) from None


# ----------------------------------------------------------------------------- path checks
def _resolved(p: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(p)))).resolve()


def glob_base(p: str) -> str:
    """The folder part of a glob before its first wildcard (the glob itself if none). A path
    that exists as written is not a glob (a folder named ``AIA [1600]``)."""
    if os.path.exists(os.path.expanduser(p)):
        return p
    parts = Path(p).parts
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return str(Path(*parts[:i])) if i else "."
    return p


def _inside(a: Path, b: Path) -> bool:
    """True if ``a`` is strictly below ``b``."""
    return a != b and b in a.parents


def _check_writable(key: str, path: Path) -> None:
    """One-line errors for a target that is a file, sits below a file, or cannot be written."""
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{key}: {path} is a file, not a folder; give a path for a new folder")
    anc = path.parent
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ConfigError(
            f"{key}: {path} lies below {anc}, which is a file; give a path in a folder"
        )
    target = path if path.exists() else anc
    if not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}: {path}: no permission to write in {target}; choose a folder you can write to"
        )


def _input_paths(cfg: Config) -> list[tuple[str, Path]]:
    """(key, resolved path) of every local input: ``input.path`` (a glob's folder),
    ``input.times_csv`` and ``input.times``."""
    out = []
    for key, value in (
        ("input.path", cfg.input.path),
        ("input.times_csv", cfg.input.times_csv),
        ("input.times", cfg.input.times),
    ):
        if value and "://" not in value:
            out.append((key, _resolved(glob_base(value))))
    return out


def check_paths(cfg: Config, cube_path: Path) -> None:
    """Refuse any run whose outputs would touch its inputs or someone else's files.

    Checked before any cluster starts or anything is written: the results store, the work
    folder and the cube must not be, contain, or lie inside an input (``input.path``,
    ``input.times_csv``, ``input.times``) or each other; existing targets must be specfit's
    own (or empty folders); and each must be creatable (not below a file, writable).

    Raises
    ------
    ConfigError
        One line naming the config key, the path and the fix.
    StoreError
        If ``output.path`` is a folder of other files (not a specfit store, not empty).
    """
    if "://" in cfg.output.path:
        return  # a remote store: nothing local to compare
    out = _resolved(cfg.output.path)
    work = work_dir_for(out)
    cube = _resolved(cube_path)
    user_cube = bool(cfg.output.cube_path)
    inputs = _input_paths(cfg)
    targets = [("output.path", out), ("output.path", work)]
    if user_cube:
        targets.append(("output.cube_path", cube))
    for tkey, t in targets:
        what = "work folder of output.path" if t == work else tkey
        for ikey, i in inputs:
            if t == i:
                raise ConfigError(
                    f"{tkey}: {t} is the input ({ikey}); specfit never writes over its input, "
                    f"choose another {tkey}"
                )
            if _inside(t, i):
                raise ConfigError(
                    f"{tkey}: the {what} {t} lies inside the input ({ikey}: {i}); choose "
                    f"an {tkey} outside it"
                )
            if _inside(i, t):
                raise ConfigError(
                    f"{tkey}: the input ({ikey}: {i}) lies inside the {what} {t}; choose "
                    f"an {tkey} that does not contain the input"
                )
    if user_cube:
        if cube == out or _inside(cube, out) or _inside(out, cube):
            raise ConfigError(
                f"output.cube_path: {cube} and output.path {out} overlap; give them separate "
                "folders"
            )
        if cube.name.endswith(".partial"):
            # the name specfit writes a cube under before it is complete (another run's
            # "c.zarr" is written as "c.zarr.partial", under another lock)
            raise ConfigError(
                f"output.cube_path: {cube} ends in .partial, the name specfit gives a cube "
                "while it writes it; choose another name"
            )
    # Another store's work folder holds that run's own cube, under that run's lock only: a cube
    # put there would be rewritten under a running fit (a reviewer made one store from two
    # datasets that way); inside a results store or cube, what this run writes would be
    # another store's foreign files, and a work folder is documented as safe to delete.
    what = {
        "results": "a results store",
        "cube": "a cube",
        "work": "the work folder of another results store",
    }
    for key, target in [("output.path", out)] + ([("output.cube_path", cube)] if user_cube else []):
        for kind, parent in _specfit_kinds_at_or_above(target.parent):
            if parent != work:  # this run's own work folder is its default cube's place
                raise ConfigError(
                    f"{key}: {target} lies in {parent}, {what[kind]} of specfit's; choose a "
                    f"{key} outside it"
                )
    _check_writable("output.path", out)
    # A run creates its work folder (and lock) before the store, so a store without its marker
    # beside a work folder may be one that another run is starting to write: that case is
    # decided under the lock (pipeline), which names the other run.
    if not work.exists():
        refuse_foreign_store(out)
    if user_cube:
        _check_writable("output.cube_path", cube)
        for c in (cube, cube.with_name(cube.name + ".partial")):
            if c.exists() and not (is_specfit_cube(c) or is_empty_dir(c)):
                raise ConfigError(
                    f"output.cube_path: {c} exists and is not a cube written by specfit; specfit "
                    "replaces only its own cubes, so choose a new or empty folder"
                )
    if work.exists() and not (_is_work_dir(work) or is_empty_dir(work)):
        raise ConfigError(
            f"output.path: {work} exists and was not made by specfit; specfit keeps its work "
            "files there, so move that folder away or choose another output.path"
        )


def check_report_path(cfg: Config, report: str | os.PathLike | None) -> None:
    """Refuse a performance report (``--report`` / ``cluster.report``) that would replace
    anything but an earlier report, or land in an input or an output folder.

    Checked with the other paths, before any work: the report is written when the run ends,
    so a bad path found then would cost the whole run (or silently replace a user's file).

    Raises
    ------
    ConfigError
        One line naming the option, the path and the fix.
    """
    if report is None:
        return
    key = "--report/cluster.report"
    path = _resolved(Path(report).expanduser())
    if path.is_dir():
        raise ConfigError(
            f"{key}: {path} is a folder; give a file name, e.g. {path / 'report.html'}"
        )
    if path.exists():
        try:
            with open(path, "rb") as fh:
                head = fh.read(65536)
        except OSError as exc:
            raise ConfigError(
                f"{key}: {path} cannot be read ({exc}); choose another file"
            ) from None
        if b"Dask Performance Report" not in head:
            raise ConfigError(
                f"{key}: {path} exists and is not a dask performance report; specfit replaces "
                "only its own reports, so choose another file name"
            )
    guarded = _input_paths(cfg)
    for k, value in (("output.path", cfg.output.path), ("output.cube_path", cfg.output.cube_path)):
        if value and "://" not in value:
            base = _resolved(glob_base(value))
            guarded.append((k, base))
            if k == "output.path":
                guarded.append((k, work_dir_for(base)))
    # another run's store, cube or work folder: a file there would make it a store holding
    # files specfit did not write (its --overwrite then refuses it)
    guarded += _specfit_folders_at_or_above(path.parent)
    for k, base in guarded:
        if path == base or _inside(path, base):
            raise ConfigError(f"{key}: {path} lies inside {k} ({base}); write the report elsewhere")
    _check_writable(key, path.parent)


def _specfit_folders_at_or_above(target: Path) -> list[tuple[str, Path]]:
    """Every specfit store, cube or work folder that ``target`` is or lies inside."""
    return [
        ("a specfit work folder" if kind == "work" else "a specfit store", folder)
        for kind, folder in _specfit_kinds_at_or_above(target)
    ]


def refuse_inside_specfit_folder(path: str | os.PathLike, option: str) -> None:
    """Refuse a file (``specfit init --out``) that would land in a specfit store, cube or
    work folder: that store would then hold a file specfit did not write, which its
    ``--overwrite`` refuses. ConfigError naming ``option``, the folder and the fix."""
    target = _resolved(path)
    for what, folder in _specfit_folders_at_or_above(target.parent):
        raise ConfigError(f"{option} {path} lies inside {what} ({folder}); write it elsewhere")


def _specfit_kinds_at_or_above(target: Path) -> list[tuple[str, Path]]:
    """Every specfit results store, cube or work folder that ``target`` is or lies inside,
    nearest first, as (``"results"``, ``"cube"`` or ``"work"``, folder)."""
    found = []
    for p in (target, *target.parents):
        if not p.is_dir():
            continue
        if is_specfit_results(p):
            found.append(("results", p))
        elif is_specfit_cube(p):
            found.append(("cube", p))
        elif _is_work_dir(p):
            found.append(("work", p))
    return found


def check_product_folder(out: str | os.PathLike, ds: Any, option: str) -> None:
    """Refuse a folder for maps drawn or exported from a results store (``specfit plot
    --out``, ``specfit export --fits``) that is the store itself, lies inside it or its work
    folder, or is (or lies inside) the folder of the frames the run read (``source``).

    Files put there would become part of what they came from: a store holding files specfit
    did not write (which ``--overwrite`` then refuses), or FITS maps read as frames by the
    next run on that folder.

    Raises
    ------
    ConfigError
        One line naming the option, the folder and the fix.
    """
    target = _resolved(out)
    guarded: list[tuple[str, Path]] = []
    store = getattr(ds, "encoding", {}).get("source")
    if store and "://" not in str(store):
        guarded += [("the results store", _resolved(store))]
        guarded += [("the results store's work folder", work_dir_for(_resolved(store)))]
    source = getattr(ds, "attrs", {}).get("source")
    if isinstance(source, str) and source and "://" not in source:
        base = _resolved(glob_base(source))
        if base.is_dir():
            guarded.append(("the folder of the run's input frames", base))
    # whatever Dataset was given (xarray operations drop ``encoding``): any specfit store,
    # cube or work folder at or above the target
    guarded += _specfit_folders_at_or_above(target)
    for what, base in guarded:
        if target == base or _inside(target, base):
            raise ConfigError(
                f"{option} {out}: is or lies inside {what} ({base}); choose a folder outside it"
            )


# ----------------------------------------------------------------------------- fingerprints
def _stat_record(path: str, rel: str) -> list:
    try:
        st = os.stat(path)
        return [rel, st.st_size, st.st_mtime_ns]
    except OSError:
        return [rel, None, None]


def _input_files(path: str, pattern: str) -> list[str]:
    """The files a reader may read for ``input.path``: every file of a Zarr store; else a
    glob's or a folder's (``pattern``) frame files (FITS, images; a ``notes.txt`` beside them
    is never read, so adding one is no change), or the file, as the readers list them
    (:func:`specfit.io.input_names`); none for a path that does not exist."""
    from specfit.errors import InputError
    from specfit.io import FITS_SUFFIXES, IMAGE_SUFFIXES, input_names

    if os.path.isdir(path) and (
        path.rstrip("/").lower().endswith(".zarr")
        or any(os.path.exists(os.path.join(path, m)) for m in (".zarray", ".zgroup", "zarr.json"))
    ):
        out = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            out.extend(os.path.join(root, f) for f in sorted(files))
        return out
    try:
        names = input_names(path, pattern)[0]
    except InputError:  # missing: the reader says so, with the fix
        return []
    if os.path.isfile(path):
        return names
    return [n for n in names if n.lower().endswith(FITS_SUFFIXES + IMAGE_SUFFIXES)]


def input_fingerprint(cfg: Config, data: Any = None) -> dict[str, Any]:
    """What the inputs are right now: a hash plus a summary that can say what changed.

    Built-in synthetic inputs are described by their ``input.synthetic`` settings (the frames
    follow from them); sunpy objects in memory (``data``) by a token of their data, times and
    scaling (they have no files whose stamps could show a change). Otherwise every input file counts by name, size and modification time;
    a Zarr store's metadata files also by their content (its chunks by name, size and time).
    A file rewritten with the same name, size and modification time is not noticed.

    Returns
    -------
    dict
        ``hash`` (hex), ``files``, ``bytes``, ``newest`` (ISO time of the newest file).
    """
    inp = cfg.input
    if data is not None:
        from specfit.io.sunpy_objects import open_sunpy

        token = str(open_sunpy(data, inp).attrs["input_token"])
        return {"hash": hashlib.sha256(token.encode()).hexdigest()[:16], "memory": True}
    if inp.kind == "synthetic":
        text = json.dumps(inp.synthetic.model_dump(mode="json"), sort_keys=True)
        return {"hash": hashlib.sha256(text.encode()).hexdigest()[:16], "synthetic": True}
    h = hashlib.sha256()
    n, total, newest = 0, 0, 0
    for key, value, pattern in (
        ("path", inp.path, inp.pattern),
        ("times_csv", inp.times_csv, "*"),
        ("times", inp.times, "*"),
    ):
        if not value:
            continue
        h.update(f"\n{key}={value}\n".encode())
        if "://" in value:
            continue  # remote: only the address is known here
        base = value.rstrip("/")
        for f in _input_files(value, pattern):
            rel = os.path.relpath(f, base) if os.path.isdir(base) else f
            rec = _stat_record(f, rel)
            if os.path.basename(f) in _ZARR_META:
                try:  # metadata is small; its content says shape, dtype, attrs
                    rec.append(hashlib.sha256(Path(f).read_bytes()).hexdigest())
                except OSError:
                    rec.append(None)
            h.update(json.dumps(rec).encode())
            n += 1
            total += rec[1] or 0
            newest = max(newest, rec[2] or 0)
    return {
        "hash": h.hexdigest()[:16],
        "files": n,
        "bytes": total,
        "newest": _dt.datetime.fromtimestamp(newest / 1e9, _dt.UTC).isoformat(timespec="seconds")
        if newest
        else "",
    }


def describe_change(old: dict | None, new: dict) -> str | None:
    """None if the fingerprints match, else a short phrase saying what changed."""
    if old is None or old.get("hash") == new.get("hash"):
        return None
    if new.get("synthetic") or old.get("synthetic"):
        return "the synthetic input settings changed"
    if new.get("memory") or old.get("memory"):
        return "the frames given in memory (data=) differ"
    parts = []
    for key, label in (("files", "files"), ("bytes", "bytes"), ("newest", "newest file time")):
        if old.get(key) != new.get(key):
            parts.append(f"{label} {old.get(key)} -> {new.get(key)}")
    if not parts:
        parts.append("file names or modification times differ")
    return "the input changed (" + ", ".join(parts) + ")"
