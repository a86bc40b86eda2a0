"""``ats broker preflight``: read-only facts from the venue compared with the account's expected values.

Only read calls are made (Bybit: ``get_api_key_information``, ``get_wallet_balance``, ``get_positions``); the
result is recorded as a ``system_events`` row (component ``broker``, ``preflight_passed`` | ``preflight_failed``)
so the go-live rule "a passing preflight in the last 24 h" can check it. No credential is ever recorded.

Expected values (``system_settings`` of the account, current value; defaults in brackets):
``preflight.min_equity_usd`` [100], ``preflight.key_permissions`` ["trade"], ``preflight.position_mode``
["one_way"], ``preflight.require_shorting`` [true], ``preflight.require_ip_binding`` [true on a production
endpoint], ``preflight.min_days_to_expiry`` [7].

Alpaca: no IP-binding or key-expiry check (Alpaca keys have neither, and no endpoint to read them); the venue's own
refusals (:func:`ats.execution.alpaca.venue_check_failures`: status, blocked flags, pattern day trader under
25,000 USD) are added, on every endpoint.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal


def expected(conn, account_id: str, endpoint_kind: str) -> dict:
    """The expected values (see module docstring)."""
    from ..db.config_store import setting_as_of

    defaults = {"preflight.min_equity_usd": 100.0, "preflight.key_permissions": "trade",
                "preflight.position_mode": "one_way", "preflight.require_shorting": True,
                "preflight.require_ip_binding": endpoint_kind == "production", "preflight.min_days_to_expiry": 7}
    return {k.split(".", 1)[1]: setting_as_of(conn, k, None, default=v, account_id=account_id)
            for k, v in defaults.items()}


def check(facts, exp: dict) -> list[str]:
    """One line per failed check of ``facts`` (PreflightFacts) against ``exp``; empty when all pass."""
    bad = []
    if facts.account_status != "active":
        bad.append(f"account status is {facts.account_status!r}, expected 'active'")
    if facts.equity_usd < Decimal(str(exp["min_equity_usd"])):
        bad.append(f"equity {facts.equity_usd:.2f} USD < expected minimum {exp['min_equity_usd']} USD")
    if facts.key_permissions != exp["key_permissions"]:
        bad.append(f"API key permissions are {facts.key_permissions!r}, expected {exp['key_permissions']!r}")
    if facts.position_mode != exp["position_mode"]:
        bad.append(f"position mode is {facts.position_mode!r}, expected {exp['position_mode']!r}")
    if exp["require_shorting"] and not facts.shorting_enabled:
        bad.append("shorting (linear perpetual trading) is not enabled for this key/account")
    if exp["require_ip_binding"] and not facts.checks.get("ip_bound"):
        bad.append("API key is not bound to an IP address (required on a production endpoint)")
    days = facts.checks.get("days_to_expiry")
    if days is not None and exp["min_days_to_expiry"] is not None and int(days) < int(exp["min_days_to_expiry"]):
        bad.append(f"API key expires in {days} day(s) < {exp['min_days_to_expiry']}")
    return bad


def failed_checks(facts, exp: dict) -> list[str]:
    """:func:`check` with the venue's own rules: for Alpaca, no IP-binding or key-expiry check (its keys have
    neither and no endpoint to read them) and the lines of :func:`ats.execution.alpaca.venue_check_failures`.

    Parameters
    ----------
    facts : PreflightFacts
    exp : dict
        From :func:`expected`.

    Returns
    -------
    list of str
        One line per failed check; empty when all pass.
    """
    if facts.venue != "alpaca":
        return check(facts, exp)
    from ..execution.alpaca import venue_check_failures

    bad = check(facts, {**exp, "require_ip_binding": False, "min_days_to_expiry": None})
    return bad + [line for line in venue_check_failures(facts) if line not in bad]


def run_preflight(conn, account_id: str, adapter) -> tuple[list[str], dict]:
    """Read the facts, compare, record the outcome (commits). Returns (failed check lines, facts as JSON)."""
    from ..db.events import record_event

    facts = adapter.preflight()
    doc = json.loads(json.dumps(facts.__dict__, default=str))
    exp = expected(conn, account_id, facts.endpoint_kind)
    bad = failed_checks(facts, exp)
    record_event(conn, "broker", "preflight_passed" if not bad else "preflight_failed",
                 severity="info" if not bad else "warning", account_id=account_id,
                 payload={"venue": facts.venue, "facts": doc, "expected": exp, "failed": bad})
    conn.commit()
    return bad, doc


def last_passing_preflight(conn, account_id: str, venue: str, *, within_s: int = 86400):
    """Time (datetime) of the last ``preflight_passed`` of ``venue`` for the account within ``within_s``, or None.
    Uses the database clock (real time), not a venue clock."""
    row = conn.execute("""SELECT max(ts) AS ts FROM system_events WHERE account_id=%s AND component='broker'
                            AND event_type='preflight_passed' AND payload->>'venue' = %s
                            AND ts >= now() - %s""", (account_id, venue, timedelta(seconds=within_s))).fetchone()
    return row["ts"] if row else None


def run_preflight_cli(args) -> int:
    """`ats broker preflight`: exit 0 when every check passes, 1 otherwise (one line per failed check)."""
    from ..db import connect
    from ..errors import UsageError
    from .credentials import venue_keys
    from .loop import base_url_for

    endpoint = base_url_for(args.broker, args.testnet)
    if args.broker == "bybit":
        from ..execution.bybit import BybitBroker

        key, secret = venue_keys("bybit", args.account)
        adapter = BybitBroker(key, secret, base_url=endpoint)
    else:
        try:
            from ..execution.alpaca import AlpacaBroker
        except ImportError as exc:
            raise UsageError("--broker alpaca: ats.execution.alpaca.AlpacaBroker is not available") from exc
        import os

        key, secret = venue_keys("alpaca", args.account)
        adapter = AlpacaBroker(key, secret, base_url=endpoint,
                               data_url=os.environ.get("ATS_ALPACA_DATA_URL") or "https://data.alpaca.markets",
                               run_id="")
    with connect() as conn:
        bad, doc = run_preflight(conn, args.account, adapter)
    if args.json:
        print(json.dumps({"ok": not bad, "failed": bad, "facts": doc}, indent=2))
    elif bad:
        for line in bad:
            print(f"preflight FAILED ({args.broker}, account {args.account}): {line}")
    else:
        print(f"preflight passed ({args.broker}, account {args.account}, {doc['endpoint_kind']} endpoint "
              f"{doc['endpoint']}) at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    return 0 if not bad else 1
