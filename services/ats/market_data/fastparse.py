"""Vectorised tokenizers for the two bulk candle file formats (freqtrade JSON, ``timestamp,...`` CSV).

They read a file's raw bytes with numpy in a few passes (no Python object per row) and return the candles as
arrays plus the exact decimal text of every value. They *accept* only the plain, common shape of each format
and return ``None`` for anything else (strings, signs, exponents, NaN, whitespace inside a number, quoted or
blank CSV lines, ISO datetimes, ...): the caller (``ats.market_data.loaders.prepare_file``) then takes the
general parser, which either accepts the file with the same result or raises the one-line error naming the
file and row. So this module never decides that a file is bad and never words an error; it only has to be
right when it says "good".

Accepted shapes (everything else -> None):

* freqtrade JSON: ``[[t,o,h,l,c,v],...]``, whitespace allowed between tokens; ``t`` an integer, the five
  values JSON numbers without sign or exponent (``0|[1-9][0-9]*`` then optional ``.[0-9]+``), so the JSON
  text of a value is also its exact NUMERIC text.
* CSV: header line exactly ``timestamp,open,high,low,close,volume``; lines end in ``\\n`` or ``\\r\\n``; no blank
  line; ``timestamp`` either ``YYYY-MM-DD`` (a valid calendar date; 00:00 UTC of that date) or 1-15 digits
  (Unix ms); each value digits with at most one ``.`` (at least one digit), as the general path's number
  pattern allows.

Floats: ``numpy.loadtxt`` (numpy's C reader, which converts each token with Python's correctly rounded
``PyOS_string_to_double``), i.e. the same float64 as ``float(text)`` in the general path (the tests compare
them). Picked by measurement on the 18 shared files (338,693 rows, 2 shared cores, one run each): loadtxt
0.11-0.12 s, ``numpy.fromstring`` 0.16-0.33 s, pyarrow 26 ``csv.read_csv`` 0.21-0.25 s (so no new dependency),
pandas ``round_trip`` 0.90 s (pandas' faster modes are not correctly rounded: they differ from ``float``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

_BOM = b"\xef\xbb\xbf"
_DIGITS = b"0123456789"
_JSON_CHARS = _DIGITS + b".,[]"
_CSV_CHARS = _DIGITS + b".,-\n"
_CSV_HEADER = b"timestamp,open,high,low,close,volume"
_WS = b" \t\r\n"
_DOT, _COMMA, _LBR, _RBR, _NL, _ZERO, _DASH = 46, 44, 91, 93, 10, 48, 45
_DAY_MS = 86_400_000
_EXACT_INT = 2.0 ** 53  # float64 holds every integer below this exactly
_COMMA_TO_TAB = bytes.maketrans(b",", b"\t")
_JSON_TO_COPY = bytes.maketrans(b"],", b"\n\t")
_POW10 = 10.0 ** np.arange(16)


@dataclass
class Tokens:
    """Candles tokenized from one file, in file order (not yet checked against the candle rules).

    open_ms: int64 array (n,), candle open times in Unix ms (UTC); values: float64 array (n, 5) of open, high,
    low, close, volume (for the checks); stage_text: the rows in PostgreSQL COPY text format for the loader's
    staging table, ``\\topen_ms\\topen\\thigh\\tlow\\tclose\\tvolume\\n`` each (an empty leading field, then the
    values exactly as published: ``b"\\t1606780800000\\t19695.87\\t19720.0\\t19479.8\\t19565.47\\t4570.361518\\n"``).
    """

    open_ms: np.ndarray
    values: np.ndarray
    stage_text: bytes


def tokenize_freqtrade(raw: bytes) -> Tokens | None:
    """Tokens of a freqtrade JSON array ``[[open_time_ms, open, high, low, close, volume], ...]``, or None
    when the bytes are not in the plain shape of the module docstring (``[]`` included)."""
    data = raw[3:] if raw.startswith(_BOM) else raw
    other = data.translate(None, _JSON_CHARS)
    if other and other.translate(None, _WS):
        return None  # a character outside the plain shape (quote, letter, sign, ...)
    if other:
        data = _drop_json_whitespace(data)
        if data is None:
            return None
    a = np.frombuffer(data, dtype=np.uint8)
    is_sep = (a == _COMMA) | (a == _LBR) | (a == _RBR)
    seps = np.flatnonzero(is_sep)
    n = (len(seps) - 1) // 8
    if n < 1 or len(seps) != 8 * n + 1 or seps[0] != 0 or seps[-1] != len(a) - 1:
        return None
    if a[seps].tobytes() != b"[" + b",".join([b"[,,,,,]"] * n) + b"]":
        return None
    rows = seps[1:].reshape(n, 8)  # per row: '[', five ',', ']', then the separator after the row
    if rows[0, 0] != 1 or (rows[:, 7] != rows[:, 6] + 1).any() or (rows[1:, 0] != rows[:-1, 7] + 1).any():
        return None  # something between a row's ']' and the next separator
    starts, ends = rows[:, :6] + 1, rows[:, 1:7]
    lens = ends - starts
    if (lens < 1).any():
        return None
    first, last = a[starts], a[ends - 1]
    if (first == _DOT).any() or (last == _DOT).any():
        return None
    if ((first == _ZERO) & (lens > 1) & (a[np.minimum(starts + 1, len(a) - 1)] != _DOT)).any():
        return None  # leading zero (not JSON)
    # the separators are right, so one translate turns the file into COPY rows: '[' dropped, ']' ends a row,
    # ',' separates fields; the ',' between two rows becomes the empty leading field of the next row
    stage = b"\t" + data[1:-1].translate(_JSON_TO_COPY, b"[")
    vals = _loadtxt(stage, delimiter="\t", usecols=(1, 2, 3, 4, 5, 6))
    if vals is None:
        return None  # a token that is not a number ("1.2.3"); numbers now have at most one '.'
    ts = vals[:, 0]
    if (ts >= _EXACT_INT).any() or (ts != np.floor(ts)).any() or (lens[:, 0] != _int_digits(ts)).any():
        return None  # open_time not an integer token (a '.' makes the token longer than its integer value)
    return Tokens(ts.astype(np.int64), vals[:, 1:], stage)


def tokenize_csv(raw: bytes) -> Tokens | None:
    """Tokens of a ``timestamp,open,high,low,close,volume`` CSV, or None when the bytes are not in the plain
    shape of the module docstring."""
    data = raw[3:] if raw.startswith(_BOM) else raw
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n")
    if head != _CSV_HEADER or not sep:
        return None
    if body.endswith(b"\n"):
        body = body[:-1]
    if not body or body.translate(None, _CSV_CHARS) or b"\n\n" in body:
        return None
    a = np.frombuffer(body, dtype=np.uint8)
    is_sep = (a == _COMMA) | (a == _NL)
    seps = np.flatnonzero(is_sep)
    n = (len(seps) + 1) // 6
    if n < 1 or len(seps) != 6 * n - 1 or a[seps].tobytes() != b"\n".join([b",,,,,"] * n):
        return None
    cuts = np.empty(6 * n + 1, dtype=np.int64)
    cuts[0], cuts[1:-1], cuts[-1] = -1, seps, len(a)
    starts, ends = (cuts[:-1] + 1).reshape(n, 6), cuts[1:].reshape(n, 6)
    lens = ends - starts
    if (lens < 1).any() or ((lens[:, 1:] == 1) & (a[starts[:, 1:]] == _DOT)).any():
        return None  # an empty field, or a value "." without a digit
    open_ms = _csv_open_ms(a, starts[:, 0], ends[:, 0])
    if open_ms is None:
        return None
    vals = _loadtxt(body, delimiter=",", usecols=(1, 2, 3, 4, 5))
    if vals is None:
        return None  # not a number ("1.2.3"); digits with at most one '.' and a digit are what float() takes
    lines = body.translate(_COMMA_TO_TAB).split(b"\n")
    cut = (ends[:, 0] - starts[:, 0]).tolist()
    stage = b"".join([b"\t%d%s\n" % (t, line[k:]) for t, line, k in zip(open_ms.tolist(), lines, cut)])
    return Tokens(open_ms, vals, stage)


# ----------------------------------------------------------------------------------------------- helpers

def _drop_json_whitespace(data: bytes) -> bytes | None:
    """The JSON without whitespace, or None when whitespace separates two number characters (``1 2``)."""
    a = np.frombuffer(data, dtype=np.uint8)
    keep = np.flatnonzero((a != 32) & (a != 9) & (a != 13) & (a != 10))
    if keep.size < 2:
        return None
    k = a[keep]
    gap = np.flatnonzero(np.diff(keep) > 1)  # kept bytes j and j+1 had whitespace between them
    num = ((k >= _ZERO) & (k <= _ZERO + 9)) | (k == _DOT)
    if (num[gap] & num[gap + 1]).any():
        return None
    return k.tobytes()


def _int_digits(v: np.ndarray) -> np.ndarray:
    """Number of decimal digits of non-negative integer-valued floats below 2**53 (0 has one)."""
    return np.maximum(np.searchsorted(_POW10, v, side="right"), 1)


def _loadtxt(text: bytes, *, delimiter: str, usecols: tuple) -> np.ndarray | None:
    """(n, len(usecols)) float64 of delimited lines, or None when numpy cannot read every used field."""
    try:
        vals = np.loadtxt(io.BytesIO(text), delimiter=delimiter, dtype=np.float64, usecols=usecols, ndmin=2,
                          encoding="latin1", comments=None)
    except ValueError:
        return None
    return vals if vals.shape[1] == len(usecols) else None


def _csv_open_ms(a: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Unix ms of the CSV timestamp fields (each ``YYYY-MM-DD`` or 1-15 digits), or None."""
    lens = ends - starts
    is_date = lens == 10
    if np.count_nonzero(a == _DASH) != 2 * np.count_nonzero(is_date):
        return None  # a '-' outside the two of each date (a sign, an ISO datetime, ...)
    out = np.empty(len(starts), dtype=np.int64)
    if is_date.any():
        s = starts[is_date]
        if ((a[s + 4] != _DASH) | (a[s + 7] != _DASH)).any():
            return None
        digs = a[s[:, None] + np.array([0, 1, 2, 3, 5, 6, 8, 9])].astype(np.int64) - _ZERO
        if ((digs < 0) | (digs > 9)).any():
            return None
        y = digs[:, 0] * 1000 + digs[:, 1] * 100 + digs[:, 2] * 10 + digs[:, 3]
        m = digs[:, 4] * 10 + digs[:, 5]
        day = digs[:, 6] * 10 + digs[:, 7]
        if ((y < 1) | (m < 1) | (m > 12) | (day < 1)).any():
            return None
        month = (y - 1970) * 12 + (m - 1)
        first = month.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        after = (month + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        if (day > after - first).any():
            return None  # 2021-02-30 and the like
        out[is_date] = (first + day - 1) * _DAY_MS
    rest = ~is_date
    if rest.any():  # Unix ms
        s, e = starts[rest], ends[rest]
        width = int((e - s).max())
        if width > 15:
            return None
        idx = s[:, None] + np.arange(width)
        inside = idx < e[:, None]
        digs = np.where(inside, a[np.minimum(idx, len(a) - 1)].astype(np.int64) - _ZERO, 0)
        if ((digs < 0) | (digs > 9)).any():
            return None  # a '.' (dashes were ruled out above)
        power = np.maximum((e - s)[:, None] - 1 - np.arange(width), 0)
        out[rest] = (digs * np.where(inside, 10 ** power, 0)).sum(axis=1)
    return out
