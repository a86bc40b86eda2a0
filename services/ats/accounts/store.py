"""Accounts in the database: create, list, show, fund (paper top-up).

Every account gets, in ONE transaction: its ``accounts`` row; a copy of the default account's strategy
configurations (``trade_amount_usd`` sized to its cash: :data:`ats.accounts.profiles.TRADE_FRACTION`) and every risk/breaker/broker setting (effective 1970-01-01, so replays of any period find them)
with its profile's overrides; its database roles (``ats_acct_<id>`` for its processes, ``ats_ro_<id>`` for its
read-only MCP server) and their ``account_roles`` rows; an ``accounts/account_created`` event. A failure writes
nothing. Money is USD (USDT counted 1:1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

from psycopg import sql

from ..db import config_store as cs
from ..db.events import record_event
from ..errors import AtsError, UsageError
from ..paths import DEFAULT_ACCOUNT
from ..risk.settings import SETTINGS
from .profiles import PROFILES, TRADE_FRACTION, check_settings, profile_settings
from .scope import app_role, readonly_role, validate_account_id

BROKERS = ("paper", "bybit", "alpaca")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,19}")


@dataclass(frozen=True)
class AccountSpec:
    """What ``ats account create`` asks for.

    Attributes
    ----------
    account_id : str
        ``[a-z0-9][a-z0-9_-]{0,31}``.
    broker : str
        ``paper`` | ``bybit`` | ``alpaca``.
    starting_cash_usd : Decimal
        Starting cash in USD, > 0.
    profile : str
        ``conservative`` | ``aggressive`` (see :mod:`ats.accounts.profiles`).
    universe : tuple of str, optional
        Symbols the account trades (e.g. an index's constituents); ``None`` = the default ``watchlist`` setting.
    """

    account_id: str
    broker: str
    starting_cash_usd: Decimal
    profile: str = "conservative"
    universe: tuple[str, ...] | None = None


def read_universe(path: str | Path) -> tuple[str, ...]:
    """Symbols from a universe file: one per line or comma-separated, ``#`` comments, blank lines ignored.

    Raises
    ------
    UsageError
        Unreadable file, an empty universe, or a malformed symbol (named with its line number).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read universe file {p}: {exc.strerror or exc}") from None
    out: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        for tok in line.split("#", 1)[0].replace(",", " ").split():
            sym = tok.strip().upper()
            if not SYMBOL_RE.fullmatch(sym):
                raise UsageError(f"{p} line {n}: {tok!r} is not a symbol")
            if sym not in out:
                out.append(sym)
    if not out:
        raise UsageError(f"{p}: the universe is empty")
    return tuple(out)


def parse_usd(text: str, what: str = "--starting-cash") -> Decimal:
    """Parse a positive USD amount; UsageError naming ``what`` otherwise."""
    try:
        v = Decimal(str(text).replace(",", "").replace("_", ""))
    except InvalidOperation:
        raise UsageError(f"{what}: {text!r} is not a number") from None
    if not v.is_finite() or v <= 0:
        raise UsageError(f"{what}: must be a positive USD amount (got {text})")
    return v


def create_account(conn, spec: AccountSpec) -> dict:
    """Create an account (see module docstring); returns :func:`show_account` of it. Does not commit.

    Raises
    ------
    UsageError
        Bad id, broker or profile, or the account exists.
    AtsError
        The connecting role may not create roles (an external server needs CREATEROLE for the owner).
    """
    acct = validate_account_id(spec.account_id)
    if spec.broker not in BROKERS:
        raise UsageError(f"--broker: {spec.broker!r}; expected one of {', '.join(BROKERS)}")
    if spec.profile not in PROFILES:
        raise UsageError(f"--profile: {spec.profile!r}; expected one of {', '.join(PROFILES)}")
    if conn.execute("SELECT 1 FROM accounts WHERE account_id=%s", (acct,)).fetchone():
        raise UsageError(f"account {acct!r} exists already (ats account show {acct})")
    overrides = profile_settings(spec.profile, spec.broker)
    check_settings(spec.broker, overrides)
    conn.execute(
        """INSERT INTO accounts (account_id, broker, mode, base_currency, starting_cash, profile, universe)
           VALUES (%s, %s, %s, 'USD', %s, %s, %s)""",
        (acct, spec.broker, "paper" if spec.broker == "paper" else "live", spec.starting_cash_usd, spec.profile,
         list(spec.universe) if spec.universe else None))
    _copy_strategies(conn, acct, trade_usd=round(float(spec.starting_cash_usd) * TRADE_FRACTION[spec.profile], 2))
    # each setting is INSERTed once with its final value, effective 1970-01-01: seeding the default and then
    # updating it would let the ats_touch_effective trigger move the override to now(), and a replay of the past
    # would silently run on the conservative defaults
    for key, (default, desc) in SETTINGS.items():
        cs.set_setting(conn, key, overrides.get(key, default), account_id=acct, description=desc, effective_from=EPOCH)
    if spec.universe:
        cs.set_setting(conn, "watchlist", list(spec.universe), account_id=acct,
                       description="symbols this account trades (its universe)", effective_from=EPOCH)
    _create_roles(conn, acct)
    record_event(conn, "accounts", "account_created", account_id=acct,
                 payload={"broker": spec.broker, "profile": spec.profile,
                          "starting_cash_usd": str(spec.starting_cash_usd),
                          "universe": list(spec.universe) if spec.universe else None,
                          "settings_overrides": overrides})
    return show_account(conn, acct)


def _copy_strategies(conn, acct: str, *, trade_usd: float) -> None:
    for r in cs.current_strategies(conn, account_id=DEFAULT_ACCOUNT):
        params = dict(r["params"])
        if "trade_amount_usd" in params:
            params["trade_amount_usd"] = trade_usd  # sized to this account's cash and profile
        cs.upsert_strategy(conn, r["strategy_name"], account_id=acct, params=params,
                           merge_params=False, effective_from=EPOCH, watchlist_enabled=r["watchlist_enabled"],
                           buy_enabled=r["buy_enabled"], sell_enabled=r["sell_enabled"])


def _create_roles(conn, acct: str) -> None:
    app, ro = app_role(acct), readonly_role(acct)
    me = conn.execute("SELECT current_user AS u, rolsuper AS su, rolcreaterole AS cr FROM pg_roles "
                      "WHERE rolname = current_user").fetchone()
    if not (me["su"] or me["cr"]):
        raise AtsError(f"cannot create account roles: database role {me['u']} has neither SUPERUSER nor CREATEROLE")
    for role, ddl in ((app, "CREATE ROLE {} NOLOGIN INHERIT IN ROLE ats_account"),
                      (ro, "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT IN ROLE ats_readonly")):
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname=%s", (role,)).fetchone():
            conn.execute(sql.SQL(ddl).format(sql.Identifier(role)))
    for setting, value in (("default_transaction_read_only", "on"), ("statement_timeout", "5s"),
                           ("idle_in_transaction_session_timeout", "30s")):
        conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(sql.Identifier(ro), sql.Identifier(setting),
                                                                 sql.Literal(value)))
    if not me["su"]:  # a non-superuser owner must be a member to SET ROLE to the account's role
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(app), sql.Identifier(me["u"])))
    conn.execute("INSERT INTO account_roles (role_name, account_id, kind) VALUES (%s, %s, 'app'), (%s, %s, 'readonly') "
                 "ON CONFLICT (role_name) DO UPDATE SET account_id = EXCLUDED.account_id", (app, acct, ro, acct))


