"""A scripted Anthropic Messages API endpoint on 127.0.0.1, for driving the real Claude Code CLI offline.

The Claude Code CLI (2.1.x) posts ``POST /v1/messages?beta=true`` with ``"stream": true`` when
``ANTHROPIC_BASE_URL`` points at this server; it accepts a server-sent-events reply made of the events
``message_start``, ``content_block_start``, ``content_block_delta`` (``text_delta`` / ``input_json_delta``),
``content_block_stop``, ``message_delta`` and ``message_stop`` (see /work/shared/NOTES.md). This server replies
with a fixed script instead of a model:

* a *main-loop* request (one that offers tools) gets ``script[n]`` where ``n`` is the number of assistant
  turns already in the request's ``messages`` (stateless: a retried request gets the same reply); once the
  script is exhausted it gets ``final_text``;
* any other request (the CLI's side calls: titles, summaries, token counting) gets a short text reply.

A script step is ``{"tool_use": {"name": "mcp__ats-postgres__investigate_symbol", "input": {...}}}`` or
``{"text": "..."}``. Every request is appended to ``requests`` (and to ``log_path`` as JSON lines when given)
so a test can assert what the CLI sent: the expanded slash command, the tool results, the refusals.

Use in-process (``with ScriptedModel(script) as m: env["ANTHROPIC_BASE_URL"] = m.base_url``) or as a program:
``python tests/_scripted_model.py --script steps.json --port-file port.txt --log requests.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL_NAME = "claude-scripted-1"


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _content_blocks(step: dict) -> tuple[list[dict], str]:
    """(content blocks of a full message, stop_reason) for one script step."""
    if "tool_use" in step:
        tu = step["tool_use"]
        return ([{"type": "tool_use", "id": tu.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                  "name": tu["name"], "input": tu.get("input", {})}], "tool_use")
    return [{"type": "text", "text": step.get("text", "")}], "end_turn"


def assistant_turns(body: dict) -> int:
    """Number of assistant messages already in a Messages API request body."""
    return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")


def message_text(msg: dict) -> str:
    """All text of one request message (string content or text / tool_result blocks), joined by newlines."""
    content = msg.get("content")
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            inner = block.get("content")
            if isinstance(inner, str):
                parts.append(inner)
            else:
                parts.extend(b.get("text", "") for b in inner or [] if b.get("type") == "text")
    return "\n".join(parts)


def tool_results(body: dict) -> list[dict]:
    """Every tool_result block in a request: [{'tool_use_id', 'is_error', 'text'}]."""
    out = []
    for m in body.get("messages", []):
        if m.get("role") != "user" or isinstance(m.get("content"), str):
            continue
        for block in m.get("content") or []:
            if block.get("type") == "tool_result":
                out.append({"tool_use_id": block.get("tool_use_id"), "is_error": bool(block.get("is_error")),
                            "text": message_text({"content": [block]})})
    return out


class ScriptedModel:
    """A loopback Messages API server replying from ``script``; a context manager (starts a daemon thread).

    Attributes after start: ``base_url`` (``http://127.0.0.1:PORT``), ``requests`` (list of dicts with keys
    path, main (bool), step (int or None), body).
    """

    def __init__(self, script: list[dict], *, final_text: str = "Done.", log_path: str | Path | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.script = list(script)
        self.final_text = final_text
        self.log_path = Path(log_path) if log_path else None
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def main_requests(self) -> list[dict]:
        """Bodies of the main-loop requests (those offering tools), in arrival order."""
        with self._lock:
            return [r["body"] for r in self.requests if r["main"]]

    # -- reply selection ---------------------------------------------------------------------------
    def reply_for(self, body: dict) -> tuple[dict, bool, int | None]:
        """(script step, is_main, step index) for one request body."""
        if not body.get("tools"):
            return {"text": "ok"}, False, None
        n = assistant_turns(body)
        if n < len(self.script):
            return self.script[n], True, n
        return {"text": self.final_text}, True, n

    def _record(self, path: str, body: dict, main: bool, step: int | None) -> None:
        entry = {"path": path, "main": main, "step": step, "body": body}
        with self._lock:
            self.requests.append(entry)
            if self.log_path:
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def _handler_class(self):
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep test output clean
                pass

            def _send_json(self, status: int, doc: dict) -> None:
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):  # noqa: N802 - http.server naming
                self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

            def do_HEAD(self):  # noqa: N802
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_unparsable": raw.decode(errors="replace")}
                path = self.path.split("?", 1)[0]
                if path.endswith("/count_tokens"):
                    model._record(self.path, body, False, None)
                    self._send_json(200, {"input_tokens": 100})
                    return
                if not path.endswith("/v1/messages"):
                    model._record(self.path, body, False, None)
                    self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
                    return
                step, main, idx = model.reply_for(body)
                model._record(self.path, body, main, idx)
                blocks, stop_reason = _content_blocks(step)
                msg_id = f"msg_{uuid.uuid4().hex[:24]}"
                usage = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 0}
                if not body.get("stream"):
                    self._send_json(200, {"id": msg_id, "type": "message", "role": "assistant",
                                          "model": body.get("model", MODEL_NAME), "content": blocks,
                                          "stop_reason": stop_reason, "stop_sequence": None, "usage": usage})
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                out = [_sse("message_start", {"type": "message_start", "message": {
                    "id": msg_id, "type": "message", "role": "assistant", "model": body.get("model", MODEL_NAME),
                    "content": [], "stop_reason": None, "stop_sequence": None,
                    "usage": {**usage, "output_tokens": 1}}})]
                for i, block in enumerate(blocks):
                    if block["type"] == "tool_use":
                        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                    else:
                        start = {"type": "text", "text": ""}
                        delta = {"type": "text_delta", "text": block["text"]}
                    out.append(_sse("content_block_start", {"type": "content_block_start", "index": i,
                                                            "content_block": start}))
                    out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                            "delta": delta}))
                    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": i}))
                out.append(_sse("message_delta", {"type": "message_delta",
                                                  "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                                  "usage": {"output_tokens": usage["output_tokens"]}}))
                out.append(_sse("message_stop", {"type": "message_stop"}))
                self.wfile.write(b"".join(out))
                self.wfile.flush()
                self.close_connection = True

        return Handler

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "ScriptedModel":
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ScriptedModel":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the scripted endpoint in the foreground until interrupted."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--script", required=True, help="JSON file: a list of steps")
    ap.add_argument("--final-text", default="Done.")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the chosen port here once listening")
    ap.add_argument("--log", help="append every request as a JSON line here")
    a = ap.parse_args(argv)
    script = json.loads(Path(a.script).read_text(encoding="utf-8"))
    model = ScriptedModel(script, final_text=a.final_text, log_path=a.log, port=a.port)
    if a.port_file:
        Path(a.port_file).write_text(str(model.port), encoding="utf-8")
    print(f"scripted model on {model.base_url}", file=sys.stderr)
    try:
        model._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        model._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
