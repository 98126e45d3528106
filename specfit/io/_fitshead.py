"""A fast path for plain FITS frames: the primary header read once, the data read by offset.

astropy parses every card it is asked about through its configuration system (about 0.1 ms a
card) and rebuilds an HDU list for every open, so scanning 3600 small frames and reading them
again cost ~4-5 ms a file. Most frame series (AIA level 1 cutouts, the synthetic writer,
headline.py's frames) are the simplest FITS there is: one uncompressed image in the primary
HDU, standard 80-character cards. For those this module

- reads the primary header's bytes once and parses only the cards a reader asks for
  (:func:`scan_plain`), with the FITS standard's value syntax; any card whose value is not a
  plain string, logical, integer or real is handed to astropy's own ``Card`` parser, so the
  values are astropy's;
- records where the data start, how long they are and a digest of the header bytes, so that
  the data are later read with one ``readinto`` (:func:`read_plain`) after checking that the
  header on disk is still byte for byte the one scanned.

Anything unusual (gzip, no image in the primary HDU, more HDUs after it, random groups,
HIERARCH cards, a wanted key continued on CONTINUE cards, a malformed keyword, no END card,
non-ASCII bytes) raises :class:`NotPlain` at scan time and :func:`read_plain` returns None
when the file changed or is short: the caller then reads that file with astropy exactly as
before, with the same checks and error messages.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["NotPlain", "PlainLayout", "card_value", "read_plain", "scan_plain", "BITPIX_DTYPES"]

BLOCK = 2880
CARD = 80
_END = b"END" + b" " * 77
_FIRST_READ = 8 * BLOCK  # one read covers headers of up to 288 cards (AIA level 1: 188)

# Data types of FITS BITPIX values, big-endian as on disk (astropy's raw data have these too).
BITPIX_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}

# The value field (columns 11-80) of a card in the standard's fixed or free format:
# a string (quotes doubled inside, printable ASCII), a logical, an integer or a real (E or D
# exponent), then blanks and an optional comment. Anything else goes to astropy.
_STRING_RE = re.compile(r" *'((?:[ -&(-~]|'')*)' *(?:/.*)?$")
_LOGICAL_RE = re.compile(r" *([TF]) *(?:/.*)?$")
_NUMBER_RE = re.compile(r" *([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[DE][+-]?\d+)?) *(?:/.*)?$")
_INT_RE = re.compile(r"[+-]?\d+$")
# astropy reads a string like 'AXIS.1: 2' as a record-valued keyword card, looked up under
# another name; such a card is left to astropy (the whole file).
_RVKC_RE = re.compile(r"[a-zA-Z_]\w*(\.\d+)?(\.[a-zA-Z_]\w*(\.\d+)?)*: +[+-]?[\d.]")
_KEYWORD_RE = re.compile(r"[A-Z0-9_-]{1,8}$")


class NotPlain(Exception):
    """The file is not a plain primary-HDU image this module reads; use astropy."""


def card_value(card: str) -> object:
    """The value of one 80-character card (keyword and "= " in columns 1-10), as astropy's
    ``Header.get`` returns it: strings without trailing blanks, ``bool``, ``int`` or
    ``float``; anything else (complex, undefined, unusual syntax) by astropy's ``Card``."""
    field = card[10:]
    m = _STRING_RE.match(field)
    if m is not None:
        text = m.group(1).replace("''", "'").rstrip()
        if text.endswith("&") or _RVKC_RE.match(text):
            raise NotPlain("long-string or record-valued card")
        return text
    m = _NUMBER_RE.match(field)
    if m is not None:
        digits = m.group(1)
        if _INT_RE.match(digits):
            return int(digits)
        return float(digits.replace("D", "E"))
    m = _LOGICAL_RE.match(field)
    if m is not None:
        return m.group(1) == "T"
    from astropy.io import fits

    try:
        return fits.Card.fromstring(card).value
    except Exception:  # unparsable: astropy's reading of the whole file says what is wrong
        raise NotPlain("a card astropy cannot parse") from None


@dataclass(frozen=True)
class PlainLayout:
    """Where a plain file's data are and what its header was."""

    offset: int  # bytes before the data (the header's blocks)
    nbytes: int  # bytes of data
    bitpix: int
    digest: bytes  # of the header bytes

    @property
    def size_needed(self) -> int:
        return self.offset + self.nbytes


def _digest(head: bytes) -> bytes:
    return hashlib.blake2b(head, digest_size=16).digest()


