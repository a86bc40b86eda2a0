"""Loopback receivers for the alert tests: a real SMTP server (aiosmtpd) and a JSON webhook receiver on
127.0.0.1, each as a context manager yielding ``(port, got)`` where ``got`` is the list of what arrived
(SMTP: ``aiosmtpd`` envelopes; webhook: the decoded JSON bodies)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def smtp_server():
    """A real SMTP server on loopback; yields (port, envelopes)."""
    from aiosmtpd.controller import Controller

    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append(envelope)
            return "250 OK"

    ctl = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    ctl.start()
    try:
        yield ctl.port, got
    finally:
        ctl.stop()


@contextlib.contextmanager
def webhook_server():
    """An HTTP server on loopback that records every POSTed JSON body; yields (port, bodies)."""
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1], got
    finally:
        srv.shutdown()


def wait_for(got: list, n: int, timeout: float = 5.0) -> list:
    """``got`` once it holds ``n`` items or ``timeout`` seconds passed (delivery is asynchronous)."""
    end = time.time() + timeout
    while len(got) < n and time.time() < end:
        time.sleep(0.05)
    return got
