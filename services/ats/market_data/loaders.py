"""Candle loaders: freqtrade JSON, CSV, Bybit v5 kline payloads, Alpaca bars -> the ``candles`` table.

Formats (detected from the content, not the extension):

* freqtrade JSON: ``[[open_time_ms, open, high, low, close, volume], ...]`` (numbers; numeric strings accepted).
* CSV with header ``timestamp,open,high,low,close,volume``; ``timestamp`` is a date ``YYYY-MM-DD`` (the candle
  opens at 00:00 UTC of that exchange date), an ISO-8601 datetime (naive = UTC) or Unix milliseconds.
* Bybit v5 kline payload as ``pybit.unified_trading.HTTP.get_kline`` returns it (a JSON file holding that dict
  works too): ``{"retCode": 0, "retMsg": "OK", "result": {"category", "symbol", "list": [[startTime, open,
  high, low, close, volume, turnover], ...]}, ...}``, values strings, newest first. See ``load_bybit_kline``.
* Alpaca bars from alpaca-py (``BarSet`` / list of ``Bar``), see ``load_alpaca_bars``; a JSON file holding the
  raw Alpaca REST body ``{"bars": {"SPY": [{"t", "o", "h", "l", "c", "v", ...}]}}`` (or ``{"bars": [...],
  "symbol": ...}``) is read too.

Symbol and timeframe come from the file name when it follows the freqtrade convention ``BASE_QUOTE-TF.json``
(``BTC_USDT-1h.json`` -> ``BTCUSDT``, ``1h``) or ``SYMBOL_TF.csv`` (``SPY_1d.csv`` -> ``SPY``, ``1d``); the
``symbol`` / ``timeframe`` arguments override. Source (the ``candles.source`` column): the ``source`` argument,
else the parent directory's name when it is a known exchange/vendor (``binance/BTC_USDT-1h.json`` ->
``binance``), else ``bybit`` / ``alpaca`` for vendor payloads, ``freqtrade`` for other freqtrade JSON and
``csv`` for CSV files (the shared ``equities/*.csv`` therefore load as source ``csv``).

Validation (before anything is written): bad JSON, wrong columns, non-numeric or non-finite values, high < low,
open/close outside [low, high], a negative or zero price, negative volume, an empty file, duplicate timestamps
with different values (identical duplicates collapse to one), timestamps not on the timeframe's UTC grid
(weeks open on Monday 00:00 UTC), timestamps before 1980 (seconds given instead of milliseconds), and an
unknown timeframe are refused with ``AtsError`` naming the file and the row, e.g.
``.../BTC_USDT-1h.json row 17: high 99.5 < low 100.1``. JSON rows are numbered from 1 in array order; CSV rows by
file line (the header is line 1).

Parsing: ``prepare_file`` reads a plain freqtrade JSON or CSV file with the vectorised tokenizers of
``ats.market_data.fastparse`` and checks the rules above on whole numpy arrays; every other shape, and every
file a rule refuses, goes through the general parser (``parse_file`` + ``validate``), which words the error.
Both give the same rows (tests/market_data/test_market_data_fastparse.py holds them to it).

Writes: one transaction per file, under a transaction-scoped advisory lock on (symbol, timeframe, source).
When the series has no candle in the file's time span (a first load) the rows are COPYed (text format, the
values' exact decimal text) straight into ``candles``; otherwise into a temporary staging table, then
``INSERT ... SELECT ... ON CONFLICT (symbol, timeframe, open_time, source) DO UPDATE ... WHERE values differ``:
loading the same file again changes nothing (no row is touched); a corrected value is updated in place and a
``system_events`` row (component ``market_data``, event ``candles_revised``) records it. Prices and volumes are
written as the exact decimal text of the input into NUMERIC columns. ``load_paths`` prepares the next file
while earlier ones are written, on two connections when it is given a DSN.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import psycopg
from psycopg import sql

from ..db.events import record_event
from ..errors import AtsError
from ..timeutil import TIMEFRAME_SECONDS, UTC
from . import fastparse
from .store import candle_upsert_sql

#: directory names recognised as a candle source (exchange or vendor) for ``candles.source``
KNOWN_SOURCES = frozenset({
    "binance", "binanceus", "bybit", "okx", "kraken", "coinbase", "kucoin", "gateio", "bitget", "htx", "huobi",
    "bitfinex", "bitstamp", "gemini", "mexc", "alpaca", "lean", "polygon", "yahoo",
})
#: Bybit v5 kline ``interval`` values for our timeframes
BYBIT_INTERVALS = {"5m": "5", "15m": "15", "1h": "60", "4h": "240", "1d": "D", "1w": "W"}
BYBIT_INTERVAL_TO_TF = {v: k for k, v in BYBIT_INTERVALS.items()}

_MIN_MS = 315532800000          # 1980-01-01 UTC: anything earlier is almost surely seconds, not milliseconds
_MAX_MS = 4102444800000         # 2100-01-01 UTC
_WEEK_OFFSET_MS = 4 * 86400000  # 1970-01-01 was a Thursday: Monday-aligned weeks are offset by 4 days
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUM_RE = re.compile(rf"^{_NUM}$")
_ROW_RE = re.compile(rf"{_NUM}\x1f{_NUM}\x1f{_NUM}\x1f{_NUM}\x1f{_NUM}")  # five values joined by \x1f
_CSV_HEADER = ["timestamp", "open", "high", "low", "close", "volume"]
_FREQTRADE_NAME = re.compile(r"^([A-Za-z0-9]+)_([A-Za-z0-9]+)(?:_[A-Za-z0-9]+)?-([0-9]+[A-Za-z]+)(?:-[a-z_]+)?$")
_SYMBOL_TF_NAME = re.compile(r"^(.+)_([0-9]+[A-Za-z]+)$")


@dataclass
class LoadResult:
    """Outcome of loading one file or payload.

    path: the file (or a description such as ``bybit:BTCUSDT``); rows_in: candle rows read (before collapsing
    identical duplicates); rows_inserted: new candles written; rows_updated: existing candles whose values
    changed (0 on a plain reload).
    """

    path: str
    symbol: str
    timeframe: str
    source: str
    rows_in: int
    rows_inserted: int
    rows_updated: int = 0


@dataclass
class CandleBatch:
    """Parsed, not yet validated candles of one symbol/timeframe/source.

    rows: ``[open_time_ms, open, high, low, close, volume]`` with the five values as exact decimal strings (or
    ints / floats, converted with ``repr``); labels: the row name used in error messages (``row 3``,
    ``line 4``), same length as rows.
    """

    where: str
    symbol: str | None
    timeframe: str | None
    source: str | None
    rows: list = field(default_factory=list)
    labels: list = field(default_factory=list)


def _fail(where: str, label: str | None, msg: str) -> AtsError:
    return AtsError(f"{where}{' ' + label if label else ''}: {msg}")


# ----------------------------------------------------------------------------------------------- names

def names_from_filename(path: str | Path) -> tuple[str | None, str | None]:
    """(symbol, timeframe) from a file name, or (None, None) when it follows neither convention.

    ``BTC_USDT-1h.json`` -> ("BTCUSDT", "1h") (freqtrade ``BASE_QUOTE-TF``; a futures ``BASE_QUOTE_SETTLE-TF-futures``
    name keeps BASE+QUOTE); ``SPY_1d.csv`` -> ("SPY", "1d"). The timeframe is returned as written (not validated).
    """
    stem = Path(path).name
    for ext in (".json", ".csv", ".txt"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    m = _FREQTRADE_NAME.match(stem)
    if m:
        return (m.group(1) + m.group(2)).upper(), m.group(3)
    m = _SYMBOL_TF_NAME.match(stem)
    if m:
        return m.group(1).upper(), m.group(2)
    return None, None


def _source_from_dir(path: Path) -> str | None:
    parent = path.resolve().parent.name.lower()
    return parent if parent in KNOWN_SOURCES else None


# ----------------------------------------------------------------------------------------------- parsing

def _json_loads(text: str, where: str) -> Any:
    def bad_constant(name: str) -> str:
        return name  # NaN / Infinity become plain strings: refused by the numeric check with the row number

    try:
        # numbers stay their exact source text (str); validate() checks every value against _NUM_RE
        return json.loads(text, parse_float=str, parse_int=str, parse_constant=bad_constant)
    except json.JSONDecodeError as exc:
        raise _fail(where, None, f"bad JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def parse_freqtrade(obj: Any, where: str) -> list[tuple[list, str]]:
    """Rows of a freqtrade JSON document (already json-decoded). Raises AtsError on a wrong row shape."""
    if not isinstance(obj, list):
        raise _fail(where, None, "expected a JSON array of [open_time_ms, open, high, low, close, volume] rows")
    out = []
    for i, row in enumerate(obj, start=1):
        label = f"row {i}"
        if not isinstance(row, list) or len(row) != 6:
            got = f"{len(row)} columns" if isinstance(row, list) else type(row).__name__
            raise _fail(where, label, f"expected 6 columns [open_time_ms, open, high, low, close, volume], got {got}")
        out.append((row, label))
    return out


def parse_csv_text(text: str, where: str) -> list[tuple[list, str]]:
    """Rows of a ``timestamp,open,high,low,close,volume`` CSV (timestamps converted to ms). Raises AtsError."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise _fail(where, None, "empty file") from None
    except csv.Error as exc:
        raise _fail(where, "line 1", f"bad CSV: {exc}") from None
    norm = [h.strip().lower() for h in header]
    if norm != _CSV_HEADER:
        raise _fail(where, "line 1", f"wrong columns {header!r}; expected header {','.join(_CSV_HEADER)}")
    out = []
    try:
        for rec in reader:
            label = f"line {reader.line_num}"
            if not rec or all(not x.strip() for x in rec):
                continue
            if len(rec) != 6:
                raise _fail(where, label, f"expected 6 columns, got {len(rec)}")
            out.append(([_csv_time_ms(rec[0].strip(), where, label)] + [x.strip() for x in rec[1:]], label))
    except csv.Error as exc:
        raise _fail(where, f"line {reader.line_num}", f"bad CSV: {exc}") from None
    return out


