"""input.path as a file, a folder or a glob: a path that exists as written is never a glob.

A folder named ``AIA [1600]`` (brackets, as download tools name channels) was read as a glob
(``[1600]`` a set of characters), so ``specfit run`` found "no input files in glob" and
``specfit init`` "no FITS or image files" in a folder full of frames.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time, TimeDelta
from PIL import Image

from specfit.config import InputConfig
from specfit.errors import InputError
from specfit.init import init_config, inspect_input
from specfit.io import detect_kind, input_names, literal_glob, open_input
from specfit.io.fits_series import list_files

NAMES = ["f[0].fits", "f*1.fits", "f?2.fits", "f3.fits", "f4.fits", "f5.fits", "f6.fits", "f7.fits"]


def _frames(folder, names=NAMES, t0="2020-01-01T00:00:00"):
    """Small FITS frames 12 s apart, one per name; returns the data (in name order)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = np.arange(len(names) * 12, dtype=np.float32).reshape(len(names), 3, 4)
    for i, name in enumerate(names):
        h = fits.Header()
        h["DATE-OBS"] = (Time(t0, scale="utc") + TimeDelta(12.0 * i, format="sec")).isot
        h["EXPTIME"] = 1.0
        fits.PrimaryHDU(data[i], header=h).writeto(folder / name)
    return data


@pytest.mark.parametrize("name", ["AIA [1600]", "AIA [16]00", "a*b", "what?", "[x]"])
def test_a_folder_named_like_a_glob_is_a_folder(tmp_path, name):
    folder = tmp_path / name
    data = _frames(folder)
    cfg = InputConfig(path=str(folder), pattern="*.fits")
    assert detect_kind(cfg) == "fits_series"
    assert [p.rsplit("/", 1)[-1] for p in list_files(cfg)] == sorted(NAMES)
    arr = open_input(cfg)
    assert arr.sizes["time"] == len(NAMES)
    # File names with [, * and ? in the folder are read too, in time order.
    np.testing.assert_array_equal(arr.values, data)
    # The default pattern and one that names files with a bracket.
    assert arr.sizes == open_input(InputConfig(path=str(folder))).sizes
    one = InputConfig(path=str(folder), pattern="f[[]0].fits")
    assert [p.rsplit("/", 1)[-1] for p in list_files(one)] == ["f[0].fits"]
    # the run's record of its inputs (what a resume compares) counts the same files
    from specfit.config import load_config
    from specfit.workspace import input_fingerprint

    run_cfg = load_config(
        {
            "input": {"path": str(folder), "pattern": "*.fits"},
            "output": {"path": str(tmp_path / "r")},
        }
    )
    assert input_fingerprint(run_cfg)["files"] == len(NAMES)


def test_a_glob_below_a_folder_named_like_a_glob(tmp_path):
    """``AIA [1600]/*.fits``: the part that exists as written is literal, the rest a glob; a
    real glob (no such folder) still is one."""
    folder = tmp_path / "AIA [1600]"
    _frames(folder)
    (tmp_path / "AIA 1").mkdir()  # what [1600] would match as a glob: not taken
    (tmp_path / "AIA 1" / "decoy.fits").write_bytes(b"")
    names = literal_glob(str(folder / "*.fits"))
    assert [n.rsplit("/", 1)[-1] for n in names] == sorted(NAMES)
    arr = open_input(InputConfig(path=str(folder / "f[3-7].fits")))
    assert arr.sizes["time"] == 5
    files, where = input_names(str(tmp_path / "AIA [1600]" / "f?.fits"), "*")
    assert len(files) == 5 and where.startswith("glob")
    # A glob whose folders do not exist as written is a glob, as before.
    _frames(tmp_path / "run1", names=["a.fits", "b.fits"])
    _frames(tmp_path / "run2", names=["c.fits", "d.fits"], t0="2020-01-01T00:01:00")
    files, _ = input_names(str(tmp_path / "run[12]" / "*.fits"), "*")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.fits", "b.fits", "c.fits", "d.fits"]
    with pytest.raises(InputError, match="does not exist"):
        input_names(str(tmp_path / "nowhere"), "*")


def test_images_and_cubes_in_a_bracketed_folder(tmp_path):
    folder = tmp_path / "jpg [1600]"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((5, 6), 10 * i, np.uint8)).save(
            folder / f"1600_20120606_05_00_{10 + 12 * i:02d}.png"
        )
    cfg = InputConfig(
        path=str(folder), time_source="filename", time_pattern="1600_%Y%m%d_%H_%M_%S.png"
    )
    assert detect_kind(cfg) == "images"
    assert open_input(cfg).sizes["time"] == 4
    cube = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    np.save(folder / "c [1].npy", cube)
    np.save(folder / "t.npy", np.arange(4) * 12.0)
    arr = open_input(InputConfig(path=str(folder / "c [1].npy"), times=str(folder / "t.npy")))
    np.testing.assert_array_equal(arr.values, cube)


def test_init_reads_a_bracketed_folder(tmp_path):
    """specfit init said the folder "holds no FITS or image files"; the config it writes
    runs the same folder."""
    from specfit.config import load_config

    folder = tmp_path / "AIA [1600]"
    names = [f"frame_{i:04d}.fits" for i in range(20)]
    _frames(folder, names=names)
    insp = inspect_input(folder)
    assert insp.input["kind"] == "fits_series" and "20 single-frame FITS files" in insp.report[1]
    out = tmp_path / "c.yaml"
    init_config(folder, out)
    cfg = load_config(out)
    assert open_input(cfg.input).sizes["time"] == 20


def test_a_frame_that_is_a_broken_link_is_named_not_dropped(tmp_path):
    """A reviewer's folder of links into an archive disk that was not mounted: the links whose
    target was missing were left out without a word (60 of 195 frames; rc 0). Now the kind
    detection, the reader and init stop with the link and its target named; a broken link
    that is no frame (notes.txt) is not the input's business."""
    src = tmp_path / "archive"
    _frames(src, names=[f"f{i}.fits" for i in range(8)])
    farm = tmp_path / "farm"
    farm.mkdir()
    for i in range(8):
        target = src / f"f{i}.fits" if i < 6 else tmp_path / "unmounted" / f"f{i}.fits"
        (farm / f"f{i}.fits").symlink_to(target)
    (farm / "notes.txt").symlink_to(tmp_path / "gone.txt")
    cfg = InputConfig(kind="fits_series", path=str(farm))
    for call in (
        lambda: detect_kind(InputConfig(path=str(farm))),
        lambda: open_input(cfg),
        lambda: inspect_input(str(farm)),
    ):
        with pytest.raises(InputError, match=r"2 frame\(s\) in folder .* links whose target is"):
            call()
    (farm / "f6.fits").unlink()
    (farm / "f7.fits").unlink()
    assert open_input(cfg).sizes["time"] == 6  # the frames that are there: no error


def test_a_folder_that_cannot_be_read_says_so(tmp_path, monkeypatch):
    """A folder without read permission was reported as holding "no FITS or image files"
    (a reviewer's finding). Root may read anything, so the permission is simulated."""
    import os

    folder = tmp_path / "frames"
    _frames(folder, names=[f"f{i}.fits" for i in range(8)])
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: str(p) != str(folder) and real(p, m, **kw))
    for call in (
        lambda: detect_kind(InputConfig(path=str(folder))),
        lambda: open_input(InputConfig(kind="fits_series", path=str(folder))),
    ):
        with pytest.raises(InputError, match=r"cannot list the folder .*no read permission"):
            call()
