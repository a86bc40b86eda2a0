"""``run_live``: the long-running live loop of one account, on the venue's clock, through THE replay engine.

At each bar close (venue clock, :class:`~ats.live.clock.VenueClock`):

1. the closed candles are fetched through the venue adapter and stored in ``candles`` (source = the venue) in
   one transaction (:mod:`ats.live.feed`); a bar not served by ``close + late_frac x timeframe`` is *late*, one
   not served when the next bar has closed is *missing*: both are ``feed_anomaly`` system events and the engine's
   feed-anomaly breaker halts entries for that symbol (a late bar is handed to the engine as a feed gap; a missing
   bar is a gap the engine sees at the next bar);
2. the engine (:class:`ats.engine.core.Engine`, unchanged: regime -> strategies -> gates as of now -> breakers ->
   risk -> broker, exits on every bar, hourly snapshots) is rebuilt on a window of ``WARMUP_BARS`` bars ending at
   this bar, restored from the run's checkpoint, and runs this one step; its flush commits the rows and the
   checkpoint in one transaction;
3. the manual STOP flag (``breaker.manual_stop``) is re-read every bar (its current value);
4. paper-live: the venue's price at decision time is stored beside each paper order (``paper_live_quotes``), so a
   soak measures the modelled fill (next-bar open + slippage) against the venue (:func:`modelled_vs_venue`);
5. reconciliation (:mod:`ats.live.reconcile`) runs at start and every ``reconcile_every_min`` venue minutes; a
   mismatch trips the ``reconciliation`` breaker (entries halt) until a later reconciliation is clean.

Restart-safe: the run id is fixed by (mode, account, broker, endpoint, symbols, timeframe, strategies, tag); a
restart resumes from the checkpoint and re-decides the bars after it from the stored candles. An order sent but
not checkpointed is sent again with the same ``orderLinkId`` (the venue answers "duplicate" = already placed);
fills are read back from the venue by ``orderLinkId``, so none is lost or doubled.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from ..db.connection import connect, database_url
from ..db.events import record_event
from ..engine.core import Engine
from ..engine.feed import REGIME_SYMBOL, WARMUP_BARS, ReplayFeed, read_bars
from ..engine.runs import RunSpec, begin_run, finish_run, get_run, resolve
from ..engine.sink import PgSink
from ..execution.broker import run_tag
from ..errors import AtsError, UsageError
from ..timeutil import TIMEFRAME_SECONDS
from .clock import VenueClock
from .feed import store_venue_candles
from .reconcile import reconcile

LIVE_MODES = ("live", "paper-live")


@dataclass(frozen=True)
class LiveSpec(RunSpec):
    """A RunSpec whose run id is fixed for the whole live session (the window grows bar by bar)."""

    live_run_id: str = ""
    broker: str = "paper"
    endpoint: str = ""

    def __post_init__(self):
        if self.mode not in LIVE_MODES:
            raise UsageError(f"unknown live mode {self.mode!r}; expected one of {LIVE_MODES}")
        if self.timeframe not in TIMEFRAME_SECONDS:
            raise UsageError(f"unknown timeframe {self.timeframe!r}; expected one of {', '.join(TIMEFRAME_SECONDS)}")
        if not self.symbols or not self.strategies:
            raise UsageError("no symbols or no strategies given")

    @property
    def run_id(self) -> str:
        return self.live_run_id

    def doc(self) -> dict:
        d = super().doc()
        d.pop("live_run_id", None)
        d["broker"] = self.broker
        return d


@dataclass
class LiveOptions:
    """What ``ats live run`` was asked (see ``ats live run --help``). Times: UTC ms."""

    account_id: str = "default"
    broker: str = "paper"
    symbols: tuple = ("BTCUSDT",)
    timeframe: str = "5m"
    strategies: tuple = ("momentum",)
    until_ms: int | None = None
    max_bars: int | None = None
    progress: bool = False
    testnet: bool = False
    live: bool = False
    tag: str = ""
    reconcile_every_min: float = 60.0
    late_frac: float = 0.25
    grace_ms: int = 1000
    url: str | None = None


@dataclass
class LiveStats:
    """Counters of one ``run_live`` call (this process)."""

    bars: int = 0
    orders_sent: int = 0
    latencies_ms: list = field(default_factory=list)  # bar close observed -> order sent, per order
    anomalies: int = 0
    reconciliations: int = 0
    mismatches: int = 0


def live_run_id(mode: str, account: str, broker: str, endpoint: str, symbols, timeframe: str, strategies,
                tag: str) -> str:
    """``<mode>-<12 hex>``: SHA-256 of the session's identity (same command -> same run)."""
    doc = {"account": account, "broker": broker, "endpoint": endpoint, "symbols": sorted(symbols),
           "timeframe": timeframe, "strategies": sorted(strategies), "tag": tag}
    return f"{mode}-" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


