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

    The text is copied with its comments; the relative paths that pointed from the package's
    folder are rewritten for the copy's: ``input.path`` to the absolute path it named when
    that exists (the clone's data) and is not where synthetic frames are written, else like
    ``output.path`` without its leading ``../``, so beside the copy (``aia1600-results/results.zarr``, not a folder two levels up).

    Raises
    ------
    ConfigError
        Unknown name, or the target file exists (never overwritten).
    """
    src = config_path(name)
    folder = str(dest).endswith(("/", "\\"))  # "cp/": a folder, even one not there yet
    dest = Path(dest).expanduser()
    if folder and not dest.is_dir():
        raise ConfigError(f"{dest} is not a folder; create it first or choose another DEST")
    target = dest / src.name if dest.is_dir() else dest
    if target.exists():
        raise ConfigError(
            f"{target} exists; specfit does not overwrite it: choose another DEST or move it away"
        )
    if not target.parent.is_dir():
        raise ConfigError(
            f"{target.parent} is not a folder; create it first or choose another DEST"
        )
    target.write_text(_paths_for_copy(src, target.name))
    return target


# The shipped configs' note on where their relative paths start (true only in the package)
_SHIPPED_PATHS_NOTE = (
    "# Relative paths are resolved from this file's own folder, specfit/configs/ (the repo's\n"
    "# configs/ links there), so ../../ is the clone's root. From an installed package:\n"
    "#   specfit config copy NAME DEST, then edit input.path and output.path.\n"
)


def _paths_for_copy(src: Path, name: str | None = None) -> str:
    """``src``'s text with its relative input/output paths rewritten for a copy elsewhere
    (named ``name``), and the comments that describe the shipped file's place made the copy's."""
    import yaml

    text = src.read_text()
    raw = yaml.safe_load(text) or {}
    # a synthetic input's path is where its frames are written: beside the copy too
    synthetic = (raw.get("input") or {}).get("kind") == "synthetic"
    for section in ("input", "output"):
        value = (raw.get(section) or {}).get("path")
        if not isinstance(value, str) or Path(value).is_absolute() or "://" in value:
            continue
        named = (src.parent / value).resolve()
        parts = Path(value).parts
        while parts and parts[0] in ("..", "."):
            parts = parts[1:]
        keep = section == "input" and named.exists() and not synthetic
        new = str(named) if keep else str(Path(*parts))
        text = text.replace(f"path: {value}", f"path: {new}", 1)
    text = text.replace(
        _SHIPPED_PATHS_NOTE,
        "# Relative paths are resolved from this file's own folder; input.path and output.path\n"
        "# were rewritten for it when it was copied: check them.\n",
    )
    if name:
        text = text.replace(f"specfit run configs/{src.name}", f"specfit run {name}")
    note = (
        f"# Copied from specfit's shipped config {src.stem}: paths made for this file's folder.\n"
    )
    return note + text