def _csv_time_ms(s: str, where: str, label: str) -> int:
    if s.isdigit():
        return int(s)
    try:
        if len(s) == 10:
            d = date.fromisoformat(s)
            dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except ValueError:
        raise _fail(where, label, f"bad timestamp {s!r} (expected YYYY-MM-DD, ISO-8601 or Unix ms)") from None
    return int(round(dt.timestamp() * 1000))


def parse_bybit_payload(payload: Any, where: str) -> tuple[str | None, list[tuple[list, str]]]:
    """(symbol, rows) of a Bybit v5 ``get_kline`` response dict. Rows keep Bybit's order (newest first).

    Raises AtsError when retCode != 0 or the shape is not ``result.list`` of 7-element rows.
    """
    if not isinstance(payload, dict) or "result" not in payload:
        raise _fail(where, None, "not a Bybit v5 kline payload (no 'result')")
    code = payload.get("retCode", 0)
    if str(code) != "0":
        raise _fail(where, None, f"Bybit returned retCode {code}: {payload.get('retMsg')}")
    result = payload.get("result") or {}
    lst = result.get("list") if isinstance(result, dict) else None
    if not isinstance(lst, list):
        raise _fail(where, None, "Bybit payload has no result.list")
    out = []
    for i, row in enumerate(lst, start=1):
        label = f"result.list[{i - 1}]"
        if not isinstance(row, list) or len(row) != 7:
            got = f"{len(row)} columns" if isinstance(row, list) else type(row).__name__
            raise _fail(where, label, f"expected 7 columns [startTime, open, high, low, close, volume, turnover], got {got}")
        ts = row[0]
        if isinstance(ts, bool) or not (isinstance(ts, int) or (isinstance(ts, str) and ts.strip().isdigit())):
            raise _fail(where, label, f"startTime {ts!r} is not Unix milliseconds")
        out.append(([int(ts)] + list(row[1:6]), label))
    sym = result.get("symbol") if isinstance(result, dict) else None
    return (str(sym).upper() if sym else None), out


