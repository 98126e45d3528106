"""The example configs ship inside the package; `specfit config list|show|copy` print them."""

from __future__ import annotations

from pathlib import Path

import pytest

from specfit.cli import main
from specfit.config import load_config
from specfit.errors import ConfigError
from specfit.examples import config_dir, config_path, copy_config, list_configs

ROOT = Path(__file__).resolve().parents[1]


def test_repo_configs_folder_is_the_package_folder():
    # One copy: the clone's configs/ links to specfit/configs/, which the wheel ships.
    assert (ROOT / "configs").resolve() == config_dir()
    assert (ROOT / "configs").is_symlink()
    assert config_dir() == ROOT / "specfit" / "configs"


def test_list_names_every_shipped_yaml_with_a_description(capsys):
    names = list_configs()
    assert set(names) == {p.stem for p in config_dir().glob("*.yaml")}
    assert {"demo", "aia1600", "legacy", "iris"} <= set(names)
    assert all(text and len(text) < 90 for text in names.values()), names
    # one whole sentence each (a first line cut mid-sentence once read '... models beside')
    assert all(text.endswith((".", "?", ")")) for text in names.values()), names
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    for name, text in names.items():
        assert f"{name}" in out and text in out


def test_show_prints_the_file_and_unknown_names_are_listed(capsys):
    assert main(["config", "show", "aia1600"]) == 0
    assert capsys.readouterr().out == config_path("aia1600").read_text()
    assert main(["config", "show", "aia16"]) == 2
    err = capsys.readouterr().err
    assert "aia16" in err and "aia1600" in err and "legacy" in err


@pytest.mark.parametrize("name", sorted(list_configs()))
def test_shipped_configs_resolve_their_paths_in_the_clone(name, request):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    if cfg.input.kind != "synthetic":
        request.getfixturevalue("shared_data")  # skips cleanly without ../shared/data
    # Outputs go beside the clone's root (never into the package folder); real inputs exist.
    assert Path(cfg.output.path).parent.parent == ROOT.resolve(), cfg.output.path
    if cfg.input.kind != "synthetic":
        assert Path(cfg.input.path).exists(), cfg.input.path


def test_copy_writes_once_and_never_overwrites(tmp_path, capsys):
    target = copy_config("demo", tmp_path)
    assert target == tmp_path / "demo.yaml"
    # the comments and settings are the shipped ones; the paths are made for the copy's folder
    shipped, copied = config_path("demo").read_text(), target.read_text()
    assert copied.count("\n") == shipped.count("\n") and "Copied from" in copied
    # the comments about the shipped file's own place are made the copy's (a review found
    # "../../ is the clone's root" and "specfit run configs/demo.yaml" in copies)
    assert "specfit/configs/" in shipped and "specfit run configs/demo.yaml" in shipped
    assert "specfit/configs/" not in copied and "clone's root" not in copied
    assert "specfit run demo.yaml" in copied
    assert load_config(target).model_dump(exclude={"input": {"path"}, "output": {"path"}}) == (
        load_config(config_path("demo")).model_dump(exclude={"input": {"path"}, "output": {"path"}})
    )
    assert load_config(target).output.path == str(tmp_path / "specfit-demo" / "results.zarr")
    # the synthetic frames are written, so beside the copy too, even where the shipped path
    # exists (a clone that ran the demo: the copy's frames went into the clone)
    assert load_config(target).input.path == str(tmp_path / "specfit-demo" / "synthetic")
    from specfit.examples import _paths_for_copy

    pkg = tmp_path / "pkg" / "specfit" / "configs"
    pkg.mkdir(parents=True)
    (pkg / "demo.yaml").write_text(shipped)
    (tmp_path / "pkg" / "specfit-demo" / "synthetic").mkdir(parents=True)
    assert "  path: specfit-demo/synthetic\n" in _paths_for_copy(pkg / "demo.yaml", "demo.yaml")
    with pytest.raises(ConfigError, match="exists"):
        copy_config("demo", target)
    # Deep enough that the shipped relative input.path resolves to nothing there.
    deep = tmp_path / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    assert main(["config", "copy", "legacy", str(deep / "mine.yaml")]) == 0
    out = capsys.readouterr().out
    assert "mine.yaml" in out and "input.path" in out
    cfg = load_config(deep / "mine.yaml")
    # the shipped input (the clone's data, when present) stays found; the output goes beside
    # the copy (it resolved to a folder four levels up, or the filesystem's root)
    assert cfg.output.path == str(deep / "aia1600-legacy" / "results.zarr")
    shipped = load_config(config_path("legacy")).input.path
    assert cfg.input.path == shipped or "edit it" in out


def test_copy_to_a_folder_that_is_not_there_is_refused(tmp_path):
    """DEST ending in a slash names a folder: when it does not exist the copy is refused (a
    file named like the folder was written)."""
    with pytest.raises(ConfigError, match="is not a folder; create it first"):
        copy_config("demo", str(tmp_path / "cp") + "/")
    assert not (tmp_path / "cp").exists()
