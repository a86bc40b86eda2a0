"""The decision loop: one path for replays, backtests and live sessions (they differ in clock, feed and broker).

Per step (one candle open time T across the run's symbols; the decision time is the close C = T + timeframe):

 1. fills      the broker executes orders decided at the previous close against this bar's OPEN (never
               earlier: no look-ahead); fills update positions and cash (ats.portfolio.book)
 2. marks      last close per symbol
 3. regime     the BTC regime at C (ats.regime.rules) -> btc_market_state (+ history when it changes)
 4. breakers   manual stop, daily drawdown, consecutive losses, market volatility, feed anomaly, velocity
               (ats.risk.breakers) -> system_events + breaker_states on every trip/reset
 5. exits      every open position is checked at C: stop loss, take profit, trailing stop, max hold, the
               strategy's exit signal -> position_evaluations (every check), position_targets (TP/SL history);
               an exit needs the strategy's sell gate; breakers never block exits
 6. entries    each strategy whose watchlist gate is on (as of C) emits edge-triggered signals -> signals; the
               gates in order: buy_gate, regime (longs pause in confirmed bear, shorts in confirmed bull),
               cooldown, breaker:<name>, risk:<limit> -> blocked_signals with the first failing gate, or an order
               (deterministic client_order_id) submitted to the broker for the next bar's open
 7. snapshot   at every top of the hour: portfolio_hourly_snapshots (cash, positions value, equity, realized,
               unrealized, fees, net_pnl_daily = equity - equity at 00:00 UTC, a running cumulative)

Every ``commit_every`` steps the sink writes the buffered rows and the checkpoint (engine state as JSON plus
engine_runs.last_bar_time) in one transaction; a restart with the same run id resumes from there.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from ..errors import AtsError
from ..execution.broker import Order, client_order_id
from ..execution.paper import PaperBroker
from ..portfolio.book import Portfolio, Position
from ..regime.rules import NAME as REGIME_NAME
from ..regime.rules import classify, pauses
from ..risk import breakers as brk
from ..risk.limits import check_entry, exposure_correlation
from ..risk.settings import SettingsView
from ..risk.sizing import estimate as kelly_estimate
from ..strategies import get_strategy
from ..timeutil import TIMEFRAME_SECONDS
from .config import GateCache
from .feed import ReplayClock
from .runs import RunSpec
from .sink import RawJson

CHECKPOINT_VERSION = 1


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def _ffill(a: np.ndarray) -> np.ndarray:
    """NaNs replaced by the last non-NaN value before them (a[0] must not be NaN)."""
    i = np.where(np.isnan(a), 0, np.arange(len(a)))
    return a[np.maximum.accumulate(i)]


class Engine:
    """Run the decision loop of ``spec`` over ``feed`` writing to ``sink`` (PgSink or MemorySink).

    ``checkpoint``: the JSON state of a previous partial run (resume); ``commit_every``: steps per flush;
    ``live``: re-read settings/configuration every step. ``run()`` returns the number of steps processed.
    """

    def __init__(self, conn, spec: RunSpec, *, sink, feed, broker=None, clock=None, progress: bool = False,
                 commit_every: int = 200, live: bool = False, checkpoint: dict | None = None,
                 anomalies: list[dict] | None = None, progress_desc: str | None = None, fast: bool = True):
        self.conn, self.spec, self.sink, self.feed = conn, spec, sink, feed
        self.broker = broker or PaperBroker()
        self.clock = clock or ReplayClock()
        self.progress, self.commit_every, self.live = progress, max(1, int(commit_every)), live
        self.fast = fast  # quiet spans in bulk (replays); False = every step through ``step`` (the reference)
        self.bulk_steps = 0  # steps done by _apply_span in this process (not checkpointed)
        self.progress_desc = progress_desc or spec.run_id
        self.run_id, self.account = spec.run_id, spec.account_id
        self.tf = spec.timeframe
        self.tf_s = TIMEFRAME_SECONDS[self.tf]
        self.strats = [get_strategy(n) for n in spec.strategies]
        self.settings = SettingsView(conn, account_id=self.account, live=live)
        self.gates = GateCache(conn, account_id=self.account, overrides=spec.param_overrides, live=live)
        self._prep: dict = {}
        self._vel: dict = {}
        self._vol: dict = {}
        self._vol_j: dict = {}
        self._anom_at: dict = {}
        self._ref_j: dict[int, int] = {}
        self._s_key = None
        self._pend: list[Order] = []
        self._closing: set[int] = set()
        self.bars = feed.bars
        self.logret = {s: np.diff(np.log(b.close), prepend=np.nan) for s, b in self.bars.items()}
        self._setup_regime()
        self._setup_anomalies(anomalies)
        if checkpoint:
            self._restore(checkpoint)
        else:
            self._init_state()

    # ------------------------------------------------------------------ setup
    def _setup_regime(self) -> None:
        ref = self.feed.reference
        self.regime = None
        self.reg_sym = {}
        if ref is None or len(ref) == 0:
            return
        self.regime = classify(ref.t, ref.close, self.tf_s)
        tl = getattr(self.feed, "timeline", None)
        if tl is not None and len(tl):
            js = np.searchsorted(ref.t, tl, side="right") - 1
            self._ref_j = dict(zip(tl.tolist(), js.tolist()))
        for s, b in self.bars.items():
            j = np.searchsorted(ref.t, b.t, side="right") - 1
            ok = j >= 0
            codes = np.zeros(len(b), dtype=np.int8)
            conf = np.zeros(len(b), dtype=bool)
            codes[ok] = self.regime.effective[j[ok]]
            conf[ok] = self.regime.confirmed[j[ok]]
            self.reg_sym[s] = (codes, conf)

    def _setup_anomalies(self, anomalies: list[dict] | None) -> None:
        """Per symbol sorted (start, end, info) intervals from the market-data anomalies (if any)."""
        self.anomaly_source = "none"
        if anomalies is None:
            anomalies, self.anomaly_source = load_anomalies(self.conn, self.spec, self.tf)
        else:
            self.anomaly_source = "given"
        self.anom: dict[str, list] = {s: [] for s in self.bars}
        for a in anomalies:
            sym = a.get("symbol")
            if sym not in self.anom:
                continue
            if a.get("timeframe") not in (None, self.tf):
                continue
            t0 = int(a["open_time"].timestamp()) if isinstance(a["open_time"], datetime) else int(a["open_time"])
            det = a.get("detail") or {}
            nbars = 1
            for k in ("missing_bars", "missing", "bars", "count", "n_missing"):
                if isinstance(det.get(k), (int, float)) and det[k] > 0:
                    nbars = int(det[k])
                    break
            self.anom[sym].append((t0, t0 + nbars * self.tf_s,
                                   {"kind": a.get("kind"), "open_time": _iso(t0), "source": "feed_anomalies",
                                    "detail": det}))
        for v in self.anom.values():
            v.sort(key=lambda x: x[0])

    def _init_state(self) -> None:
        self.pf = Portfolio.new(float(self.spec.starting_cash or 10000.0))
        self.board = brk.BreakerBoard()
        self.last_entry: dict = {}
        self.last_exit: dict = {}
        self.trades: dict[str, list[float]] = {}
        self.day = None
        self.day_start_equity = self.pf.starting_cash
        self.regime_last = None
        self.last_bar_t: dict[str, int] = {}
        self.gaps: dict[str, list] = {s: [] for s in self.bars}
        self.steps_done = 0
        self.bars_done = 0
        self.last_T = None
        self.marks: dict[str, float] = {}
        self.cur_index: dict[str, int] = {}
        self.stats = {"signals": 0, "blocked": {}, "orders": 0, "fills": 0, "rejected": 0, "closed_trades": 0,
                      "wins": 0, "breaker_trips": {}, "evaluations": 0}
        self.started = False

    def checkpoint(self) -> dict:
        """The engine state as JSON (floats round-trip exactly)."""
        return {"version": CHECKPOINT_VERSION, "portfolio": self.pf.to_dict(),
                "pending_orders": [o.to_dict() for o in self.broker.pending()],
                "breakers": self.board.to_dict(),
                "last_entry": [[k[0], k[1], v] for k, v in self.last_entry.items()],
                "last_exit": [[k[0], k[1], v] for k, v in self.last_exit.items()],
                "trades": self.trades, "day": self.day, "day_start_equity": self.day_start_equity,
                "regime_last": self.regime_last, "last_bar_t": self.last_bar_t, "gaps": self.gaps,
                "steps_done": self.steps_done, "bars_done": self.bars_done, "last_T": self.last_T,
                "stats": self.stats, "started": self.started}

    def _restore(self, c: dict) -> None:
        if c.get("version") != CHECKPOINT_VERSION:
            raise AtsError(f"run {self.run_id}: checkpoint version {c.get('version')} not supported")
        self.pf = Portfolio.from_dict(c["portfolio"])
        self.broker.restore([Order.from_dict(o) for o in c["pending_orders"]])
        self.board = brk.BreakerBoard.from_dict(c["breakers"])
        self.last_entry = {(a, b): v for a, b, v in c["last_entry"]}
        self.last_exit = {(a, b): v for a, b, v in c["last_exit"]}
        self.trades = {k: list(v) for k, v in c["trades"].items()}
        self.day, self.day_start_equity = c["day"], c["day_start_equity"]
        self.regime_last = tuple(c["regime_last"]) if c["regime_last"] is not None else None
        self.last_bar_t = dict(c["last_bar_t"])
        self.gaps = {s: [tuple(x[:2]) + (x[2],) for x in c["gaps"].get(s, [])] for s in self.bars}
        self.steps_done, self.bars_done, self.last_T = c["steps_done"], c["bars_done"], c["last_T"]
        self.stats = c["stats"]
        self.started = c.get("started", True)
        self.cur_index = {}
        self.marks = {}
        for sym, t in self.last_bar_t.items():
            b = self.bars[sym]
            j = int(np.searchsorted(b.t, t, side="right") - 1)
            if j >= 0:
                self.marks[sym] = float(b.close[j])
        if getattr(self.sink, "persistent", False):
            self.sink.mark_persisted(self.pf.positions.values(), self.broker.pending())
            self._verify_against_db()

    def _verify_against_db(self) -> None:
        """After a resume: the checkpoint's open positions must be exactly the open positions in the table."""
        rows = self.conn.execute("SELECT position_id, qty::float8 AS qty FROM positions WHERE run_id=%s AND "
                                 "status='open'", (self.run_id,)).fetchall()
        db = {r["position_id"]: r["qty"] for r in rows}
        mem = {p.position_id: p.qty for p in self.pf.positions.values()}
        if set(db) != set(mem) or any(abs(db[k] - mem[k]) > 1e-9 * max(1.0, abs(mem[k])) for k in mem):
            raise AtsError(f"run {self.run_id}: checkpoint and positions table disagree (db {sorted(db)} vs "
                           f"checkpoint {sorted(mem)}); refusing to resume")

    # ------------------------------------------------------------------ cached series
    def prepared(self, sym: str, strat, cfg):
        key = (sym, strat.name, cfg.ikey)
        p = self._prep.get(key)
        if p is None:
            reg = self.reg_sym.get(sym, (None, None))[0] if strat.uses_regime else None
            p = self._prep[key] = strat.prepare(self.bars[sym], cfg.params, reg)
        return p

    def velocity(self, sym: str, minutes: float) -> np.ndarray:
        k = brk.window_bars(minutes, self.tf_s)
        v = self._vel.get((sym, k))
        if v is None:
            b = self.bars[sym]
            v = self._vel[(sym, k)] = brk.velocity_pct(b.high, b.low, b.close, k)
        return v

    def market_vol(self, minutes: float):
        """(times, annualized vol %, source) of BTC (the regime reference) or the equal-weight index."""
        k = brk.window_bars(minutes, self.tf_s)
        hit = self._vol.get(k)
        if hit is None:
            ref = self.feed.reference
            if ref is not None and len(ref):
                t, lr = ref.t, np.diff(np.log(ref.close), prepend=np.nan)
                src = ref.symbol
            else:
                import pandas as pd

                df = pd.DataFrame({s: pd.Series(self.logret[s], index=b.t) for s, b in self.bars.items()})
                t, lr = df.index.to_numpy(dtype=np.int64), df.mean(axis=1, skipna=True).to_numpy()
                src = "equal-weight index"
            hit = self._vol[k] = (t, brk.realized_vol_annual_pct(lr, k, self.tf_s), src)
        return hit

    def _vol_index(self, vt: np.ndarray, T: int) -> int:
        """Index of the last vol-series bar opening at or before T (cached per series and T)."""
        key = (id(vt), T)
        j = self._vol_j.get(key)
        if j is None:
            j = self._vol_j[key] = int(np.searchsorted(vt, T, side="right") - 1)
        return j

    def anomaly_index(self, sym: str, win: int) -> np.ndarray:
        """Per bar of ``sym``: index into self.anom[sym] of a market-data anomaly active at the bar's close
        (a0 < close <= a1 + win), or -1."""
        key = (sym, win)
        arr = self._anom_at.get(key)
        if arr is None:
            closes = self.bars[sym].t + self.tf_s
            arr = np.full(len(closes), -1, dtype=np.int64)
            for n, (a0, a1, _info) in enumerate(self.anom.get(sym, ())):
                lo = int(np.searchsorted(closes, a0, side="right"))
                hi = int(np.searchsorted(closes, a1 + win, side="right"))
                seg = arr[lo:hi]
                seg[seg < 0] = n
            self._anom_at[key] = arr
        return arr

    # ------------------------------------------------------------------ main loop
    def run(self, max_steps: int | None = None) -> int:
        """Process the feed from the checkpoint to the end (or ``max_steps`` steps); returns steps processed."""
        after = self.last_T
        total = len(self.feed) if hasattr(self.feed, "__len__") else None
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.steps_done, desc=self.progress_desc, unit="step",
                       dynamic_ncols=True, mininterval=0.5)
        if not self.started:
            self._opening_snapshot()
            self.started = True
        n = 0
        since_flush = 0
        try:
            if self.fast and not self.live and hasattr(self.feed, "step_index"):
                n = self._run_indexed(after, max_steps, bar)
            else:
                for T, present in self.feed.steps(after):
                    self.step(T, present)
                    n += 1
                    since_flush += 1
                    if since_flush >= self.commit_every:
                        self.flush()
                        since_flush = 0
                    if bar is not None:
                        bar.update(1)
                    if max_steps is not None and n >= max_steps:
                        break
            self.flush()
            self.sink.close()
        except BaseException:
            try:
                self.sink.close()
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        finally:
            if bar is not None:
                bar.close()
        return n

    def _run_indexed(self, after, max_steps, bar) -> int:
        """The main loop over a feed with ``step_index`` (replays): quiet spans (see ``_quiet_span``) are done in
        bulk by ``_apply_span``, every other step by ``step``; flushes land on exactly the same steps as the
        one-step-at-a-time loop (every ``commit_every`` steps), so checkpoints and batches are unchanged."""
        tl, order, idx = self.feed.step_index()
        K = len(tl)
        k = 0 if after is None else int(np.searchsorted(tl, after, side="right"))
        tl_l = tl.tolist()
        idx_l = [(sym, idx[sym].tolist()) for sym in order]
        self._span_env = (tl, order, idx, tl_l)
        n = since_flush = 0
        big = 1 << 62
        while k < K:
            lim = min(K - k, self.commit_every - since_flush, big if max_steps is None else max_steps - n)
            L = self._quiet_span(k, lim) if lim >= 2 else 0
            if L:
                self._apply_span(k, L)
            else:
                L = 1
                self.step(tl_l[k], [(sym, a[k]) for sym, a in idx_l if a[k] >= 0])
            k += L
            n += L
            since_flush += L
            if since_flush >= self.commit_every:
                self.flush()
                since_flush = 0
            if bar is not None:
                bar.update(L)
            if max_steps is not None and n >= max_steps:
                break
        return n

    # ------------------------------------------------------------------ quiet spans
    def _static_events(self, s: dict, cfgs: tuple) -> np.ndarray:
        """Per step of the feed: True where something may happen whatever the engine state is (for the settings
        ``s`` and the strategy configurations ``cfgs`` in force): a symbol without a bar or after a feed gap, a
        NaN close, an entry trigger of a watchlisted strategy, a fast move (velocity), market volatility above its
        threshold, a market-data anomaly, a regime change or no regime yet. Returns ``nxt``: per step k the first
        step >= k with such an event (len(timeline) when none). Cached per (settings, configurations)."""
        key = (id(s), cfgs)
        hit = getattr(self, "_ev_cache", None)
        if hit is not None and hit[0] == key and hit[1] is s:
            return hit[2]
        tl, order, idx, _ = self._span_env
        K = len(tl)
        (_dd, _cl, _clc, vt, vv, _src, mv_thr, _mvr, vel, v_thr, _vm, _vc, _win, anom_at) = self._breaker_params(s)
        ev = np.zeros(K, dtype=bool)
        if K > 1:
            ev[1:] |= np.diff(tl) != self.tf_s
        for sym in order:
            ii = idx[sym]
            miss = ii < 0
            ev |= miss
            iv = np.where(miss, 0, ii)
            b = self.bars[sym]
            with np.errstate(invalid="ignore"):
                ev |= np.isnan(b.close[iv])
                ev |= np.abs(vel[sym][iv]) > v_thr
            ev |= anom_at[sym][iv] >= 0
            for cfg in cfgs:
                if cfg is not None and cfg.watchlist:
                    ev |= self.prepared(sym, get_strategy(cfg.name), cfg).entry[iv] != 0
        jv = np.searchsorted(vt, tl, side="right") - 1
        with np.errstate(invalid="ignore"):
            ev |= (jv >= 0) & (vv[np.maximum(jv, 0)] > mv_thr)
        if self.regime is not None:
            rs = self.regime
            jr = np.searchsorted(rs.t, tl, side="right") - 1
            ok = jr >= 0
            ev |= ~ok
            code = np.where(ok, rs.effective[np.maximum(jr, 0)].astype(np.int64), -99)
            conf = np.where(ok, rs.confirmed[np.maximum(jr, 0)], False)
            if K > 1:
                ev[1:] |= (code[1:] != code[:-1]) | (conf[1:] != conf[:-1])
            self._span_reg = (jr, code, conf)
        pos = np.where(ev, np.arange(K), K)
        nxt = np.minimum.accumulate(pos[::-1])[::-1]
        self._ev_cache = (key, s, nxt)
        return nxt

    def _quiet_span(self, k: int, lim: int) -> int:
        """How many steps from step k (at most ``lim``) are quiet: no pending order (so no fill), no breaker
        tripped or about to trip or reset, no regime change, no entry trigger, no exit (stop loss, take profit,
        max hold, exit signal) of any open position, no trailing stop in play, every symbol has its next bar, and
        neither the settings nor any strategy configuration change. In such a step ``step`` only marks to
        market, writes a 'hold' evaluation per open position and the hourly snapshot - which ``_apply_span``
        does for the whole span at once, with the same rows in the same order. 0 when step k is not quiet."""
        if self.broker.pending() or self.board.any_tripped() or self.board._pending:
            return 0
        tl, order, idx, tl_l = self._span_env
        T0 = tl_l[k]
        C0 = T0 + self.tf_s
        lbt = self.last_bar_t
        tf = self.tf_s
        for sym in order:
            if lbt.get(sym) != T0 - tf:
                return 0
        s = self.settings.at(C0)
        if brk.manual_on(s["breaker.manual_stop"]):
            return 0
        cl_n = int(s["breaker.consecutive_losses"])
        if cl_n > 0 and self.board.loss_streak >= cl_n:
            return 0
        until = self.settings.valid_until(C0)
        cfgs = []
        for strat in self.strats:
            cfgs.append(self.gates.get(strat.name, C0))
            until = min(until, self.gates.valid_until(strat.name, C0))
        for pos in self.pf.positions.values():
            if pos.strategy not in self.spec.strategies:
                return 0
        nxt = self._static_events(s, tuple(cfgs))
        e = min(k + lim, int(nxt[k]))
        # settings/configuration changes: the last quiet step must decide before ``until``
        if until <= C0:
            return 0
        e = min(e, k + int((until - C0 - 1) // tf) + 1)
        if e - k < 2:
            return 0
        if self.regime is not None:
            jr, code, conf = self._span_reg
            if self.regime_last != (int(code[k]), bool(conf[k])):
                return 0
        # stream gaps the engine saw (feed_anomaly): quiet only where no gap window covers the close
        win = self._bp[12]
        for sym in order:
            g = self.gaps[sym]
            if g:
                g0, g1, _ = g[-1]
                if C0 <= g1 + win:
                    if g0 < C0:
                        return 0
                    e = min(e, k + max(0, int((g0 - C0) // tf) + 1))
        W = e - k
        if W < 2:
            return 0
        C = tl[k:e] + tf
        # open positions: the first step where an exit would fire
        cut = W
        for pos in self.pf.positions.values():
            p = pos.params
            if float(p.get("trailing_pct") or 0) > 0 or pos.trail_stop is not None:
                return 0
            i0 = idx[pos.symbol][k]
            c = self.bars[pos.symbol].close[i0:i0 + W]
            long = pos.side == "long"
            hit = np.zeros(W, dtype=bool)
            if pos.sl_price is not None:
                hit |= (c <= pos.sl_price) if long else (c >= pos.sl_price)
            if pos.tp_price is not None:
                hit |= (c >= pos.tp_price) if long else (c <= pos.tp_price)
            mh = float(p.get("max_hold_hours") or 0)
            if mh > 0:
                hit |= (C - pos.opened_at) / 60.0 >= mh * 60
            cfg = cfgs[self.spec.strategies.index(pos.strategy)]
            if cfg is not None:
                prep = self.prepared(pos.symbol, get_strategy(pos.strategy), cfg)
                hit |= (prep.exit_long if long else prep.exit_short)[i0:i0 + W]
            if hit.any():
                cut = min(cut, int(np.argmax(hit)))
                if cut < 2:
                    return 0
        # daily drawdown: equity per step (same float operations as Portfolio.equity), reference reset per UTC day
        if self.pf.positions:
            pv = None
            for pos in self.pf.positions.values():
                i0 = idx[pos.symbol][k]
                v = pos.sign * pos.qty * self.bars[pos.symbol].close[i0:i0 + W]
                pv = v if pv is None else pv + v
            eq = self.pf.cash + pv
        else:
            eq = np.full(W, self.pf.cash)
        day = C // 86400
        new_day = np.empty(W, dtype=bool)
        new_day[0] = self.day != int(day[0])
        new_day[1:] = day[1:] != day[:-1]
        ref = np.where(new_day, eq, np.nan)
        if not new_day[0]:
            ref[0] = self.day_start_equity
        ref = _ffill(ref)
        dd_thr = self._bp[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            trip = (ref > 0) & ((ref - eq) / ref * 100.0 > dd_thr)
        if trip.any():
            cut = min(cut, int(np.argmax(trip)))
        if cut < 2:
            return 0
        self._span = (eq[:cut], ref[:cut], day[:cut])
        return cut

    def _apply_span(self, k: int, L: int) -> None:
        """Do steps k .. k+L-1, all quiet (``_quiet_span``), in bulk: exactly the rows and state ``step`` would
        leave - per step a 'hold' position_evaluations row per open position (best price tracked), the hourly
        snapshot at each top of the hour, the regime singleton refresh every 24 steps - and the marks, clocks,
        day reference and counters after the last step."""
        tl, order, idx, tl_l = self._span_env
        tf = self.tf_s
        eq, ref, day = self._span
        C_l = [t + tf for t in tl_l[k:k + L]]
        rid = self.run_id
        positions = list(self.pf.positions.values())
        cols = []
        closes = {}
        for pos in positions:
            i0 = idx[pos.symbol][k]
            c = self.bars[pos.symbol].close[i0:i0 + L]
            closes[pos.position_id] = c
            long = pos.side == "long"
            best = (np.maximum if long else np.minimum).accumulate(np.concatenate(([pos.best_price], c)))[1:]
            pnl = pos.sign * (c / pos.avg_entry - 1.0) * 100.0 if pos.avg_entry else np.zeros(L)
            hold = (np.asarray(C_l, dtype=np.int64) - pos.opened_at) / 60.0
            pid, tp, sl = pos.position_id, pos.tp_price, pos.sl_price
            cols.append([(pid, rid, C, cc, pp, tp, sl, None, hh, "hold", None,
                          RawJson('{"best_price":%s}' % float.__repr__(bb)))
                         for C, cc, pp, hh, bb in zip(C_l, c.tolist(), pnl.tolist(), hold.tolist(), best.tolist())])
            pos.best_price = float(best[-1])
        if cols:
            rows = cols[0] if len(cols) == 1 else [r for step in zip(*cols) for r in step]
            self.sink.add_many("position_evaluations", rows)
            self.stats["evaluations"] += len(rows)
        # hourly snapshots
        first = (-(C_l[0] % 3600)) % 3600 // tf if 3600 % tf == 0 else None
        snap_steps = (range(first, L, 3600 // tf) if first is not None
                      else [m for m, C in enumerate(C_l) if C % 3600 == 0])
        if snap_steps:
            pf = self.pf
            eq_l, ref_l = eq.tolist(), ref.tolist()
            for m in snap_steps:
                C = C_l[m]
                pv = 0.0
                unreal = 0.0
                rows = []
                for pos in positions:
                    mk = float(closes[pos.position_id][m])
                    v = pos.value(mk)
                    u = pos.unrealized(mk)
                    pv += v
                    unreal += u
                    rows.append({"strategy": pos.strategy, "symbol": pos.symbol, "side": pos.side, "qty": pos.qty,
                                 "mark": mk, "value_usd": round(v, 6), "unrealized_usd": round(u, 6),
                                 "position_id": pos.position_id})
                e_ = pf.cash + pv
                self.sink.add("portfolio_hourly_snapshots", (rid, self.account, C, pf.cash, pv, e_, pf.realized_usd,
                                                             unreal, pf.fees_usd, e_ - ref_l[m], len(positions), rows))
        # regime singleton refresh (every 24 steps, as _regime_step does when the regime is unchanged)
        if self.regime is not None:
            sd0 = self.steps_done
            last = None
            for m in range(L - 1, -1, -1):
                if (sd0 + m) % 24 == 0:
                    last = m
                    break
            if last is not None:
                jr = int(self._span_reg[0][k + last])
                code, conf = self.regime_last
                self.sink.regime({"ts": C_l[last], "regime": REGIME_NAME[code], "confirmed": conf,
                                  "metrics": self.regime.metrics(jr)})
        # state after the last step
        Tl = tl_l[k + L - 1]
        self.clock.advance(Tl + tf)
        cur = {}
        for sym in order:
            i = idx[sym][k + L - 1]
            self.last_bar_t[sym] = Tl
            self.marks[sym] = float(self.bars[sym].close[i])
            cur[sym] = int(i)
        self.cur_index = cur
        self.day, self.day_start_equity = int(day[-1]), float(ref[-1])
        self._pend = []
        self._closing = set()
        self._reserved = 0.0
        self._pending_opens = 0
        self.last_T = Tl
        self.steps_done += L
        self.bars_done += L * len(order)
        self.bulk_steps += L

    def flush(self) -> None:
        self.sink.flush(self.checkpoint(), last_bar_time=None if self.last_T is None else self.last_T + self.tf_s,
                        bars_processed=self.bars_done)

    def _opening_snapshot(self) -> None:
        """A snapshot at the run start (starting equity), so P&L windows never need anything but snapshots."""
        first = self.feed.first_time()
        if first is None:
            return
        eq = self.pf.starting_cash
        self.sink.add("portfolio_hourly_snapshots", (self.run_id, self.account, first, self.pf.cash, 0.0, eq, 0.0,
                                                     0.0, 0.0, 0.0, 0, []))
        self.sink.add("system_events", (first, self.account, "engine", "run_started", "info", None,
                                        {"run_id": self.run_id, "params": self.spec.doc(),
                                         "anomaly_source": self.anomaly_source}))

    # ------------------------------------------------------------------ one step
    def step(self, T: int, present: list[tuple[str, int]]) -> None:
        C = T + self.tf_s
        self.clock.advance(C)
        s = self.settings.at(C)
        bars = self.bars
        broker = self.broker
        has_pending = getattr(broker, "has_pending", None) or (lambda _s: True)
        # 1. fills at this bar's open
        last_bar_t = self.last_bar_t
        for sym, i in present:
            b = bars[sym]
            prev = last_bar_t.get(sym)
            if prev is not None and T - prev > self.tf_s:
                self.gaps[sym].append((prev + self.tf_s, T, {"kind": "gap", "open_time": _iso(prev + self.tf_s),
                                                             "source": "stream", "missing_bars": (T - prev) // self.tf_s - 1}))
                self.gaps[sym] = self.gaps[sym][-5:]
            last_bar_t[sym] = T
            if has_pending(sym):
                for rep in broker.on_bar(sym, T, float(b.open[i]), float(b.high[i]), float(b.low[i]),
                                         float(b.close[i]), float(b.volume[i]), s):
                    self._on_report(rep, T)
        # 2. marks
        marks = self.marks
        for sym, i in present:
            marks[sym] = float(bars[sym].close[i])
        self.cur_index = dict(present)
        equity = self.pf.equity(marks) if self.pf.positions else self.pf.cash
        day = C // 86400
        if self.day != day:
            self.day, self.day_start_equity = day, equity
        # 3. regime
        reg_code, reg_conf = self._regime_step(T, C)
        # 4. breakers
        self._breakers_step(T, C, s, equity, present)
        # 5. exits (never blocked by breakers)
        pend = self._pend = broker.pending()
        self._closing = {o.position_id for o in pend if o.intent == "close"}
        if self.pf.positions:
            cur = self.cur_index
            for pos in list(self.pf.positions.values()):
                i = cur.get(pos.symbol)
                if i is not None and pos.position_id not in self._closing:
                    self._check_exit(pos, i, C, s)
        # 6. entries
        self._reserved = 0.0
        self._pending_opens = 0
        for o in self._pend:
            if o.intent != "close":
                self._reserved += o.qty * o.decision_price
                if o.intent == "open":
                    self._pending_opens += 1
        strats = self.strats
        gates = self.gates
        for sym, i in present:
            for strat in strats:
                cfg = gates.get(strat.name, C)
                if cfg is None or not cfg.watchlist:
                    continue
                prep = self.prepared(sym, strat, cfg)
                sig = prep.entry[i]
                if sig:
                    self._on_entry_signal(strat, cfg, prep, sym, i, int(sig), C, s, equity, reg_code, reg_conf)
        # 7. hourly snapshot
        if C % 3600 == 0:
            self._snapshot(C)
        self.last_T = T
        self.steps_done += 1
        self.bars_done += len(present)

    def _index_at(self, sym: str, t: int) -> int:
        i = self.cur_index.get(sym)
        b = self.bars[sym]
        if i is not None and b.t[i] == t:
            return i
        return int(np.searchsorted(b.t, t, side="right") - 1)

    # ------------------------------------------------------------------ regime
    def _regime_step(self, T: int, C: int) -> tuple[int, bool]:
        if self.regime is None:
            return 0, False
        rs = self.regime
        j = self._ref_j.get(T)
        if j is None:
            j = int(np.searchsorted(rs.t, T, side="right") - 1)
        if j < 0:
            return 0, False
        code, conf = int(rs.effective[j]), bool(rs.confirmed[j])
        cur = (code, conf)
        if cur != self.regime_last:
            prior = None if self.regime_last is None else REGIME_NAME[self.regime_last[0]]
            metrics = rs.metrics(j)
            self.sink.add("btc_market_state_history", (C, REGIME_NAME[code], prior, conf, metrics, self.run_id))
            self.sink.regime({"ts": C, "regime": REGIME_NAME[code], "confirmed": conf, "metrics": metrics})
            self.regime_last = cur
        elif self.steps_done % 24 == 0:
            self.sink.regime({"ts": C, "regime": REGIME_NAME[code], "confirmed": conf, "metrics": rs.metrics(j)})
        return code, conf

    # ------------------------------------------------------------------ breakers
    def _breaker_params(self, s: dict) -> tuple:
        """Settings-derived inputs of the breakers, recomputed only when the settings in force change."""
        if self._s_key is not s:
            vt, vv, vsrc = self.market_vol(float(s["breaker.market_vol_window_minutes"]))
            vmin = float(s["breaker.velocity_minutes"])
            win = int(float(s["breaker.feed_anomaly_window_minutes"]) * 60)
            self._bp = (float(s["breaker.daily_drawdown_pct"]), int(s["breaker.consecutive_losses"]),
                        float(s["breaker.consecutive_losses_cooloff_minutes"]), vt, vv, vsrc,
                        float(s["breaker.market_vol_annual_pct"]), float(s["breaker.market_vol_reset_ratio"]),
                        {sym: self.velocity(sym, vmin) for sym in self.bars}, float(s["breaker.velocity_pct"]), vmin,
                        float(s["breaker.velocity_cooloff_minutes"]), win,
                        {sym: self.anomaly_index(sym, win) for sym in self.bars})
            self._s_key = s
        return self._bp

    def _breakers_step(self, T: int, C: int, s: dict, equity: float, present) -> None:
        b = self.board
        (dd_thr, cl_n, cl_cool, vt, vv, vsrc, mv_thr, mv_ratio, vel, v_thr, v_min, v_cool, win,
         anom_at) = self._breaker_params(s)
        b.update_manual(C, s["breaker.manual_stop"])
        b.update_daily_drawdown(C, equity, self.day_start_equity, dd_thr)
        if cl_n > 0 and (b.loss_streak >= cl_n or b.is_tripped("consecutive_losses")):
            b.update_consecutive_losses(C, cl_n, cl_cool)
        j = self._ref_j.get(T) if vt is getattr(self.feed.reference, "t", None) else None
        if j is None:
            j = self._vol_index(vt, T)
        if j >= 0:
            b.update_market_vol(C, float(vv[j]), mv_thr, mv_ratio)
        for sym, i in present:
            b.update_velocity(C, sym, float(vel[sym][i]), v_thr, v_min, v_cool)
            k = int(anom_at[sym][i])
            info = self.anom[sym][k][2] if k >= 0 else None
            if info is None and self.gaps[sym]:
                g0, g1, ginfo = self.gaps[sym][-1]
                if g0 < C <= g1 + win:
                    info = ginfo
            b.update_feed(C, sym, info)
        if b._pending:
            for tr in b.drain():
                self._record_transition(tr, vsrc)

    def _record_transition(self, tr, vol_source: str) -> None:
        ctx = dict(tr.context)
        if tr.breaker == "market_volatility":
            ctx["source"] = vol_source
        payload = {"breaker": tr.breaker, "scope": tr.scope, "cause": tr.cause, "run_id": self.run_id, **ctx}
        self.sink.add("system_events", (tr.ts, self.account, "risk", "breaker_tripped" if tr.tripped else "breaker_reset",
                                        "warning" if tr.tripped else "info", None if tr.scope == "*" else tr.scope, payload))
        self.sink.breaker_state(tr.breaker, tr.scope, {"state": "tripped" if tr.tripped else "ok", "since": tr.ts,
                                                       "reason": tr.cause, "context": ctx})
        if tr.tripped:
            bt = self.stats["breaker_trips"]
            bt[tr.breaker] = bt.get(tr.breaker, 0) + 1

    # ------------------------------------------------------------------ exits
    def _check_exit(self, pos: Position, i: int, C: int, s: dict) -> None:
        b = self.bars[pos.symbol]
        c = float(b.close[i])
        p = pos.params
        long = pos.side == "long"
        pnl_pct = pos.pnl_pct(c)
        if (long and c > pos.best_price) or (not long and c < pos.best_price):
            pos.best_price = c
        # trailing stop (only ever tightens)
        tr_pct = float(p.get("trailing_pct") or 0)
        if tr_pct > 0:
            best_pnl = pos.pnl_pct(pos.best_price)
            if best_pnl >= float(p.get("trailing_activation_pct") or 0):
                stop = pos.best_price * (1 - tr_pct / 100) if long else pos.best_price * (1 + tr_pct / 100)
                if pos.trail_stop is None or (long and stop > pos.trail_stop) or (not long and stop < pos.trail_stop):
                    pos.trail_stop = stop
                    self.sink.add("position_targets", (pos.position_id, self.run_id, C, pos.tp_price, pos.sl_price,
                                                       stop, "trail_raise"))
                    self.sink.position_changed(pos)
        hold_min = (C - pos.opened_at) / 60.0
        decision, reason = "hold", None
        if pos.sl_price is not None and ((long and c <= pos.sl_price) or (not long and c >= pos.sl_price)):
            decision, reason = "exit_sl", f"close {c:g} crossed stop loss {pos.sl_price:g}"
        elif pos.tp_price is not None and ((long and c >= pos.tp_price) or (not long and c <= pos.tp_price)):
            decision, reason = "exit_tp", f"close {c:g} reached take profit {pos.tp_price:g}"
        elif pos.trail_stop is not None and ((long and c <= pos.trail_stop) or (not long and c >= pos.trail_stop)):
            decision, reason = "exit_trailing", f"close {c:g} crossed trailing stop {pos.trail_stop:g}"
        elif float(p.get("max_hold_hours") or 0) > 0 and hold_min >= float(p["max_hold_hours"]) * 60:
            decision, reason = "exit_max_hold", f"held {hold_min / 60:.1f} h >= max {p['max_hold_hours']} h"
        else:
            strat = get_strategy(pos.strategy)
            cfg = self.gates.get(pos.strategy, C)
            if cfg is not None:
                prep = self.prepared(pos.symbol, strat, cfg)
                if (prep.exit_long[i] if long else prep.exit_short[i]):
                    decision, reason = "exit_signal", f"{pos.strategy} exit signal"
        ctx = RawJson('{"best_price":%s}' % float.__repr__(pos.best_price))
        if decision != "hold":
            cfg = self.gates.get(pos.strategy, C)
            sell_ok = cfg.sell if cfg is not None else True
            side = "sell" if long else "buy"
            sig_id = self.sink.next_id("signals")
            self.stats["signals"] += 1
            sctx = {"exit": decision, "reason": reason, "pnl_pct": round(pnl_pct, 4), "position_id": pos.position_id}
            if not sell_ok:
                self.sink.add("signals", (sig_id, self.run_id, self.account, pos.strategy, pos.symbol, self.tf, C, side,
                                          "close", pos.side, c, None, self._regime_name(), "blocked", sctx))
                self._block(sig_id, pos.strategy, pos.symbol, C, "sell_gate",
                            f"sell gate of {pos.strategy} is off: exit ({decision}) not sent", sctx)
                reason = f"{reason}; blocked: sell gate off"
                decision = "exit_blocked"
            else:
                self.sink.add("signals", (sig_id, self.run_id, self.account, pos.strategy, pos.symbol, self.tf, C, side,
                                          "close", pos.side, c, None, self._regime_name(), "accepted", sctx))
                self._submit(pos.strategy, pos.symbol, side, pos.side, "close", pos.qty, i, C, sig_id,
                             pos.position_id, {"exit_reason": decision[5:], "reason": reason})
                self._closing.add(pos.position_id)
        self.stats["evaluations"] += 1
        self.sink.add("position_evaluations", (pos.position_id, self.run_id, C, c, pnl_pct, pos.tp_price, pos.sl_price,
                                               pos.trail_stop, hold_min, decision, reason, ctx))

    # ------------------------------------------------------------------ entries
    def _regime_name(self) -> str | None:
        return None if self.regime_last is None else REGIME_NAME[self.regime_last[0]]

    def _on_entry_signal(self, strat, cfg, prep, sym: str, i: int, sig: int, C: int, s: dict, equity: float,
                         reg_code: int, reg_conf: bool) -> None:
        pside = "long" if sig > 0 else "short"
        side = "buy" if sig > 0 else "sell"
        key = (strat.name, sym)
        pos = self.pf.positions.get(key)
        intent = "open"
        if pos is not None:
            intent = "add" if pos.side == pside else "open"
        price = float(self.bars[sym].close[i])
        ctx = prep.context(i)
        sig_id = self.sink.next_id("signals")
        self.stats["signals"] += 1
        gate, reason, extra = self._gates(strat, cfg, sym, pside, intent, pos, key, C, s, equity, reg_code, reg_conf, i)
        status = "accepted" if gate is None else "blocked"
        if extra:
            ctx.update({k: v for k, v in extra.items() if k != "notional"})
        self.sink.add("signals", (sig_id, self.run_id, self.account, strat.name, sym, self.tf, C, side, intent, pside,
                                  price, float(prep.strength[i]), REGIME_NAME.get(reg_code) if self.regime else None,
                                  status, ctx))
        if gate is not None:
            self._block(sig_id, strat.name, sym, C, gate, reason, ctx)
            return
        qty = extra["notional"] / price
        parent = None
        if pos is not None and intent == "open":  # reversal: the open executes only after the close filled
            parent = next((o.client_order_id for o in self._pend
                           if o.position_id == pos.position_id and o.intent == "close"), None)
        self._submit(strat.name, sym, side, pside, intent, qty, i, C, sig_id,
                     pos.position_id if intent == "add" else None, parent=parent, ctx=
                     {"sizing": extra.get("risk"), "params": {k: cfg.params[k] for k in
                                                              ("tp_pct", "sl_pct", "trailing_pct",
                                                               "trailing_activation_pct", "max_hold_hours",
                                                               "max_adds")},
                      "config_valid_from": _iso(cfg.valid_from)})
        self.last_entry[key] = C
        self._reserved += extra["notional"]
        if intent == "open":
            self._pending_opens += 1

    def _gates(self, strat, cfg, sym, pside, intent, pos, key, C, s, equity, reg_code, reg_conf, i):
        """(gate, reason, extra) with gate None when every check passed (extra['notional'] = USD size)."""
        if not cfg.buy:
            return "buy_gate", f"buy gate of {strat.name} is off (configuration valid from {_iso(cfg.valid_from)})", None
        if self.regime is not None and cfg.params.get("regime_pause", True) and pauses(pside, reg_code, reg_conf):
            return "regime", f"{pside} entries pause in confirmed {REGIME_NAME[reg_code]} regime", None
        if pos is not None:
            closing = pos.position_id in self._closing
            if pos.side != pside and not closing:
                return "risk:opposite_position", f"an open {pos.side} position of {strat.name} in {sym}", None
            if pos.side == pside and closing:
                return "risk:position_closing", f"the {pos.side} position of {strat.name} in {sym} is being closed", None
        if any(o.strategy == strat.name and o.symbol == sym and o.intent != "close" for o in self._pend):
            return "risk:pending_order", "an entry order for this strategy and symbol is still pending", None
        cd = float(cfg.params.get("cooldown_min") or 0) * 60
        last = max(self.last_entry.get(key, -1), self.last_exit.get(key, -1))
        if cd > 0 and last >= 0 and C - last < cd:
            return "cooldown", f"last entry/exit {int((C - last) / 60)} min ago < cooldown {cfg.params['cooldown_min']} min", None
        blocking = self.board.blocking(sym)
        if blocking:
            first = blocking[0]
            return (f"breaker:{first.breaker}", f"circuit breaker {first.breaker} tripped: {first.cause}",
                    {"breakers": [f"{x.breaker}:{x.scope}" for x in blocking]})
        marks = self.marks
        pos_value = abs(pos.value(marks[sym])) if (pos is not None and intent == "add") else 0.0
        pnl_pct = pos.pnl_pct(marks[sym]) if (pos is not None and intent == "add") else None
        corr = self._correlation(sym, pside, s, i) if intent == "open" else None
        k = kelly_estimate(self.trades.get(strat.name, []), multiplier=float(s["risk.kelly_multiplier"]),
                           cap_pct=float(s["risk.kelly_cap_pct"]), floor_pct=float(s["risk.kelly_floor_pct"]),
                           min_trades=int(s["risk.kelly_min_trades"]), lookback=int(s["risk.kelly_lookback_trades"]))
        # pending orders reserve exposure and cash; positions being closed release theirs (the close fills first)
        cash = self.pf.cash - sum(o.qty * o.decision_price for o in self._pend
                                  if o.intent != "close" and o.position_side == "long")
        gross = self._reserved
        n_open = self._pending_opens
        for p in self.pf.positions.values():
            v = p.value(marks.get(p.symbol, p.avg_entry))
            if p.position_id in self._closing:
                cash += v  # selling a long adds its value; buying back a short costs it (v < 0)
            else:
                gross += abs(v)
                n_open += 1
        d = check_entry(intent=intent, position_side=pside, equity=equity, cash=cash,
                        gross_exposure_usd=gross, open_positions=n_open,
                        position_value_usd=pos_value, position_pnl_pct=pnl_pct,
                        position_adds=pos.adds if pos is not None else 0, params=cfg.params, kelly=k,
                        correlation=corr, settings=s, taker_fee_bps=float(s["broker.taker_fee_bps"]))
        if not d.ok:
            return d.gate, d.reason, {"risk": d.context}
        return None, None, {"notional": d.notional, "risk": d.context}

    def _correlation(self, sym: str, pside: str, s: dict, i: int) -> float | None:
        if not self.pf.positions:
            return None
        n = max(10, int(round(float(s["risk.correlation_window_hours"]) * 3600 / self.tf_s)))
        if i + 1 < n:
            return None
        cand = self.logret[sym][i - n + 1:i + 1]
        total = 0.0
        exps = []
        for p in self.pf.positions.values():
            if p.symbol == sym:
                continue
            j = self._index_at(p.symbol, self.last_bar_t.get(p.symbol, -1))
            if j + 1 < n:
                continue
            v = abs(p.value(self.marks.get(p.symbol, p.avg_entry)))
            total += v
            exps.append((self.logret[p.symbol][j - n + 1:j + 1], v if p.side == pside else -v))
        if not exps or total <= 0:
            return None
        return exposure_correlation(cand, [(r, w / total) for r, w in exps])

    def _block(self, sig_id, strategy, sym, C, gate, reason, ctx) -> None:
        self.sink.add("blocked_signals", (sig_id, self.run_id, self.account, strategy, sym, C, gate, reason, ctx))
        bl = self.stats["blocked"]
        bl[gate] = bl.get(gate, 0) + 1

    def _submit(self, strategy, sym, side, pside, intent, qty, i, C, sig_id, position_id, ctx, parent=None) -> Order:
        b = self.bars[sym]
        o = Order(order_id=self.sink.next_id("order_executions"),
                  client_order_id=client_order_id(self.run_id, strategy, sym, C, intent, side),
                  strategy=strategy, symbol=sym, side=side, position_side=pside, intent=intent, qty=float(qty),
                  decision_price=float(b.close[i]), decision_volume=float(b.volume[i]), submitted_at=C,
                  signal_id=sig_id, position_id=position_id, updated_at=C, context=ctx,
                  parent_client_order_id=parent)
        self.broker.submit(o)
        self._pend.append(o)
        self.sink.order_changed(o)
        self.stats["orders"] += 1
        return o

    # ------------------------------------------------------------------ fills
    def _on_report(self, rep, T: int) -> None:
        o = rep.order
        self.sink.order_changed(o)
        if rep.status in ("rejected", "cancelled"):
            self.stats["rejected"] += 1
            self.sink.add("system_events", (T, self.account, "broker", f"order_{rep.status}", "warning", o.symbol,
                                            {"client_order_id": o.client_order_id, "reason": rep.reject_reason,
                                             "intent": o.intent, "run_id": self.run_id}))
            return
        key = (o.strategy, o.symbol)
        for f in rep.fills:
            self.stats["fills"] += 1
            self.sink.add("fills", (o.order_id, o.client_order_id, f.fill_seq, self.run_id, self.account, o.symbol,
                                    o.side, f.qty, f.price, f.fee_usd, f.liquidity, f.slippage_bps, f.ts))
            if o.intent in ("open", "add"):
                pos = self.pf.positions.get(key)
                if o.intent == "open" and pos is None:
                    pos = Position(position_id=self.sink.next_id("positions"), strategy=o.strategy, symbol=o.symbol,
                                   side=o.position_side, opened_at=f.ts, entry_signal_id=o.signal_id,
                                   params=dict(o.context.get("params") or {}),
                                   context={"open_client_order_id": o.client_order_id})
                    self.pf.positions[key] = pos
                    self.pf.apply_entry(pos, f.qty, f.price, f.fee_usd)
                    pos.best_price = f.price
                    self._set_targets(pos, f.ts, "initial")
                elif o.intent == "add" and pos is not None and pos.position_id == o.position_id:
                    self.pf.apply_entry(pos, f.qty, f.price, f.fee_usd)
                    pos.adds += 1
                    self._set_targets(pos, f.ts, "add_recalc")
                else:  # the engine never sends these; refuse to invent a position
                    raise AtsError(f"{o.client_order_id}: {o.intent} fill does not match the open position "
                                   f"({None if pos is None else pos.position_id})")
                o.position_id = pos.position_id
                self.sink.position_changed(pos)
            else:
                pos = self.pf.positions.get(key)
                if pos is None or pos.position_id != o.position_id:
                    raise AtsError(f"{o.client_order_id}: close fill without its open position {o.position_id}")
                self.pf.apply_exit(pos, f.qty, f.price, f.fee_usd)
                if pos.qty <= 0:
                    pos.status, pos.closed_at = "closed", f.ts
                    pos.close_reason = (o.context or {}).get("exit_reason", "signal")
                    del self.pf.positions[key]
                    self.last_exit[key] = f.ts
                    entry_value = pos.avg_entry * pos.entry_qty
                    ret = pos.realized_usd / entry_value if entry_value else 0.0
                    self.trades.setdefault(pos.strategy, []).append(ret)
                    self.trades[pos.strategy] = self.trades[pos.strategy][-200:]
                    self.board.record_trade(pos.realized_usd)
                    self.stats["closed_trades"] += 1
                    if pos.realized_usd > 0:
                        self.stats["wins"] += 1
                self.sink.position_changed(pos)

    def _set_targets(self, pos: Position, ts: int, reason: str) -> None:
        p = pos.params
        tp, sl = float(p.get("tp_pct") or 0), float(p.get("sl_pct") or 0)
        sgn = pos.sign
        pos.tp_price = pos.avg_entry * (1 + sgn * tp / 100) if tp > 0 else None
        pos.sl_price = pos.avg_entry * (1 - sgn * sl / 100) if sl > 0 else None
        self.sink.add("position_targets", (pos.position_id, self.run_id, ts, pos.tp_price, pos.sl_price, pos.trail_stop,
                                           reason))

    # ------------------------------------------------------------------ snapshots
    def _snapshot(self, C: int) -> None:
        marks = self.marks
        pv = 0.0
        unreal = 0.0
        rows = []
        for p in self.pf.positions.values():
            m = marks.get(p.symbol, p.avg_entry)
            v = p.value(m)
            u = p.unrealized(m)
            pv += v
            unreal += u
            rows.append({"strategy": p.strategy, "symbol": p.symbol, "side": p.side, "qty": p.qty, "mark": m,
                         "value_usd": round(v, 6), "unrealized_usd": round(u, 6), "position_id": p.position_id})
        eq = self.pf.cash + pv
        self.sink.add("portfolio_hourly_snapshots", (self.run_id, self.account, C, self.pf.cash, pv, eq,
                                                     self.pf.realized_usd, unreal, self.pf.fees_usd,
                                                     eq - self.day_start_equity, len(self.pf.positions), rows))


def load_anomalies(conn, spec: RunSpec, timeframe: str) -> tuple[list[dict], str]:
    """Feed anomalies for the run's symbols and window from the market-data service.

    Uses ``ats.market_data.anomalies.anomalies_between`` when that module exists, else the ``feed_anomalies``
    table when it exists, else nothing. Returns (anomalies, source name).
    """
    from datetime import timedelta

    start = datetime.fromtimestamp(spec.start, tz=timezone.utc) - timedelta(days=2)
    end = datetime.fromtimestamp(spec.end, tz=timezone.utc)
    try:
        from ..market_data.anomalies import anomalies_between  # type: ignore
    except ImportError:
        anomalies_between = None
    if anomalies_between is not None:
        rows = anomalies_between(conn, start, end, symbols=list(spec.symbols))
        return [r for r in rows if r.get("timeframe") in (None, timeframe)], "anomalies_between"
    exists = conn.execute("SELECT to_regclass('feed_anomalies') IS NOT NULL AS e").fetchone()
    if not (exists["e"] if isinstance(exists, dict) else exists[0]):
        return [], "none"
    rows = conn.execute("""SELECT symbol, timeframe, open_time, kind, detail FROM feed_anomalies
                            WHERE open_time >= %s AND open_time < %s AND symbol = ANY(%s) AND timeframe = %s
                            ORDER BY open_time""", (start, end, list(spec.symbols), timeframe)).fetchall()
    return [dict(r) for r in rows], "feed_anomalies"