class _LiveSettings:
    """The engine's SettingsView, with ``breaker.manual_stop`` replaced by its CURRENT value every bar (a STOP
    set a second ago halts the next bar even when the venue clock is a simulated past)."""

    def __init__(self, inner, conn, account_id: str):
        self.inner, self.conn, self.account_id = inner, conn, account_id

    def at(self, ts: int) -> dict:
        from ..db.config_store import setting_as_of

        s = dict(self.inner.at(ts))
        s["breaker.manual_stop"] = setting_as_of(self.conn, "breaker.manual_stop", None,
                                                 default=s["breaker.manual_stop"], account_id=self.account_id)
        return s

    def __getattr__(self, name):
        return getattr(self.inner, name)


def base_url_for(broker: str, testnet: bool) -> str:
    """The venue REST endpoint: ``ATS_BYBIT_BASE_URL`` / ``ATS_ALPACA_BASE_URL`` when set, else the default."""
    from ..execution.bybit import MAINNET, TESTNET

    if broker in ("bybit", "paper"):
        return os.environ.get("ATS_BYBIT_BASE_URL") or (TESTNET if testnet else MAINNET)
    return os.environ.get("ATS_ALPACA_BASE_URL") or "https://paper-api.alpaca.markets"


def make_broker(opts: LiveOptions):
    """(broker, adapter, endpoint, mode, candle source) for ``opts.broker``."""
    from .credentials import venue_keys

    endpoint = base_url_for(opts.broker, opts.testnet)
    if opts.broker == "bybit":
        from ..execution.bybit import BybitBroker

        key, secret = venue_keys("bybit", opts.account_id)
        b = BybitBroker(key, secret, base_url=endpoint)
        return b, b, endpoint, "live", "bybit"
    if opts.broker == "paper":
        from ..execution.bybit import BybitBroker
        from ..execution.paper import PaperBroker

        data = BybitBroker(None, None, base_url=endpoint)  # public market data only
        return PaperBroker(), data, endpoint, "paper-live", "bybit"
    if opts.broker == "alpaca":
        try:
            from ..execution.alpaca import AlpacaBroker  # built by the alpaca side
        except ImportError as exc:
            raise UsageError("--broker alpaca: ats.execution.alpaca.AlpacaBroker is not available in this "
                             "checkout") from exc
        key, secret = venue_keys("alpaca", opts.account_id)
        data_url = os.environ.get("ATS_ALPACA_DATA_URL") or "https://data.alpaca.markets"
        b = AlpacaBroker(key, secret, base_url=endpoint, data_url=data_url, run_id="")
        return b, b, endpoint, "live", "alpaca"
    raise UsageError(f"unknown broker {opts.broker!r}; expected paper, bybit or alpaca")


def endpoint_kind(adapter) -> str:
    fn = getattr(adapter, "endpoint_kind", None)
    return fn() if fn else "production"


