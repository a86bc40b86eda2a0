"""Where the engine's audit trail goes: PostgreSQL (``PgSink``) or memory (``MemorySink``, for walk-forward
candidate runs and unit tests).

``PgSink`` buffers rows and writes them in one transaction per ``flush`` together with the run's checkpoint
(``engine_runs.last_bar_time``, ``bars_processed``, ``checkpoint``): after a crash the database holds exactly
the rows of the bars up to the checkpoint, and a restart resumes from there. Append-only tables are written
with COPY; orders go through a staging table and ``INSERT ... ON CONFLICT (client_order_id) DO NOTHING`` (a
conflict means a retried submission: it is detected and refused loudly, never duplicated); positions and
orders that changed after their first write are UPDATEd.

Row ids (signals, positions, orders) are taken from the tables' sequences in blocks, so rows can reference
each other before they are written.
"""

from __future__ import annotations

import itertools
import json
import math
import weakref
from datetime import datetime, timezone

import numpy as np
import psycopg

from ..errors import AtsError
from ..execution.broker import Order
from ..portfolio.book import Position

# column kinds: t = timestamp (Unix s int), j = json, s = text, b = bool, n = number (int/float)
TABLES = {
    "signals": ("signal_id:n run_id:s account_id:s strategy_name:s symbol:s timeframe:s ts:t side:s intent:s "
                "position_side:s price:n strength:n regime:s status:s context:j"),
    "blocked_signals": "signal_id:n run_id:s account_id:s strategy_name:s symbol:s ts:t gate:s reason:s context:j",
    "positions": ("position_id:n run_id:s account_id:s strategy_name:s symbol:s side:s status:s qty:n entry_qty:n "
                  "avg_entry_price:n avg_exit_price:n realized_pnl_usd:n fees_usd:n opened_at:t closed_at:t "
                  "close_reason:s entry_signal_id:n context:j"),
    "order_executions": ("order_id:n client_order_id:s run_id:s account_id:s signal_id:n position_id:n "
                         "strategy_name:s symbol:s side:s position_side:s intent:s order_type:s qty:n notional_usd:n "
                         "decision_price:n status:s reject_reason:s filled_qty:n avg_fill_price:n broker:s "
                         "broker_order_id:s submitted_at:t updated_at:t context:j"),
    "fills": ("order_id:n client_order_id:s fill_seq:n run_id:s account_id:s symbol:s side:s qty:n price:n fee_usd:n "
              "liquidity:s slippage_bps:n ts:t"),
    "position_evaluations": ("position_id:n run_id:s ts:t price:n pnl_pct:n tp_price:n sl_price:n trailing_stop:n "
                             "hold_minutes:n decision:s reason:s context:j"),
    "position_targets": "position_id:n run_id:s ts:t tp_price:n sl_price:n trailing_stop:n reason:s",
    "portfolio_hourly_snapshots": ("run_id:s account_id:s ts:t cash_usd:n positions_value_usd:n equity_usd:n "
                                   "realized_pnl_usd:n unrealized_pnl_usd:n fees_usd:n net_pnl_daily_usd:n "
                                   "open_positions:n positions:j"),
    "system_events": "ts:t account_id:s component:s event_type:s severity:s symbol:s payload:j",
    "btc_market_state_history": "ts:t regime:s prior_regime:s confirmed:b metrics:j run_id:s",
    "funding_payments": ("run_id:s account_id:s position_id:n strategy_name:s symbol:s side:s ts:t qty:n "
                         "mark_price:n funding_rate:n rate_source:s cost_usd:n"),
}
_SPEC = {t: ([c.split(":")[0] for c in spec.split()], [c.split(":")[1] for c in spec.split()])
         for t, spec in TABLES.items()}
_FMT = {t: None for t in TABLES}  # filled below (formatter is defined later in the module)
# FK-safe write order
APPEND_ORDER = ("signals", "positions", "order_executions", "fills", "blocked_signals", "position_evaluations",
                "position_targets", "portfolio_hourly_snapshots", "system_events", "btc_market_state_history",
                "funding_payments")
