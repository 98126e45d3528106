"""The YAML schema: defaults, overrides, and error messages that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from specfit.config import apply_overrides, config_diff, load_config
from specfit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.fit.method == "whittle"
    assert cfg.fit.models == {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    assert cfg.spectra.segments == 1 and cfg.cluster.kind == "local"


@pytest.mark.parametrize("name", ["demo", "aia1600", "legacy", "mpi"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    # Relative paths are resolved from the config's folder, so runs work from any cwd.
    assert Path(cfg.output.path).is_absolute()


def test_legacy_config_is_the_original_specfit_settings():
    cfg = load_config(ROOT / "configs" / "legacy.yaml")
    assert cfg.spectra.segments == 2 and cfg.spectra.box == 3
    assert cfg.fit.method == "lsq" and cfg.fit.models["m2"] == "powerlaw_tail_lorentzian"
    # issue 12: the original's validation run, not the box spread and reduced chi2
    assert cfg.fit.weights == "dlogf" and cfg.fit.best_model == "chi2sum"
    assert cfg.spectra.normalisation == "variance" and cfg.spectra.window == "none"
    assert cfg.fit.bounds["powerlaw_tail"]["tail"][0] < 0  # the tail may be negative
    bump = cfg.fit.bounds["powerlaw_tail_lorentzian"]
    assert bump["bump_center"] == (-6.5, -4.6) and bump["bump_width"][1] == 0.8
    # defaults elsewhere are unchanged
    assert load_config().fit.weights == "sigma" and load_config().fit.best_model == "lrt"


def test_overrides_parse_yaml_scalars_and_nested_keys():
    cfg = load_config(
        None,
        [
            "spectra.segments=3",
            "fit.method=lsq_log",
            "spectra.fmin=0.001",
            "fit.models={m1: powerlaw_tail}",
            "cluster.kind=synchronous",
        ],
    )
    assert cfg.spectra.segments == 3 and cfg.fit.method == "lsq_log"
    assert cfg.spectra.fmin == pytest.approx(0.001)
    assert cfg.fit.models == {"m1": "powerlaw_tail"}
    assert cfg.cluster.kind == "synchronous"


def test_unknown_key_names_the_key_and_lists_allowed():
    with pytest.raises(ConfigError) as e:
        load_config({"spectra": {"segmnts": 2}})
    msg = str(e.value)
    assert "spectra.segmnts" in msg and "segments" in msg and "allowed keys" in msg


def test_wrong_type_and_impossible_values_name_the_key():
    with pytest.raises(ConfigError, match=r"spectra\.segments"):
        load_config(None, ["spectra.segments=two"])
    with pytest.raises(ConfigError, match=r"spectra\.segments"):
        load_config(None, ["spectra.segments=0"])
    with pytest.raises(ConfigError, match=r"spectra\.box.*odd"):
        load_config(None, ["spectra.box=2"])
    with pytest.raises(ConfigError, match=r"fit\.method.*whittle"):
        load_config(None, ["fit.method=bayes"])
    with pytest.raises(ConfigError, match="fmax must be greater"):
        load_config(None, ["spectra.fmin=0.01", "spectra.fmax=0.001"])
    with pytest.raises(ConfigError, match="cluster.address"):
        load_config(None, ["cluster.kind=address"])
    # YAML true/false for a number is a mistake, not 1/0 (segments: true ran one segment)
    for bad in ("spectra.segments=true", "resample.cadence=false", "spectra.fmax=true"):
        with pytest.raises(
            ConfigError, match=rf"{bad.split('=')[0]}: .*(true|false) is not a number"
        ):
            load_config(None, [bad])
    assert load_config(None, ["output.keep_cube=false"]).output.keep_cube is False


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["segments"])
    with pytest.raises(ConfigError, match="must name a section"):
        apply_overrides({}, ["segments=2"])


def test_missing_and_malformed_files(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist$"):
        load_config(tmp_path / "nope.yaml")
    # a shipped config's name given as a file, or the README's clone path outside a clone:
    # how to get it
    monkeypatch.chdir(tmp_path)
    for name in ("legacy", "legacy.yaml", "configs/legacy.yaml"):
        with pytest.raises(ConfigError, match=r"shipped config.*: `specfit config copy legacy \.`"):
            load_config(name)
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    # one line with the file's line and column (PyYAML's own text quoted the source over
    # 4-8 lines, naming "<unicode string>"; a helper's finding)
    for text, where, what in (
        ("input:\n\tpath: x\n", "line 2, column 1", "indent with spaces, not tabs"),
        ("spectra:\n  box: 1\n  box: 3\n", "line 3, column 3", "key 'box' is given twice"),
        ("input:\n  path: [x\n", "line 3, column 1", "flow sequence (line 2): expected ','"),
        ("input: 1\x07\n", "line 1, column 9", "special characters are not allowed: #x0007"),
        ("a: 1\n---\nb: 2\n", "line 2, column 1", "single document in the stream (line 1)"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(bad)
        msg = str(e.value)
        assert msg.startswith(f"{bad}, {where}: not valid YAML: ") and what in msg, msg
        assert "\n" not in msg and "unicode string" not in msg, msg


def test_config_diff_names_changed_science_keys_only():
    a = load_config().model_dump(mode="json")
    b = load_config(None, ["spectra.segments=2", "cluster.kind=synchronous"]).model_dump(
        mode="json"
    )
    diff = config_diff(a, b)
    assert diff == ["spectra.segments: 1 != 2"]


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    """YAML keeps the last of two equal keys: a second `fit:` section would silently replace
    the first. A merge key (<<) overriding an anchor's key is not a repetition."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("fit:\n  method: lsq_log\nspectra:\n  segments: 2\nfit:\n  multistart: 2\n")
    with pytest.raises(ConfigError, match=r"key 'fit' is given twice \(lines 1 and 5\)"):
        load_config(cfg)
    cfg.write_text("spectra:\n  segments: 2\n  window: hann\n  segments: 3\n")
    with pytest.raises(ConfigError, match=r"key 'segments' is given twice \(lines 2 and 4\)"):
        load_config(cfg)
    cfg.write_text("base: &b {segments: 2}\nspectra:\n  <<: *b\n  segments: 3\n")
    with pytest.raises(ConfigError, match="base: unknown"):  # the merge itself is fine
        load_config(cfg)
    # an anchored mapping that overrides a merged key, merged again elsewhere (PyYAML expands
    # it in place: a check during construction saw the key twice)
    cfg.write_text(
        "spectra: &s\n  <<: &b {segments: 2, window: hann}\n  segments: 3\nfit: {}\n"
        "resample:\n  <<: {max_gap: 2.0}\n"
    )
    assert load_config(cfg).spectra.segments == 3
    from specfit.config import _check_unique_keys

    _check_unique_keys("base: &b {x: 1}\ndefs:\n  a: &a\n    <<: *b\n    x: 5\nb:\n  <<: *a\n")
    _check_unique_keys("? [a, b]\n: 1\nc: 2\n")  # a non-scalar key is not compared
    # a --set mapping likewise (it kept the last model silently)
    with pytest.raises(ConfigError, match=r"--set 'fit.models=.*key 'a' is given twice; YAML"):
        load_config(None, ["fit.models={a: powerlaw_tail, a: powerlaw_tail_lorentzian}"])
    assert load_config(None, ["fit.models={a: powerlaw_tail}"]).fit.models


