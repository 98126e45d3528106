"""The plain-FITS fast path (specfit/io/_fitshead.py) against astropy, its reference.

Header values must be exactly what astropy's ``Header.get`` gives (same value, same type);
frame data exactly what astropy reads; anything the fast path does not handle, or a file
changed after the scan, must be read by astropy with its values and errors.
"""

from __future__ import annotations

import glob
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specfit.config import InputConfig
from specfit.io import open_input
from specfit.io._fitshead import NotPlain, card_value, read_plain, scan_plain

AIA_FITS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "aia1600_20120606"

# Cards in the forms FITS writers use, and some they should not (astropy decides those).
CARDS = [
    "EXPTIME =             2.901214",
    "EXPTIME =             2.901214 / [s] exposure time",
    "EXPTIME =                  2.0",
    "EXPTIME =                    2 / an integer stays an integer",
    "EXPTIME =                  -0.",
    "EXPTIME =                 .125",
    "EXPTIME =              1.5D+03 / D exponent",
    "EXPTIME =               1.5E-3",
    "EXPTIME =              +000017",
    "EXPTIME =               1.5e-3 / lower-case exponent: astropy's parser",
    "EXPTIME = 2.0",
    "EXPTIME =                  1E5",
    "EXPTIME =                    T",
    "EXPTIME =                    F / logical",
    "EXPTIME =                      / undefined",
    "EXPTIME =                      ",
    "EXPTIME = (1.0, 2.0)",
    "DATE-OBS= '2012-06-06T05:00:17.12'",
    "DATE-OBS= '2012-06-06T05:00:17.12Z'   / with a comment",
    "DATE-OBS= '2012-06-06T05:00:17.12  ' / trailing blanks go",
    "DATE-OBS= '  leading blanks stay'",
    "DATE-OBS= 'O''HARA'",
    "DATE-OBS= 'it''s / not a comment' / but this is",
    "DATE-OBS= ''",
    "DATE-OBS= '        '",
    "DATE-OBS= 'a' / comment with 'quotes' and / slashes",
    "DATE-OBS='no space before the quote'",
    "DATE-OBS= 'unterminated",
    "BUNIT   = 'DN/s    '",
    "BLANK   =               -32768",
]


def _astropy(card: str):
    return fits.Card.fromstring(card.ljust(80)).value


@pytest.mark.parametrize("card", CARDS)
def test_card_values_are_astropys(card):
    card = card.ljust(80)
    try:
        want = _astropy(card)
    except Exception:  # astropy cannot parse it: the fast path must not either
        with pytest.raises(NotPlain):
            card_value(card)
        return
    got = card_value(card)
    assert type(got) is type(want) and (got == want or (got != got and want != want)), (
        card,
        got,
        want,
    )


def _aia_files() -> list[str]:
    files = sorted(glob.glob(str(AIA_FITS / "fits" / "*.fits")))
    if not files:
        pytest.skip(f"real AIA data not found at {AIA_FITS} (../shared/data)")
    return files


@pytest.mark.realdata
def test_every_card_of_real_aia_headers_reads_as_astropy_does():
    """All 596 x 188 cards of the AIA level-1 headers: value and type as astropy's."""
    n = 0
    for f in _aia_files():
        header = fits.getheader(f)
        keys = tuple(k for k in header if k not in ("", "COMMENT", "HISTORY"))
        values, layout, size = scan_plain(f, keys)
        for k in values:
            want = header.get(k)
            assert type(values[k]) is type(want) and values[k] == want, (f, k)
            n += 1
        with fits.open(f) as hdul:
            assert layout.offset == hdul.fileinfo(0)["datLoc"]
            raw = np.asarray(fits.getdata(f, do_not_scale_image_data=True))
        got = read_plain(f, layout, raw.shape)
        assert got.dtype == raw.dtype and np.array_equal(got, raw)
    assert n > 596 * 150


def _frame(path: Path, data: np.ndarray, t: str, **cards) -> None:
    h = fits.Header({"DATE-OBS": t, "EXPTIME": 2.0, **cards})
    fits.PrimaryHDU(data, header=h).writeto(path)


