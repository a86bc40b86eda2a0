"""Alerts a person actually receives: system_events -> deduplicated, rate-limited messages through apprise.

What alerts (the rules, :data:`RULES`): circuit-breaker trips and resets of live / paper-live runs (replays and
backtests only with setting ``alerts.include_replays``), feed anomalies, reconciliation mismatches, headless runs
that failed, fell back to the deterministic core or left no artifact, and live loops that stopped. Each event maps
to a *cause* (e.g. ``breaker_tripped:velocity:BTCUSDT``); at most one message per cause per
``alerts.window_minutes`` (wall clock) is sent, and the events of a cause seen inside the window are counted and
reported by the next message of that cause ("x100"). Sent messages are rows of ``alert_deliveries``; the events
already looked at are remembered in ``alert_cursor``, so a dispatcher that crashes re-reads nothing twice and
loses nothing (cursor and deliveries commit together, after the send).

Channels are apprise URLs in setting ``alerts.urls`` (``mailto://``, ``tgram://``, ``slack://``, ``json://``...).
``${NAME}`` inside a URL is filled from the environment or the account's env file (``.env`` / ``.env.<id>``,
refused unless mode 0600), so tokens and passwords never sit in the database; URLs are never logged (only their
scheme), and neither are their expansions.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from ..errors import AtsError, UsageError

log = logging.getLogger("ats.alerts")

_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


@dataclass(frozen=True)
class Rule:
    """One kind of event that alerts.

    Attributes
    ----------
    name : str
        Rule name (shown in the message).
    match : callable
        ``event row (dict) -> bool``.
    cause : callable
        ``event row -> str``: events with the same cause are deduplicated together.
    describe : callable
        ``event row -> str``: one line for the message body.
    """

    name: str
    match: Callable[[dict], bool]
    cause: Callable[[dict], str]
    describe: Callable[[dict], str]


def _p(e: dict) -> dict:
    return e.get("payload") or {}


def _cron_failed(e: dict) -> bool:
    p = _p(e)
    return e["component"] == "cron" and e["event_type"] == "cron_run" and (
        (p.get("exit_code") not in (0, None)) or p.get("mode") == "core" or bool(p.get("artifact_missing"))
        or bool(p.get("is_error")))


RULES: tuple[Rule, ...] = (
    Rule("breaker", lambda e: e["event_type"] in ("breaker_tripped", "breaker_reset"),
         lambda e: f"{e['event_type']}:{_p(e).get('breaker')}:{_p(e).get('scope') or e.get('symbol') or '*'}",
         lambda e: f"{'TRIPPED' if e['event_type'] == 'breaker_tripped' else 'reset'} {_p(e).get('breaker')} "
                   f"[{_p(e).get('scope') or e.get('symbol') or '*'}]: {_p(e).get('cause') or _p(e).get('reason') or ''}"),
    Rule("feed_anomaly", lambda e: e["event_type"] == "feed_anomaly",
         lambda e: f"feed_anomaly:{e.get('symbol') or _p(e).get('symbol') or '*'}:{_p(e).get('kind') or ''}",
         lambda e: f"feed anomaly {_p(e).get('kind') or ''} on {e.get('symbol') or _p(e).get('symbol') or '?'}"
                   f" at {_p(e).get('start') or _p(e).get('ts') or ''}"),
    Rule("reconciliation", lambda e: e["event_type"].startswith("reconciliation_mismatch"),
         lambda e: f"reconciliation:{_p(e).get('venue') or ''}",
         lambda e: f"reconciliation mismatch: {_p(e).get('summary') or _p(e).get('differences') or ''}"),
    Rule("headless", _cron_failed,
         lambda e: f"cron:{_p(e).get('task') or ''}",
         lambda e: f"headless run {_p(e).get('task') or ''}: exit {_p(e).get('exit_code')}, mode {_p(e).get('mode')}"
                   f"{', artifact missing' if _p(e).get('artifact_missing') else ''}"
                   f"{', fallback: ' + str(_p(e).get('fallback_reason')) if _p(e).get('fallback_reason') else ''}"),
    Rule("live_stopped", lambda e: e["event_type"] in ("live_stopped", "loop_stopped", "live_loop_stopped"),
         lambda e: f"live_stopped:{_p(e).get('run_id') or ''}",
         lambda e: f"live loop {_p(e).get('run_id') or ''} stopped: {_p(e).get('reason') or ''}"),
)


def expand_url(url: str, env: dict[str, str]) -> str:
    """Fill ``${NAME}`` placeholders of an apprise URL from ``env``.

    Raises
    ------
    UsageError
        A placeholder with no value (named, the URL itself is not shown).
    """
    def sub(m):
        if m.group(1) not in env:
            raise UsageError(f"alerts.urls: ${{{m.group(1)}}} is not set in the environment or the account env file")
        return env[m.group(1)]
    return _VAR.sub(sub, url)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file (``#`` comments, optional ``export``, optional quotes).

    Returns an empty dict when the file does not exist.

    Raises
    ------
    AtsError
        The file is readable by group or others (it must be mode 0600); the message names the file, not its content.
    """
    if not path.exists():
        return {}
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise AtsError(f"refusing env file {path}: mode {mode:04o}, must be 0600 (chmod 600 {path})")
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.removeprefix("export ").split("=", 1)
        out[k.strip()] = v.strip().strip("'\"")
    return out