def test_bounds_of_a_model_the_fit_does_not_use_are_refused():
    """fit.bounds is keyed by model name: a misspelt name left the bounds unused silently."""
    from specfit.stages import resolve_models

    models = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    ok = resolve_models(models, bounds={"powerlaw_tail": {"index": [0.0, 3.0]}})
    index = ok["m1"].param_names.index("index")
    assert ok["m1"].bounds_for(np.array([1e-3, 1e-2]))[1][index] == 3.0
    with pytest.raises(ValueError, match=r"fit.bounds: 'powerlaw_tial' is not a model of this fit"):
        resolve_models(models, bounds={"powerlaw_tial": {"index": [0.0, 3.0]}})


def test_config_diff_says_when_a_key_is_from_another_version():
    """A stored config without a setting this version has (an earlier specfit wrote it) is
    named as such, not as 'None != value' (which read as if the user had set None)."""
    b = load_config().model_dump(mode="json")
    a = {k: dict(v) if isinstance(v, dict) else v for k, v in b.items()}
    del a["input"]["quality_key"]
    a["fit"] = {**a["fit"], "retired_option": 3}
    assert config_diff(a, b) == [
        "input.quality_key: not in the stored config (another specfit version), now 'QUALITY'",
        "fit.retired_option: only in the stored config (another specfit version), 3",
    ]