def fund_account(conn, account_id: str, amount_usd: Decimal, *, reason: str = "paper top-up") -> dict:
    """Add ``amount_usd`` of paper cash to a paper account (an append-only adjustment and an event).

    Returns the adjustment row. Does not commit.

    Raises
    ------
    UsageError
        Unknown account, or a venue account (fund those at the venue).
    """
    row = _account(conn, account_id)
    if row["broker"] != "paper":
        raise UsageError(f"account {account_id} trades on {row['broker']}: fund it at the venue, not with ats")
    adj = conn.execute("INSERT INTO account_cash_adjustments (account_id, amount_usd, reason) VALUES (%s, %s, %s) "
                       "RETURNING *", (account_id, amount_usd, reason)).fetchone()
    record_event(conn, "accounts", "account_funded", account_id=account_id,
                 payload={"amount_usd": str(amount_usd), "reason": reason, "adjustment_id": adj["adjustment_id"]})
    return adj


def _account(conn, account_id: str) -> dict:
    row = conn.execute("SELECT * FROM accounts WHERE account_id=%s", (account_id,)).fetchone()
    if row is None:
        raise UsageError(f"unknown account {account_id!r} (ats account list)")
    return row


def list_accounts(conn) -> list[dict]:
    """Every account visible to this connection with :func:`show_account`'s summary, ordered by id."""
    return [show_account(conn, r["account_id"])
            for r in conn.execute("SELECT account_id FROM accounts ORDER BY account_id").fetchall()]