def channel_env(account: str) -> dict[str, str]:
    """The variables ``${NAME}`` may use: the account's env file, overridden by the process environment."""
    from ..paths import account_path

    return {**read_env_file(account_path("env", account)), **os.environ}


def _setting(conn, key: str, default, account: str):
    from ..db.config_store import setting_as_of

    return setting_as_of(conn, key, None, default=default, account_id=account)


def _run_modes(conn, run_ids: set[str]) -> dict[str, str]:
    if not run_ids:
        return {}
    rows = conn.execute("SELECT run_id, mode FROM engine_runs WHERE run_id = ANY(%s)", (list(run_ids),)).fetchall()
    return {r["run_id"]: r["mode"] for r in rows}


@dataclass
class DispatchResult:
    """What one dispatch did: events looked at, messages sent (and how many events they stood for), causes held
    back by the rate limit, and the cursor after it."""

    events_seen: int
    messages: list[dict]
    held_back: dict[str, int]
    cursor: int


def dispatch(conn, *, account: str = "default", now: datetime | None = None, send: Callable | None = None,
             limit: int = 10000) -> DispatchResult:
    """Turn the account's new system_events into at most one message per cause per window, and send them.

    Parameters
    ----------
    conn : psycopg.Connection
        Dict-row connection; the cursor and the delivery rows are committed by this call, after the sends.
    account : str
        The account whose events (and the account-less market-data events) are read.
    now : datetime, optional
        Wall clock (UTC) used for the rate-limit windows; default ``datetime.now(UTC)``.
    send : callable, optional
        ``(urls, title, body) -> bool``; default :func:`apprise_send`. Tests pass the real one against a local
        SMTP server.
    limit : int
        Most events read in one call (the rest are read by the next call).

    Returns
    -------
    DispatchResult

    Raises
    ------
    UsageError
        A channel URL needs a variable that is not set.
    """
    now = now or datetime.now(timezone.utc)
    send = send or apprise_send
    urls = [expand_url(u, channel_env(account)) for u in (_setting(conn, "alerts.urls", [], account) or [])]
    window = timedelta(minutes=float(_setting(conn, "alerts.window_minutes", 60, account)))
    replays = bool(_setting(conn, "alerts.include_replays", False, account))
    cur = conn.execute("SELECT last_event_id FROM alert_cursor WHERE account_id=%s FOR UPDATE", (account,)).fetchone()
    last = cur["last_event_id"] if cur else 0
    events = conn.execute(
        "SELECT event_id, ts, recorded_at, account_id, component, event_type, severity, symbol, payload "
        "FROM system_events WHERE event_id > %s AND (account_id = %s OR account_id IS NULL) "
        "ORDER BY event_id LIMIT %s", (last, account, limit)).fetchall()
    modes = _run_modes(conn, {str(_p(e)["run_id"]) for e in events if _p(e).get("run_id")})
    grouped: dict[str, list[tuple[Rule, dict]]] = {}
    for e in events:
        rid = _p(e).get("run_id")
        if rid and not replays and modes.get(str(rid)) in ("replay", "backtest"):
            continue
        for rule in RULES:
            if rule.match(e):
                grouped.setdefault(rule.cause(e), []).append((rule, e))
                break
    messages, held = [], {}
    for cause, items in grouped.items():
        prev = conn.execute("SELECT delivery_id, sent_at, pending_count FROM alert_deliveries WHERE account_id=%s "
                            "AND cause=%s ORDER BY sent_at DESC, delivery_id DESC LIMIT 1", (account, cause)).fetchone()
        if prev and now - prev["sent_at"] < window:
            conn.execute("UPDATE alert_deliveries SET pending_count = pending_count + %s WHERE delivery_id=%s",
                         (len(items), prev["delivery_id"]))
            held[cause] = prev["pending_count"] + len(items)
            continue
        messages.append(_message(conn, account, cause, items, prev["pending_count"] if prev else 0, urls, send))
    messages += _flush_pending(conn, account, now, window, urls, send, set(grouped))
    new_last = events[-1]["event_id"] if events else last
    conn.execute("INSERT INTO alert_cursor (account_id, last_event_id) VALUES (%s, %s) ON CONFLICT (account_id) "
                 "DO UPDATE SET last_event_id = EXCLUDED.last_event_id, updated_at = clock_timestamp()",
                 (account, new_last))
    conn.commit()
    return DispatchResult(len(events), messages, held, new_last)


