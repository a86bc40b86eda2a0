"""`ats alerts dispatch | test | status`: thin handlers over :mod:`ats.ops.alerts` (registered by ops/cli.py)."""

from __future__ import annotations

import argparse
import time


def _dispatch(args) -> int:
    from ..db.command import command_connection
    from .alerts import dispatch

    while True:
        with command_connection("ats-alerts") as conn:
            r = dispatch(conn, account=args.account)
        sent = sum(1 for m in r.messages if m["delivered"])
        print(f"alerts [{args.account}]: {r.events_seen} event(s) read, {len(r.messages)} message(s) "
              f"({sent} delivered), held back {sum(r.held_back.values())} by the rate limit, cursor {r.cursor}")
        for m in r.messages:
            print(f"  {'sent' if m['delivered'] else 'NOT DELIVERED'} {m['title']}"
                  + (f" ({m['error']})" if m["error"] else ""))
        if not args.loop:
            return 0 if all(m["delivered"] for m in r.messages) else 1
        time.sleep(max(1.0, args.interval))


def _test(args) -> int:
    from ..db.command import command_connection
    from .alerts import send_summary

    with command_connection("ats-alerts") as conn:
        out = send_summary(conn, account=args.account, title=f"ATS [{args.account}] test message",
                           body="a test message from `ats alerts test`: this channel receives ATS alerts",
                           cause="test")
    print(f"test message: {'delivered' if out['delivered'] else 'NOT DELIVERED'}"
          + (f" ({out['error']})" if out["error"] else ""))
    return 0 if out["delivered"] else 1


def _status(args) -> int:
    from ..db.command import command_connection

    with command_connection("ats-alerts") as conn:
        rows = conn.execute(
            "SELECT delivery_id, sent_at, cause, event_count, delivered, channels, error, pending_count "
            "FROM alert_deliveries WHERE account_id=%s ORDER BY delivered, sent_at DESC, delivery_id DESC LIMIT %s",
            (args.account, args.limit)).fetchall()
    if not rows:
        print(f"no alert deliveries for account {args.account!r} yet")
    for r in rows:
        print(f"{r['sent_at']:%Y-%m-%d %H:%M:%S} {'ok  ' if r['delivered'] else 'FAIL'} {r['cause']} "
              f"x{r['event_count']} channels={r['channels']} held={r['pending_count']}"
              + (f" error={r['error']}" if r["error"] else ""))
    return 0


def register_alerts(subparsers) -> None:
    """Add `ats alerts dispatch | test | status`."""
    p = subparsers.add_parser("alerts", help="send alerts (system_events -> apprise channels), test, status",
                              description="Channels are apprise URLs in setting alerts.urls (secrets via ${NAME} "
                                          "from the env or the account's 0600 env file).")
    s = p.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    d = s.add_parser("dispatch", help="turn new system_events into deduplicated, rate-limited messages")
    d.add_argument("--account", default="default")
    d.add_argument("--loop", action="store_true", help="keep dispatching every --interval seconds")
    d.add_argument("--interval", type=float, default=60.0, help="seconds between dispatches with --loop")
    d.set_defaults(func=_dispatch)
    t = s.add_parser("test", help="send one test message to every channel of the account")
    t.add_argument("--account", default="default")
    t.set_defaults(func=_test)
    st = s.add_parser("status", help="recent deliveries, undelivered first")
    st.add_argument("--account", default="default")
    st.add_argument("--limit", type=int, default=20)
    st.set_defaults(func=_status)