def show_account(conn, account_id: str) -> dict:
    """One account's state: settings summary, latest run, equity (latest snapshot), trading state, last bar,
    breakers tripped now, funding, and the latest preflight.

    Returns
    -------
    dict
        ``account_id, broker, mode, profile, starting_cash_usd, funded_usd, universe, created_at, latest_run
        {run_id, mode, status, last_bar_time}, equity_usd, equity_ts, trading_state (ACTIVE | REDUCING),
        tripped [{breaker, scope, since, reason}], preflight {ts, passed} | None``. Decimals as strings.

    Raises
    ------
    UsageError
        Unknown account.
    """
    a = _account(conn, account_id)
    funded = conn.execute("SELECT coalesce(sum(amount_usd), 0) AS s FROM account_cash_adjustments "
                          "WHERE account_id=%s", (account_id,)).fetchone()["s"]
    run = conn.execute("SELECT run_id, mode, status, last_bar_time FROM engine_runs WHERE account_id=%s "
                       "ORDER BY (mode = 'backtest'), started_at DESC, run_id DESC LIMIT 1", (account_id,)).fetchone()
    snap, tripped = None, []
    if run:
        snap = conn.execute("SELECT ts, equity_usd FROM portfolio_hourly_snapshots WHERE run_id=%s AND account_id=%s "
                            "ORDER BY ts DESC LIMIT 1", (run["run_id"], account_id)).fetchone()
        tripped = conn.execute("SELECT breaker, scope, since, reason FROM breaker_states WHERE run_id=%s AND "
                               "account_id=%s AND state='tripped' ORDER BY breaker, scope",
                               (run["run_id"], account_id)).fetchall()
    pre = conn.execute("SELECT ts, payload FROM system_events WHERE account_id=%s AND event_type='preflight' "
                       "ORDER BY ts DESC, event_id DESC LIMIT 1", (account_id,)).fetchone()
    return {
        "account_id": a["account_id"], "broker": a["broker"], "mode": a["mode"], "profile": a["profile"],
        "starting_cash_usd": str(a["starting_cash"]), "funded_usd": str(funded),
        "universe": a["universe"], "created_at": a["created_at"].isoformat(),
        "latest_run": None if run is None else {
            "run_id": run["run_id"], "mode": run["mode"], "status": run["status"],
            "last_bar_time": run["last_bar_time"].isoformat() if run["last_bar_time"] else None},
        "equity_usd": None if snap is None else str(snap["equity_usd"]),
        "equity_ts": None if snap is None else snap["ts"].isoformat(),
        "trading_state": "REDUCING" if tripped else "ACTIVE",
        "tripped": [{"breaker": t["breaker"], "scope": t["scope"], "since": t["since"].isoformat(),
                     "reason": t["reason"]} for t in tripped],
        "preflight": None if pre is None else {"ts": pre["ts"].isoformat(),
                                               "passed": bool((pre["payload"] or {}).get("passed"))},
    }
