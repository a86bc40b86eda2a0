"""Vectorised ingest (issue 18): the fast path gives exactly the general path's result or error, and the
first-load INSERT / upsert / two-writer paths write what the upsert alone would."""

from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import psycopg
import pytest

from ats.errors import AtsError
from ats.market_data import fastparse
from ats.market_data.loaders import (block_from_rows, load_file, load_paths, parse_file, prepare_file, validate,
                                     write_block, write_candles)

from _market_data_helpers import md_conn, md_url, ms  # noqa: F401

T0 = ms("2021-01-01T00:00")
H = 3600_000


def _general(path, **kw):
    """(symbol, timeframe, source, rows, rows_in) or the AtsError text, through parse_file + validate."""
    try:
        b = parse_file(path, **kw)
        rows, rows_in = validate(b)
        return b.symbol, b.timeframe, b.source, rows, rows_in
    except AtsError as exc:
        return str(exc)


def _fast(path, **kw):
    try:
        b = prepare_file(path, **kw)
        return b.symbol, b.timeframe, b.source, b.rows(), b.rows_in
    except AtsError as exc:
        return str(exc)


def _tokenize(path):
    raw = path.read_bytes()
    return (fastparse.tokenize_csv if path.suffix == ".csv" else fastparse.tokenize_freqtrade)(raw)


# ------------------------------------------------------------------------------------------- real files

def test_every_shared_file_takes_the_fast_path_with_the_general_result(shared_data):
    files = sorted(p for p in shared_data.rglob("*") if p.suffix in (".json", ".csv"))
    assert len(files) >= 18
    for f in files:
        tok = _tokenize(f)
        assert tok is not None, f"{f} fell back to the general parser"
        got, want = _fast(f), _general(f)
        assert got == want, f
        # the floats checked are the floats of the exact published text
        assert np.array_equal(tok.values, np.array([[float(x) for x in r[1:]] for r in want[3]])), f


# ------------------------------------------------------------------------------------------- same result or error

GOOD = [[T0, 10, 11, 9, 10.5, 100], [T0 + H, 10.5, 12, 10, 11, 50], [T0 + 2 * H, 11, 11.25, 10.75, 11, 0]]
COMPACT = json.dumps(GOOD, separators=(",", ":"))