def parse_alpaca_rest(obj: dict, where: str) -> dict[str, list[tuple[list, str]]]:
    """{symbol: rows} from a raw Alpaca REST bars body (``{"bars": {"SYM": [{"t","o","h","l","c","v"}]}}`` or
    ``{"symbol": "SYM", "bars": [...]}``). Raises AtsError on a bar without t/o/h/l/c/v."""
    bars = obj.get("bars")
    groups = bars if isinstance(bars, dict) else {obj.get("symbol"): bars or []}
    out: dict[str, list] = {}
    for sym, lst in groups.items():
        rows = []
        for i, b in enumerate(lst or [], start=1):
            label = f"bars[{sym}][{i - 1}]"
            if not isinstance(b, dict) or not all(k in b for k in ("t", "o", "h", "l", "c", "v")):
                raise _fail(where, label, "expected an Alpaca bar with keys t, o, h, l, c, v")
            rows.append(([_csv_time_ms(str(b["t"]), where, label)] + [b[k] for k in ("o", "h", "l", "c", "v")], label))
        out[str(sym).upper() if sym else None] = rows
    return out


def parse_file(path: str | Path, *, symbol: str | None = None, timeframe: str | None = None,
               source: str | None = None) -> CandleBatch:
    """Read and parse one candle file (format detected from content) into a CandleBatch (not yet validated).

    The general parser (any shape the module docstring allows; Python objects per row). ``prepare_file`` is
    the fast entry point for loading. Raises AtsError naming the file (and row) when the file cannot be read
    or parsed, or when symbol/timeframe are neither given nor derivable from the file name.
    """
    p = Path(path)
    return _parse_bytes(_read_bytes(p), p, symbol=symbol, timeframe=timeframe, source=source)