_SEQ = {"signals": "signals_signal_id_seq", "positions": "positions_position_id_seq",
        "order_executions": "order_executions_order_id_seq"}

_ts_cache: dict[int, str] = {}


def ts_text(sec: int) -> str:
    """Unix seconds -> ISO-8601 UTC text (cached)."""
    s = _ts_cache.get(sec)
    if s is None:
        if len(_ts_cache) > 500_000:
            _ts_cache.clear()
        s = _ts_cache[sec] = datetime.fromtimestamp(sec, tz=timezone.utc).isoformat()
    return s


def to_dt(sec: int | None) -> datetime | None:
    """Unix seconds -> aware UTC datetime (None stays None)."""
    return None if sec is None else datetime.fromtimestamp(sec, tz=timezone.utc)


def _esc(s: str) -> str:
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        s = s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


def _num(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "\\N"
        return float.__repr__(v)
    return str(v)


def _sanitize(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _sanitize(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_sanitize(x) for x in v]
    return v


def dumps(v) -> str:
    """Compact JSON; NaN/inf become null (PostgreSQL jsonb refuses them)."""
    try:
        return json.dumps(v, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_sanitize(v), separators=(",", ":"), default=str)


def _n_text(v) -> str:
    if v is None:
        return "\\N"
    if v.__class__ is float:
        return "\\N" if v != v else float.__repr__(v)
    return _num(v)


def _s_text(v) -> str:
    return "\\N" if v is None else _esc(v if v.__class__ is str else str(v))


def _t_text(v) -> str:
    return "\\N" if v is None else (_ts_cache.get(v) or ts_text(v))


class RawJson(str):
    """A JSON document already serialised (hot paths pre-format small objects); written as is."""


def _j_text(v) -> str:
    if v is None:
        return "\\N"
    return _esc(v) if v.__class__ is RawJson else _esc(dumps(v))


def _b_text(v) -> str:
    return "\\N" if v is None else ("t" if v else "f")


class FloatJson:
    """A JSON column given as float arrays: row m's document is ``template % (repr(a[m]) for a in values)`` (e.g.
    ``'{"best_price":%s}'``), exactly the ``RawJson`` the one-row path writes, without a Python string per row
    until the sink formats it. ``template`` has one ``%s`` per array, any other ``%`` doubled (``%%``), and no tab,
    newline, carriage return or backslash (ValueError). ``decode=True``: the one-row path writes the parsed object (a dict
    or list, e.g. a snapshot's positions), so a MemorySink keeps ``json.loads`` of each document."""

    __slots__ = ("template", "values", "decode")

    def __init__(self, template: str, *values: np.ndarray, decode: bool = False):
        bare = template.replace("%%", "")
        if any(ch in template for ch in "\t\n\r\\") or bare.count("%") != len(values) or bare.count("%s") != len(values):
            raise ValueError(f"FloatJson template {template!r}: one %s per array ({len(values)}), any other % doubled, "
                             "no tab, newline, CR or backslash")
        self.template, self.values, self.decode = template, values, decode

    def raw(self, n: int) -> list:
        """The n documents as ``RawJson``, or parsed (``decode``); without arrays the template n times."""
        t = self.template.replace("%s", "%r")
        cols = [v.tolist() for v in self.values]
        if len(cols) == 1 and not self.decode:
            return [RawJson(t % v) for v in cols[0]]
        docs = [t % tuple(x) for x in zip(*cols)] if cols else [t % ()] * n
        return [json.loads(d) for d in docs] if self.decode else [RawJson(d) for d in docs]


def _expand(n: int, col):
    """Column ``col`` of a block as an iterable of n Python values (what the one-row path puts in its tuples)."""
    if isinstance(col, np.ndarray):
        return col.tolist()
    if isinstance(col, FloatJson):
        return col.raw(n)
    if isinstance(col, list):
        return col
    return itertools.repeat(col, n)


def _ts_texts(a: np.ndarray) -> list:
    """Unix s (int array) -> ISO-8601 UTC texts, vectorised (``'2021-01-01T00:00:00Z'``; the same instants as
    ``ts_text``)."""
    return np.datetime_as_string(a.astype("datetime64[s]"), timezone="UTC").tolist()


def _block_lines(kinds, n: int, cols) -> list:
    """The n COPY text lines of one block (``PgSink.add_columns``): the constant columns are folded into one row
    template and each line is ONE ``template % values`` (``%r`` = ``float.__repr__`` for floats, ``%d`` for ints,
    pre-formatted text for timestamps and anything else), so no call per value."""
    tpl, args = [], []
    for kind, col in zip(kinds, cols):
        if isinstance(col, np.ndarray):
            if kind == "t":
                tpl.append("%s")
                args.append(_ts_texts(col))
            elif kind == "n" and col.dtype.kind == "f" and not np.isnan(col).any():
                tpl.append("%r")
                args.append(col.tolist())
            elif kind == "n" and col.dtype.kind in "iu":
                tpl.append("%d")
                args.append(col.tolist())
            else:
                tpl.append("%s")
                args.append([_CONV_FN[kind](v) for v in col.tolist()])
        elif isinstance(col, FloatJson):
            tpl.append(col.template.replace("%s", "%r"))
            args.extend(v.tolist() for v in col.values)
        elif isinstance(col, list):
            tpl.append("%s")
            args.append([_CONV_FN[kind](v) for v in col])
        else:
            tpl.append(_CONV_FN[kind](col).replace("%", "%%"))
    t = "\t".join(tpl)
    if not args:
        return [t % ()] * n
    if len(args) == 1:
        return [t % (v,) for v in args[0]]
    return list(map(t.__mod__, zip(*args)))


def _interleave(parts: list) -> list:
    """Lists of equal length n -> one list, row-major: parts[0][0], parts[1][0], ..., parts[0][1], ..."""
    if len(parts) == 1:
        return parts[0]
    out = [None] * (len(parts) * len(parts[0]))
    for p, part in enumerate(parts):
        out[p::len(parts)] = part
    return out


_CONV = {"n": "_n_text", "s": "_s_text", "t": "_t_text", "j": "_j_text", "b": "_b_text"}
_CONV_FN = {"n": _n_text, "s": _s_text, "t": _t_text, "j": _j_text, "b": _b_text}
_FORMATTERS: dict[tuple, object] = {}


def formatter(kinds) -> object:
    """A compiled function row -> COPY text line for the column ``kinds`` (one call per value, no loop)."""
    key = tuple(kinds)
    f = _FORMATTERS.get(key)
    if f is None:
        body = " + '\\t' + ".join(f"{_CONV[k]}(r[{i}])" for i, k in enumerate(key))
        ns = {"_n_text": _n_text, "_s_text": _s_text, "_t_text": _t_text, "_j_text": _j_text, "_b_text": _b_text}
        exec(f"def _fmt(r):\n    return {body}\n", ns)  # noqa: S102 - generated from the fixed kind letters
        f = _FORMATTERS[key] = ns["_fmt"]
    return f


def format_row(row: tuple, kinds: list[str]) -> str:
    """One COPY text-format line (without newline) for ``row`` typed by ``kinds``.

    Reference implementation; the sink uses ``formatter(kinds)``, which tests check against this.

    Parameters
    ----------
    row : tuple
        Values; None becomes ``\\N``.
    kinds : list of str
        Per column: 'n' number, 't' Unix s -> timestamptz, 's' text, 'j' JSON, 'b' boolean.

    Returns
    -------
    str
        Tab-separated, escaped per PostgreSQL's COPY text format.
    """
    out = []
    for v, k in zip(row, kinds):
        if v is None:
            out.append("\\N")
        elif k == "n":
            out.append(_num(v))
        elif k == "t":
            out.append(ts_text(v))
        elif k == "s":
            out.append(_esc(str(v)))
        elif k == "j":
            out.append(_esc(dumps(v)))
        else:
            out.append("t" if v else "f")
    return "\t".join(out)


def position_row(run_id: str, account_id: str, p: Position) -> tuple:
    """The ``positions`` row of ``p`` (context: params, adds, TP/SL, trailing stop, best price).

    Parameters
    ----------
    run_id, account_id : str
        The run and account.
    p : Position
        The position.

    Returns
    -------
    tuple
        Column values in the table's COPY order.
    """
    ctx = {**p.context, "params": p.params, "adds": p.adds, "tp_price": p.tp_price, "sl_price": p.sl_price,
           "trailing_stop": p.trail_stop, "best_price": p.best_price}
    return (p.position_id, run_id, account_id, p.strategy, p.symbol, p.side, p.status, p.qty, p.entry_qty,
            p.avg_entry, p.avg_exit, p.realized_usd, p.fees_usd, p.opened_at, p.closed_at, p.close_reason,
            p.entry_signal_id, ctx)


def order_row(run_id: str, account_id: str, o: Order, broker: str) -> tuple:
    """The ``order_executions`` row of ``o`` (notional = qty x decision price, USD).

    Parameters
    ----------
    run_id, account_id : str
        The run and account.
    o : Order
        The order.
    broker : str
        Broker name stored with the order.

    Returns
    -------
    tuple
        Column values in the table's COPY order.
    """
    ctx = {**o.context, "fees_usd": o.fees_usd}
    if o.limit_price is not None:
        ctx["limit_price"] = o.limit_price
    if o.parent_client_order_id:
        ctx["parent_client_order_id"] = o.parent_client_order_id
    return (o.order_id, o.client_order_id, run_id, account_id, o.signal_id, o.position_id, o.strategy, o.symbol,
            o.side, o.position_side, o.intent, o.order_type, o.qty, o.qty * o.decision_price, o.decision_price,
            o.status, o.reject_reason, o.filled_qty, o.avg_fill_price, broker, None, o.submitted_at,
            o.updated_at or o.submitted_at, ctx)


for _t in TABLES:
    _FMT[_t] = formatter(_SPEC[_t][1])


class MemorySink:
    """Keeps every row in lists (``rows[table]``); ids from counters; nothing persisted."""

    persistent = False

    def __init__(self, run_id: str, account_id: str, broker: str = "paper"):
        self.run_id, self.account_id, self.broker = run_id, account_id, broker
        self.rows: dict[str, list[tuple]] = {t: [] for t in TABLES}
        self._ids = {t: 0 for t in _SEQ}
        self.positions: dict[int, Position] = {}
        self.orders: dict[int, Order] = {}
        self.breaker_states: dict[tuple, dict] = {}
        self.regime_state: dict | None = None
        self.checkpoints = 0

    def next_id(self, table: str) -> int:
        """The next id of ``table`` (a counter from 1; no database)."""
        self._ids[table] += 1
        return self._ids[table]

    def add(self, table: str, row: tuple) -> None:
        """Append ``row`` (a tuple in the table's column order) to ``rows[table]``."""
        self.rows[table].append(row)

    def add_many(self, table: str, rows) -> None:
        """``add`` for each row of ``rows``, in order."""
        self.rows[table].extend(rows)

    def add_columns(self, table: str, blocks: list) -> None:
        """Rows given column-wise (``PgSink.add_columns``), kept as the tuples ``add`` would have been given."""
        if blocks:
            self.rows[table].extend(_interleave([list(zip(*(_expand(n, c) for c in cols))) for n, cols in blocks]))

    def position_changed(self, p: Position) -> None:
        """Remember the latest state of position ``p`` (by id)."""
        self.positions[p.position_id] = p

    def order_changed(self, o: Order) -> None:
        """Remember the latest state of order ``o`` (by id)."""
        self.orders[o.order_id] = o

    def breaker_state(self, breaker: str, scope: str, state: dict) -> None:
        """Remember the state dict (state, since, reason, context) of ``breaker`` in ``scope``."""
        self.breaker_states[(breaker, scope)] = state

    def regime(self, state: dict) -> None:
        """Remember the regime singleton state (ts, regime, confirmed, metrics)."""
        self.regime_state = state

    def flush(self, checkpoint: dict | None = None, *, last_bar_time: int | None = None,
              bars_processed: int = 0) -> None:
        """Count a checkpoint (nothing is written)."""
        self.checkpoints += 1

    def close(self) -> None:
        """Nothing to release."""
        pass


class PgSink:
    """Buffered, transactional writer of the audit trail of one run (see module docstring).

    ``writer_url``: when given, batches are written by a background thread on its own connection while the engine
    computes the next bars (the database work overlaps the Python work); batches still commit strictly in order,
    each with its checkpoint, and a writer error is raised in the engine thread at the next flush or at
    ``close()``. Without it, ``flush`` writes and commits on ``conn`` before returning.

    ``durable=False`` (replays and backtests; ``run_replay``) commits each batch with ``SET LOCAL
    synchronous_commit = off``: the COMMIT returns before its WAL is flushed to disk. A crash of PostgreSQL itself
    (never of the engine process) can then lose the last batches - always whole batches with their checkpoint,
    never a part of one, so the run resumes from an earlier checkpoint and re-creates exactly the same rows (a
    replay is deterministic; the run's final ``finish_run`` commit is synchronous and flushes everything before
    it). Waiting for the WAL flush of every batch stalled the writer: bench/replay.py 3.2 s -> 1.75 s on the same
    loaded machine. Live sessions keep the default (every batch durable before the next).
    """

    persistent = True

    def __init__(self, conn: psycopg.Connection, run_id: str, account_id: str, *, broker: str = "paper",
                 write_regime_singleton: bool = True, writer_url: str | None = None, max_queued: int = 4,
                 durable: bool = True):
        self.conn, self.run_id, self.account_id, self.broker = conn, run_id, account_id, broker
        self.write_regime_singleton = write_regime_singleton
        self.durable = durable
        self.buf: dict[str, list[str]] = {t: [] for t in TABLES}
        self._id_pool: dict[str, list[int]] = {t: [] for t in _SEQ}
        self._dirty_pos: dict[int, Position] = {}
        self._dirty_ord: dict[int, Order] = {}
        self._persisted_pos: set[int] = set()
        self._persisted_ord: set[int] = set()
        self._breakers: dict[tuple, dict] = {}
        self._regime: dict | None = None
        self.rows_written = 0
        self._writer = None
        if writer_url is not None:
            self._writer = _Writer(writer_url, self, max_queued)

    # ---- ids ----
    def next_id(self, table: str) -> int:
        """The next id of ``table`` from its sequence, fetched 512 at a time.

        Parameters
        ----------
        table : str
            A table with a sequence (signals, order_executions, positions).

        Returns
        -------
        int
            A fresh id.
        """
        pool = self._id_pool[table]
        if not pool:
            with self.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
                rows = cur.execute("SELECT nextval(%s) FROM generate_series(1, 512)", (_SEQ[table],)).fetchall()
            pool.extend(r[0] for r in reversed(rows))
        return pool.pop()

    # ---- buffering ----
    def add(self, table: str, row: tuple) -> None:
        """Buffer ``row`` (a tuple in the table's COPY column order) of ``table`` as a COPY text line."""
        self.buf[table].append(_FMT[table](row))

    def add_many(self, table: str, rows) -> None:
        """``add`` for each row of ``rows``, in order."""
        self.buf[table].extend(map(_FMT[table], rows))

    def add_columns(self, table: str, blocks: list) -> None:
        """Buffer rows given column-wise, formatted a column at a time (no tuple, no call per value).

        Parameters
        ----------
        table : str
            The table (``TABLES``).
        blocks : list of (int, tuple)
            (n, columns) with the same n in every block; each column, in the table's COPY order, is a scalar
            (repeated n times), a numpy array of shape (n,) (Unix s int64 for timestamps), a list of n values or a
            ``FloatJson``. Rows are buffered row-major across blocks: block 0 row 0, block 1 row 0, ..., block 0
            row 1, ... - the order of one ``add`` per block per row. The same lines as ``add`` would buffer.
        """
        if not blocks:
            return
        kinds = _SPEC[table][1]
        self.buf[table].extend(_interleave([_block_lines(kinds, n, cols) for n, cols in blocks]))

    def position_changed(self, p: Position) -> None:
        """Mark position ``p`` for insert (new) or update at the next flush."""
        self._dirty_pos[p.position_id] = p

    def order_changed(self, o: Order) -> None:
        """Mark order ``o`` for insert (new) or update at the next flush."""
        self._dirty_ord[o.order_id] = o

    def mark_persisted(self, positions=(), orders=()) -> None:
        """Record that these positions and orders (iterables) are already in the database (after a resume)."""
        self._persisted_pos.update(p.position_id for p in positions)
        self._persisted_ord.update(o.order_id for o in orders)

    def breaker_state(self, breaker: str, scope: str, state: dict) -> None:
        """Buffer the ``breaker_states`` upsert of ``breaker`` in ``scope`` (state, since, reason, context)."""
        self._breakers[(breaker, scope)] = state

    def regime(self, state: dict) -> None:
        """Buffer the ``btc_market_state`` singleton (ts, regime, confirmed, metrics)."""
        self._regime = state

    # ---- flush ----
    def flush(self, checkpoint: dict | None = None, *, last_bar_time: int | None = None,
              bars_processed: int = 0) -> None:
        """Write everything buffered plus the checkpoint in ONE transaction and COMMIT it (synchronously, or queued
        to the background writer). Everything is snapshotted here - rows formatted, JSON (the checkpoint included)
        serialised to text - so the engine may keep mutating its objects."""
        batch = self._take_batch(checkpoint, last_bar_time, bars_processed)
        if self._writer is not None:
            self._writer.put(batch)
            self.conn.commit()  # end the engine connection's read transaction (settings, configurations, ids)
            return
        write_batch(self.conn, batch)

    def close(self) -> None:
        """Wait for queued batches (background writer) and raise its error, if any. Idempotent."""
        if self._writer is not None:
            w, self._writer = self._writer, None
            w.close()

    def _take_batch(self, checkpoint, last_bar_time, bars_processed) -> dict:
        rid, acc = self.run_id, self.account_id
        new_pos = [p for pid, p in self._dirty_pos.items() if pid not in self._persisted_pos]
        upd_pos = [p for pid, p in self._dirty_pos.items() if pid in self._persisted_pos]
        new_ord = [o for oid, o in self._dirty_ord.items() if oid not in self._persisted_ord]
        upd_ord = [o for oid, o in self._dirty_ord.items() if oid in self._persisted_ord]
        batch = {
            "run_id": rid, "account_id": acc, "durable": self.durable,
            "append": {t: v for t, v in self.buf.items() if v},
            "new_positions": [_FMT["positions"](position_row(rid, acc, p)) for p in new_pos],
            "new_orders": [(o.client_order_id, _FMT["order_executions"](order_row(rid, acc, o, self.broker)))
                           for o in new_ord],
            "upd_positions": [(p.status, _dec(p.qty), _dec(p.entry_qty), _dec(p.avg_entry), _dec(p.avg_exit),
                               _dec(p.realized_usd), _dec(p.fees_usd), to_dt(p.closed_at), p.close_reason,
                               dumps(position_row(rid, acc, p)[-1]), p.position_id) for p in upd_pos],
            "upd_orders": [(o.status, o.reject_reason, _dec(o.filled_qty), _dec(o.avg_fill_price), o.position_id,
                            to_dt(o.updated_at or o.submitted_at), dumps({**o.context, "fees_usd": o.fees_usd}),
                            o.order_id) for o in upd_ord],
            "breakers": [(acc, rid, b, sc, st["state"], to_dt(st["since"]), st["reason"], dumps(st["context"]))
                         for (b, sc), st in self._breakers.items()],
            "regime": None if (self._regime is None or not self.write_regime_singleton) else (
                to_dt(self._regime["ts"]), self._regime["regime"], self._regime["confirmed"],
                dumps(self._regime["metrics"]), rid),
            "checkpoint": None if (checkpoint is None and last_bar_time is None) else (
                to_dt(last_bar_time), bars_processed, None if checkpoint is None else dumps(checkpoint), rid),
        }
        self.rows_written += sum(len(v) for v in self.buf.values()) + len(new_pos) + len(new_ord)
        self.buf = {t: [] for t in TABLES}
        self._persisted_pos.update(p.position_id for p in new_pos)
        self._persisted_ord.update(o.order_id for o in new_ord)
        self._dirty_pos.clear()
        self._dirty_ord.clear()
        self._breakers.clear()
        self._regime = None
        return batch


def _copy(cur, table: str, lines: list[str]) -> None:
    cols = ", ".join(_SPEC[table][0])
    if not _rls_active(cur, table):
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
            cp.write("\n".join(lines) + "\n")
        return
    # a process bound to an account (ats.accounts.scope) writes under row-level security, where PostgreSQL refuses
    # COPY FROM: stage in a temp table, then INSERT ... SELECT, which the account policy checks row by row
    stage = f"_ats_stage_{table}"
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {table} "
                "WITH NO DATA")
    with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as cp:
        cp.write("\n".join(lines) + "\n")
    cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}")
    cur.execute(f"DELETE FROM {stage}")


