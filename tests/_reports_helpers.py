"""Synthetic but realistic audit-trail rows (migration 0003 tables) for the forensics / reports tests.

`seed_run(conn)` writes one replay run shaped like the engine's output: a momentum strategy on BTCUSDT and
ETHUSDT with its configuration, accepted and blocked signals (cooldown, breaker:daily_drawdown,
breaker:market_volatility on 2021-05-19), orders and fills at the next bar's open with fees and slippage, two
closed BTC positions (one TP win, one SL loss), one closed ETH position, one open BTC position, evaluations,
TP/SL targets, breaker trip/reset events and breaker_states, and hourly portfolio snapshots whose cumulative
realized P&L equals the closed positions' realized P&L (net of fees).

Every figure is computed here from the fills, so the tests can assert exact expectations.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from psycopg.types.json import Jsonb

UTC = timezone.utc
RUN = "replay-test-0001"
FEE_RATE = Decimal("0.001")   # taker fee, fraction of notional
T0 = datetime(2021, 5, 17, 0, 0, tzinfo=UTC)


def ts(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2021, 5, day, hour, minute, tzinfo=UTC)


STRATEGY_PARAMS = {"tp_pct": 4.0, "sl_pct": 2.0, "trade_amount_usd": 1000.0, "cooldown_min": 120, "max_adds": 1,
                   "max_hold_hours": 48, "trailing_pct": None}


def _signal(conn, strategy, symbol, t, side, intent, pside, price, status="accepted", regime="bull", ctx=None):
    return conn.execute(
        """INSERT INTO signals (run_id, account_id, strategy_name, symbol, timeframe, ts, side, intent,
                                position_side, price, strength, regime, status, context)
           VALUES (%s, 'default', %s, %s, '1h', %s, %s, %s, %s, %s, 0.7, %s, %s, %s) RETURNING signal_id""",
        (RUN, strategy, symbol, t, side, intent, pside, Decimal(str(price)), regime, status,
         Jsonb(ctx or {"ema_fast": 1, "ema_slow": 0.9}))).fetchone()["signal_id"]


def _blocked(conn, strategy, symbol, t, gate, reason, price=100.0):
    sid = _signal(conn, strategy, symbol, t, "buy", "open", "long", price, status="blocked")
    conn.execute(
        """INSERT INTO blocked_signals (signal_id, run_id, account_id, strategy_name, symbol, ts, gate, reason, context)
           VALUES (%s, %s, 'default', %s, %s, %s, %s, %s, %s)""",
        (sid, RUN, strategy, symbol, t, gate, reason, Jsonb({"price": price})))
    return sid


def _order_fill(conn, *, strategy, symbol, side, pside, intent, qty, decision_price, fill_price, t_submit, t_fill,
                position_id, signal_id, seq_key, context=None):
    coid = f"{RUN}:{strategy}:{symbol}:{seq_key}:{intent}"
    fee = (Decimal(str(qty)) * Decimal(str(fill_price)) * FEE_RATE)
    oid = conn.execute(
        """INSERT INTO order_executions (client_order_id, run_id, account_id, signal_id, position_id, strategy_name,
               symbol, side, position_side, intent, qty, notional_usd, decision_price, status, filled_qty,
               avg_fill_price, submitted_at, updated_at, context)
           VALUES (%s, %s, 'default', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'filled', %s, %s, %s, %s, %s)
           RETURNING order_id""",
        (coid, RUN, signal_id, position_id, strategy, symbol, side, pside, intent, Decimal(str(qty)),
         Decimal(str(qty)) * Decimal(str(decision_price)), Decimal(str(decision_price)), Decimal(str(qty)),
         Decimal(str(fill_price)), t_submit, t_fill, Jsonb(context or {}))).fetchone()["order_id"]
    conn.execute(
        """INSERT INTO fills (order_id, client_order_id, fill_seq, run_id, account_id, symbol, side, qty, price,
                              fee_usd, liquidity, slippage_bps, ts)
           VALUES (%s, %s, 1, %s, 'default', %s, %s, %s, %s, %s, 'taker', 2.5, %s)""",
        (oid, coid, RUN, symbol, side, Decimal(str(qty)), Decimal(str(fill_price)), fee, t_fill))
    return oid, fee


def _trade(conn, *, strategy, symbol, entry_t, entry_price, exit_t, exit_price, qty, reason, tp=None, sl=None,
           close=True, entry_sig_price=None):
    """One long position opened at entry_t (signal one bar earlier) and closed at exit_t; returns a dict."""
    sig_t = entry_t  # signal on the bar that closes at entry_t; fill at the next bar's open == entry_t
    sid = _signal(conn, strategy, symbol, sig_t, "buy", "open", "long", entry_sig_price or entry_price)
    tp = tp if tp is not None else entry_price * (1 + STRATEGY_PARAMS["tp_pct"] / 100)
    sl = sl if sl is not None else entry_price * (1 - STRATEGY_PARAMS["sl_pct"] / 100)
    pid = conn.execute(
        """INSERT INTO positions (run_id, account_id, strategy_name, symbol, side, status, qty, entry_qty,
               avg_entry_price, opened_at, entry_signal_id)
           VALUES (%s, 'default', %s, %s, 'long', 'open', %s, %s, %s, %s, %s) RETURNING position_id""",
        (RUN, strategy, symbol, Decimal(str(qty)), Decimal(str(qty)), Decimal(str(entry_price)), entry_t,
         sid)).fetchone()["position_id"]
    _, fee_in = _order_fill(conn, strategy=strategy, symbol=symbol, side="buy", pside="long", intent="open", qty=qty,
                            decision_price=entry_sig_price or entry_price, fill_price=entry_price, t_submit=sig_t,
                            t_fill=entry_t, position_id=pid, signal_id=sid, seq_key=entry_t.isoformat(),
                            context={"sizing": {"trade_amount_usd": 1000}})
    conn.execute("""INSERT INTO position_targets (position_id, run_id, ts, tp_price, sl_price, trailing_stop, reason)
                    VALUES (%s, %s, %s, %s, %s, NULL, 'initial')""",
                 (pid, RUN, entry_t, Decimal(str(round(tp, 8))), Decimal(str(round(sl, 8)))))
    t = entry_t + timedelta(hours=1)
    end = exit_t if close else entry_t + timedelta(hours=3)
    while t < end:
        conn.execute("""INSERT INTO position_evaluations (position_id, run_id, ts, price, pnl_pct, tp_price, sl_price,
                            hold_minutes, decision, reason) VALUES (%s, %s, %s, %s, 0.1, %s, %s, %s, 'hold', 'within targets')""",
                     (pid, RUN, t, Decimal(str(entry_price)), Decimal(str(round(tp, 8))), Decimal(str(round(sl, 8))),
                      (t - entry_t).total_seconds() / 60))
        t += timedelta(hours=1)
    res = {"position_id": pid, "signal_id": sid, "symbol": symbol, "qty": Decimal(str(qty)),
           "entry_price": Decimal(str(entry_price)), "fee_in": fee_in, "opened_at": entry_t}
    if not close:
        conn.execute("UPDATE positions SET fees_usd = %s WHERE position_id = %s", (fee_in, pid))
        res["realized"] = None
        return res
    decision = {"tp": "exit_tp", "sl": "exit_sl", "max_hold": "exit_max_hold"}.get(reason, "exit_signal")
    conn.execute("""INSERT INTO position_evaluations (position_id, run_id, ts, price, pnl_pct, tp_price, sl_price,
                        hold_minutes, decision, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                 (pid, RUN, exit_t, Decimal(str(exit_price)), (exit_price / entry_price - 1) * 100,
                  Decimal(str(round(tp, 8))), Decimal(str(round(sl, 8))), (exit_t - entry_t).total_seconds() / 60,
                  decision, f"{reason} hit"))
    _, fee_out = _order_fill(conn, strategy=strategy, symbol=symbol, side="sell", pside="long", intent="close",
                             qty=qty, decision_price=exit_price, fill_price=exit_price, t_submit=exit_t, t_fill=exit_t,
                             position_id=pid, signal_id=None, seq_key=exit_t.isoformat(), context={"exit_reason": reason})
    q = Decimal(str(qty))
    realized = q * Decimal(str(exit_price)) - q * Decimal(str(entry_price)) - fee_in - fee_out
    conn.execute("""UPDATE positions SET status = 'closed', qty = 0, avg_exit_price = %s, realized_pnl_usd = %s,
                        fees_usd = %s, closed_at = %s, close_reason = %s WHERE position_id = %s""",
                 (Decimal(str(exit_price)), realized, fee_in + fee_out, exit_t, reason, pid))
    res.update(realized=realized, closed_at=exit_t, fees=fee_in + fee_out)
    return res


