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

import json
import math
from datetime import datetime, timezone

import psycopg
from psycopg.types.json import Jsonb

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
}
_SPEC = {t: ([c.split(":")[0] for c in spec.split()], [c.split(":")[1] for c in spec.split()])
         for t, spec in TABLES.items()}
# FK-safe write order
APPEND_ORDER = ("signals", "positions", "order_executions", "fills", "blocked_signals", "position_evaluations",
                "position_targets", "portfolio_hourly_snapshots", "system_events", "btc_market_state_history")
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


def format_row(row: tuple, kinds: list[str]) -> str:
    """One COPY text-format line (without newline) for ``row`` typed by ``kinds``."""
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
    ctx = {**p.context, "params": p.params, "adds": p.adds, "tp_price": p.tp_price, "sl_price": p.sl_price,
           "trailing_stop": p.trail_stop, "best_price": p.best_price}
    return (p.position_id, run_id, account_id, p.strategy, p.symbol, p.side, p.status, p.qty, p.entry_qty,
            p.avg_entry, p.avg_exit, p.realized_usd, p.fees_usd, p.opened_at, p.closed_at, p.close_reason,
            p.entry_signal_id, ctx)


def order_row(run_id: str, account_id: str, o: Order, broker: str) -> tuple:
    ctx = {**o.context, "fees_usd": o.fees_usd}
    if o.limit_price is not None:
        ctx["limit_price"] = o.limit_price
    if o.parent_client_order_id:
        ctx["parent_client_order_id"] = o.parent_client_order_id
    return (o.order_id, o.client_order_id, run_id, account_id, o.signal_id, o.position_id, o.strategy, o.symbol,
            o.side, o.position_side, o.intent, o.order_type, o.qty, o.qty * o.decision_price, o.decision_price,
            o.status, o.reject_reason, o.filled_qty, o.avg_fill_price, broker, None, o.submitted_at,
            o.updated_at or o.submitted_at, ctx)


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
        self._ids[table] += 1
        return self._ids[table]

    def add(self, table: str, row: tuple) -> None:
        self.rows[table].append(row)

    def position_changed(self, p: Position) -> None:
        self.positions[p.position_id] = p

    def order_changed(self, o: Order) -> None:
        self.orders[o.order_id] = o

    def breaker_state(self, breaker: str, scope: str, state: dict) -> None:
        self.breaker_states[(breaker, scope)] = state

    def regime(self, state: dict) -> None:
        self.regime_state = state

    def flush(self, checkpoint: dict | None = None, *, last_bar_time: int | None = None,
              bars_processed: int = 0) -> None:
        self.checkpoints += 1