_RLS: "weakref.WeakKeyDictionary[psycopg.Connection, dict[str, bool]]" = weakref.WeakKeyDictionary()


def _rls_active(cur, table: str) -> bool:
    """Whether row-level security applies to this connection's role on ``table`` (cached per connection)."""
    per = _RLS.setdefault(cur.connection, {})
    hit = per.get(table)
    if hit is None:
        row = cur.execute("SELECT row_security_active(%s::regclass) AS a", (table,)).fetchone()
        hit = per[table] = bool(row["a"] if isinstance(row, dict) else row[0])
    return hit


def write_batch(conn: psycopg.Connection, batch: dict) -> None:
    """Write one batch (rows, position/order inserts and updates, breaker states, regime, checkpoint) and COMMIT.

    Parameters
    ----------
    conn : psycopg.Connection
        Connection to write on (one transaction).
    batch : dict
        What ``PgSink._take_batch`` snapshotted (``durable`` False: committed without waiting for the WAL flush).

    Raises
    ------
    psycopg.Error
        On any database error; the transaction is rolled back and nothing of the batch stays.
    """
    try:
        with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            if not batch.get("durable", True):
                cur.execute("SET LOCAL synchronous_commit = off")  # this transaction only (see PgSink)
            app = batch["append"]
            if app.get("signals"):
                _copy(cur, "signals", app["signals"])
            if batch["new_positions"]:
                _copy(cur, "positions", batch["new_positions"])
            if batch["new_orders"]:
                _insert_orders(cur, batch["new_orders"])
            for t in APPEND_ORDER:
                if t != "signals" and app.get(t):
                    _copy(cur, t, app[t])
            if batch["upd_positions"]:
                cur.executemany(
                    """UPDATE positions SET status=%s, qty=%s, entry_qty=%s, avg_entry_price=%s, avg_exit_price=%s,
                              realized_pnl_usd=%s, fees_usd=%s, closed_at=%s, close_reason=%s, context=%s::jsonb
                        WHERE position_id=%s""", batch["upd_positions"])
            if batch["upd_orders"]:
                cur.executemany(
                    """UPDATE order_executions SET status=%s, reject_reason=%s, filled_qty=%s, avg_fill_price=%s,
                              position_id=%s, updated_at=%s, context=%s::jsonb WHERE order_id=%s""", batch["upd_orders"])
            if batch["breakers"]:
                cur.executemany(
                    """INSERT INTO breaker_states (account_id, run_id, breaker, scope, state, since, reason, context)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)
                       ON CONFLICT (run_id, breaker, scope) DO UPDATE SET state=EXCLUDED.state,
                           since=EXCLUDED.since, reason=EXCLUDED.reason, context=EXCLUDED.context""", batch["breakers"])
            if batch["regime"] is not None:
                cur.execute(
                    """INSERT INTO btc_market_state (singleton, ts, regime, confirmed, metrics, run_id, updated_at)
                       VALUES (true, %s, %s, %s, %s::jsonb, %s, now())
                       ON CONFLICT (singleton) DO UPDATE SET ts=EXCLUDED.ts, regime=EXCLUDED.regime,
                           confirmed=EXCLUDED.confirmed, metrics=EXCLUDED.metrics, run_id=EXCLUDED.run_id,
                           updated_at=now()""", batch["regime"])
            if batch["checkpoint"] is not None:
                cur.execute("""UPDATE engine_runs SET last_bar_time = coalesce(%s, last_bar_time),
                                      bars_processed = %s, checkpoint = coalesce(%s::jsonb, checkpoint)
                                WHERE run_id = %s""", batch["checkpoint"])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _insert_orders(cur, orders: list[tuple[str, str]]) -> None:
    cols = _SPEC["order_executions"][0]
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS _ats_order_stage (LIKE order_executions) ON COMMIT DELETE ROWS")
    with cur.copy(f"COPY _ats_order_stage ({', '.join(cols)}) FROM STDIN") as cp:
        cp.write("\n".join(line for _, line in orders) + "\n")
    got = cur.execute(
        f"""INSERT INTO order_executions ({', '.join(cols)})
            SELECT {', '.join(cols)} FROM _ats_order_stage ORDER BY order_id
            ON CONFLICT (client_order_id) DO NOTHING RETURNING client_order_id""").fetchall()
    if len(got) != len(orders):
        inserted = {r[0] for r in got}
        dup = [coid for coid, _ in orders if coid not in inserted]
        raise AtsError(f"order(s) already submitted, refusing duplicates: {', '.join(dup[:3])}"
                       f"{' ...' if len(dup) > 3 else ''} (client_order_id UNIQUE in order_executions)")