def _read_bytes(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as exc:
        raise _fail(str(p), None, f"cannot read file: {exc.strerror or exc}") from None


def _parse_bytes(raw: bytes, p: Path, *, symbol: str | None, timeframe: str | None,
                 source: str | None) -> CandleBatch:
    where = str(p)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(where, None, f"not UTF-8 text (byte {exc.start})") from None
    name_sym, name_tf = names_from_filename(p)
    head = text.lstrip()[:1]
    dir_source = _source_from_dir(p)
    src_is_alpaca = False
    if not head:
        raise _fail(where, None, "empty file")
    if head in "[{":
        obj = _json_loads(text, where)
        if isinstance(obj, list):
            rows = parse_freqtrade(obj, where)
            src = source or dir_source or "freqtrade"
            sym = symbol or name_sym
        elif isinstance(obj, dict) and ("retCode" in obj or "retMsg" in obj) and "result" in obj:
            psym, rows = parse_bybit_payload(obj, where)
            src = source or "bybit"
            sym = symbol or psym or name_sym
        elif isinstance(obj, dict) and "bars" in obj:
            groups = parse_alpaca_rest(obj, where)
            if len(groups) != 1:
                raise _fail(where, None, f"Alpaca bars for {len(groups)} symbols in one file; load one symbol per file")
            (psym, rows), = groups.items()
            src, src_is_alpaca = source or "alpaca", True
            sym = symbol or psym or name_sym
        else:
            raise _fail(where, None, "unrecognised JSON: expected a freqtrade array, a Bybit kline payload or Alpaca bars")
    else:
        rows = parse_csv_text(text, where)
        src = source or dir_source or "csv"
        sym = symbol or name_sym
    tf = timeframe or name_tf
    if src_is_alpaca and tf in ("1d", "1w"):
        rows = [([_day_floor_eastern(r[0])] + r[1:], lab) for r, lab in rows]
    if not sym or not tf:
        raise _fail(where, None, "cannot tell symbol/timeframe from the file name (expected BASE_QUOTE-TF.json or "
                                 "SYMBOL_TF.csv); pass --symbol and --timeframe")
    return CandleBatch(where, sym.upper(), tf, src, [r for r, _ in rows], [lab for _, lab in rows])


# ----------------------------------------------------------------------------------------------- validation

def _num_text(v: Any, where: str, label: str, col: str) -> str:
    if isinstance(v, bool) or v is None:
        raise _fail(where, label, f"{col} is not a number: {json.dumps(v)}")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _fail(where, label, f"{col} is not a finite number: {v!r}")
        return repr(v)
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise _fail(where, label, f"{col} is not a finite number: {v}")
        return str(v)
    if isinstance(v, str):
        s = v.strip()
        if _NUM_RE.match(s):
            return s
        raise _fail(where, label, f"{col} is not a number: {v!r}")
    raise _fail(where, label, f"{col} is not a number: {v!r}")


_COLS = ("open", "high", "low", "close", "volume")


def validate(batch: CandleBatch) -> tuple[list[list], int]:
    """Check a batch and return (rows sorted by open_time with identical duplicates collapsed, rows_in).

    Each returned row is ``[open_time_ms:int, open, high, low, close, volume]`` with exact decimal strings.
    Raises AtsError ``"<file> <row>: <problem>"`` on the first problem (see module docstring for the rules).
    """
    where = batch.where
    tf = batch.timeframe
    if tf not in TIMEFRAME_SECONDS:
        raise _fail(where, None, f"unknown timeframe {tf!r}; expected one of {', '.join(TIMEFRAME_SECONDS)}")
    if not batch.rows:
        raise _fail(where, None, "no candles (empty data)")
    tf_ms, offset = _grid(tf)
    rows: list[list] = []
    fullmatch = _ROW_RE.fullmatch
    for row, label in zip(batch.rows, batch.labels):
        t = row[0]
        if type(t) is str and t.strip().isdigit():
            t = int(t)
        if type(t) is not int:
            raise _fail(where, label, f"open_time {t!r} is not integer Unix milliseconds")
        if t < _MIN_MS or t >= _MAX_MS:
            raise _fail(where, label, f"open_time {t} is outside 1980..2100 (expected Unix milliseconds, not seconds)")
        if (t - offset) % tf_ms:
            grid = "Monday 00:00 UTC" if tf == "1w" else f"the {tf} UTC grid"
            raise _fail(where, label, f"open_time {_iso(t)} is not on {grid}")
        vals = row[1:6]
        try:
            ok = fullmatch("\x1f".join(vals)) is not None  # fast path: five numeric strings, kept as read
        except TypeError:  # a non-string value (int/float from a vendor object, None, bool, ...)
            ok = False
        if ok:
            rows.append([t, *vals])
        else:
            rows.append([t, *(_num_text(x, where, label, col) for x, col in zip(vals, _COLS))])
    rows_in = len(rows)
    arr = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 5)
    messages = [
        lambda i: "value out of range (not finite)",
        lambda i: f"non-positive price (open {rows[i][1]}, high {rows[i][2]}, low {rows[i][3]}, close {rows[i][4]})",
        lambda i: f"negative volume {rows[i][5]}",
        lambda i: f"high {rows[i][2]} < low {rows[i][3]}",
        lambda i: f"open {rows[i][1]} outside [low {rows[i][3]}, high {rows[i][2]}]",
        lambda i: f"close {rows[i][4]} outside [low {rows[i][3]}, high {rows[i][2]}]",
    ]
    for mask, msg in zip(_value_checks(arr), messages):
        bad = np.flatnonzero(mask)
        if bad.size:
            i = int(bad[0])
            raise _fail(where, batch.labels[i], msg(i))
    ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=rows_in)
    steps = np.diff(ts)
    if (steps > 0).all():  # the usual case: ascending, no duplicates
        return rows, rows_in
    if (steps < 0).all():  # Bybit: newest first
        return rows[::-1], rows_in
    order = np.argsort(ts, kind="stable")
    out: list[list] = []
    first_label: dict[int, str] = {}
    for i in order.tolist():
        r = rows[i]
        if out and out[-1][0] == r[0]:
            prev = out[-1]
            if any(Decimal(a) != Decimal(b) for a, b in zip(prev[1:], r[1:])):
                raise _fail(where, batch.labels[i], f"duplicate open_time {_iso(r[0])} with different values than "
                                                    f"{first_label[r[0]]}")
            continue
        first_label[r[0]] = batch.labels[i]
        out.append(r)
    return out, rows_in


def _grid(tf: str) -> tuple[int, int]:
    """(step, offset) in ms of a known timeframe's UTC grid: open_time - offset is a multiple of step."""
    return TIMEFRAME_SECONDS[tf] * 1000, (_WEEK_OFFSET_MS if tf == "1w" else 0)


def _value_checks(arr: np.ndarray) -> list[np.ndarray]:
    """The value rules, in the order validate() reports them, as boolean masks (True = row breaks the rule)
    over ``arr`` (n, 5) float64 open, high, low, close, volume: not finite, a price <= 0, volume < 0,
    high < low, open outside [low, high], close outside [low, high]."""
    o, h, lo, c, v = arr.T
    return [~np.isfinite(arr).all(axis=1), (arr[:, :4] <= 0).any(axis=1), v < 0, h < lo,
            (o > h) | (o < lo), (c > h) | (c < lo)]


def _tokens_pass(open_ms: np.ndarray, values: np.ndarray, tf: str) -> bool:
    """True when tokenized candles pass every rule of validate() and are strictly ascending (so validate()
    would return them unchanged); False means "let validate() decide and word the error"."""
    if tf not in TIMEFRAME_SECONDS or not len(open_ms):
        return False
    if len(open_ms) > 1 and not (np.diff(open_ms) > 0).all():
        return False
    step, offset = _grid(tf)
    if open_ms[0] < _MIN_MS or open_ms[-1] >= _MAX_MS or ((open_ms - offset) % step).any():
        return False
    return not any(mask.any() for mask in _value_checks(values))


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------------- blocks