def test_a_folder_or_a_data_file_given_as_config_is_one_line(tmp_path):
    """`specfit run FRAMES_FOLDER` (init takes the folder, run a config) or a FITS/JPG file
    gave an IsADirectoryError / UnicodeDecodeError traceback."""
    from specfit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"is a folder, not a config file.*specfit init .* --out"):
        load_config(tmp_path)
    data = tmp_path / "frame.fits"
    data.write_bytes(b"SIMPLE  =                    T" + bytes(range(128, 256)))
    with pytest.raises(ConfigError, match=r"frame.fits is not a text \(YAML\) config file"):
        load_config(data)


def test_paths_set_on_the_command_line_are_relative_to_the_current_folder(tmp_path, monkeypatch):
    """A path in the file is relative to the file's folder (configs work from any cwd); one
    given with --set is relative to where it was typed (it went to the config's folder:
    with a shipped config, inside the installed package)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "c.yaml").write_text("input:\n  path: frames\noutput:\n  path: out/results.zarr\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config(conf / "c.yaml")
    assert cfg.input.path == str(conf / "frames")
    assert cfg.output.path == str(conf / "out" / "results.zarr")
    cfg = load_config(conf / "c.yaml", ["output.path=mine/results.zarr"])
    assert cfg.output.path == str(work / "mine" / "results.zarr")
    assert cfg.input.path == str(conf / "frames")  # not given: still the file's folder
    assert load_config(conf / "c.yaml", "input.path=here").input.path == str(work / "here")


def test_output_paths_through_a_symlink_are_the_real_folders(tmp_path, monkeypatch):
    """A link to the results (or the cube) is replaced by its target, from a file, a mapping
    or a relative path: the work folder, the lock and --overwrite then act on the real folder
    (through the link, --overwrite wrote <link>.specfit-work and then failed: "Cannot call
    rmtree on a symbolic link")."""
    real = tmp_path / "scratch" / "results.zarr"
    real.mkdir(parents=True)
    cube = tmp_path / "scratch" / "cube.zarr"
    (tmp_path / "link.zarr").symlink_to(real)
    (tmp_path / "cube-link").symlink_to(cube)  # to a folder yet to be made
    (tmp_path / "dir-link").symlink_to(tmp_path / "scratch", target_is_directory=True)
    data = {
        "output": {"path": str(tmp_path / "link.zarr"), "cube_path": str(tmp_path / "cube-link")}
    }
    cfg = load_config(data)
    assert (cfg.output.path, cfg.output.cube_path) == (str(real), str(cube))
    assert load_config(cfg).output.path == str(real)
    (tmp_path / "c.yaml").write_text("output:\n  path: dir-link/results.zarr\n")
    assert load_config(tmp_path / "c.yaml").output.path == str(real)
    monkeypatch.chdir(tmp_path)
    assert load_config({"output": {"path": "link.zarr"}}).output.path == str(real)
    # a relative path without a link stays as given (relative to the current folder)
    assert load_config({"output": {"path": "plain.zarr"}}).output.path == "plain.zarr"


def test_overwrite_through_a_symlink_to_a_finished_store(tmp_path):
    from conftest import tiny_config
    from specfit.pipeline import run
    from specfit.store import is_complete

    first = tmp_path / "first"
    run(tiny_config(first))
    store = first / "results.zarr"
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    cfg = tiny_config(first)
    cfg["output"]["path"] = str(link)
    ds = run(cfg, overwrite=True)
    assert "m1_index" in ds
    assert link.is_symlink() and link.resolve() == store.resolve()
    assert is_complete(store)
    assert not (tmp_path / "link.zarr.specfit-work").exists()  # work beside the real store


def test_config_mistakes_the_config_reviewer_found(tmp_path):
    """Each was a traceback, a wrong key in the message, a silent loss or a refusal of valid
    YAML (the config reviewer): now one line naming the key, or accepted."""
    # synthetic shape and seed: a numpy traceback, or "spectra.box ... at most -1 px"
    for item, key in (
        ("input.synthetic.shape=[-1,5]", "input.synthetic.shape.0"),
        ("input.synthetic.shape=[4,0]", "input.synthetic.shape.1"),
        ("input.synthetic.seed=-1", "input.synthetic.seed"),
    ):
        with pytest.raises(ConfigError, match=rf"{key}: Input should be greater"):
            load_config(None, [item])
    # the docs' own unquoted ISO time is a datetime to YAML: it was refused as not a string
    cfg = load_config(None, ["prep.reference_time=2012-06-06T07:00:00"])
    assert cfg.prep.reference_time == "2012-06-06T07:00:00"
    # with a zone: UTC, in the form the derotation parses (not +00:00, which it refused late)
    for text in ("2012-06-06T07:00:00Z", "2012-06-06T09:00:00+02:00"):
        cfg = load_config(None, [f"prep.reference_time={text}"])
        assert cfg.prep.reference_time == "2012-06-06T07:00:00", text
    # a section whose keys are all commented out is empty, as the module says, not an error
    (tmp_path / "c.yaml").write_text("spectra:\n  # segments: 2\ninput:\n  synthetic:\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.spectra.segments == load_config(None).spectra.segments
    assert cfg.input.synthetic.shape == (48, 64)


def test_input_paths_follow_folder_links_not_file_links(tmp_path):
    """input.path through a link to a folder is the folder's real path (one configuration
    whichever way it is given); a link to a file keeps its name, which tells the file's kind
    (a content-addressed cache names its files by hash: resolving it lost '.npy'; the diff
    reviewer's finding)."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "3f2a9c").write_bytes(b"x")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "cube.npy").symlink_to(tmp_path / "cache" / "3f2a9c")
    (tmp_path / "frames").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "frames", target_is_directory=True)
    for given, stored in [
        (tmp_path / "proj" / "cube.npy", tmp_path / "proj" / "cube.npy"),
        (tmp_path / "link", tmp_path / "frames"),
        (tmp_path / "link" / "*.fits", tmp_path / "frames" / "*.fits"),
        (tmp_path / "proj" / ".." / "link", tmp_path / "frames"),
    ]:
        assert load_config({"input": {"path": str(given)}}).input.path == str(stored)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("input:\n  path: link\n")  # relative to the config file
    assert load_config(cfg).input.path == str(tmp_path / "frames")


def test_a_loop_of_symbolic_links_is_refused_naming_the_key(tmp_path, monkeypatch):
    """Links that point at each other: one line naming the key (a RuntimeError traceback from
    pathlib, "Symlink loop from ...", for input.path, output.path and the cube)."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for key, value in [
        ("input.path", str(tmp_path / "a")),
        ("input.path", str(tmp_path / "a" / "*.fits")),
        ("output.path", str(tmp_path / "b")),
        ("output.cube_path", str(tmp_path / "a" / "cube.zarr")),
        ("input.times_csv", str(tmp_path / "a")),
    ]:
        section, name = key.split(".")
        with pytest.raises(ConfigError, match=f"{key}: .* is a loop of symbolic links"):
            load_config({section: {name: value}})
    (tmp_path / "c.yaml").write_text("output:\n  path: a/results.zarr\n")
    with pytest.raises(ConfigError, match="output.path: .*a/results.zarr is a loop"):
        load_config(tmp_path / "c.yaml")
    monkeypatch.chdir(tmp_path)  # no config file: relative to the current folder
    with pytest.raises(ConfigError, match="output.path: b is a loop"):
        load_config({"output": {"path": "b"}})


def test_one_time_key_may_be_given_as_itself():
    """`input.time_key: DATE-OBS` was refused ("should be a valid list"; a helper's finding):
    one key is the list of it; a list and the default are as before."""
    assert load_config({"input": {"time_key": "DATE-OBS"}}).input.time_key == ["DATE-OBS"]
    assert load_config({"input": {"time_key": ["A", "B"]}}).input.time_key == ["A", "B"]
    assert load_config().input.time_key == ["T_OBS", "DATE-OBS"]
    with pytest.raises(ConfigError, match="input.time_key"):
        load_config({"input": {"time_key": 3}})