def scan_plain(path: str, keys: tuple[str, ...]) -> tuple[dict, PlainLayout, int]:
    """The values of ``keys`` present in the primary header of ``path`` (absent keys are left
    out, as astropy's ``Header.get`` would default them), the data layout and the file size.

    ``keys`` must be upper-case standard keywords (at most 8 characters). The dict always
    holds ``BITPIX``, ``NAXIS`` and ``NAXISn``.

    Raises
    ------
    NotPlain
        When astropy should read the file (see the module docstring).
    OSError
        When the file cannot be opened or read.
    """
    if str(path).lower().endswith(".gz"):
        raise NotPlain("gzip")
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        raw = fh.read(_FIRST_READ)
        if not raw.startswith(b"SIMPLE  =                    T"):
            raise NotPlain("not a standard primary header")
        end = _find_end(raw)
        while end < 0:
            more = fh.read(_FIRST_READ)
            if not more:
                raise NotPlain("no END card")
            raw += more
            end = _find_end(raw)
    offset = -(-(end + CARD) // BLOCK) * BLOCK  # the header's blocks, END card included
    if len(raw) < offset:
        raise NotPlain("header blocks cut short")  # astropy reports it
    try:
        text = raw[:end].decode("ascii")
    except UnicodeDecodeError:
        raise NotPlain("non-ASCII header") from None
    ncards = end // CARD  # cards before END
    first: dict[str, int] = {}
    for i in range(ncards):
        kw = text[i * CARD : i * CARD + 8]
        if "=" in kw or kw.startswith("HIERARCH"):
            raise NotPlain("a HIERARCH card or a shifted value indicator")
        name = kw.rstrip().upper()
        if name not in first:
            first[name] = i
    if "END" in first or "GROUPS" in first:
        raise NotPlain("an early END card or random groups")
    values: dict[str, object] = {}

    def get(name: str) -> None:
        i = first.get(name)
        if i is None:
            return
        card = text[i * CARD : (i + 1) * CARD]
        if card[8:10] != "= ":
            raise NotPlain(f"{name} has no value indicator")
        if text.startswith("CONTINUE", (i + 1) * CARD):
            raise NotPlain(f"{name} continues on CONTINUE cards")  # astropy joins them
        values[name] = card_value(card)

    for name in ("BITPIX", "NAXIS"):
        get(name)
    bitpix, naxis = values.get("BITPIX"), values.get("NAXIS")
    if (
        type(bitpix) is not int
        or bitpix not in BITPIX_DTYPES
        or type(naxis) is not int
        or naxis < 2
    ):
        raise NotPlain("no image in the primary HDU")
    axes = []
    for k in range(1, naxis + 1):
        get(f"NAXIS{k}")
        n = values.get(f"NAXIS{k}")
        if type(n) is not int or n < 1:
            raise NotPlain("an empty or malformed axis")
        axes.append(n)
    for name in keys:
        if not _KEYWORD_RE.match(name):
            raise NotPlain(f"keyword {name!r} is not a standard keyword")
        if name not in values:
            get(name)
    nbytes = abs(bitpix) // 8 * int(np.prod(axes))
    if size > offset + -(-nbytes // BLOCK) * BLOCK:
        raise NotPlain("more HDUs after the primary one")  # the image may be one of those
    layout = PlainLayout(offset, nbytes, bitpix, _digest(raw[:offset]))
    return values, layout, size


def _find_end(raw: bytes) -> int:
    """Offset of the END card (on a card boundary) in ``raw``, or -1."""
    pos = raw.find(_END)
    while pos >= 0 and pos % CARD:
        pos = raw.find(_END, pos + 1)
    return pos


def read_plain(path: str, layout: PlainLayout, shape: tuple[int, int]) -> np.ndarray | None:
    """The raw (ny, nx) data of a plain file scanned as ``layout``, or None when the header on
    disk is no longer the one scanned or the data are short (astropy then reads the file and
    reports what is wrong). ``FileNotFoundError`` passes through."""
    with open(path, "rb") as fh:
        head = fh.read(layout.offset)
        if len(head) != layout.offset or _digest(head) != layout.digest:
            return None
        buf = bytearray(layout.nbytes)
        if fh.readinto(buf) != layout.nbytes:
            return None
    return np.frombuffer(buf, dtype=BITPIX_DTYPES[layout.bitpix]).reshape(shape)