def test_scan_refuses_what_it_does_not_read(tmp_path):
    """Files astropy must read: gzip, image in an extension (e.g. Rice-compressed AIA),
    HIERARCH and long-string cards, a shifted value indicator, random groups."""
    img = np.ones((4, 5), np.float32)
    keys = ("DATE-OBS", "EXPTIME")
    _frame(tmp_path / "plain.fits", img, "2020-01-01T00:00:00")
    values, layout, size = scan_plain(str(tmp_path / "plain.fits"), keys)
    assert values["EXPTIME"] == 2.0 and layout.offset == 2880 and size == 2880 * 2
    with open(tmp_path / "plain.fits", "rb") as a, gzip.open(tmp_path / "g.fits.gz", "wb") as b:
        shutil.copyfileobj(a, b)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img)]).writeto(tmp_path / "rice.fits")
    h = fits.Header({"DATE-OBS": "2020-01-01T00:00:00", "HIERARCH ESO DET DIT": 2.0})
    fits.PrimaryHDU(img, header=h).writeto(tmp_path / "hierarch.fits")
    h = fits.Header({"DATE-OBS": "2020-01-01T00:00:00", "EXPTIME": 2.0, "LONG": "x" * 100})
    fits.PrimaryHDU(img, header=h).writeto(tmp_path / "long.fits")
    raw = (tmp_path / "plain.fits").read_bytes().replace(b"EXPTIME =", b"EXPTIME= ")
    (tmp_path / "shifted.fits").write_bytes(raw)
    for name in ("g.fits.gz", "rice.fits", "hierarch.fits", "shifted.fits"):
        with pytest.raises(NotPlain):
            scan_plain(str(tmp_path / name), keys)
    # A long string is refused only when it is asked for.
    assert scan_plain(str(tmp_path / "long.fits"), keys)[0]["EXPTIME"] == 2.0
    with pytest.raises(NotPlain):
        scan_plain(str(tmp_path / "long.fits"), (*keys, "LONG"))
    # Keys that are no standard keyword go to astropy (e.g. a HIERARCH time key).
    with pytest.raises(NotPlain):
        scan_plain(str(tmp_path / "plain.fits"), ("ESO DET DIT",))


def _astropy_series(files: list[Path]) -> np.ndarray:
    """The reference: each file read by astropy (BSCALE/BZERO applied, BLANK -> NaN), over
    EXPTIME, in time order."""
    out = []
    for f in files:
        with fits.open(f) as h:
            hd = h[0].header
            data = np.asarray(h[0].data, np.float64)
            raw = fits.getdata(f, do_not_scale_image_data=True)
            if "BLANK" in hd:
                data[raw == hd["BLANK"]] = np.nan
        out.append((hd["DATE-OBS"], (data.astype(np.float32) / np.float32(hd["EXPTIME"]))))
    return np.stack([d for _, d in sorted(out, key=lambda x: x[0])])


def test_mixed_series_reads_as_astropy_and_a_changed_file_is_reread(tmp_path):
    """Plain float, scaled int16 with BLANK and gzipped files in one series give astropy's
    values; a plain file rewritten after the scan with another header (longer, other BSCALE)
    is read by astropy from its new header, never at the old offset."""
    rng = np.random.default_rng(4)
    d = tmp_path / "s"
    d.mkdir()
    files = []
    for i in range(6):
        p = d / f"f{i}.fits"
        t = f"2020-01-01T00:00:{10 * i:02d}"
        if i % 3 == 0:
            _frame(p, rng.normal(100, 5, (6, 7)).astype(np.float32), t)
        elif i % 3 == 1:
            raw = rng.integers(-100, 100, (6, 7)).astype(np.int16)
            raw[0, 0] = -32768
            hdu = fits.PrimaryHDU(raw, header=fits.Header({"DATE-OBS": t, "EXPTIME": 2.0}))
            hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.5, 10.0, -32768
            hdu.writeto(p)
        else:
            _frame(d / "tmp", rng.normal(100, 5, (6, 7)).astype(np.float32), t)
            p = d / f"f{i}.fits.gz"
            with open(d / "tmp", "rb") as a, gzip.open(p, "wb") as b:
                shutil.copyfileobj(a, b)
            (d / "tmp").unlink()
        files.append(p)
    arr = open_input(InputConfig(path=str(d), kind="fits_series"))
    np.testing.assert_array_equal(arr.values, _astropy_series(files))
    # Rewrite a scanned plain file: a header two blocks long, BSCALE 2, the data flipped.
    ints = fits.getdata(files[1], do_not_scale_image_data=True)[::-1].copy()
    h = fits.Header({"DATE-OBS": "2020-01-01T00:00:10", "EXPTIME": 2.0})
    for k in range(40):
        h[f"PAD{k}"] = k
    hdu = fits.PrimaryHDU(ints, header=h)
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 2.0, 10.0, -32768
    files[1].unlink()
    hdu.writeto(files[1])
    assert fits.open(files[1])[0].fileinfo()["datLoc"] == 2 * 2880
    want = np.where(ints == -32768, np.nan, ints * 2.0 + 10.0).astype(np.float32) / np.float32(2)
    np.testing.assert_array_equal(arr.isel(time=1).values, want)