@dataclass
class CandleBlock:
    """Validated candles of one symbol/timeframe/source, ready to write with one COPY.

    rows_in: candle rows read (before identical duplicates collapsed); open_ms: int64 array (n,), Unix ms
    UTC (strictly ascending when it comes from prepare_file); stage_text: the n rows in PostgreSQL COPY text
    format for the staging table, ``\\topen_ms\\topen\\thigh\\tlow\\tclose\\tvolume\\n`` (an empty leading field,
    the values the exact published decimal text) or, when ``flags``, ``...\\tvolume\\tcomplete\\n`` with
    complete ``t``/``f`` (without flags every candle is complete).
    """

    where: str
    symbol: str
    timeframe: str
    source: str
    rows_in: int
    open_ms: np.ndarray
    stage_text: bytes
    flags: bool = False

    def rows(self) -> list[list]:
        """The rows as validate() returns them: ``[open_time_ms:int, open, high, low, close, volume]``
        (decimal strings), in block order."""
        out = []
        for line in self.stage_text.decode("utf-8").splitlines():
            f = line.split("\t")
            out.append([int(f[1]), f[2], f[3], f[4], f[5], f[6]])
        return out


def block_from_rows(where: str, symbol: str, timeframe: str, source: str, rows: Sequence[Sequence], rows_in: int,
                    complete: Sequence[bool] | None = None) -> CandleBlock:
    """A CandleBlock from rows ``[open_time_ms, open, high, low, close, volume]`` (validated by the caller;
    values decimal strings or numbers, written with ``str``). ``complete``: per-row flags (default all true)."""
    if complete is None:
        text = "".join([f"\t{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\t{r[5]}\n" for r in rows])
    else:
        text = "".join([f"\t{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\t{r[5]}\t{'t' if ok else 'f'}\n"
                        for r, ok in zip(rows, complete)])
    open_ms = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows))
    return CandleBlock(where, symbol, timeframe, source, rows_in, open_ms, text.encode("utf-8"),
                       flags=complete is not None)


def prepare_file(path: str | Path, *, symbol: str | None = None, timeframe: str | None = None,
                 source: str | None = None) -> CandleBlock:
    """Read, parse and validate one candle file into a CandleBlock (nothing is written).

    Plain freqtrade JSON and CSV files (the bulk of any history) go through the vectorised tokenizers of
    ``ats.market_data.fastparse`` and the same rules as validate(), checked on whole arrays; any other file,
    and any file one of those rules would refuse, goes through parse_file() + validate(), so results and
    errors are those of the general path. Symbol, timeframe and source are resolved as in parse_file().
    Raises AtsError ``"<file> <row>: <problem>"``.
    """
    p = Path(path)
    raw = _read_bytes(p)
    block = _prepare_plain(raw, p, symbol=symbol, timeframe=timeframe, source=source)
    if block is not None:
        return block
    batch = _parse_bytes(raw, p, symbol=symbol, timeframe=timeframe, source=source)
    rows, rows_in = validate(batch)
    return block_from_rows(batch.where, batch.symbol, batch.timeframe, batch.source, rows, rows_in)


def _prepare_plain(raw: bytes, p: Path, *, symbol: str | None, timeframe: str | None,
                   source: str | None) -> CandleBlock | None:
    """The fast path of prepare_file: a CandleBlock, or None to take the general path."""
    lead = raw[3:259] if raw.startswith(b"\xef\xbb\xbf") else raw[:256]
    head = lead.lstrip()[:1]  # all whitespace (or an empty file): the general path says what is wrong
    if head == b"[":
        tokens, fallback_source = fastparse.tokenize_freqtrade(raw), "freqtrade"
    elif head and head not in b"[{":
        tokens, fallback_source = fastparse.tokenize_csv(raw), "csv"
    else:
        return None
    if tokens is None:
        return None
    name_sym, name_tf = names_from_filename(p)
    sym, tf = symbol or name_sym, timeframe or name_tf
    if not sym or not tf or not _tokens_pass(tokens.open_ms, tokens.values, tf):
        return None
    src = source or _source_from_dir(p) or fallback_source
    return CandleBlock(str(p), sym.upper(), tf, src, len(tokens.open_ms), tokens.open_ms, tokens.stage_text)


# ----------------------------------------------------------------------------------------------- writing

#: ``lead``: the empty first field of every staged row (lets a freqtrade file become COPY rows in one translate)
_STAGE_DDL = """CREATE TEMP TABLE IF NOT EXISTS ats_candle_rows_stage (
    lead text, open_ms bigint NOT NULL, open numeric NOT NULL, high numeric NOT NULL, low numeric NOT NULL,
    close numeric NOT NULL, volume numeric NOT NULL, complete boolean NOT NULL DEFAULT true)"""

_STAGE_COPY = "COPY ats_candle_rows_stage (lead, open_ms, open, high, low, close, volume) FROM STDIN"
_STAGE_COPY_FLAGS = "COPY ats_candle_rows_stage (lead, open_ms, open, high, low, close, volume, complete) FROM STDIN"