def _message(conn, account, cause, items, carried, urls, send) -> dict:
    rule, first = items[0]
    count = len(items) + carried
    title = f"ATS [{account}] {rule.name}: {cause}" + (f" x{count}" if count > 1 else "")
    lines = [rule.describe(e) for _, e in items[:5]]
    if len(items) > 5:
        lines.append(f"... and {len(items) - 5} more of the same cause")
    if carried:
        lines.append(f"(+{carried} earlier events of this cause held back by the rate limit)")
    lines.append(f"events {first['event_id']}..{items[-1][1]['event_id']} in system_events; "
                 f"first at {first['ts'].isoformat()}")
    body = "\n".join(lines)
    return _deliver(conn, account, cause, title, body, urls, send, first["event_id"], items[-1][1]["event_id"], count)


def _flush_pending(conn, account, now, window, urls, send, skip: set[str]) -> list[dict]:
    """Causes whose window has passed with events held back: send their count now."""
    rows = conn.execute(
        "SELECT DISTINCT ON (cause) delivery_id, cause, sent_at, pending_count, last_event_id FROM alert_deliveries "
        "WHERE account_id=%s ORDER BY cause, sent_at DESC, delivery_id DESC", (account,)).fetchall()
    out = []
    for r in rows:
        if r["cause"] in skip or r["pending_count"] <= 0 or now - r["sent_at"] < window:
            continue
        title = f"ATS [{account}] {r['cause']} x{r['pending_count']} (held back by the rate limit)"
        body = (f"{r['pending_count']} more event(s) of cause {r['cause']} since {r['sent_at'].isoformat()} "
                f"(see system_events after event {r['last_event_id']})")
        conn.execute("UPDATE alert_deliveries SET pending_count = 0 WHERE delivery_id=%s", (r["delivery_id"],))
        out.append(_deliver(conn, account, r["cause"], title, body, urls, send, None, None, r["pending_count"]))
    return out


def _deliver(conn, account, cause, title, body, urls, send, first_id, last_id, count) -> dict:
    ok, err = False, None
    if not urls:
        err = "no channel configured (setting alerts.urls is empty)"
    else:
        try:
            ok = bool(send(urls, title, body))
            err = None if ok else "apprise reported a failed delivery"
        except Exception as exc:  # noqa: BLE001 - a failed channel must not lose the alert's record
            err = f"{type(exc).__name__}"  # never the message text: it may echo a URL with a secret
    row = conn.execute(
        "INSERT INTO alert_deliveries (account_id, cause, first_event_id, last_event_id, event_count, delivered, "
        "channels, title, body, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING delivery_id",
        (account, cause, first_id, last_id, count, ok, len(urls), title, body, err)).fetchone()
    log.info("alert %s", cause, extra={"cause": cause, "count": count, "delivered": ok, "error": err,
                                       "channels": [u.split(":", 1)[0] for u in urls]})
    return {"delivery_id": row["delivery_id"], "cause": cause, "count": count, "delivered": ok, "title": title,
            "error": err}


def apprise_send(urls: list[str], title: str, body: str) -> bool:
    """Send one message to every URL with apprise; True when every channel accepted it.

    Raises
    ------
    UsageError
        A URL apprise cannot parse (reported by position, not by content).
    """
    import apprise

    a = apprise.Apprise()
    for i, u in enumerate(urls, 1):
        if not a.add(u):
            raise UsageError(f"alerts.urls: entry {i} is not a URL apprise understands (scheme {u.split(':', 1)[0]!r})")
    return bool(a.notify(title=title, body=body))


def send_summary(conn, *, account: str, title: str, body: str, cause: str = "daily_summary",
                 send: Callable | None = None) -> dict:
    """Send a report summary (e.g. the daily P&L) to the account's channels and record it. Commits."""
    urls = [expand_url(u, channel_env(account)) for u in (_setting(conn, "alerts.urls", [], account) or [])]
    out = _deliver(conn, account, cause, title, body, urls, send or apprise_send, None, None, 1)
    conn.commit()
    return out