class PgSink:
    """Buffered, transactional writer of the audit trail of one run (see module docstring)."""

    persistent = True

    def __init__(self, conn: psycopg.Connection, run_id: str, account_id: str, *, broker: str = "paper",
                 write_regime_singleton: bool = True):
        self.conn, self.run_id, self.account_id, self.broker = conn, run_id, account_id, broker
        self.write_regime_singleton = write_regime_singleton
        self.buf: dict[str, list[str]] = {t: [] for t in TABLES}
        self._id_pool: dict[str, list[int]] = {t: [] for t in _SEQ}
        self._dirty_pos: dict[int, Position] = {}
        self._dirty_ord: dict[int, Order] = {}
        self._persisted_pos: set[int] = set()
        self._persisted_ord: set[int] = set()
        self._breakers: dict[tuple, dict] = {}
        self._regime: dict | None = None
        self.rows_written = 0

    # ---- ids ----
    def next_id(self, table: str) -> int:
        pool = self._id_pool[table]
        if not pool:
            with self.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
                rows = cur.execute("SELECT nextval(%s) FROM generate_series(1, 512)", (_SEQ[table],)).fetchall()
            pool.extend(r[0] for r in reversed(rows))
        return pool.pop()

    # ---- buffering ----
    def add(self, table: str, row: tuple) -> None:
        self.buf[table].append(format_row(row, _SPEC[table][1]))

    def position_changed(self, p: Position) -> None:
        self._dirty_pos[p.position_id] = p

    def order_changed(self, o: Order) -> None:
        self._dirty_ord[o.order_id] = o

    def mark_persisted(self, positions=(), orders=()) -> None:
        """Ids already in the database (after a resume)."""
        self._persisted_pos.update(p.position_id for p in positions)
        self._persisted_ord.update(o.order_id for o in orders)

    def breaker_state(self, breaker: str, scope: str, state: dict) -> None:
        self._breakers[(breaker, scope)] = state

    def regime(self, state: dict) -> None:
        self._regime = state

    # ---- flush ----
    def _copy(self, cur, table: str, lines: list[str]) -> None:
        cols = ", ".join(_SPEC[table][0])
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
            cp.write("\n".join(lines) + "\n")

    def flush(self, checkpoint: dict | None = None, *, last_bar_time: int | None = None,
              bars_processed: int = 0) -> None:
        """Write everything buffered plus the checkpoint in ONE transaction and COMMIT it (the reads the engine made
        since the last flush share that transaction; on any error everything since the last flush is rolled back)."""
        new_pos = [p for pid, p in self._dirty_pos.items() if pid not in self._persisted_pos]
        upd_pos = [p for pid, p in self._dirty_pos.items() if pid in self._persisted_pos]
        new_ord = [o for oid, o in self._dirty_ord.items() if oid not in self._persisted_ord]
        upd_ord = [o for oid, o in self._dirty_ord.items() if oid in self._persisted_ord]
        rid, acc = self.run_id, self.account_id
        try:
            with self.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
                if self.buf["signals"]:
                    self._copy(cur, "signals", self.buf["signals"])
                if new_pos:
                    self._copy(cur, "positions", [format_row(position_row(rid, acc, p), _SPEC["positions"][1])
                                                  for p in new_pos])
                if new_ord:
                    self._insert_orders(cur, new_ord)
                for t in APPEND_ORDER:
                    if t in ("signals",) or not self.buf[t]:
                        continue
                    self._copy(cur, t, self.buf[t])
                if upd_pos:
                    cur.executemany(
                        """UPDATE positions SET status=%s, qty=%s, entry_qty=%s, avg_entry_price=%s, avg_exit_price=%s,
                                  realized_pnl_usd=%s, fees_usd=%s, closed_at=%s, close_reason=%s, context=%s
                            WHERE position_id=%s""",
                        [(p.status, _dec(p.qty), _dec(p.entry_qty), _dec(p.avg_entry), _dec(p.avg_exit),
                          _dec(p.realized_usd), _dec(p.fees_usd), to_dt(p.closed_at), p.close_reason,
                          _J(position_row(rid, acc, p)[-1]), p.position_id) for p in upd_pos])
                if upd_ord:
                    cur.executemany(
                        """UPDATE order_executions SET status=%s, reject_reason=%s, filled_qty=%s, avg_fill_price=%s,
                                  position_id=%s, updated_at=%s, context=%s WHERE order_id=%s""",
                        [(o.status, o.reject_reason, _dec(o.filled_qty), _dec(o.avg_fill_price), o.position_id,
                          to_dt(o.updated_at or o.submitted_at), _J({**o.context, "fees_usd": o.fees_usd}),
                          o.order_id) for o in upd_ord])
                if self._breakers:
                    cur.executemany(
                        """INSERT INTO breaker_states (account_id, run_id, breaker, scope, state, since, reason, context)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                           ON CONFLICT (run_id, breaker, scope) DO UPDATE SET state=EXCLUDED.state,
                               since=EXCLUDED.since, reason=EXCLUDED.reason, context=EXCLUDED.context""",
                        [(acc, rid, b, sc, st["state"], to_dt(st["since"]), st["reason"], _J(st["context"]))
                         for (b, sc), st in self._breakers.items()])
                if self._regime is not None and self.write_regime_singleton:
                    r = self._regime
                    cur.execute(
                        """INSERT INTO btc_market_state (singleton, ts, regime, confirmed, metrics, run_id, updated_at)
                           VALUES (true, %s, %s, %s, %s, %s, now())
                           ON CONFLICT (singleton) DO UPDATE SET ts=EXCLUDED.ts, regime=EXCLUDED.regime,
                               confirmed=EXCLUDED.confirmed, metrics=EXCLUDED.metrics, run_id=EXCLUDED.run_id,
                               updated_at=now()""",
                        (to_dt(r["ts"]), r["regime"], r["confirmed"], _J(r["metrics"]), rid))
                if checkpoint is not None or last_bar_time is not None:
                    cur.execute("""UPDATE engine_runs SET last_bar_time = coalesce(%s, last_bar_time),
                                          bars_processed = %s, checkpoint = coalesce(%s, checkpoint)
                                    WHERE run_id = %s""",
                                (to_dt(last_bar_time), bars_processed,
                                 None if checkpoint is None else _J(checkpoint), rid))
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        self.rows_written += sum(len(v) for v in self.buf.values()) + len(new_pos) + len(new_ord)
        for v in self.buf.values():
            v.clear()
        self._persisted_pos.update(p.position_id for p in new_pos)
        self._persisted_ord.update(o.order_id for o in new_ord)
        self._dirty_pos.clear()
        self._dirty_ord.clear()
        self._breakers.clear()
        self._regime = None

    def _insert_orders(self, cur, orders: list[Order]) -> None:
        cols = _SPEC["order_executions"][0]
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS _ats_order_stage (LIKE order_executions) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY _ats_order_stage ({', '.join(cols)}) FROM STDIN") as cp:
            cp.write("\n".join(format_row(order_row(self.run_id, self.account_id, o, self.broker),
                                          _SPEC["order_executions"][1]) for o in orders) + "\n")
        got = cur.execute(
            f"""INSERT INTO order_executions ({', '.join(cols)})
                SELECT {', '.join(cols)} FROM _ats_order_stage ORDER BY order_id
                ON CONFLICT (client_order_id) DO NOTHING RETURNING client_order_id""").fetchall()
        if len(got) != len(orders):
            inserted = {r[0] for r in got}
            dup = [o.client_order_id for o in orders if o.client_order_id not in inserted]
            raise AtsError(f"order(s) already submitted, refusing duplicates: {', '.join(dup[:3])}"
                           f"{' ...' if len(dup) > 3 else ''} (client_order_id UNIQUE in order_executions)")


def _J(obj) -> Jsonb:
    return Jsonb(obj, dumps)


def _dec(v):
    """Floats as exact decimal text for NUMERIC parameters (float8 -> numeric casts keep only 15 digits)."""
    return None if v is None else repr(float(v))