_STAGE_SELECT = """SELECT %(symbol)s, %(timeframe)s, timestamptz 'epoch' + open_ms * interval '1 millisecond',
           open, high, low, close, volume, %(source)s, complete
      FROM ats_candle_rows_stage"""

_UPSERT = f"""
WITH ins AS (
    {candle_upsert_sql(_STAGE_SELECT)})
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated FROM ins
"""

#: lock the series for this transaction (serialises concurrent writers of one series) and tell whether it has
#: a candle in the block's span: one round trip (simple query; literals quoted by psycopg.sql)
_LOCK_AND_PROBE = """SELECT pg_advisory_xact_lock(hashtextextended({key}, 0));
SELECT EXISTS (SELECT 1 FROM candles
                WHERE symbol = {symbol} AND timeframe = {timeframe} AND source = {source}
                  AND open_time BETWEEN timestamptz 'epoch' + {first_ms} * interval '1 millisecond'
                                    AND timestamptz 'epoch' + {last_ms} * interval '1 millisecond')"""

_INSERT_STAGED = f"""INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume, source, complete)
    {_STAGE_SELECT}"""

_COPY_DIRECT = "COPY candles (open_time, open, high, low, close, volume, symbol, timeframe, source) FROM STDIN"
_COPY_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}
_MINUTES = np.frombuffer("".join(f"{h:02d}:{m:02d}" for h in range(24) for m in range(60)).encode(),
                         dtype=np.uint8).reshape(1440, 5)


def _direct_rows(block: CandleBlock) -> bytes | None:
    """The block as COPY text rows of ``candles`` (open_time, the five values, symbol, timeframe, source), or
    None when it cannot be built this way (flags, or an open time off the minute)."""
    ms = block.open_ms
    if block.flags or ms.min() < _MIN_MS or ms.max() >= _MAX_MS or (ms % 60_000).any():
        return None  # (1980..2100 keeps 'YYYY-MM-DD' and the digit count below simple)
    day = ms // 86_400_000
    first = int(day.min())
    days = np.datetime_as_string(np.arange(first, int(day.max()) + 1).astype("datetime64[D]"), unit="D")
    ts = np.empty((len(ms), 23), dtype=np.uint8)
    ts[:, :10] = days.astype("S10").view(np.uint8).reshape(-1, 10)[day - first]
    ts[:, 10] = 32
    ts[:, 11:16] = _MINUTES[(ms - day * 86_400_000) // 60_000]
    ts[:, 16:] = np.frombuffer(b":00+00\t", dtype=np.uint8)
    tail = "\t".join(x.translate(_COPY_ESCAPES) for x in (block.symbol, block.timeframe, block.source))
    tail_b = ("\t" + tail + "\n").encode("utf-8")
    lines = block.stage_text.split(b"\n")[:-1]
    stamps = ts.view("S23").ravel().tolist()
    cuts = _digit_count(ms) + 2  # the leading tab, the open_ms digits and the tab after them
    if (cuts == cuts[0]).all():
        k = int(cuts[0])
        body = [t + line[k:] for t, line in zip(stamps, lines)]
    else:
        body = [t + line[k:] for t, line, k in zip(stamps, lines, cuts.tolist())]
    return tail_b.join(body) + tail_b


def _digit_count(v: np.ndarray) -> np.ndarray:
    """Decimal digits of positive int64 values."""
    return np.searchsorted(_POW10_INT, v, side="right")


_POW10_INT = 10 ** np.arange(19, dtype=np.int64)


def write_block(conn: psycopg.Connection, block: CandleBlock) -> tuple[int, int]:
    """Write a CandleBlock; returns (inserted, updated). Runs inside the caller's transaction.

    Takes a transaction-scoped advisory lock on (symbol, timeframe, source) and looks for a stored candle of
    the series in the block's time span. None (a first load; nothing can conflict): one text COPY straight
    into ``candles``. Else: text COPY of ``block.stage_text`` into the session's temporary staging table,
    then the upsert ``candle_upsert_sql`` (``ON CONFLICT ... DO UPDATE`` only where values differ; per-row
    speculative insertion, measured ~3x slower than a plain insert on the shared files).

    Both give the same rows and counts. Every loader writes through here, so the lock makes the span check
    and the write atomic with respect to each other. Text COPY, not binary: NUMERIC's binary form would have
    to be built per value from the decimal text (bench/ingest.py measures both).
    """
    n = len(block.open_ms)
    if not n:
        return 0, 0
    params = {"symbol": block.symbol, "timeframe": block.timeframe, "source": block.source,
              "first_ms": int(block.open_ms.min()), "last_ms": int(block.open_ms.max())}
    probe = sql.SQL(_LOCK_AND_PROBE).format(key=sql.Literal(f"candles|{block.symbol}|{block.timeframe}|"
                                                           f"{block.source}"),
                                            **{k: sql.Literal(v) for k, v in params.items()})
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        cur.execute(probe)
        cur.nextset()
        occupied = cur.fetchone()[0]
        direct = None if occupied else _direct_rows(block)
        if direct is not None:
            with cur.copy(_COPY_DIRECT) as cp:
                cp.write(direct)
            return n, 0
        cur.execute(f"{_STAGE_DDL}; TRUNCATE ats_candle_rows_stage")
        with cur.copy(_STAGE_COPY_FLAGS if block.flags else _STAGE_COPY) as cp:
            cp.write(block.stage_text)
        if not occupied:
            cur.execute(_INSERT_STAGED, params)
            return cur.rowcount, 0
        ins, upd = cur.execute(_UPSERT, params).fetchone()
    return int(ins), int(upd)


def write_candles(conn: psycopg.Connection, symbol: str, timeframe: str, source: str, rows: Sequence[Sequence],
                  *, complete: Sequence[bool] | None = None) -> tuple[int, int]:
    """Upsert validated rows ``[open_time_ms, open, high, low, close, volume]`` (decimal strings or numbers).

    Same as write_block (COPY into the staging table, then insert or upsert; candles whose values did not
    change are not touched). Runs inside the caller's transaction (call it within ``conn.transaction()``).
    ``complete``: per-row flags (default all true). Returns (inserted, updated).
    """
    block = block_from_rows(f"{source}:{symbol}:{timeframe}", symbol, timeframe, source, rows, len(rows), complete)
    return write_block(conn, block)


def store_block(conn: psycopg.Connection, block: CandleBlock) -> LoadResult:
    """Write a validated CandleBlock in one transaction (a savepoint when the caller's transaction is open),
    recording a ``candles_revised`` event when existing candles changed. Returns the LoadResult."""
    with conn.transaction():
        ins, upd = write_block(conn, block)
        if upd:
            record_event(conn, "market_data", "candles_revised", severity="warning", symbol=block.symbol,
                         payload={"path": block.where, "timeframe": block.timeframe, "source": block.source,
                                  "rows_updated": upd})
    return LoadResult(block.where, block.symbol, block.timeframe, block.source, block.rows_in, ins, upd)


def store_batch(conn: psycopg.Connection, batch: CandleBatch) -> LoadResult:
    """Validate a batch and write it in one transaction (a savepoint when the caller's transaction is open).

    Returns the LoadResult; raises AtsError (nothing written) on invalid input.
    """
    rows, rows_in = validate(batch)
    if not batch.source:
        raise _fail(batch.where, None, "no source given")
    return store_block(conn, block_from_rows(batch.where, batch.symbol, batch.timeframe, batch.source, rows,
                                             rows_in))


# ----------------------------------------------------------------------------------------------- public API

def load_file(conn: psycopg.Connection, path: str | Path, *, symbol: str | None = None,
              timeframe: str | None = None, source: str | None = None) -> LoadResult:
    """Load one candle file into ``candles`` in one transaction; returns a LoadResult.

    Format from content, symbol/timeframe from the file name unless given, source as in the module docstring.
    The transaction commits on return when ``conn`` had no transaction open (otherwise it is a savepoint in
    the caller's transaction). Raises AtsError ``"<file> <row>: <problem>"``; nothing from the file is written.
    """
    return store_block(conn, prepare_file(path, symbol=symbol, timeframe=timeframe, source=source))


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named by ``paths``; a directory contributes its ``*.json`` / ``*.csv`` files recursively (sorted).

    Raises AtsError on a path that does not exist.
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in (".json", ".csv")))
        elif p.exists():
            out.append(p)
        else:
            raise AtsError(f"{p}: no such file or directory")
    return out