def seed_run(conn, *, per_symbol_realized: bool = True, violations: bool = False) -> dict:
    """Write the synthetic run; commit; return the expectations (realized per symbol, trade ids, ...).

    ``per_symbol_realized``: the snapshots' ``positions`` JSON carries each symbol's cumulative realized P&L
    (else only qty/mark/value/unrealized, and reconciliation falls back to snapshot deltas).
    ``violations``: add two trades that break the configuration: an ETH entry while the buy gate was off, with a
    TP at +10 % instead of +4 %, held 60 h (max hold 48 h); a BTC re-entry 60 min after an exit (cooldown 120 min)
    at 3x the trade amount.
    """
    from ats.db import config_store as cs

    cs.upsert_strategy(conn, "momentum", params=dict(STRATEGY_PARAMS), watchlist_enabled=True, buy_enabled=True,
                       sell_enabled=True, effective_from=datetime(2021, 1, 1, tzinfo=UTC))
    conn.execute("""INSERT INTO engine_runs (run_id, account_id, mode, status, params, started_at, finished_at,
                        last_bar_time, bars_processed)
                    VALUES (%s, 'default', 'replay', 'completed', %s, clock_timestamp(),
                            clock_timestamp() + interval '5 minutes', %s, 120)""",
                 (RUN, Jsonb({"strategies": ["momentum"], "symbols": ["BTCUSDT", "ETHUSDT"], "timeframe": "1h"}),
                  ts(21, 0)))  # a replay started (wall clock) after its configuration was recorded
    trades = []
    # BTC win: TP (+4 %), ETH loss in the same snapshot interval as the BTC win's close, BTC loss: SL
    trades.append(_trade(conn, strategy="momentum", symbol="BTCUSDT", entry_t=ts(17, 10), entry_price=43000.0,
                         exit_t=ts(18, 6, 0), exit_price=44720.0, qty=0.02325581, reason="tp"))
    trades.append(_trade(conn, strategy="momentum", symbol="ETHUSDT", entry_t=ts(17, 12), entry_price=3400.0,
                         exit_t=ts(18, 6, 0), exit_price=3332.0, qty=0.29411764, reason="sl"))
    _blocked(conn, "momentum", "BTCUSDT", ts(18, 7), "cooldown", "cooldown 120 min after exit at 06:00", 44700.0)
    trades.append(_trade(conn, strategy="momentum", symbol="BTCUSDT", entry_t=ts(18, 20), entry_price=42000.0,
                         exit_t=ts(19, 3), exit_price=41160.0, qty=0.02380952, reason="sl"))
    # the crash: breakers trip at 12:00 on 2021-05-19 and block BTC entries
    conn.execute("""INSERT INTO system_events (ts, account_id, component, event_type, severity, payload)
                    VALUES (%s, 'default', 'risk', 'breaker_tripped', 'warning', %s)""",
                 (ts(19, 12), Jsonb({"breaker": "daily_drawdown", "cause": "drawdown 5.2% > 5.0%", "run_id": RUN})))
    conn.execute("""INSERT INTO system_events (ts, account_id, component, event_type, severity, payload)
                    VALUES (%s, 'default', 'risk', 'breaker_tripped', 'warning', %s)""",
                 (ts(19, 13), Jsonb({"breaker": "market_volatility", "cause": "BTC 1h range 9.8% > 6%", "run_id": RUN})))
    _blocked(conn, "momentum", "BTCUSDT", ts(19, 14), "breaker:daily_drawdown", "daily drawdown 5.2% > 5.0%", 36000.0)
    _blocked(conn, "momentum", "BTCUSDT", ts(19, 15), "breaker:daily_drawdown", "daily drawdown 5.4% > 5.0%", 37000.0)
    _blocked(conn, "momentum", "BTCUSDT", ts(19, 16), "breaker:market_volatility", "BTC 1h range 9.8% > 6%", 38000.0)
    conn.execute("""INSERT INTO system_events (ts, account_id, component, event_type, severity, payload)
                    VALUES (%s, 'default', 'risk', 'breaker_reset', 'info', %s)""",
                 (ts(20, 0), Jsonb({"breaker": "daily_drawdown", "cause": "new UTC day", "run_id": RUN})))
    conn.execute("""INSERT INTO system_events (ts, account_id, component, event_type, severity, payload)
                    VALUES (%s, 'default', 'risk', 'breaker_reset', 'info', %s)""",
                 (ts(20, 1), Jsonb({"breaker": "market_volatility", "cause": "range back under 6%", "run_id": RUN})))
    conn.execute("""INSERT INTO system_events (ts, account_id, component, event_type, severity, symbol, payload)
                    VALUES (%s, 'default', 'broker', 'order_error', 'error', 'BTCUSDT', %s)""",
                 (ts(19, 17), Jsonb({"message": "paper broker: slippage limit exceeded", "run_id": RUN})))
    conn.execute("""INSERT INTO breaker_states (account_id, run_id, breaker, scope, state, since, reason)
                    VALUES ('default', %s, 'daily_drawdown', '*', 'ok', %s, 'new UTC day'),
                           ('default', %s, 'market_volatility', '*', 'ok', %s, 'range back under 6%%'),
                           ('default', %s, 'manual_stop', '*', 'ok', %s, NULL)""",
                 (RUN, ts(20, 0), RUN, ts(20, 1), RUN, ts(17, 0)))
    # an open BTC position at the end
    trades.append(_trade(conn, strategy="momentum", symbol="BTCUSDT", entry_t=ts(20, 10), entry_price=40000.0,
                         exit_t=None, exit_price=None, qty=0.025, reason=None, close=False))
    if violations:
        cs.upsert_strategy(conn, "momentum", buy_enabled=False, effective_from=ts(20, 12))
        # opened while buy gate off, 3x trade amount, closed after 60 h (max hold 48 h)
        trades.append(_trade(conn, strategy="momentum", symbol="ETHUSDT", entry_t=ts(20, 14), entry_price=3000.0,
                             exit_t=ts(23, 2), exit_price=3050.0, qty=0.3, reason="signal", tp=3300.0))
        # BTC re-entry 60 min after the 03:00 SL exit (cooldown 120 min), 3x the trade amount
        trades.append(_trade(conn, strategy="momentum", symbol="BTCUSDT", entry_t=ts(19, 4), entry_price=41000.0,
                             exit_t=ts(19, 6), exit_price=41100.0, qty=0.075, reason="tp"))
    _snapshots(conn, trades, per_symbol_realized)
    conn.commit()
    closed = [t for t in trades if t.get("realized") is not None]
    by_sym: dict[str, Decimal] = {}
    for t in closed:
        by_sym[t["symbol"]] = by_sym.get(t["symbol"], Decimal(0)) + t["realized"]
    # the replay ran (wall clock) after every configuration change above was recorded: it knew them all
    conn.execute("UPDATE engine_runs SET started_at = clock_timestamp(), finished_at = clock_timestamp() "
                 "+ interval '5 minutes' WHERE run_id = %s", (RUN,))
    conn.commit()
    return {"run_id": RUN, "trades": trades, "realized_by_symbol": by_sym,
            "realized_total": sum(by_sym.values(), Decimal(0))}