def go_live_guard(conn, opts: LiveOptions, adapter, endpoint: str, now_ms: int) -> None:
    """The three opt-ins for a venue broker on a production (real-money) endpoint: ``--live``, the account's
    ``live_enabled = true`` setting (as of the venue's now), a passing preflight recorded in the last 24 h.
    Testnet, paper and loopback endpoints need none. Raises UsageError in one line naming what is missing."""
    if opts.broker == "paper" or endpoint_kind(adapter) != "production":
        return
    from ..db.config_store import setting_as_of
    from .preflight import last_passing_preflight

    missing = []
    if not opts.live:
        missing.append("--live on the command line")
    when = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
    if setting_as_of(conn, "live_enabled", when, default=False, account_id=opts.account_id) is not True:
        missing.append(f"setting live_enabled = true for account {opts.account_id} "
                       f"(`ats config set live_enabled true --account {opts.account_id}`)")
    if last_passing_preflight(conn, opts.account_id, opts.broker, within_s=86400) is None:
        missing.append(f"a passing `ats broker preflight --account {opts.account_id}` in the last 24 h")
    if missing:
        raise UsageError(f"refusing production endpoint {endpoint} for account {opts.account_id}: missing "
                         + "; ".join(missing))


def set_session(conn, account: str, run_id: str, broker: str, endpoint: str, state: str, reason: str | None,
                last_bar_s: int | None) -> None:
    """Upsert the account's ``live_sessions`` row (pid of this process). Commits."""
    conn.execute(
        """INSERT INTO live_sessions (account_id, run_id, broker, endpoint, pid, host, state, reason, last_bar_time)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s))
           ON CONFLICT (account_id) DO UPDATE SET run_id=EXCLUDED.run_id, broker=EXCLUDED.broker,
               endpoint=EXCLUDED.endpoint, pid=EXCLUDED.pid, host=EXCLUDED.host, state=EXCLUDED.state,
               reason=EXCLUDED.reason, last_bar_time=coalesce(EXCLUDED.last_bar_time, live_sessions.last_bar_time),
               updated_at=now()""",
        (account, run_id, broker, endpoint, os.getpid(), socket.gethostname(), state, reason, last_bar_s))
    conn.commit()