def load_paths(url_or_conn: str | psycopg.Connection, paths: Iterable[str | Path], *, writers: int = 2,
               **kw) -> list[LoadResult]:
    """Load several files (directories expand to their .json/.csv files), each in its own transaction.

    ``url_or_conn``: a DSN (``writers`` connections, default 2, are opened here and closed at the end) or an
    open connection (the only writer). ``kw``: symbol, timeframe, source as for load_file. Files are read
    and validated in order in a worker thread while earlier files are written, at most one file per writer
    connection at a time (database and parser overlap; the two cores of the target machine both work).
    Returns the LoadResults in file order. Raises AtsError on the first bad file, after the files before it
    have been written and committed and nothing of it or of later files was; a database error in one file
    is raised after the writes in flight end (with two writers the file after it may then be committed).
    """
    files = expand_paths(paths)
    if isinstance(url_or_conn, psycopg.Connection):
        return _load_overlapped([url_or_conn], files, kw)
    from ..db import connect

    conns = [connect(url_or_conn) for _ in range(max(1, min(writers, len(files))))]
    try:
        return _load_overlapped(conns, files, kw)
    finally:
        for c in conns:
            c.close()


def _load_overlapped(conns: list[psycopg.Connection], files: list[Path], kw: dict) -> list[LoadResult]:
    """prepare_file of each file in order on one thread; store_block on a free connection of ``conns``."""
    results: list[LoadResult | None] = [None] * len(files)
    if not files:
        return []
    free = list(conns)
    busy: dict = {}  # future -> (file index, connection)
    errors: list[tuple[int, BaseException]] = []

    def reap(block_until_one: bool) -> None:
        done, _ = wait(list(busy), return_when=FIRST_COMPLETED if block_until_one else ALL_COMPLETED)
        for fut in done:
            i, conn = busy.pop(fut)
            free.append(conn)
            exc = fut.exception()
            if exc is not None:
                errors.append((i, exc))
            else:
                results[i] = fut.result()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ats-prepare") as prep, \
            ThreadPoolExecutor(max_workers=len(conns), thread_name_prefix="ats-write") as write:
        pending = prep.submit(prepare_file, files[0], **kw)
        for i in range(len(files)):
            try:
                block = pending.result()
            except BaseException as exc:
                errors.append((i, exc))  # a bad file: write nothing more
                break
            if i + 1 < len(files):
                pending = prep.submit(prepare_file, files[i + 1], **kw)
            if not free:
                reap(block_until_one=True)
            if errors:
                break
            conn = free.pop()
            busy[write.submit(store_block, conn, block)] = (i, conn)
        if busy:
            reap(block_until_one=False)
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    return [r for r in results if r is not None]


