"""The one error family of specfit: every error a user can fix derives from SpecfitError.

The message of each is one line that names the file or config key at fault and the fix; the
CLI prints it as ``specfit: error: <message>`` with exit status 2 (``specfit --debug`` adds
the traceback). Each class also derives from the builtin it replaced (``ValueError`` for bad
values, ``RuntimeError`` for states), so code catching those keeps working.
"""

from __future__ import annotations

__all__ = [
    "SpecfitError",
    "ConfigError",
    "InputError",
    "StoreError",
    "RunError",
    "ClusterError",
    "NotFoundError",
    "missing_input",
    "disk_full",
]


class SpecfitError(Exception):
    """Base of every specfit error: a problem the user can fix, described in one line."""


class ConfigError(SpecfitError, ValueError):
    """A configuration problem, with a message that names the key and the fix."""


class InputError(SpecfitError, ValueError):
    """Bad input data: the message names the file or config key and says how to fix it."""


class StoreError(SpecfitError, RuntimeError):
    """A results store cannot be used as asked (exists, incomplete, or from another config)."""


class RunError(SpecfitError, RuntimeError):
    """A run could not finish; what is written is kept and ``--resume`` continues it."""


class ClusterError(SpecfitError, RuntimeError):
    """A cluster could not be started or reached; the message says what to change."""


class NotFoundError(SpecfitError, FileNotFoundError):
    """A file or store the user named does not exist (or is not what it should be): a
    results store, a user-model file."""


class TimeOfDayError(ValueError):
    """A time whose seconds run past the end of its minute outside a leap second (raised by
    :func:`specfit.io._base.strict_time`; the readers turn it into an :class:`InputError`
    naming the file and key)."""


def missing_input(key: str, path: object) -> InputError:
    """The error for an input path that does not exist, saying where relative paths start."""
    return InputError(
        f"{key} {path} does not exist; fix the path (a relative path in a config file is "
        "taken from that file's folder; one given with --set or from Python, from the current "
        "folder)"
    )


def disk_full(exc: BaseException | None) -> OSError | None:
    """The OSError of a full disk, an exceeded quota or file-size limit in ``exc`` or the
    exceptions it was raised from; None if there is none."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