class LiveLoop:
    """One account's live session (see module docstring); ``run()`` until ``--until`` / ``--max-bars``."""

    def __init__(self, opts: LiveOptions):
        self.opts = opts
        self.url = opts.url or database_url()
        self.tf = opts.timeframe
        self.tf_s = TIMEFRAME_SECONDS[self.tf]
        self.stats = LiveStats()
        self.symbols = tuple(sorted({s.upper() for s in opts.symbols}))
        self.strategies = tuple(sorted(set(opts.strategies)))

    # ------------------------------------------------------------------ setup
    def _open(self) -> None:
        o = self.opts
        self.conn = connect(self.url, application_name=f"ats-live:{o.account_id}"[:60])
        self.broker, self.adapter, self.endpoint, self.mode, self.source = make_broker(o)
        # before any venue call; a production venue's clock is real time, so the wall clock dates the setting
        go_live_guard(self.conn, o, self.adapter, self.endpoint, int(time.time() * 1000))
        self.clock = VenueClock(self.adapter.server_time_ms)
        self.run_id = live_run_id(self.mode, o.account_id, self.broker.name, self.endpoint, self.symbols, self.tf,
                                  self.strategies, o.tag)
        if hasattr(self.broker, "run_id"):
            self.broker.run_id = self.run_id
        row = get_run(self.conn, self.run_id)
        if row is not None:
            from ..timeutil import parse_ts

            first_t = int(parse_ts(row["params"]["start"], what="engine_runs.params.start").timestamp())
        else:
            first_t = (self.clock.now() // self.tf_s) * self.tf_s  # the forming bar: decided at its close
        spec = LiveSpec(self.mode, self.strategies, self.symbols, self.tf, first_t, first_t + self.tf_s,
                        o.account_id, None, o.tag, {}, self.run_id, self.broker.name, self.endpoint)
        self.spec = resolve(self.conn, spec)
        from ..db.config_store import strategy_timeline

        for name in self.strategies:
            if not strategy_timeline(self.conn, name, account_id=o.account_id):
                raise AtsError(f"strategy {name!r} has no configuration for account {o.account_id!r} in "
                               "strategy_configurations (`ats config strategy set ...`)")
        self.state, row = begin_run(self.conn, self.spec)
        self.ckpt = row["checkpoint"] if self.state == "resume" else None
        last_T = (self.ckpt or {}).get("last_T")
        self.next_T = first_t if last_T is None else int(last_T) + self.tf_s
        self.recon_bad: list | None = None
        self.last_recon_ms = 0
        self.fetched: dict[str, int] = {}
        self.seen: dict[str, set] = {}

    # ------------------------------------------------------------------ candles
    def _fetch(self, now_ms: int, lo_s: int | None = None) -> set:
        """Fetch and store every closed candle after what was fetched; returns the open times (s) stored."""
        out = []
        for sym in self.symbols + ((REGIME_SYMBOL,) if REGIME_SYMBOL not in self.symbols else ()):
            start = self.fetched.get(sym)
            start_ms = (lo_s * 1000) if start is None and lo_s is not None else (
                (start + self.tf_s) * 1000 if start is not None else (self.next_T - WARMUP_BARS * self.tf_s) * 1000)
            try:
                cs = self.adapter.closed_candles(sym, self.tf, start_ms, now_ms)
            except AtsError:
                if sym not in self.symbols:
                    continue  # the regime reference is optional
                raise
            if cs:
                self.fetched[sym] = cs[-1].open_time_ms // 1000
                seen = self.seen.setdefault(sym, set())
                seen.update(c.open_time_ms // 1000 for c in cs)
                if len(seen) > 4 * WARMUP_BARS:
                    cut = self.fetched[sym] - 2 * WARMUP_BARS * self.tf_s
                    self.seen[sym] = {t for t in seen if t >= cut}
            out += cs
        if out:
            store_venue_candles(self.conn, self.source, out)
        return {(c.symbol, c.open_time_ms // 1000) for c in out}

    def _have(self, sym: str, T: int) -> bool:
        return T in self.seen.get(sym, ())

    def _due(self, sym: str, T: int) -> bool:
        """Whether the venue trades ``sym`` in the bar opening at T (s): ``adapter.expects_bar`` when the adapter
        has one (Alpaca's market calendar: weekends and holidays have no bar, which is not a feed anomaly), else
        always (a 24/7 crypto venue)."""
        fn = getattr(self.adapter, "expects_bar", None)
        return True if fn is None else bool(fn(sym, self.tf, T * 1000))

    def _wait_bar(self, T: int) -> tuple[list[str], dict]:
        """Wait for the bar opening at T to close and be served. Returns (symbols missing, {symbol: late info})."""
        close_ms = (T + self.tf_s) * 1000
        self.clock.sleep_until(close_ms + self.opts.grace_ms)
        late_ms = close_ms + int(self.opts.late_frac * self.tf_s * 1000)
        missing_ms = close_ms + self.tf_s * 1000
        late: dict = {}
        first = True
        while True:
            now = self.clock.now_ms()
            self._fetch(now)
            absent = [s for s in self.symbols if not self._have(s, T) and self._due(s, T)]
            for s in list(late):
                if s not in absent:
                    late[s]["served_after_s"] = round((now - close_ms) / 1000, 3)
            if not absent:
                return [], {s: v for s, v in late.items() if v.get("served_after_s") is not None}
            if now >= late_ms:
                for s in absent:
                    late.setdefault(s, {"kind": "late", "open_time": _iso(T), "source": f"live:{self.source}"})
            if now >= missing_ms and not first:
                return absent, {s: v for s, v in late.items() if s not in absent}
            first = False
            self.clock.sleep_until(min(missing_ms, now + max(1, self.tf_s * 20)))  # poll every 2 % of a bar

    # ------------------------------------------------------------------ one bar
    def _feed(self, T: int) -> ReplayFeed | None:
        lo = datetime.fromtimestamp(T - WARMUP_BARS * self.tf_s, tz=timezone.utc)
        hi = datetime.fromtimestamp(T + self.tf_s, tz=timezone.utc)
        bars = {s: read_bars(self.conn, s, self.tf, lo, hi) for s in self.symbols}
        if not any(len(b) and b.t[-1] == T for b in bars.values()):
            return None
        ref = bars.get(REGIME_SYMBOL)
        if ref is None:
            ref = read_bars(self.conn, REGIME_SYMBOL, self.tf, lo, hi)
            ref = ref if len(ref) else None
        self.conn.commit()
        return ReplayFeed(self.tf, bars, T, T + self.tf_s, ref)

    def _step(self, T: int, late: dict, observed: float) -> None:
        feed = self._feed(T)
        if feed is None:
            return
        spec = replace(self.spec, start=T, end=T + self.tf_s)
        sink = PgSink(self.conn, self.run_id, self.spec.account_id, broker=self.broker.name)
        eng = Engine(self.conn, spec, sink=sink, feed=feed, broker=self.broker, clock=self.clock, live=True,
                     checkpoint=self.ckpt, commit_every=10 ** 9, fast=False, progress=False)
        eng.settings = _LiveSettings(eng.settings, self.conn, self.spec.account_id)
        for sym, info in late.items():
            eng.gaps.setdefault(sym, []).append((T, T, info))
        self._reconciliation_breaker(eng, T + self.tf_s)
        sent0 = set(getattr(self.broker, "sent_at", {}))
        pend0 = {o.client_order_id for o in self.broker.pending()}
        eng.run()
        if self.mode == "paper-live":
            self._record_quotes(feed, T, [o for o in self.broker.pending() if o.client_order_id not in pend0])
        self.ckpt = eng.checkpoint()
        self.engine = eng
        for cid, t in getattr(self.broker, "sent_at", {}).items():
            if cid not in sent0 and t >= observed:
                self.stats.latencies_ms.append((t - observed) * 1000.0)
                self.stats.orders_sent += 1
        self.stats.bars += 1

    def _record_quotes(self, feed, T: int, orders) -> None:
        """Paper-live: the venue's price at decision time beside each new paper order (``paper_live_quotes``):
        ``adapter.last_price(symbol)`` when the adapter has it, else the close of the venue's candle at T. Commits.
        """
        if not orders:
            return
        rows = []
        for o in orders:
            price, src = None, "bar_close"
            fn = getattr(self.adapter, "last_price", None)
            if fn is not None:
                try:
                    price, src = float(fn(o.symbol)), "last_price"
                except AtsError:
                    price = None
            if price is None:
                b = feed.bars.get(o.symbol)
                if b is None or not len(b) or b.t[-1] != T:
                    continue
                price, src = float(b.close[-1]), "bar_close"
            rows.append((o.client_order_id, self.run_id, self.spec.account_id, o.symbol, o.side, T + self.tf_s,
                         price, src))
        with self.conn.transaction():
            for r in rows:
                self.conn.execute(
                    """INSERT INTO paper_live_quotes (client_order_id, run_id, account_id, symbol, side, decision_ts,
                                                      venue_price, price_source)
                       VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), %s, %s) ON CONFLICT DO NOTHING""", r)

    def _reconciliation_breaker(self, eng, C: int) -> None:
        b = eng.board
        if self.recon_bad and not b.is_tripped("reconciliation"):
            b.trip("reconciliation", "*", C, f"venue and database disagree: {_short(self.recon_bad)}",
                   {"diffs": self.recon_bad[:20]})
        elif self.recon_bad is not None and not self.recon_bad and b.is_tripped("reconciliation"):
            b.reset("reconciliation", "*", C, "reconciliation clean", {})

    def _reconcile(self, now_ms: int) -> None:
        if self.broker.name == "paper":
            return
        eq = None
        if self.ckpt is not None:
            from ..portfolio.book import Portfolio

            pf = Portfolio.from_dict(self.ckpt["portfolio"])
            marks = dict(getattr(getattr(self, "engine", None), "marks", {}) or {})
            if pf.positions and not marks:
                eq = None
            else:
                eq = pf.equity(marks) if pf.positions else pf.cash
        else:
            eq = float(self.spec.starting_cash)
        known = [o.client_order_id for o in self.broker.pending()]
        booked = {r["client_order_id"]: r["n"] for r in self.conn.execute(
            "SELECT client_order_id, count(*) AS n FROM fills WHERE run_id=%s GROUP BY 1", (self.run_id,))}
        flying = getattr(self.broker, "in_flight", None)
        prefix = f"{run_tag(self.run_id)}-"  # every venue order id of this run starts with it (client_order_id)
        rec = reconcile(self.conn, self.adapter, self.run_id, self.symbols, known_client_ids=known,
                        known_prefix=prefix, engine_equity_usd=eq,
                        in_flight=flying(prefix, booked, self.spec.start * 1000) if flying else None)
        self.stats.reconciliations += 1
        self.last_recon_ms = now_ms
        ts = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
        payload = {"run_id": self.run_id, "diffs": rec.diffs, "venue_positions": rec.venue_positions,
                   "db_positions": rec.db_positions, "venue_equity_usd": rec.venue_equity_usd,
                   "engine_equity_usd": rec.engine_equity_usd}
        if rec.ok:
            if self.recon_bad:
                record_event(self.conn, "live", "reconciliation_ok", account_id=self.spec.account_id, ts=ts,
                             payload=payload)
            self.recon_bad = []
        else:
            self.stats.mismatches += 1
            record_event(self.conn, "live", "reconciliation_mismatch", severity="error",
                         account_id=self.spec.account_id, ts=ts, payload=payload)
            self.recon_bad = rec.diffs
        self.conn.commit()

    def _anomaly(self, T: int, sym: str, kind: str, detail: dict) -> None:
        self.stats.anomalies += 1
        record_event(self.conn, "live", "feed_anomaly", severity="warning", symbol=sym,
                     account_id=self.spec.account_id, ts=datetime.fromtimestamp(T + self.tf_s, tz=timezone.utc),
                     payload={"run_id": self.run_id, "kind": kind, "open_time": _iso(T), "timeframe": self.tf,
                              "source": self.source, **detail})
        self.conn.commit()

    def _session_state(self) -> tuple[str, str | None]:
        eng = getattr(self, "engine", None)
        if eng is None:
            return "ACTIVE", None
        glob = [s for s in eng.board.states.values() if s.tripped and s.scope == "*"]
        per = [s for s in eng.board.states.values() if s.tripped and s.scope != "*"]
        if glob:
            return "HALTED", "; ".join(f"{s.breaker}: {s.cause}" for s in glob)[:500]
        if per:
            return "REDUCING", "; ".join(f"{s.breaker}:{s.scope}: {s.cause}" for s in per)[:500]
        return "ACTIVE", None

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        """Run until ``until_ms`` / ``max_bars``; returns a summary (run id, bars, orders, latencies, state)."""
        self._open()
        o = self.opts
        try:
            if self.state == "completed":
                return {"run_id": self.run_id, "state": "completed", "status": "completed", "bars": 0}
            set_session(self.conn, o.account_id, self.run_id, self.broker.name, self.endpoint, "STARTING", None, None)
            now = self.clock.now_ms()
            self._fetch(now, lo_s=self.next_T - WARMUP_BARS * self.tf_s)
            self._reconcile(now)
            reconcile_ms = int(o.reconcile_every_min * 60_000)
            bar = None
            if o.progress:
                from tqdm import tqdm

                bar = tqdm(desc=self.run_id, unit="bar", dynamic_ncols=True, mininterval=0.5)
            while True:
                T = self.next_T
                if o.until_ms is not None and (T + self.tf_s) * 1000 > o.until_ms:
                    break
                if o.max_bars is not None and self.stats.bars >= o.max_bars:
                    break
                absent, late = self._wait_bar(T)
                observed = time.perf_counter()
                for s in absent:
                    self._anomaly(T, s, "missing", {})
                for s, info in late.items():
                    self._anomaly(T, s, "late", {"served_after_s": info.get("served_after_s")})
                self._step(T, late, observed)
                self.next_T = T + self.tf_s
                now = self.clock.now_ms()
                if now - self.last_recon_ms >= reconcile_ms:  # after the bar's orders went out (not in the way)
                    self._reconcile(now)
                st, why = self._session_state()
                set_session(self.conn, o.account_id, self.run_id, self.broker.name, self.endpoint, st, why,
                            T + self.tf_s)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            self._reconcile(self.clock.now_ms())
            done = o.until_ms is not None and (self.next_T + self.tf_s) * 1000 > o.until_ms
            from ..engine.metrics import run_summary

            summary = run_summary(self.conn, self.run_id)
            if done:
                finish_run(self.conn, self.run_id, "completed", summary)
            set_session(self.conn, o.account_id, self.run_id, self.broker.name, self.endpoint, "STOPPED",
                        "until reached" if done else "max bars reached", None)
            return {**summary, "run_id": self.run_id, "state": self.state,
                    "status": "completed" if done else "running", "bars": self.stats.bars,
                    "orders_sent": self.stats.orders_sent, "latencies_ms": self.stats.latencies_ms,
                    "anomalies": self.stats.anomalies, "reconciliations": self.stats.reconciliations,
                    "mismatches": self.stats.mismatches, "mode": self.mode}
        except BaseException as exc:
            try:
                self.conn.rollback()
                finish_run(self.conn, self.run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                           None)
                set_session(self.conn, o.account_id, self.run_id, self.broker.name, self.endpoint, "STOPPED",
                            f"{type(exc).__name__}: {str(exc)[:300]}", None)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        finally:
            self.conn.close()


def run_live(opts: LiveOptions) -> dict:
    """Run the live loop of ``opts`` (see :class:`LiveLoop`).

    Parameters
    ----------
    opts : LiveOptions

    Returns
    -------
    dict
        The run summary (``ats.engine.metrics.run_summary``) plus run_id, status (completed when ``until_ms``
        was reached, else running), bars, orders_sent, latencies_ms (bar close observed -> order sent), anomalies,
        reconciliations, mismatches, mode.

    Raises
    ------
    UsageError
        Unknown broker, missing credentials, a production endpoint without the three opt-ins.
    AtsError
        A venue error that is not an ambiguous order outcome; a checkpoint that disagrees with the database.
    """
    return LiveLoop(opts).run()


def modelled_vs_venue(conn, run_id: str) -> list[dict]:
    """Paper fills of a paper-live run beside the venue's price at decision time.

    Parameters
    ----------
    conn : psycopg.Connection
    run_id : str

    Returns
    -------
    list of dict
        One per fill: client_order_id, symbol, side, decision_ts, venue_price, fill_price (USD), diff_bps =
        (fill - venue) / venue x 10^4, signed so that > 0 is worse for the order (a buy paid more, a sell got less).
    """
    rows = conn.execute(
        """SELECT q.client_order_id, q.symbol, q.side, q.decision_ts, q.venue_price::float8 AS venue_price,
                  f.price::float8 AS fill_price
             FROM paper_live_quotes q JOIN fills f USING (client_order_id)
            WHERE q.run_id = %s ORDER BY q.decision_ts, f.fill_seq""", (run_id,)).fetchall()
    out = []
    for r in rows:
        sign = 1.0 if r["side"] == "buy" else -1.0
        out.append({**r, "diff_bps": round(sign * (r["fill_price"] - r["venue_price"]) / r["venue_price"] * 1e4, 3)})
    return out


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def _short(diffs: list) -> str:
    return "; ".join(f"{d.get('what')} {d.get('symbol', '')} venue={d.get('venue', d.get('client_order_id'))} "
                     f"db={d.get('database', '-')}" for d in diffs[:3])
