"""``specfit init``: metadata-only inspection and the commented config it writes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, assert_docs_quote
from specfit.cli import main
from specfit.config import load_config
from specfit.errors import InputError
from specfit.init import guess_time_pattern, init_config, inspect_input


@pytest.fixture
def no_pixels(monkeypatch):
    """Make any read of pixel data fail: init must work from metadata alone."""
    from specfit.io import _base

    def refuse(self, idx):
        raise AssertionError("specfit init read pixel data")

    monkeypatch.setattr(_base.LazyFrames, "_frames", refuse)


def test_guess_time_pattern():
    names = [f"img_2020-01-02T03:04:{s:02d}.125.png" for s in (5, 17, 29)]
    pattern = guess_time_pattern(names)
    assert pattern == "img_%Y-%m-%dT%H:%M:%S.%f.png"
    assert guess_time_pattern(["1600_20120606_05_00_19.jpg", "1600_20120606_05_00_43.jpg"]) == (
        "1600_%Y%m%d_%H_%M_%S.jpg"
    )
    assert guess_time_pattern(["frame_0001.png", "frame_0002.png"]) is None
    # A literal % in a name is kept literal; other prefixes do not match the first name's.
    assert guess_time_pattern(["a%_20200102_030405.png"]) == "a%%_%Y%m%d_%H%M%S.png"
    assert guess_time_pattern(["a_20200102_030405.png", "b_20200102_030406.png"]) is None
    # Names that give the same time twice are no time source.
    assert guess_time_pattern(["x_20200102_030405.png", "x_20200102_030405.png"]) is None


@pytest.mark.realdata
def test_init_aia_fits(shared_data, tmp_path, no_pixels):
    out = tmp_path / "cfg" / "aia.yaml"
    report, text = init_config(shared_data / "aia1600_20120606" / "fits", out)
    assert "596 single-frame FITS files" in report
    assert "164 x 287 px (y by x)" in report and "SDO/AIA" in report and "1600 angstrom" in report
    assert "48 s (2.0 cadences)" in report and "96 s (4.0 cadences)" in report
    assert "DSUN_OBS 1.01" in report and "HPLN-TAN" in report and "units       DN" in report
    cfg = load_config(out)  # the file as written, with paths resolved from its folder
    assert cfg.input.kind == "fits_series" and cfg.input.pattern == "*.fits"
    assert Path(cfg.input.path) == (shared_data / "aia1600_20120606" / "fits").resolve()
    assert cfg.input.time_key[0] == "T_OBS" and cfg.input.normalise_exposure
    assert cfg.prep.derotate  # fixed pointing, 4 h: ~60 px of rotation
    assert cfg.resample.cadence == 24.0 and cfg.resample.max_gap == 1.5
    assert cfg.spectra.segments == 2 and cfg.spectra.box == 1
    assert Path(cfg.output.path) == (tmp_path / "cfg" / "aia-results" / "results.zarr")
    raw = out.read_text()
    assert "# gap: 96 s" in raw and "derotate: true" in raw and "# fixed pointing" in raw
    assert yaml.safe_load(raw)["spectra"]["segments"] == 2
    # docs/jsoc.md shows this report: every line but the first (the folder's path) as printed
    doc = (ROOT / "docs" / "jsoc.md").read_text().splitlines()
    for line in report.splitlines()[1:]:
        assert line in doc, f"docs/jsoc.md's init transcript should show {line!r}"


@pytest.mark.realdata
def test_init_aia_jpg(shared_data, tmp_path, no_pixels):
    out = tmp_path / "jpg.yaml"
    report, _ = init_config(shared_data / "aia1600_20120606" / "jpg", out)
    cfg = load_config(out)
    assert cfg.input.kind == "images" and cfg.input.time_source == "filename"
    assert cfg.input.time_pattern == "1600_%Y%m%d_%H_%M_%S.jpg"  # as configs/aia1600_jpg.yaml
    assert not cfg.input.normalise_exposure and cfg.input.exposure_key is None
    assert not cfg.prep.derotate and cfg.resample.cadence == 24.0
    assert "2 longer than 1.5 cadences" in report and "co-align" in report
    # A longer period of interest needs longer segments.
    insp = inspect_input(shared_data / "aia1600_20120606" / "jpg", longest_period=3600.0)
    assert insp.settings["spectra.segments"][0] == 1


@pytest.mark.realdata
def test_init_iris_folder_of_cubes(shared_data, tmp_path, no_pixels):
    out = tmp_path / "iris.yaml"
    report, text = init_config(shared_data / "iris_sji_20140329", out)
    cfg = load_config(out)
    # and in the config, where the report alone was lost (init reviewer)
    assert "# NOTE: 10 frame(s) (frames 44-53) have an exposure over 1.5x" in text
    assert cfg.input.kind == "fits_cube" and cfg.input.path.endswith("SJI_1400_t000.fits")
    assert "2796" in report  # the other cube is named, with how to use it
    assert "54 frames" in report and "IRIS SJI, 1400 angstrom" in report
    # the frames under automatic exposure control are named from the headers (docs/data.md)
    assert "10 frame(s) (frames 44-53) have an exposure over 1.5x from the median 8 s" in report
    assert "(input.max_frames: 44 leaves them out)" in report  # the series' last frames
    assert not cfg.prep.derotate and "tracks solar rotation" in report
    assert cfg.input.missing_below == -50.0 and cfg.input.normalise_exposure
    assert cfg.resample.max_gap == 2.5  # the regular 37.5 s steps are not gaps
    assert cfg.spectra.segments == 1 and cfg.spectra.box == 3
    # docs/spectra.md quotes the grid and the Nyquist gain init reports for this cube
    (line,) = [line for line in report.splitlines() if line.strip().startswith("cadence")]
    kept = re.search(r"keeps (\d+) %", line).group(1)
    assert_docs_quote(
        "spectra.md",
        f"on its {cfg.resample.cadence:g} s grid `specfit init` reports that interpolation "
        f"keeps {kept} % of the Nyquist power",
    )


@pytest.mark.realdata
def test_init_jittered_cadence(shared_data, no_pixels):
    """A jittered cadence (IRIS 2796: 18.53-18.91 s) gets the grid that follows the frames."""
    cube = "iris_l2_20140329_140938_3860258481_SJI_2796_t000_deconvolved.fits"
    insp = inspect_input(shared_data / "iris_sji_20140329" / cube)
    cadence, why = insp.settings["resample.cadence"]
    assert cadence == 18.72, why
    assert "drift" not in why and insp.settings["resample.max_gap"][0] == 1.5
    # docs/jsoc.md quotes the chosen grid's Nyquist gain (as init reports it) and the median's
    from specfit.config import InputConfig
    from specfit.io import open_input
    from specfit.kernels import resample as rs

    (line,) = [line for line in insp.report if line.strip().startswith("cadence")]
    kept = re.search(r"keeps (\d+) %", line).group(1)
    arr = open_input(InputConfig(path=str(shared_data / "iris_sji_20140329" / cube)))
    t = np.asarray(arr["time"].values, dtype=float)  # seconds from the first frame
    median = float(f"{np.median(np.diff(t)):.4g}")
    at_median = rs.interpolation_nyquist_gain(t, rs.uniform_times(t, median))
    assert_docs_quote(
        "jsoc.md",
        f"{kept} % for IRIS 2796 at 18.72 s where the median {median:g} s keeps "
        f"{100 * at_median:.0f} %",
    )


@pytest.mark.realdata
def test_init_cli(shared_data, tmp_path, capsys):
    out = tmp_path / "x.yaml"
    folder = str(shared_data / "iris_sji_20140329")
    assert main(["init", folder, "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    before = out.read_text()
    assert main(["init", folder, "--out", str(out)]) == 2  # never replaces a file silently
    assert "--force" in capsys.readouterr().err and out.read_text() == before
    assert main(["init", folder]) == 0  # no --out: the config on stdout
    printed = capsys.readouterr()
    assert yaml.safe_load(printed.out)["input"]["kind"] == "fits_cube"
    assert "specfit init:" in printed.err


def test_init_errors(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no frames here")
    assert main(["init", str(tmp_path)]) == 2
    assert "holds no FITS or image files" in capsys.readouterr().err
    # a parent folder of the frames' folders: they are named (init reviewer)
    for name in ("jpg", "fits"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"f{i}.{name}").write_bytes(b"")
    assert main(["init", str(tmp_path)]) == 2
    said = capsys.readouterr().err
    assert "its subfolders fits/ (3 files), jpg/ (3 files) do: give one" in said
    with pytest.raises(InputError, match="does not exist"):
        inspect_input(tmp_path / "missing")


@pytest.mark.parametrize("n_frames", [120, 121])
def test_init_counts_the_frequencies_the_run_fits(tmp_path, n_frames):
    """init's frequency count and band are the run's (DC and Nyquist dropped), for an even
    and an odd number of samples; --longest-period must be a positive number."""
    from specfit.pipeline import plan_run
    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=n_frames, seed=1).frames
    out = tmp_path / "c.yaml"
    report, _ = init_config(frames, out)
    n, lo, hi = re.search(r"(\d+) frequencies \(([\d.]+)-([\d.]+) mHz\)", report).groups()
    freq = plan_run(load_config(out, ["output.path=" + str(tmp_path / "r.zarr")])).freq
    assert int(n) == freq.size
    assert float(lo) == pytest.approx(1e3 * freq[0], rel=2e-3)
    assert float(hi) == pytest.approx(1e3 * freq[-1], rel=2e-3)
    for bad in ("0", "-5", "nan"):
        with pytest.raises(SystemExit):
            main(["init", str(frames), f"--longest-period={bad}"])


def test_init_refuses_a_series_the_run_would_refuse_and_prints_absolute_paths(
    tmp_path, capsys, monkeypatch
):
    """16 frames (15 samples on the grid): init wrote a config the run refused ('only 7
    frequencies remain; the models need more than 7'); 17 are enough for the default models'
    planner. A config printed (no --out, to be saved anywhere) named its input relative to the
    current folder, which broke once saved elsewhere (init reviewer)."""
    from specfit.pipeline import plan_run
    from specfit.synthetic import make_synthetic

    short = make_synthetic(tmp_path / "s16", shape=(8, 8), n_frames=16, seed=1).frames
    with pytest.raises(InputError, match=r"15 samples at 12 s give 7 frequencies.*at least 17"):
        inspect_input(short)
    enough = make_synthetic(tmp_path / "s17", shape=(8, 8), n_frames=17, seed=1).frames
    out = tmp_path / "c.yaml"
    init_config(enough, out)
    assert plan_run(load_config(out, ["output.path=" + str(tmp_path / "r.zarr")])).freq.size >= 8
    monkeypatch.chdir(tmp_path)
    assert main(["init", str(enough.relative_to(tmp_path))]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["input"]["path"] == str(enough.resolve())


def test_init_tells_frames_missing_at_random_from_an_observing_pattern(tmp_path):
    """A fifth of the frames missing at random was taken for 'the observing pattern' and the
    gap threshold raised past them (the run then under-reported the interpolated share; init
    reviewer). Long steps at one regular distance (IRIS 1400: every third) still are one."""
    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=200, seed=1).frames
    files = sorted(frames.glob("*.fits"))
    rng = np.random.default_rng(3)
    for f in files[1:-1]:
        if rng.random() < 0.2:
            f.unlink()
    insp = inspect_input(frames)
    value, why = insp.settings["resample.max_gap"]
    assert value == 1.5 and "irregular places (frames missing" in why
    assert insp.gaps[-1].endswith("more, none longer") and len(insp.gaps) == 10
    pattern = make_synthetic(tmp_path / "p", shape=(8, 8), n_frames=200, seed=1).frames
    for f in sorted(pattern.glob("*.fits"))[2:-1:3]:
        f.unlink()
    value, why = inspect_input(pattern).settings["resample.max_gap"]
    assert value > 2 and "(the observing pattern)" in why


def test_init_takes_a_glob_of_frames(tmp_path):
    """A folder mixing two channels is refused with advice to narrow input.pattern, which
    init could not take ('does not exist' for a glob; init reviewer). A glob's file-name part
    becomes input.pattern, and the config reads those frames only."""
    import shutil

    from astropy.io import fits

    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=30, seed=1).frames
    for f in sorted(frames.glob("synth_*.fits")):
        other = frames / f.name.replace("synth_", "other_")
        shutil.copy(f, other)
        with fits.open(other, mode="update") as h:
            h[0].header["WAVELNTH"] = 1700
    with pytest.raises(InputError, match=r"WAVELNTH 1700"):
        inspect_input(frames)
    out = tmp_path / "c.yaml"
    report, _ = init_config(frames / "synth_*.fits", out)
    cfg = load_config(out)
    from specfit.io import open_input

    n = len(list(frames.glob("synth_*.fits")))  # (the synthetic series leaves gaps)
    assert cfg.input.pattern == "synth_*.fits"
    assert f"{n} single-frame FITS files (synth_*.fits)" in report  # the glob, not *.fits
    assert open_input(cfg.input).sizes["time"] == n
    with pytest.raises(InputError, match=r"no FITS or image file in .* matches 'nope_\*.fits'"):
        inspect_input(frames / "nope_*.fits")


def test_init_reads_a_npy_cube_with_its_times(tmp_path, capsys):
    """A .npy cube has no times: init said 'give input.times', a key init could not take
    (init reviewer). --times gives them; without it the message says how."""
    rng = np.random.default_rng(2)
    np.save(tmp_path / "fast.npy", rng.normal(100, 1, (400, 6, 5)).astype(np.float32))
    np.save(tmp_path / "t.npy", np.arange(400) * 0.05)
    assert main(["init", str(tmp_path / "fast.npy")]) == 2
    assert "--times TIMES.npy" in capsys.readouterr().err
    out = tmp_path / "c.yaml"
    assert main(["init", str(tmp_path / "fast.npy"), "--times", str(tmp_path / "t.npy"),
                 "--out", str(out)]) == 0  # fmt: skip
    # the report names where the times came from (it said "from ?"; a helper's finding)
    assert "  times       from t.npy: " in capsys.readouterr().out
    cfg = load_config(out)
    assert cfg.input.kind == "array" and cfg.input.times == str(tmp_path / "t.npy")
    assert cfg.resample.cadence == 0.05


def test_init_inside_the_frames_folder_puts_the_results_outside_it(tmp_path):
    """``cd frames && specfit init . --out my.yaml``: the config's folder is the input, and a
    run never writes inside its input, so output.path goes beside the frames folder and the
    config passes the run's path checks (found by a first-time-user review: init's own
    config was refused by `specfit run`). A config elsewhere keeps <stem>-results beside it."""
    from specfit.pipeline import cube_path_for
    from specfit.synthetic import make_synthetic
    from specfit.workspace import check_paths

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=60, seed=1).frames
    inside = frames / "my.yaml"
    init_config(frames, inside)
    cfg = load_config(inside)
    assert Path(cfg.output.path) == frames.parent / "my-results" / "results.zarr"
    check_paths(cfg, cube_path_for(cfg))
    beside = tmp_path / "c.yaml"
    init_config(frames, beside)
    assert Path(load_config(beside).output.path) == tmp_path / "c-results" / "results.zarr"


def test_init_zarr_cube(demo_store, tmp_path, no_pixels):
    """A Zarr cube (specfit's own cube.zarr here) is an input init can read too."""
    from specfit.workspace import default_cube_path

    cube = default_cube_path(demo_store)
    report, _ = init_config(cube, tmp_path / "z.yaml")
    cfg = load_config(tmp_path / "z.yaml")
    assert cfg.input.kind == "zarr" and Path(cfg.input.path) == cube.resolve()
    assert "frames in a Zarr store" in report and cfg.resample.cadence == 12.0
    # its values are rates already: the config says so (it said "DN -> DN / s")
    text = (tmp_path / "z.yaml").read_text()
    assert "already divided by the exposures" in text and "-> DN / s" not in text
    assert "units       DN / s" in report


def test_init_images_without_times(tmp_path):
    from PIL import Image

    for i in range(20):  # 17 samples at least: the run's models need more than 7 frequencies
        Image.fromarray(np.full((8, 6), i, np.uint8)).save(tmp_path / f"frame_{i:03d}.png")
    out = tmp_path / "cfg.yaml"
    with pytest.raises(InputError, match="times.csv"):
        init_config(tmp_path, out)
    with open(tmp_path / "times.csv", "w") as fh:
        fh.write("file,time\n")
        for i in range(20):
            fh.write(f"frame_{i:03d}.png,2020-01-01T00:{12 * i // 60:02d}:{12 * i % 60:02d}\n")
    report, _ = init_config(tmp_path, out)
    cfg = load_config(out)
    assert cfg.input.time_source == "csv" and os.path.basename(cfg.input.times_csv) == "times.csv"
    assert "20 image files" in report


@pytest.mark.slow  # a real run: derotation, ~100 frames (~20 s)
@pytest.mark.realdata
def test_init_then_run_aia_subset(shared_data, tmp_path):
    """init on 100 real frames holding both gaps, then run what it wrote (on a cutout)."""
    import glob

    from specfit.pipeline import run

    files = sorted(glob.glob(str(shared_data / "aia1600_20120606" / "fits" / "*.fits")))
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in files[100:200]:
        os.symlink(f, frames / os.path.basename(f))
    out = tmp_path / "x.yaml"
    init_config(frames, out)
    ds = run(
        out,
        [
            "prep.cutout={x1: 100, x2: 124, y1: 60, y2: 84, units: pixel}",
            "cluster.kind=synchronous",
            "output.tile=12",
        ],
    )
    assert len(yaml.safe_load(ds.attrs["gaps"])) == 2
    assert "derotate" in ds.attrs["config"] and ds.attrs["n_frames"] == 100
    assert np.isfinite(ds["m1_index"].values).mean() > 0.9


@pytest.mark.parametrize("tracking", [False, True, "interleaved", "step"])
def test_init_derotation_follows_pointing(tmp_path, tracking, caplog):
    """Fixed pointing over 40 min -> derotate; a cutout that tracks (CRPIX moving) -> not.
    Two fields in one folder (every other frame, or the second half, 300" away) were read as
    "tracks solar rotation" and derotate: false was written, so a run fitted the mixed
    frames (the input reviewer): a jump between frames far beyond rotation is named, with
    derotate: true (which refuses a frame of another field)."""
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    t0 = Time("2020-01-01T00:00:00", scale="utc")
    for i in range(40):
        h = fits.Header()
        h.update(
            CTYPE1="HPLN-TAN",
            CTYPE2="HPLT-TAN",
            CUNIT1="arcsec",
            CUNIT2="arcsec",
            CDELT1=0.6,
            CDELT2=0.6,
            CRVAL1=300.0
            * ((tracking == "interleaved" and i % 2) or (tracking == "step" and i >= 20)),
            CRVAL2=0.0,
            # A JSOC im_patch cutout that tracks moves its reference pixel with the Sun.
            CRPIX1=-300.0 - (0.15 * i / 0.6 if tracking is True else 0.0),
            CRPIX2=-200.0,
            DSUN_OBS=1.496e11,
            HGLN_OBS=0.0,
            HGLT_OBS=0.0,
            EXPTIME=2.0,
            BUNIT="DN",
        )
        h["DATE-OBS"] = (t0 + TimeDelta(60.0 * i, format="sec")).isot
        fits.writeto(tmp_path / f"f{i:03d}.fits", np.full((8, 8), 5, np.int16), h)
    insp = inspect_input(tmp_path)
    derotate, why = insp.settings["prep.derotate"]
    if isinstance(tracking, str):
        first = "f000.fits -> f001.fits" if tracking == "interleaved" else "f019.fits -> f020"
        assert derotate is True and "jumps 500 px between frames" in why, why
        assert first in why and "JUMPS 500 px" in "\n".join(insp.report), insp.report
        # and a run without derotation refuses them before any work (it fitted the mix)
        from specfit.config import load_config
        from specfit.errors import InputError
        from specfit.pipeline import plan_run

        cfg = load_config(
            None,
            [
                f"input.path={tmp_path}",
                "input.kind=fits_series",
                "prep.derotate=false",
                f"output.path={tmp_path / 'out' / 'results.zarr'}",
            ],
        )
        with pytest.raises(InputError, match=r"pointing jumps 500 px between frames"):
            plan_run(cfg)
        # the library's ingest warns (it returned the mixed frames without a word), and not
        # when told not to check (the pipeline, which refuses above)
        import logging

        import specfit

        with caplog.at_level(logging.WARNING, logger="specfit"):
            specfit.ingest(tmp_path)
        assert "pointing jumps 500 px between frames" in caplog.text, caplog.text
        assert first.replace(" -> ", " and ").split(" and ")[0] in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="specfit"):
            specfit.ingest(tmp_path, check_pointing=False)
        assert "pointing jumps" not in caplog.text
        return
    assert derotate is (not tracking), why
    assert ("follows the Sun" in why) is tracking
    assert insp.input["time_key"][0] == "DATE-OBS" and insp.settings["resample.cadence"][0] == 60