#: GIL switch interval (s) while a background writer runs. The writer thread gives up the GIL on every socket
#: wait of a COPY (psycopg sends 128 kB chunks) and, with CPython's default 5 ms interval, waits up to 5 ms to
#: get it back from the busy engine thread each time: the writer then took ~3 s for what costs ~1 s alone
#: (bench/replay.py), so the database work no longer overlapped the engine's. 0.5 ms lets it keep up.
WRITER_SWITCH_INTERVAL = 0.0005
_switch_users = [0, None]  # active writers, interval to restore


class _Writer:
    """Background writer: one thread, one connection, batches committed in order. While any writer runs, the
    process's GIL switch interval is lowered to WRITER_SWITCH_INTERVAL (restored when the last one closes)."""

    def __init__(self, url: str, sink: PgSink, max_queued: int):
        import queue
        import sys
        import threading

        from ..db.connection import connect

        self.conn = connect(url, application_name=f"ats-writer:{sink.run_id}"[:60])
        self.q: "queue.Queue" = queue.Queue(maxsize=max(1, max_queued))
        self.error: BaseException | None = None
        if _switch_users[0] == 0:
            _switch_users[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(WRITER_SWITCH_INTERVAL, _switch_users[1]))
        _switch_users[0] += 1
        self._switched = True
        self.t = threading.Thread(target=self._loop, name=f"ats-writer-{sink.run_id}", daemon=True)
        self.t.start()

    def _restore_switch(self) -> None:
        import sys

        if self._switched:
            self._switched = False
            _switch_users[0] -= 1
            if _switch_users[0] == 0 and _switch_users[1] is not None:
                sys.setswitchinterval(_switch_users[1])

    def _loop(self) -> None:
        while True:
            batch = self.q.get()
            if batch is None:
                return
            if self.error is None:
                try:
                    write_batch(self.conn, batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the engine thread
                    self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def put(self, batch: dict) -> None:
        self._check()
        self.q.put(batch)

    def close(self) -> None:
        try:
            self.q.put(None)
            self.t.join()
            self.conn.close()
        finally:
            self._restore_switch()
        self._check()


def _dec(v):
    """Floats as exact decimal text for NUMERIC parameters (float8 -> numeric casts keep only 15 digits)."""
    return None if v is None else repr(float(v))
