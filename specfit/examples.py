"""The example configs shipped inside the package (``specfit/configs/*.yaml``).

They are package data, so ``specfit config list|show|copy`` work from an installed wheel as
well as from a clone (where the repository's ``configs/`` folder links to the same files).
"""

from __future__ import annotations

from pathlib import Path

from specfit.errors import ConfigError

__all__ = ["config_dir", "list_configs", "config_path", "copy_config"]


def config_dir() -> Path:
    """The folder of the shipped example configs."""
    return Path(__file__).resolve().parent / "configs"


def _description(path: Path) -> str:
    """The first comment line of a config: its one-line description."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def list_configs() -> dict[str, str]:
    """Shipped config names (file stems, sorted) and their one-line descriptions."""
    return {p.stem: _description(p) for p in sorted(config_dir().glob("*.yaml"))}


def config_path(name: str) -> Path:
    """The file of the shipped config ``name`` (``aia1600`` or ``aia1600.yaml``).

    Raises
    ------
    ConfigError
        If no shipped config has that name (the message lists the names).
    """
    stem = name[:-5] if name.endswith(".yaml") else name
    p = config_dir() / f"{stem}.yaml"
    if not p.is_file():
        names = ", ".join(list_configs()) or "(none found)"
        raise ConfigError(f"no shipped config named {name!r}; choose one of: {names}")
    return p


def copy_config(name: str, dest: str | Path) -> Path:
    """Copy the shipped config ``name`` to ``dest`` (a file, or a folder for ``NAME.yaml``).

    The text is copied unchanged; its relative paths are then resolved from the new file's
    folder, so ``input.path`` and ``output.path`` usually need editing.

    Raises
    ------
    ConfigError
        Unknown name, or the target file exists (never overwritten).
    """
    src = config_path(name)
    dest = Path(dest).expanduser()
    target = dest / src.name if dest.is_dir() else dest
    if target.exists():
        raise ConfigError(
            f"{target} exists; specfit does not overwrite it: choose another DEST or move it away"
        )
    if not target.parent.is_dir():
        raise ConfigError(
            f"{target.parent} is not a folder; create it first or choose another DEST"
        )
    target.write_text(src.read_text())
    return target