def test_init_quotes_the_next_command_for_paths_with_spaces(tmp_path, capsys):
    """The command init suggests can be pasted as it is when the config's path has a space
    (it printed `specfit run my frames.yaml`: 'unrecognized arguments')."""
    import shlex

    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "my frames", shape=(8, 8), n_frames=64, seed=1).frames
    out = tmp_path / "my frames.yaml"
    assert main(["init", str(frames), "--out", str(out)]) == 0
    said = capsys.readouterr().out.strip().split("then: ")[-1]
    assert shlex.split(said) == ["specfit", "run", str(out)]
    assert "#   specfit run 'my frames.yaml'" in out.read_text()


def test_init_out_never_overwrites_data_or_a_folder(tmp_path, capsys):
    """--out onto a folder raised a raw IsADirectoryError; --out onto one of the input
    frames with --force replaced the frame by YAML. Both are one-line errors now, even with
    --force, and nothing is written; a config is still replaced with --force."""
    from specfit.errors import ConfigError
    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=40, seed=1).frames
    frame = sorted(frames.glob("*.fits"))[0]
    before = frame.read_bytes()
    folder = tmp_path / "cfgs"
    folder.mkdir()
    for force in ([], ["--force"]):
        assert main(["init", str(frames), "--out", str(folder), *force]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "is a folder" in err and "Traceback" not in err, err
        assert main(["init", str(frames), "--out", str(frame), *force]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "not a config" in err, err
    assert frame.read_bytes() == before
    # other data files (existing or not), and a binary file under a config's name
    np.save(tmp_path / "cube.npy", np.zeros(3))
    (tmp_path / "notes.txt").write_bytes(b"\x00\x01binary")
    for out in ("cube.npy", "new.fits", "a.fits.gz", "pic.png", "store.zarr", "notes.txt"):
        with pytest.raises(ConfigError, match=r"^--out .*(not a config|not a YAML config)"):
            init_config(frames, tmp_path / out, force=True)
    assert not (tmp_path / "new.fits").exists() and not (tmp_path / "store.zarr").exists()
    # a config is replaced with --force, as before
    out = tmp_path / "c.yaml"
    out.write_text("# old\n")
    init_config(frames, out, force=True)
    assert "# old" not in out.read_text() and load_config(out).input.kind == "fits_series"
    # a file under an unwritable path: one line, no OSError
    with pytest.raises(ConfigError, match=r"^--out .*cannot write the config"):
        init_config(frames, tmp_path / "notes.txt" / "c.yaml")


def test_init_out_refuses_an_input_file(tmp_path):
    """An input file under a config's name (the images' times.csv here) is not replaced."""
    from PIL import Image

    from specfit.errors import ConfigError
    from specfit.init import check_out

    for i in range(20):  # 17 samples at least: the run's models need more than 7 frequencies
        Image.fromarray(np.full((8, 6), i, np.uint8)).save(tmp_path / f"frame_{i:03d}.png")
    csv = tmp_path / "times.txt"
    with open(csv, "w") as fh:
        fh.write("file,time\n")
        for i in range(20):
            fh.write(f"frame_{i:03d}.png,2020-01-01T00:{12 * i // 60:02d}:{12 * i % 60:02d}\n")
    (tmp_path / "times.csv").symlink_to(csv)
    before = csv.read_text()
    check_out(csv, force=True)  # a text file under a config's name: --force may replace it...
    with pytest.raises(ConfigError, match=r"^--out .*times.txt is one of the input files"):
        init_config(tmp_path, csv, force=True)  # ...unless the input reads it
    assert csv.read_text() == before


def test_init_out_refuses_a_place_inside_a_specfit_store(demo_store):
    """`specfit init --out STORE/c.yaml` wrote into a results store, which then held a file
    specfit did not write, so its --overwrite was refused (a helper's finding); plot --out,
    export --fits and --report already refused such places."""
    from specfit.errors import ConfigError
    from specfit.init import check_out
    from specfit.workspace import work_dir_for

    for inside in (demo_store / "c.yaml", demo_store / "m1_index" / "c.yaml"):
        with pytest.raises(ConfigError, match=rf"^--out {inside} lies inside a specfit store"):
            check_out(inside, force=True)
        assert not inside.exists()
    work = work_dir_for(demo_store)
    if work.exists():
        with pytest.raises(ConfigError, match="lies inside a specfit work folder"):
            check_out(work / "c.yaml")
    check_out(demo_store.parent / "beside.yaml")  # beside the store: fine


def test_init_reads_every_frame_of_a_folder_mixing_fits_suffixes(tmp_path):
    """Half the frames gzipped (.fits and .fits.gz): init wrote the majority suffix's pattern,
    a tie broken by set order, so one half was left out without a word (a series at twice
    the cadence) and which half varied between runs (the first-user reviewer). Now the
    pattern reads both, and init says which suffixes it read."""
    import gzip
    import shutil

    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=40, seed=1).frames
    files = sorted(frames.glob("*.fits"))
    for i, f in enumerate(files):
        if i % 2:
            with open(f, "rb") as a, gzip.open(f"{f}.gz", "wb") as b:
                shutil.copyfileobj(a, b)
            f.unlink()
    report, _ = init_config(frames, tmp_path / "c.yaml")
    cfg = load_config(tmp_path / "c.yaml")
    assert f"{len(files)} single-frame FITS files (*.fits, *.fits.gz)" in report
    from specfit.io import open_input

    assert open_input(cfg.input).shape[0] == len(files)


def test_init_exposure_note_says_how_to_leave_the_frames_out():
    """The note named input.max_frames, which keeps the first N frames, also for frames in the
    middle of a series (the first-user reviewer); it now gives the value for a trailing block
    and another way otherwise."""
    from specfit.init import _exposure_steps

    exp = np.full(40, 2.0)
    exp[34:] = 8.0
    assert "(input.max_frames: 34 leaves them out)" in _exposure_steps(exp)[0]
    exp = np.full(40, 2.0)
    exp[20:30] = 8.0
    assert "move those files out of the folder or narrow input.pattern" in _exposure_steps(exp)[0]
    assert "input.max_frames cannot leave them out" in _exposure_steps(exp, "fits_cube")[0]


def test_init_says_when_gaps_cover_much_of_the_series(tmp_path):
    """init listed a gap that left two thirds of the series to interpolation without a word;
    the run then warned (a probe). init now notes it as the run says it."""
    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(8, 8), n_frames=120, seed=1).frames
    for f in sorted(frames.glob("synth_*.fits"))[30:90]:
        f.unlink()  # half the series' span in one gap
    report, text = init_config(frames, tmp_path / "c.yaml")
    assert "the gaps cover" in report and "% of the series" in report
    assert "# NOTE: the gaps cover" in text
