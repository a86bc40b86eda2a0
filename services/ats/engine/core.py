"""The decision loop: one path for replays, backtests and live sessions (they differ in clock, feed and broker).

Per step (one candle open time T across the run's symbols; the decision time is the close C = T + timeframe):

 1. fills      the broker executes orders decided at the previous close against this bar's OPEN (never
               earlier: no look-ahead); fills update positions and cash (ats.portfolio.book)
 2. marks      last close per symbol; funding of open perp (short) positions at each funding time (00:00, 08:00,
               16:00 UTC) in the step's window (ats.portfolio.funding) -> funding_payments, realized P&L
 3. regime     the BTC regime at C (ats.regime.rules) -> btc_market_state (+ history when it changes)
 4. breakers   every registered breaker (ats.risk.breakers: one module each) updates from one StepInputs ->
               system_events + breaker_states on every trip/reset, a 'trading_state' event on every change of
               the trading state (ACTIVE / REDUCING / HALTED)
 5. exits      (exits.py) every open position is checked at C: stop loss, take profit, trailing stop, max hold, the
               strategy's exit signal -> position_evaluations (every check), position_targets (TP/SL history);
               an exit needs the strategy's sell gate; breakers never block exits
 6. entries    (entries.py) each strategy whose watchlist gate is on (as of C) emits edge-triggered signals -> signals; the
               gates in order: buy_gate, regime (longs pause in confirmed bear, shorts in confirmed bull),
               cooldown, lesson, microstructure, breaker:<name>, risk:<limit> -> blocked_signals with the first failing gate, or an order
               (deterministic client_order_id) submitted to the broker for the next bar's open
 7. snapshot   (snapshots.py) at every top of the hour: portfolio_hourly_snapshots (cash, positions value, equity, realized,
               unrealized, fees, net_pnl_daily = equity - equity at 00:00 UTC, a running cumulative)

Replays skip quiet spans in bulk (quiet.py); fills are applied by fills.py, orders built by orders.py. The seams
for a live session are the constructor's ``clock``, ``feed`` and ``broker`` (ats.engine.feed, ats.execution).

Every ``commit_every`` steps the sink writes the buffered rows and the checkpoint (engine state as JSON plus
engine_runs.last_bar_time) in one transaction; a restart with the same run id resumes from there.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from ..errors import AtsError
from ..execution.broker import Order
from ..execution.paper import PaperBroker
from ..portfolio import funding
from ..portfolio.book import Portfolio
from ..risk import breakers as brk
from ..risk.microstructure_gate import MicroData
from ..risk.settings import SettingsView
from ..strategies import get_strategy
from ..timeutil import TIMEFRAME_SECONDS
from . import advice, breaker_events, entries, exits, fills, quiet, regime_state, structures
from .config import GateCache
from .context import StepContext
from .feed import ReplayClock
from .runs import RunSpec
from .series import MarketSeries, anomaly_intervals, load_anomalies  # noqa: F401 (load_anomalies: public here)
from .snapshots import write_snapshot

CHECKPOINT_VERSION = 1


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


class Engine:
    """Run the decision loop of ``spec`` over ``feed``, writing to ``sink``.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (settings, configurations, anomalies; dict rows).
    spec : RunSpec
        The run (id, account, symbols, strategies, timeframe, window, starting cash, overrides).
    sink : PgSink or MemorySink
        Where rows and checkpoints go (``ats.engine.sink``).
    feed : object
        The bars (``ats.engine.feed``: ``bars``, ``reference``, ``steps(after)``, optionally ``step_index``).
    broker : Broker, optional
        Execution (default ``PaperBroker``); an attribute ``max_client_id_len`` bounds the client order ids.
    clock : object, optional
        The engine clock (default ``ReplayClock``); ``advance(ts)`` is called at every decision time.
    progress : bool
        Show a tqdm bar.
    commit_every : int
        Steps per flush (rows + checkpoint in one transaction).
    live : bool
        Re-read settings and configurations every step.
    checkpoint : dict, optional
        The JSON state of a previous partial run (resume).
    anomalies : list of dict, optional
        Feed anomalies to use instead of loading them (``series.load_anomalies``).
    progress_desc : str, optional
        Label of the progress bar (default the run id).
    fast : bool
        Do quiet spans in bulk (``quiet``); False sends every step through ``step`` (the reference path).
    consensus : {'off', 'replay', 'live'}, optional
        The consensus gate's mode (``ats.engine.advice``); default 'off' for a replay or backtest (no model is
        called unless asked), 'live' for a live session.

    Raises
    ------
    AtsError
        On a checkpoint of another version, or one that disagrees with the positions table.
    """

    def __init__(self, conn, spec: RunSpec, *, sink, feed, broker=None, clock=None, progress: bool = False,
                 commit_every: int = 200, live: bool = False, checkpoint: dict | None = None,
                 anomalies: list[dict] | None = None, progress_desc: str | None = None, fast: bool = True,
                 consensus: str | None = None):
        self.conn, self.spec, self.sink, self.feed = conn, spec, sink, feed
        self.broker = broker or PaperBroker()
        self.clock = clock or ReplayClock()
        self.progress, self.commit_every, self.live = progress, max(1, int(commit_every)), live
        self.fast = fast
        self.bulk_steps = 0  # steps done by quiet.apply_span in this process (not checkpointed)
        self.progress_desc = progress_desc or spec.run_id
        self.run_id, self.account = spec.run_id, spec.account_id
        self.tf = spec.timeframe
        self.tf_s = TIMEFRAME_SECONDS[self.tf]
        self.strats = [get_strategy(n) for n in spec.strategies]
        self.settings = SettingsView(conn, account_id=self.account, live=live)
        self.gates = GateCache(conn, account_id=self.account, overrides=spec.param_overrides, live=live)
        self.lessons = advice.LessonSource(conn, live=live)
        self.micro = MicroData(conn, live=live)
        self.consensus = advice.ConsensusGate(
            conn, account_id=self.account, run_id=self.run_id, live=live,
            mode=consensus or ("live" if live else "off"))
        self._prep: dict = {}
        self._ref_j: dict[int, int] = {}
        self._ev_cache = None
        self._span_env = None
        self._pend: list[Order] = []
        self._closing: set[int] = set()
        self._reserved = 0.0
        self._pending_opens = 0
        self.bars = feed.bars
        self.logret = {s: np.diff(np.log(b.close), prepend=np.nan) for s, b in self.bars.items()}
        regime_state.setup(self)
        self._setup_anomalies(anomalies)
        self.market = MarketSeries(self.bars, self.feed.reference, self.tf_s, self.logret, self.anom, self._ref_j)
        if checkpoint:
            self._restore(checkpoint)
        else:
            self._init_state()

    # ------------------------------------------------------------------ setup
    def _setup_anomalies(self, anomalies: list[dict] | None) -> None:
        if anomalies is None:
            anomalies, self.anomaly_source = load_anomalies(self.conn, self.spec, self.tf)
        else:
            self.anomaly_source = "given"
        self.anom = anomaly_intervals(anomalies, self.bars, self.tf, self.tf_s)

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
        """The engine state as JSON (floats round-trip exactly).

        Returns
        -------
        dict
            version, portfolio, pending_orders, breakers (``BreakerBoard.to_dict``), cool-down clocks, trade
            returns, day reference, regime, stream clocks and gaps, counters and stats.
        """
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

    def prepared(self, sym: str, strat, cfg):
        """The strategy's prepared series for ``sym`` under configuration ``cfg`` (cached per indicator params).

        Parameters
        ----------
        sym : str
            Symbol.
        strat : object
            The strategy.
        cfg : StrategyConfig
            Its configuration (``ikey`` is the cache key).

        Returns
        -------
        object
            Arrays over the symbol's bars: entry (+1/-1/0), exit_long, exit_short, strength; ``context(i)``.
        """
        key = (sym, strat.name, cfg.ikey)
        p = self._prep.get(key)
        if p is None:
            reg = self.reg_sym.get(sym, (None, None))[0] if strat.uses_regime else None
            p = self._prep[key] = strat.prepare(self.bars[sym], cfg.params, reg)
        return p

    # ------------------------------------------------------------------ main loop
    def run(self, max_steps: int | None = None) -> int:
        """Process the feed from the checkpoint to the end (or ``max_steps`` steps).

        Returns
        -------
        int
            Steps processed in this call. The sink is flushed and closed (also on an error, which is re-raised).
        """
        total = len(self.feed) if hasattr(self.feed, "__len__") else None
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.steps_done, desc=self.progress_desc, unit="step",
                       dynamic_ncols=True, mininterval=0.5)
        if not self.started:
            self._opening_snapshot()
            self.started = True
        try:
            if self.fast and not self.live and hasattr(self.feed, "step_index"):
                n = self._run_indexed(self.last_T, max_steps, bar)
            else:
                n = self._run_steps(self.last_T, max_steps, bar)
            self.flush()
            self.sink.close()
        except BaseException:
            try:
                self.sink.close()
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        finally:
            self.consensus.close()
            if bar is not None:
                bar.close()
        return n

    def _run_steps(self, after, max_steps, bar) -> int:
        n = since_flush = 0
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
        return n

    def _run_indexed(self, after, max_steps, bar) -> int:
        """The loop over a feed with ``step_index`` (replays): quiet spans in bulk (``quiet``), every other step
        by ``step``; flushes land on exactly the same steps as the one-step loop (every ``commit_every``)."""
        tl, order, idx = self.feed.step_index()
        K = len(tl)
        k = 0 if after is None else int(np.searchsorted(tl, after, side="right"))
        tl_l = tl.tolist()
        idx_l = [(sym, idx[sym].tolist()) for sym in order]
        self._span_env = quiet.SpanEnv(tl, list(order), idx, tl_l, idx_l)
        n = since_flush = 0
        big = 1 << 62
        while k < K:
            lim = min(K - k, self.commit_every - since_flush, big if max_steps is None else max_steps - n)
            L = quiet.quiet_span(self, k, lim) if lim >= 2 else 0
            if L:
                quiet.apply_span(self, k, L)
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

    def flush(self) -> None:
        """Write the buffered rows and the checkpoint (``engine_runs.last_bar_time`` = last decision time)."""
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
        """Process one step: the bars opening at ``T`` of the symbols in ``present``.

        Decides at C = T + timeframe: fills, marks, regime, breakers, exits, entries, snapshot (module docstring).

        Parameters
        ----------
        T : int
            Bar open time, Unix s.
        present : list of (str, int)
            (symbol, bar index) of the symbols with a bar at T.

        Raises
        ------
        AtsError
            When a broker fill does not match its position (``fills.on_report``).
        """
        C = T + self.tf_s
        self.clock.advance(C)
        s = self.settings.at(C)
        self._fills_step(T, present, s)
        marks = self.marks
        for sym, i in present:
            marks[sym] = float(self.bars[sym].close[i])
        if self.pf.positions:
            structures.mark(self, C)  # multi-leg positions: valued at the legs' mid from the venue
        self.cur_index = dict(present)
        if self.pf.positions:
            funding.apply_funding(self, C - self.tf_s if self.last_T is None else self.last_T + self.tf_s, C, s)
        equity = self.pf.equity(marks) if self.pf.positions else self.pf.cash
        day = C // 86400
        if self.day != day:
            self.day, self.day_start_equity = day, equity
        reg_code, reg_conf = regime_state.step(self, T, C)
        ctx = StepContext(T, C, s, equity, reg_code, reg_conf)
        self._breakers_step(ctx, present)
        self._exits_step(ctx)
        self._entries_step(ctx, present)
        if C % 3600 == 0:
            write_snapshot(self, C, self.pf.positions.values(), marks, self.day_start_equity)
        self.last_T = T
        self.steps_done += 1
        self.bars_done += len(present)

    def _fills_step(self, T: int, present, s: dict) -> None:
        """Stream gaps, then the broker's fills of pending orders at this bar's open."""
        broker, bars, last_bar_t, tf = self.broker, self.bars, self.last_bar_t, self.tf_s
        has_pending = getattr(broker, "has_pending", None) or (lambda _s: True)
        for sym, i in present:
            b = bars[sym]
            prev = last_bar_t.get(sym)
            if prev is not None and T - prev > tf:
                self.gaps[sym].append((prev + tf, T, {"kind": "gap", "open_time": _iso(prev + tf),
                                                      "source": "stream", "missing_bars": (T - prev) // tf - 1}))
                self.gaps[sym] = self.gaps[sym][-5:]
            last_bar_t[sym] = T
            if has_pending(sym):
                for rep in broker.on_bar(sym, T, float(b.open[i]), float(b.high[i]), float(b.low[i]),
                                         float(b.close[i]), float(b.volume[i]), s):
                    fills.on_report(self, rep, T)

    def _exits_step(self, ctx: StepContext) -> None:
        """Check every open position not already being closed (breakers never block exits)."""
        pend = self._pend = self.broker.pending()
        self._closing = {o.position_id for o in pend if o.intent == "close"}
        if self.pf.positions:
            cur = self.cur_index
            for pos in list(self.pf.positions.values()):
                i = cur.get(pos.symbol)
                if i is not None and pos.position_id not in self._closing:
                    exits.check_exit(self, pos, i, ctx)
            structures.check_exits(self, ctx)  # multi-leg positions (their symbol has no bars)

    def _entries_step(self, ctx: StepContext, present) -> None:
        """Reserve what pending orders commit, then run each watchlisted strategy's entry signals."""
        self._reserved = 0.0
        self._pending_opens = 0
        for o in self._pend:
            if o.intent != "close":
                self._reserved += o.qty * o.decision_price
                if o.intent == "open":
                    self._pending_opens += 1
        gates, C = self.gates, ctx.C
        for sym, i in present:
            for strat in self.strats:
                cfg = gates.get(strat.name, C)
                if cfg is None or not cfg.watchlist:
                    continue
                prep = self.prepared(sym, strat, cfg)
                sig = prep.entry[i]
                if sig:
                    on_signal = structures.on_entry_signal if structures.is_multi_leg(strat) else \
                        entries.on_entry_signal
                    on_signal(self, ctx, strat, cfg, prep, sym, i, int(sig))

    def index_at(self, sym: str, t: int) -> int:
        """Index of the last bar of ``sym`` opening at or before ``t``.

        Parameters
        ----------
        sym : str
            Symbol.
        t : int
            Unix s.

        Returns
        -------
        int
            Bar index, -1 when none (or ``sym`` has no bars).
        """
        i = self.cur_index.get(sym)
        b = self.bars.get(sym)
        if b is None:  # a multi-leg structure's symbol has no bars (ats.engine.structures)
            return -1
        if i is not None and b.t[i] == t:
            return i
        return int(np.searchsorted(b.t, t, side="right") - 1)

    # ------------------------------------------------------------------ regime
    def regime_name(self) -> str | None:
        """Name of the last regime seen (None before the first)."""
        return regime_state.regime_name(self)

    # ------------------------------------------------------------------ breakers
    def _breakers_step(self, ctx: StepContext, present) -> None:
        """Update every breaker from this step's inputs; record their transitions and state changes."""
        b = self.board
        b.update(brk.StepInputs(T=ctx.T, ts=ctx.C, settings=ctx.settings, equity=ctx.equity,
                                day_start_equity=self.day_start_equity, present=present, market=self.market,
                                gaps=self.gaps))
        if b.has_news():
            self.record_breaker_news()

    def record_breaker_news(self) -> None:
        """Write the board's pending transitions and trading-state changes (``breaker_events.record``)."""
        breaker_events.record(self)