def _snapshots(conn, trades, per_symbol_realized: bool) -> None:
    start, end = ts(17, 10), ts(21, 0) if not any(t.get("closed_at") and t["closed_at"] > ts(21, 0) for t in trades) \
        else ts(23, 3)
    cash0 = Decimal(10000)
    t = start
    while t <= end:
        realized = Decimal(0)
        fees = Decimal(0)
        cash = cash0
        per: dict[str, dict] = {}
        for tr in trades:
            sym = tr["symbol"]
            e = per.setdefault(sym, {"symbol": sym, "qty": 0.0, "mark": 0.0, "value_usd": 0.0,
                                     "unrealized_pnl_usd": 0.0, "realized_pnl_usd": Decimal(0)})
            if tr["opened_at"] < t:  # a snapshot at t reflects fills strictly before t (engine semantics)
                cash -= tr["qty"] * tr["entry_price"] + tr["fee_in"]
                fees += tr["fee_in"]
                if tr.get("closed_at") is not None and tr["closed_at"] < t:
                    realized += tr["realized"]
                    e["realized_pnl_usd"] += tr["realized"]
                    cash += tr["qty"] * tr["entry_price"] + tr["fee_in"] + tr["realized"]
                    fees += tr["fees"] - tr["fee_in"]
                else:
                    e["qty"] += float(tr["qty"])
                    e["mark"] = float(tr["entry_price"])
                    e["value_usd"] += float(tr["qty"] * tr["entry_price"])
        pos_value = sum(Decimal(str(e["value_usd"])) for e in per.values())
        plist = []
        for e in per.values():
            d = dict(e)
            if per_symbol_realized:
                d["realized_pnl_usd"] = float(d["realized_pnl_usd"])
            else:
                d.pop("realized_pnl_usd")
            plist.append(d)
        conn.execute(
            """INSERT INTO portfolio_hourly_snapshots (run_id, account_id, ts, cash_usd, positions_value_usd,
                   equity_usd, realized_pnl_usd, unrealized_pnl_usd, fees_usd, net_pnl_daily_usd, open_positions,
                   positions)
               VALUES (%s, 'default', %s, %s, %s, %s, %s, 0, %s, 0, %s, %s)""",
            (RUN, t, cash, pos_value, cash + pos_value, realized, fees,
             sum(1 for e in per.values() if e["qty"] > 0), Jsonb(plist)))
        t += timedelta(hours=1)
