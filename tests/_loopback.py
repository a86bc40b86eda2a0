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


class ChatEndpoint:
    """A scripted OpenAI-compatible ``POST /v1/chat/completions`` on loopback (the consensus tests' voters).

    Replies ``reply`` (the message content, str) after ``delay`` seconds with HTTP ``status``; records each
    request's first message content in ``prompts`` and counts them in ``calls``. ``close()`` stops it.
    """

    def __init__(self, reply: str = "", delay: float = 0.0, status: int = 200):
        self.reply, self.delay, self.status, self.prompts = reply, delay, status, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.prompts.append(body["messages"][0]["content"])
                time.sleep(outer.delay)
                out = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": outer.reply}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.0012}}).encode()
                try:
                    self.send_response(outer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    @property
    def calls(self) -> int:
        """How many requests arrived."""
        return len(self.prompts)

    @property
    def base_url(self) -> str:
        """The endpoint's OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def conf(self, name: str) -> dict:
        """The ``consensus.models`` setting entry for this endpoint as model ``name``."""
        return {"kind": "openai", "model": name, "base_url": self.base_url}

    def close(self) -> None:
        self.srv.shutdown()


@contextlib.contextmanager
def chat_endpoints():
    """A factory of ChatEndpoint (same arguments) whose endpoints are all closed on exit."""
    made = []

    def make(*a, **kw):
        made.append(ChatEndpoint(*a, **kw))
        return made[-1]
    try:
        yield make
    finally:
        for e in made:
            e.close()
