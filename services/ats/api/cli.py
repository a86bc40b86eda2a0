"""`ats dashboard [--host 127.0.0.1] [--port 8000]`: serve the FastAPI dashboard with uvicorn.

Binding to a non-loopback host requires ``ATS_DASHBOARD_TOKEN`` (refused at start-up without it); with the token
set, every request must carry it (checked in constant time, see ``app.py``).
"""

from __future__ import annotations

CLI_ORDER = 60

import argparse
import ipaddress
import os


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args) -> int:
    from ..errors import UsageError

    token = os.environ.get("ATS_DASHBOARD_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise UsageError(f"refusing to bind the dashboard to {args.host}: set ATS_DASHBOARD_TOKEN "
                         "(every request must then carry it) or use --host 127.0.0.1")
    import uvicorn

    from .app import create_app

    app = create_app(token=token)
    print(f"ATS dashboard on http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats dashboard`."""
    p = sub.add_parser("dashboard", help="web dashboard (FastAPI): assets, analytics, data hub, KB, reports, "
                                         "backtests, events; English / 中文",
                       description="Serve the dashboard with uvicorn. Loopback by default; another host needs "
                                   "ATS_DASHBOARD_TOKEN.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    p.set_defaults(func=_serve)
