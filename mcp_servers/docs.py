"""ats-docs: hybrid search over the project's markdown and lessons (MCP server, stdio).

Tools: ``search(query, k=8, mode='hybrid'|'bm25'|'vector', paths=None)``, ``get(path)``, ``status()``; the
core is ats.knowledge.docs_index (BM25 + sentence-transformers vectors, reciprocal rank fusion k=60, vectors in
PostgreSQL). Before a search the server refreshes the index when it is older than ``ATS_DOCS_REFRESH_SECONDS``
(default 30): changed files are re-chunked at once (BM25 sees them immediately) and their vectors are computed
in a background thread, only for chunks whose content hash changed. The embedding model starts loading in the
background when the server starts.

Run: ``python -m mcp_servers.docs`` (or ``mcp_servers/launch docs``, as .mcp.json does). Every call is logged
to ``logs/mcp-docs.log`` at INFO; each call's statements share one time budget (``_common.TimeBudget``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import psycopg
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from ats.errors import AtsError
from ats.log import setup_logging
from ats.knowledge import docs_index as di

from ._common import CallLog, TimeBudget, ToolResult

SERVICE = "mcp-docs"
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

INSTRUCTIONS = """ATS docs search: kb/, plans/, reports/, .claude/, CLAUDE.md, README.md and the lessons table.
Search here before exploring code: results give path, heading path, snippet and which retrievers (bm25, vector)
found them; then `get` the document. paths=["kb/"] (prefixes) narrows the search; lessons are "lesson:<id>"."""


class DocsService:
    """Owns the owner-role connection, the refresh schedule and the background embedder thread."""

    def __init__(self, url: str | None = None, root: Path | None = None, refresh_seconds: float | None = None,
                 logger=None):
        self._url = url
        self.root = Path(root) if root else None
        self.refresh_seconds = float(os.environ.get("ATS_DOCS_REFRESH_SECONDS", 30) if refresh_seconds is None
                                     else refresh_seconds)
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()
        self._last_refresh: float | None = None
        self._embed_thread: threading.Thread | None = None
        self.last_embed_error: str | None = None
        self.logger = logger

    def conn(self) -> psycopg.Connection:
        """The (re)opened connection; caller holds ``_lock``."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            from ats.db import connect

            self._conn = connect(self._url, application_name=SERVICE)
        return self._conn

    def call(self, fn):
        """Run ``fn(conn)`` under the lock; one reconnect on a dropped connection; rolls back on errors."""
        with self._lock:
            for attempt in (1, 2):
                conn = self.conn()
                try:
                    out = fn(conn)
                    conn.rollback()
                    return out
                except psycopg.OperationalError:
                    self._conn = None
                    if attempt == 2:
                        raise
                except BaseException:
                    try:
                        conn.rollback()
                    except psycopg.Error:
                        self._conn = None
                    raise

    def refresh(self, force: bool = False) -> dict | None:
        """Re-chunk changed documents (no embedding) when due, then start the background embedder if vectors
        are missing. Returns the index stats, or None when not due."""
        now = time.monotonic()
        if not force and self._last_refresh is not None and now - self._last_refresh < self.refresh_seconds:
            return None
        stats = self.call(lambda c: di.index(c, self.root, embed=False, wait=False))
        self._last_refresh = now
        self.start_embedding()
        return stats

    def start_embedding(self) -> None:
        """Compute missing vectors in a daemon thread (its own connection), if a model loads and none runs."""
        if self._embed_thread is not None and self._embed_thread.is_alive():
            return

        def work():
            emb, note = di.load_embedder()
            if emb is None:
                return
            try:
                from ats.db import connect

                with connect(self._url, application_name=SERVICE + "-embed") as c:
                    n = di.embed_missing(c, emb)
                if n and self.logger:
                    self.logger.info("embedded %d chunks", n, extra={"fields": {"embedded": n}})
            except Exception as exc:  # noqa: BLE001 - reported by status()
                self.last_embed_error = f"{type(exc).__name__}: {exc}"
                if self.logger:
                    self.logger.warning("background embedding failed: %s", exc)

        self._embed_thread = threading.Thread(target=work, name="ats-docs-embed", daemon=True)
        self._embed_thread.start()

    def wait_embedding(self, timeout: float = 120) -> None:
        """Block until the background embedder (if any) finishes (tests, benchmarks)."""
        t = self._embed_thread
        if t is not None:
            t.join(timeout)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def build_server(*, url: str | None = None, root: Path | None = None,
                 refresh_seconds: float | None = None, preload_model: bool = True) -> MCPServer:
    """The ats-docs MCPServer. ``url``: owner DSN (default ``ats.db.database_url()`` on first use); ``root``:
    project root (default ``ats.paths.project_root()``)."""
    logger = setup_logging(SERVICE)
    log = CallLog(logger)
    svc = DocsService(url, root, refresh_seconds, logger)
    server = MCPServer("ats-docs", log_level="WARNING", instructions=INSTRUCTIONS)

    @server.tool(annotations=READ)
    def search(query: str, k: int = 8, mode: str = "hybrid", paths: list[str] | None = None) -> ToolResult:
        """Hybrid search (BM25 + embeddings, reciprocal rank fusion k=60) over kb/, plans/, reports/, .claude/,
        CLAUDE.md, README.md and lessons. mode: 'hybrid' | 'bm25' | 'vector'. paths: optional path prefixes,
        e.g. ["kb/", "lesson:"]. Returns results [{path, heading, snippet, score, retrievers, ranks, start_line}]
        and a note when only BM25 could run (no embedding model)."""
        def body():
            try:
                svc.refresh()
            except AtsError:
                raise
            except psycopg.Error as exc:
                raise AtsError(f"docs index refresh failed: {exc}") from exc
            return svc.call(lambda c: TimeBudget("search").wrap(di.search)(c, query, k=k, mode=mode, paths=paths))
        return log.run("search", {"query": query, "k": k, "mode": mode, "paths": paths}, body)

    @server.tool(annotations=READ)
    def get(path: str) -> ToolResult:
        """Full markdown of one document: a path relative to the project root ('CLAUDE.md', 'kb/...md',
        'reports/...md') or 'lesson:<id>'. Returns {path, text, truncated, sha256, indexed, stale, chunks}."""
        return log.run("get", {"path": path}, lambda: svc.call(lambda c: TimeBudget("get").wrap(di.get)(c, path, svc.root)))

    @server.tool(annotations=READ)
    def status() -> ToolResult:
        """Index health: documents, chunks, embedded_chunks, stale_chunks (changed/deleted documents or missing
        vectors), stale/new documents, model (id, available, note), vector_backend (pgvector | float8[])."""
        def body():
            out = svc.call(lambda c: TimeBudget("status").wrap(di.status)(c, svc.root))
            t = svc._embed_thread
            out["background_embedding"] = bool(t is not None and t.is_alive())
            out["last_embed_error"] = svc.last_embed_error
            return out
        return log.run("status", {}, body)

    if preload_model and di.model_spec().lower() not in ("none", "off", "0", "false", "bm25"):
        threading.Thread(target=di.load_embedder, name="ats-docs-model", daemon=True).start()
    server._ats_docs = svc  # for tests, benchmarks and clean shutdown
    return server


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve ats-docs over stdio until the client disconnects."""
    p = argparse.ArgumentParser(prog="python -m mcp_servers.docs", description=__doc__.splitlines()[0])
    p.parse_args(argv)
    server = build_server()
    try:
        server.run("stdio")
    finally:
        server._ats_docs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