def load_bybit_kline(conn: psycopg.Connection, payload: dict, *, timeframe: str, symbol: str | None = None,
                     source: str = "bybit", where: str | None = None) -> LoadResult:
    """Load one Bybit v5 kline response (the dict ``pybit.unified_trading.HTTP.get_kline`` returns).

    ``timeframe`` is required (the response does not carry the interval); the symbol defaults to
    ``result.symbol``. Values are strings, newest first; turnover (quote volume) is dropped. Raises AtsError.
    """
    where = where or f"bybit:{symbol or (payload.get('result') or {}).get('symbol')}:{timeframe}"
    psym, rows = parse_bybit_payload(payload, where)
    batch = CandleBatch(where, (symbol or psym or "").upper() or None, timeframe, source,
                        [r for r, _ in rows], [lab for _, lab in rows])
    if not batch.symbol:
        raise _fail(where, None, "no symbol in payload; pass symbol=")
    return store_batch(conn, batch)


def alpaca_timeframe(tf: Any) -> str | None:
    """Our timeframe name for an alpaca-py ``TimeFrame`` (e.g. TimeFrame.Hour -> '1h'), or None."""
    if tf is None:
        return None
    if isinstance(tf, str):
        return tf
    amount = getattr(tf, "amount_value", None) or getattr(tf, "amount", None)
    unit = getattr(tf, "unit_value", None) or getattr(tf, "unit", None)
    unit = getattr(unit, "value", unit)
    suffix = {"Min": "m", "Hour": "h", "Day": "d", "Week": "w"}.get(str(unit))
    return f"{amount}{suffix}" if suffix and amount else None


def alpaca_bar_rows(bars: Any) -> dict[str, list[tuple[list, str]]]:
    """{symbol: rows} from alpaca-py bars: a ``BarSet`` (``.data`` dict of ``Bar``), a dict symbol -> list of
    ``Bar`` or of raw bar dicts (``use_raw_data=True``: keys t, o, h, l, c, v), or a list of ``Bar``.
    Bar fields used: symbol, timestamp (aware datetime, the bar's open), open, high, low, close, volume (floats).
    Raises AtsError on a bar without a timestamp."""
    if hasattr(bars, "data") and isinstance(getattr(bars, "data"), dict):
        groups = bars.data
    elif isinstance(bars, dict):
        groups = bars
    else:
        groups = {}
        for b in bars:
            groups.setdefault(getattr(b, "symbol", None), []).append(b)
    out: dict[str, list] = {}
    for sym, lst in groups.items():
        rows = []
        for i, b in enumerate(lst):
            label = f"bar {i} ({sym})"
            if isinstance(b, dict):
                where = f"alpaca:{sym}"
                if not all(k in b for k in ("t", "o", "h", "l", "c", "v")):
                    raise AtsError(f"{where} {label}: expected an Alpaca bar with keys t, o, h, l, c, v")
                rows.append(([_csv_time_ms(str(b["t"]), where, label)] + [b[k] for k in ("o", "h", "l", "c", "v")],
                             label))
                continue
            ts = getattr(b, "timestamp", None)
            if not isinstance(ts, datetime):
                raise AtsError(f"alpaca:{sym} {label}: bar has no timestamp")
            ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
            rows.append(([int(round(ts.timestamp() * 1000))] + [getattr(b, k, None) for k in _COLS], label))
        out[str(sym).upper() if sym else None] = rows
    return out


def load_alpaca_bars(conn: psycopg.Connection, bars: Any, *, timeframe: str | Any, source: str = "alpaca",
                     symbol: str | None = None) -> list[LoadResult]:
    """Load alpaca-py bars (``StockHistoricalDataClient.get_stock_bars`` / ``CryptoHistoricalDataClient.
    get_crypto_bars`` return a ``BarSet``) into ``candles``, one transaction per symbol.

    ``timeframe``: ours ('1h') or an alpaca ``TimeFrame``. Crypto symbols lose their slash ('BTC/USD' ->
    'BTCUSD'). Daily bars are stamped by Alpaca at 04:00/05:00 UTC (US/Eastern midnight): they are stored at
    00:00 UTC of that exchange date so they line up with file-loaded daily bars. Raises AtsError.
    """
    tf = alpaca_timeframe(timeframe)
    results = []
    for sym, rows in alpaca_bar_rows(bars).items():
        name = (symbol or sym or "").replace("/", "").upper()
        if tf in ("1d", "1w"):
            rows = [([_day_floor_eastern(r[0])] + r[1:], lab) for r, lab in rows]
        batch = CandleBatch(f"alpaca:{name}:{tf}", name or None, tf, source, [r for r, _ in rows],
                            [lab for _, lab in rows])
        if not batch.symbol:
            raise AtsError("alpaca bars without a symbol; pass symbol=")
        results.append(store_batch(conn, batch))
    return results


def _day_floor_eastern(ms: int) -> int:
    """Alpaca daily bar time (US/Eastern midnight in UTC, e.g. 04:00Z) -> 00:00 UTC of the same exchange date."""
    from zoneinfo import ZoneInfo

    dt = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo("America/New_York"))
    return int(datetime(dt.year, dt.month, dt.day, tzinfo=UTC).timestamp() * 1000)