JSON_CASES = {
    "compact": COMPACT,
    "spaces": json.dumps(GOOD),
    "indented": json.dumps(GOOD, indent=2),
    "bom": "\ufeff" + COMPACT,
    "strings": json.dumps([[str(x) for x in r] for r in GOOD]),
    "exponent": COMPACT.replace("100", "1e2"),
    "negative_price": COMPACT.replace(",10.5,12,", ",-10.5,12,"),
    "negative_volume": COMPACT.replace(",11,50]", ",11,-50]"),
    "zero_price": COMPACT.replace(",10,11,9,", ",0,11,0,"),
    "nan": COMPACT.replace(",10.5,100]", ",NaN,100]"),
    "null": COMPACT.replace(",10.5,100]", ",null,100]"),
    "trailing_dot": COMPACT.replace(",10.5,12,", ",10.,12,"),
    "leading_dot": COMPACT.replace(",10.5,12,", ",.5,12,"),
    "leading_zero": COMPACT.replace(",10.5,12,", ",010.5,12,"),
    "two_dots": COMPACT.replace(",10.5,12,", ",10.5.1,12,"),
    "ts_float": COMPACT.replace(str(T0 + H), f"{T0 + H}.0"),
    "ts_fraction": COMPACT.replace(str(T0 + H), f"{T0 + H}.5"),
    "ts_leading_zero": COMPACT.replace(str(T0 + H), f"0{T0 + H}"),
    "ts_seconds": json.dumps([[T0 // 1000, 10, 11, 9, 10.5, 100]]),
    "ts_off_grid": COMPACT.replace(str(T0 + H), str(T0 + H + 60_000)),
    "space_in_number": COMPACT.replace(",10.5,12,", ",10 5,12,"),
    "five_columns": COMPACT.replace(",10.5,12,10,11,50]", ",10.5,12,10,11]"),
    "seven_columns": COMPACT.replace(",10.5,12,10,11,50]", ",10.5,12,10,11,50,1]"),
    "empty_token": COMPACT.replace(",10.5,12,", ",,12,"),
    "nested": COMPACT.replace(",10.5,12,", ",[10.5],12,"),
    "missing_bracket": COMPACT[:-1],
    "trailing_garbage": COMPACT + "x",
    "trailing_comma": COMPACT[:-1] + ",]",
    "empty_array": "[]",
    "flat_array": "[1,2,3]",
    "high_below_low": COMPACT.replace(",10.5,12,10,", ",10.5,9.5,10,"),
    "open_above_high": COMPACT.replace(",10.5,12,10,", ",12.5,12,10,"),
    "close_below_low": COMPACT.replace(",10,11,50]", ",10,9.5,50]"),
    "descending": json.dumps(GOOD[::-1]),
    "duplicate_identical": json.dumps(GOOD + [GOOD[0]]),
    "duplicate_different": json.dumps(GOOD + [[T0, 10, 11, 9, 10.6, 100]]),
    "huge_value": COMPACT.replace(",11,50]", ",11," + "9" * 400 + "]"),
    "exact_decimals": json.dumps([[T0, 0.1, 0.30000000000000004, 0.1, 0.2, 1234567.123456789012]]),
    "many_digits": "[[%d,19695.870000000000000001,19720,19479.8,19565.47,4570.361518]]" % T0,
}

CSV_HEAD = "timestamp,open,high,low,close,volume\n"
CSV_GOOD = CSV_HEAD + "2021-01-04,1,2,0.5,1.5,10\n2021-01-05,1.5,2.25,1.25,2,0\n2021-01-06,2,2,2,2,7\n"
CSV_CASES = {
    "csv_plain": CSV_GOOD,
    "csv_no_final_newline": CSV_GOOD[:-1],
    "csv_crlf": CSV_GOOD.replace("\n", "\r\n"),
    "csv_bom": "\ufeff" + CSV_GOOD,
    "csv_ms": CSV_HEAD + f"{T0},1,2,0.5,1.5,10\n{T0 + 86_400_000},1.5,2.25,1.25,2,0\n",
    "csv_ms_leading_zero": CSV_HEAD + f"0{T0},1,2,0.5,1.5,10\n",
    "csv_seconds": CSV_HEAD + f"{T0 // 1000},1,2,0.5,1.5,10\n",
    "csv_iso_datetime": CSV_HEAD + "2021-01-04T00:00:00Z,1,2,0.5,1.5,10\n",
    "csv_bad_date": CSV_GOOD.replace("2021-01-05", "2021-02-30"),
    "csv_bad_month": CSV_GOOD.replace("2021-01-05", "2021-13-05"),
    "csv_dot_values": CSV_GOOD.replace(",1.5,2.25,", ",1.5,2.,").replace(",0.5,1.5,", ",.5,1.5,"),
    "csv_leading_zeros": CSV_GOOD.replace(",1.5,2.25,", ",01.5,002.25,"),
    "csv_lone_dot": CSV_GOOD.replace(",1.5,2.25,", ",.,2.25,"),
    "csv_two_dots": CSV_GOOD.replace(",1.5,2.25,", ",1.5.0,2.25,"),
    "csv_negative": CSV_GOOD.replace(",1.5,2.25,1.25,2,0", ",1.5,2.25,1.25,2,-1"),
    "csv_plus": CSV_GOOD.replace(",1.5,2.25,", ",+1.5,2.25,"),
    "csv_exponent": CSV_GOOD.replace(",1.5,2.25,", ",15e-1,2.25,"),
    "csv_spaces": CSV_GOOD.replace(",1.5,2.25,", ", 1.5 ,2.25,"),
    "csv_quoted": CSV_GOOD.replace(",1.5,2.25,", ',"1.5",2.25,'),
    "csv_blank_line": CSV_GOOD.replace("\n2021-01-05", "\n\n2021-01-05"),
    "csv_header_case": CSV_GOOD.replace("timestamp,", "Timestamp,"),
    "csv_wrong_header": CSV_GOOD.replace("volume", "vol"),
    "csv_header_only": CSV_HEAD,
    "csv_five_columns": CSV_GOOD.replace(",1.5,2.25,1.25,2,0", ",1.5,2.25,1.25,2"),
    "csv_empty_field": CSV_GOOD.replace(",1.5,2.25,", ",,2.25,"),
    "csv_high_below_low": CSV_GOOD.replace(",1.5,2.25,1.25,", ",1.5,1.0,1.25,"),
    "csv_duplicate_date": CSV_GOOD.replace("2021-01-06", "2021-01-05"),
    "csv_descending": CSV_HEAD + "2021-01-05,1.5,2.25,1.25,2,0\n2021-01-04,1,2,0.5,1.5,10\n",
    "csv_nan": CSV_GOOD.replace(",1.5,2.25,", ",nan,2.25,"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES) + sorted(CSV_CASES))
def test_fast_path_matches_general_path(tmp_path, case):
    content = JSON_CASES.get(case, CSV_CASES.get(case))
    path = tmp_path / ("CASE_USDT-1h.json" if case in JSON_CASES else "CASE_1d.csv")
    path.write_bytes(content.encode("utf-8"))
    assert _fast(path) == _general(path)


@pytest.mark.parametrize("case,accepted", [
    ("compact", True), ("spaces", True), ("indented", True), ("bom", True), ("exact_decimals", True),
    ("many_digits", True), ("strings", False), ("exponent", False), ("negative_price", False),
    ("trailing_dot", False), ("leading_dot", False), ("leading_zero", False), ("two_dots", False),
    ("ts_float", False), ("ts_fraction", False), ("ts_leading_zero", False), ("space_in_number", False),
    ("five_columns", False), ("nested", False), ("trailing_comma", False), ("empty_array", False),
    ("csv_plain", True), ("csv_crlf", True), ("csv_ms", True), ("csv_dot_values", True),
    ("csv_leading_zeros", True), ("csv_no_final_newline", True), ("csv_two_dots", False),
    ("csv_iso_datetime", False), ("csv_bad_date", False), ("csv_negative", False), ("csv_quoted", False),
    ("csv_blank_line", False), ("csv_spaces", False), ("csv_lone_dot", False), ("csv_header_case", False),
])
def test_tokenizers_accept_only_the_plain_shape(tmp_path, case, accepted):
    content = JSON_CASES.get(case, CSV_CASES.get(case))
    path = tmp_path / ("CASE_USDT-1h.json" if case in JSON_CASES else "CASE_1d.csv")
    path.write_bytes(content.encode("utf-8"))
    assert (_tokenize(path) is not None) is accepted


def test_tokenized_floats_are_those_of_the_text(tmp_path):
    texts = ["0.1", "0.30000000000000004", "2.675", "9007199254740993", "1.0000000000000002", "4570.361518",
             "123456789012345678901234567890.5", "0.000000000000000000000123", "42625316.299999997", "1"]
    rows = ",".join(f"[{T0 + i * H},{t},{t},{t},{t},{t}]" for i, t in enumerate(texts))
    path = tmp_path / "F_USDT-1h.json"
    path.write_text(f"[{rows}]")
    tok = _tokenize(path)
    assert tok is not None
    assert tok.values[:, 0].tolist() == [float(t) for t in texts]
    assert [r[1] for r in prepare_file(path).rows()] == texts  # the text itself goes to COPY


def test_random_mutations_give_the_general_result_or_error(tmp_path):
    rng = random.Random(18)
    base = json.dumps([[T0 + i * H, 10 + i, 11.5 + i, 9.25 + i, 10.75 + i, 100 * i] for i in range(6)],
                      separators=(",", ":"))
    alphabet = "0123456789.,[] -eE+\"n"
    path = tmp_path / "MUT_USDT-1h.json"
    fast_ok = 0
    for _ in range(300):
        s = list(base)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(s))
            op = rng.random()
            if op < 0.4:
                s[i] = rng.choice(alphabet)
            elif op < 0.7:
                s.insert(i, rng.choice(alphabet))
            else:
                del s[i]
        path.write_text("".join(s))
        got, want = _fast(path), _general(path)
        assert got == want, "".join(s)
        fast_ok += _tokenize(path) is not None
    assert fast_ok > 10  # some mutations (a changed digit) stay on the fast path


# ------------------------------------------------------------------------------------------- writing

def test_first_load_and_upsert_paths_write_the_same(md_conn, tmp_path):
    rows = [[T0 + i * H, f"{100 + i}.5", f"{101 + i}.25", f"{99 + i}.125", f"{100 + i}", f"{i}.000"] for i in range(6)]
    a = tmp_path / "PATHA_USDT-1h.json"
    a.write_text("[" + ",".join(f"[{r[0]},{','.join(r[1:])}]" for r in rows) + "]")
    res = load_file(md_conn, a)  # a new series: plain INSERT
    assert (res.rows_inserted, res.rows_updated) == (6, 0)
    # same rows for another symbol, its span already holding one candle: the upsert path
    write_candles(md_conn, "PATHB", "1h", "freqtrade", [rows[2]])
    md_conn.commit()
    res = load_file(md_conn, a, symbol="PATHB")
    assert (res.rows_inserted, res.rows_updated) == (5, 0)
    got = md_conn.execute("""SELECT symbol, open_time, open::text || high::text || low::text || close::text ||
                                    volume::text AS v, complete FROM candles WHERE symbol IN ('PATHAUSDT', 'PATHB')
                              ORDER BY symbol, open_time""").fetchall()
    a_rows = [(g["open_time"], g["v"], g["complete"]) for g in got if g["symbol"] == "PATHAUSDT"]
    b_rows = [(g["open_time"], g["v"], g["complete"]) for g in got if g["symbol"] == "PATHB"]
    assert a_rows == b_rows and len(a_rows) == 6
    assert a_rows[0][1] == "100.5101.2599.1251000.000"  # exact text, trailing zeros kept
    # a partial overlap with a changed value: upsert, one update recorded
    changed = [list(r) for r in rows[4:]] + [[T0 + 6 * H, "106", "107", "105", "106", "1"]]
    changed[0][4] = "104.5"
    b = tmp_path / "PATHA_USDT-1h.csv"
    b.write_text("timestamp,open,high,low,close,volume\n" + "".join(f"{r[0]},{','.join(r[1:])}\n" for r in changed))
    res = load_file(md_conn, b, symbol="PATHAUSDT", timeframe="1h", source="freqtrade")
    assert (res.rows_inserted, res.rows_updated) == (1, 1)


def test_write_candles_keeps_complete_flags_and_unsorted_rows(md_conn):
    rows = [[T0 + H, "2", "3", "1", "2", "5"], [T0, "1", "2", "0.5", "1.5", "4"]]
    with md_conn.transaction():
        assert write_candles(md_conn, "FLAGS", "1h", "resample", rows, complete=[False, True]) == (2, 0)
        assert write_candles(md_conn, "FLAGS", "1h", "resample", rows, complete=[True, True]) == (0, 1)
    got = md_conn.execute("SELECT open_time, complete FROM candles WHERE symbol='FLAGS' ORDER BY open_time").fetchall()
    assert [g["complete"] for g in got] == [True, True]
    md_conn.commit()


def test_concurrent_first_loads_of_one_series_serialise(md_url, tmp_path):
    path = tmp_path / "RACE_USDT-1h.json"
    path.write_text(json.dumps(GOOD))
    block = prepare_file(path)
    first = psycopg.connect(md_url)
    try:
        first.execute("SELECT 1")
        assert write_block(first, block) == (3, 0)  # in an open transaction: holds the series lock
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("second", load_paths(md_url, [path])[0]))
        t.start()
        with psycopg.connect(md_url, autocommit=True) as watch:
            for _ in range(200):
                waiting = watch.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                        ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting == 1 and "second" not in out  # the second load waits for the first one's commit
        first.commit()
        t.join(30)
        second = out["second"]
        assert (second.rows_inserted, second.rows_updated) == (0, 0)
    finally:
        first.close()
    with psycopg.connect(md_url) as c:
        assert c.execute("SELECT count(*) FROM candles WHERE symbol='RACEUSDT'").fetchone()[0] == 3


def test_load_paths_two_writers_order_and_stop_at_bad_file(md_url, tmp_path):
    files = []
    for i, name in enumerate(["W1", "W2", "W3", "W4", "W5"]):
        p = tmp_path / f"{i}_{name}_1h.json"
        p.write_text(json.dumps(GOOD))
        files.append(p)
    results = load_paths(md_url, files[:3])
    assert [r.symbol for r in results] == ["0_W1", "1_W2", "2_W3"] and all(r.rows_inserted == 3 for r in results)
    files[4].write_text(json.dumps(GOOD + [[T0 + 3 * H, 11, 9, 10, 9.5, 5]]))  # high < low
    more = [tmp_path / f"{i}_{n}_1h.json" for i, n in enumerate(["X1", "X2", "X3"], start=10)]
    for p in more:
        p.write_text(json.dumps(GOOD))
    with pytest.raises(AtsError, match=r"4_W5_1h\.json row 4: high 9 < low 10"):
        load_paths(md_url, [files[3], more[0], files[4], more[1], more[2]])
    with psycopg.connect(md_url) as c:
        loaded = {r[0] for r in c.execute("SELECT DISTINCT symbol FROM candles WHERE symbol ~ '^[0-9]+_[WX]'")}
    assert loaded == {"0_W1", "1_W2", "2_W3", "3_W4", "10_X1"}


def test_block_rows_round_trip():
    rows = [[T0, "1.50", "2", "1", "1.5", "0"], [T0 + H, 2, 3.5, 1.25, 2, 10]]
    b = block_from_rows("x", "S", "1h", "csv", rows, 2)
    assert b.rows() == [[T0, "1.50", "2", "1", "1.5", "0"], [T0 + H, "2", "3.5", "1.25", "2", "10"]]


def test_direct_copy_escapes_names_and_off_minute_rows_take_the_staged_path(md_conn):
    odd = "ODD\\SYM\tX"
    rows = [[T0, "1", "2", "0.5", "1.5", "3"], [T0 + H, "1.5", "2", "1", "2", "4"]]
    with md_conn.transaction():
        assert write_candles(md_conn, odd, "1h", "feed", rows) == (2, 0)  # first load: COPY into candles
        # live-feed style rows off the minute grid cannot be written as direct COPY text: staged insert
        assert write_candles(md_conn, "SECS", "1h", "feed", [[T0 + 1_500, "1", "2", "0.5", "1.5", "3"]]) == (1, 0)
    got = md_conn.execute("SELECT symbol, open_time, close::text AS c FROM candles WHERE source = 'feed' "
                          "ORDER BY symbol, open_time").fetchall()
    assert [(g["symbol"], g["c"]) for g in got] == [(odd, "1.5"), (odd, "2"), ("SECS", "1.5")]
    assert got[0]["open_time"].timestamp() * 1000 == T0 and got[2]["open_time"].timestamp() * 1000 == T0 + 1_500
    md_conn.commit()
