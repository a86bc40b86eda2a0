"""Lessons learned (LL-NNN): structured, append-only, mirrored to ``kb/lessons/``, retrieved before every entry.

A lesson (table ``lessons``, migration 0132) has: ``LL-NNN`` (sequence, never reused), date, trigger, impact (USD
where known), root cause, fix applied, prevention, tags (``symbol:BTCUSDT``, ``strategy:momentum``,
``order_type:mleg``, ``venue:alpaca``, or free words), links (incident report, plan, commit), and optionally a
machine-checkable prevention **rule**. A correction is a new version of the same number; the newest version is in
force (view ``lessons_current``). Each lesson is mirrored as ``kb/lessons/LL-NNN.md`` so the docs search indexes it.

Rules (one per lesson; parsed by :func:`parse_rule`, refused at ``add`` time when malformed):

- ``block entries [in SYMBOL] [for strategy NAME] [side long|short] [during REGIME]`` -- every clause optional
  but one; ``SYMBOL`` / ``NAME`` may be ``*``.
- ``require order_class = CLASS for strategies with more than one leg`` (e.g. ``mleg``: LL-221, a sequential
  iron-condor fill left a naked short put overnight).

Before every entry (replay and live alike) the engine builds a :class:`TradeContext`, asks
:meth:`LessonBook.consult` for the top-k lessons (BM25 over the lessons' text, cached per distinct context: the
same context string always yields the same ids and scores) and for the first rule the entry violates; the ids and
scores go in the signal's audit context, and a violated rule blocks the entry as gate ``lesson:LL-NNN``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from ..errors import UsageError

REGIMES = ("strong_bull", "bull", "neutral", "bear", "strong_bear")
FIELDS = ("title", "lesson_date", "trigger", "impact_usd", "root_cause", "fix_applied", "prevention", "tags",
          "links", "rule")


def ll_id(n: int) -> str:
    """``LL-007`` style id of lesson number ``n`` (at least three digits)."""
    return f"LL-{int(n):03d}"


def parse_ll(text: str) -> int:
    """Lesson number of ``LL-NNN`` / ``NNN``; UsageError naming the text otherwise."""
    m = re.fullmatch(r"(?:LL-)?0*(\d+)", str(text).strip(), re.I)
    if not m:
        raise UsageError(f"{text!r} is not a lesson id (expected LL-NNN)")
    return int(m.group(1))


# ---- prevention rules ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TradeContext:
    """What an entry decision looks like to the lessons.

    Attributes
    ----------
    strategy, symbol : str
    side : str
        ``long`` | ``short``.
    order_type : str
        ``market`` | ``limit``.
    order_class : str
        ``simple`` | ``mleg`` (multi-leg options order).
    legs : int
        Number of legs of the structure (1 for a plain order, 4 for an iron condor).
    regime : str or None
        BTC regime at the decision (``strong_bull`` ... ``strong_bear``).
    venue : str
        ``paper`` | ``bybit`` | ``alpaca``.
    breakers : tuple of str
        Breakers tripped at the decision (names).
    """

    strategy: str
    symbol: str
    side: str
    order_type: str = "market"
    order_class: str = "simple"
    legs: int = 1
    regime: str | None = None
    venue: str = "paper"
    breakers: tuple[str, ...] = ()

    def query(self) -> str:
        """The retrieval query: the context's words (order-independent tokens)."""
        parts = [self.strategy.replace("_", " "), self.strategy, self.symbol, self.side, self.order_type,
                 self.order_class, f"{self.legs} legs" if self.legs > 1 else "", (self.regime or "").replace("_", " "),
                 self.venue, *self.breakers, "entry"]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class Rule:
    """A parsed prevention rule; :meth:`violated_by` returns the reason a context violates it, else None."""

    text: str
    kind: str                       # block_entries | require_order_class
    symbol: str | None = None
    strategy: str | None = None
    side: str | None = None
    regime: str | None = None
    order_class: str | None = None

    def violated_by(self, ctx: TradeContext) -> str | None:
        if self.kind == "require_order_class":
            if ctx.legs > 1 and ctx.order_class != self.order_class:
                return f"{ctx.strategy} has {ctx.legs} legs but order_class {ctx.order_class} (rule: {self.text})"
            return None
        for want, have in ((self.symbol, ctx.symbol), (self.strategy, ctx.strategy), (self.side, ctx.side),
                           (self.regime, ctx.regime)):
            if want not in (None, "*") and want != have:
                return None
        return f"entries blocked: {self.text}"


_BLOCK = re.compile(r"block entries(?: in (?P<symbol>[A-Z0-9.*-]+))?(?: for strategy (?P<strategy>[a-z0-9_*]+))?"
                    r"(?: side (?P<side>long|short))?(?: during (?P<regime>[a-z_]+))?")
_REQUIRE = re.compile(r"require order_class = (?P<cls>[a-z]+) for strategies with more than one leg")


def parse_rule(text: str) -> Rule:
    """Parse a prevention rule (grammar in the module docstring).

    Raises
    ------
    UsageError
        Unknown form, a block rule with no clause, or an unknown regime (one line naming the rule).
    """
    t = " ".join(str(text).split())
    m = _REQUIRE.fullmatch(t)
    if m:
        return Rule(t, "require_order_class", order_class=m.group("cls"))
    m = _BLOCK.fullmatch(t)
    if m:
        g = m.groupdict()
        if not any(g.values()):
            raise UsageError(f"rule {t!r}: 'block entries' needs at least one of in / for strategy / side / during")
        if g["regime"] and g["regime"] not in REGIMES:
            raise UsageError(f"rule {t!r}: unknown regime {g['regime']!r} (one of {', '.join(REGIMES)})")
        return Rule(t, "block_entries", **g)
    raise UsageError(f"rule {t!r} is not understood; use 'block entries [in SYMBOL] [for strategy NAME] "
                     "[side long|short] [during REGIME]' or 'require order_class = mleg for strategies with more "
                     "than one leg'")


# ---- storage -------------------------------------------------------------------------------------------

@dataclass
class LessonDraft:
    """The fields of a new lesson or a correction (``ll_number`` set = correction of that lesson)."""

    title: str
    trigger: str
    root_cause: str
    fix_applied: str
    prevention: str
    lesson_date: date | None = None
    impact_usd: Decimal | None = None
    tags: list[str] = field(default_factory=list)
    links: dict = field(default_factory=dict)
    rule: str | None = None
    ll_number: int | None = None
    source: str = "cli"


def draft_from_file(path: str | Path) -> LessonDraft:
    """Read a lesson from a markdown file with YAML front matter (python-frontmatter).

    Front matter keys: ``title`` (required), ``ll`` (``LL-NNN``: a correction), ``date``, ``trigger``,
    ``impact_usd``, ``root_cause``, ``fix_applied``, ``prevention``, ``tags`` (list), ``links`` (mapping),
    ``rule``. Missing ``trigger`` / ``root_cause`` / ``fix_applied`` / ``prevention`` are read from the body's
    ``## Trigger`` / ``## Root cause`` / ``## Fix applied`` / ``## Prevention`` sections.

    Raises
    ------
    UsageError
        Unreadable file, bad YAML, a missing field (named), a bad date, amount or rule.
    """
    import frontmatter

    p = Path(path)
    try:
        post = frontmatter.load(p)
    except OSError as exc:
        raise UsageError(f"cannot read lesson file {p}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - YAML errors come in several types
        raise UsageError(f"{p}: front matter is not valid YAML ({type(exc).__name__})") from None
    meta = dict(post.metadata)
    sections = _sections(post.content)
    def need(key, heading):
        v = meta.get(key) or sections.get(heading)
        if not v or not str(v).strip():
            raise UsageError(f"{p}: missing {key} (front matter key or '## {heading.title()}' section)")
        return str(v).strip()
    d = LessonDraft(
        title=need("title", "title"), trigger=need("trigger", "trigger"), root_cause=need("root_cause", "root cause"),
        fix_applied=need("fix_applied", "fix applied"), prevention=need("prevention", "prevention"),
        lesson_date=_date(meta.get("date"), p), impact_usd=_usd(meta.get("impact_usd"), p),
        tags=[str(t) for t in (meta.get("tags") or [])], links=dict(meta.get("links") or {}),
        rule=str(meta["rule"]).strip() if meta.get("rule") else None,
        ll_number=parse_ll(meta["ll"]) if meta.get("ll") else None, source=f"file:{p.name}")
    if d.rule:
        parse_rule(d.rule)
    return d


def _sections(body: str) -> dict[str, str]:
    out, cur, buf = {}, None, []
    for line in body.splitlines():
        m = re.match(r"^##\s+(.+?)\s*$", line)
        if m:
            if cur:
                out[cur] = "\n".join(buf).strip()
            cur, buf = m.group(1).strip().lower(), []
        elif cur:
            buf.append(line)
    if cur:
        out[cur] = "\n".join(buf).strip()
    return out


def _date(v, where) -> date | None:
    if v in (None, ""):
        return None
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v))
    except ValueError:
        raise UsageError(f"{where}: date {v!r} is not YYYY-MM-DD") from None


def _usd(v, where) -> Decimal | None:
    if v in (None, ""):
        return None
    try:
        return Decimal(str(v))
    except InvalidOperation:
        raise UsageError(f"{where}: impact_usd {v!r} is not a number") from None


def add_lesson(conn, d: LessonDraft) -> dict:
    """Insert a new lesson (next LL number) or a correction (next version of ``d.ll_number``). Does not commit.

    Returns the stored row (with ``ll`` = ``LL-NNN``).

    Raises
    ------
    UsageError
        A correction of a lesson that does not exist, or a malformed rule.
    """
    if d.rule:
        parse_rule(d.rule)
    if d.ll_number is not None:
        prev = conn.execute("SELECT max(version) AS v FROM lessons WHERE ll_number=%s", (d.ll_number,)).fetchone()
        if prev["v"] is None:
            raise UsageError(f"{ll_id(d.ll_number)} does not exist: a correction needs an existing lesson")
        n, version = d.ll_number, prev["v"] + 1
    else:
        n, version = conn.execute("SELECT nextval('lesson_ll_seq') AS n").fetchone()["n"], 1
    body = _body(d)
    from psycopg.types.json import Jsonb

    row = conn.execute(
        """INSERT INTO lessons (title, body, tags, source, ll_number, version, lesson_date, trigger, impact_usd,
                                root_cause, fix_applied, prevention, rule, links)
           VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, current_date), %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (d.title, body, d.tags, d.source, n, version, d.lesson_date, d.trigger, d.impact_usd, d.root_cause,
         d.fix_applied, d.prevention, d.rule, Jsonb(d.links))).fetchone()
    return _out(row)


def _body(d: LessonDraft) -> str:
    return (f"Trigger: {d.trigger}\n\nRoot cause: {d.root_cause}\n\nFix applied: {d.fix_applied}\n\n"
            f"Prevention: {d.prevention}" + (f"\n\nRule: {d.rule}" if d.rule else ""))


def _out(row: dict) -> dict:
    r = dict(row)
    r["ll"] = ll_id(r["ll_number"])
    return r


def list_lessons(conn, *, tag: str | None = None) -> list[dict]:
    """The version in force of every LL lesson (oldest first), optionally only those carrying ``tag``."""
    q = "SELECT * FROM lessons_current" + (" WHERE %s = ANY(tags)" if tag else "") + " ORDER BY ll_number"
    return [_out(r) for r in conn.execute(q, (tag,) if tag else None).fetchall()]


def get_lesson(conn, ll: str | int) -> dict:
    """The version in force of one lesson, with ``history`` (every version, oldest first).

    Raises
    ------
    UsageError
        Unknown lesson.
    """
    n = parse_ll(ll) if isinstance(ll, str) else int(ll)
    rows = conn.execute("SELECT * FROM lessons WHERE ll_number=%s ORDER BY version", (n,)).fetchall()
    if not rows:
        raise UsageError(f"{ll_id(n)} does not exist (ats lesson list)")
    out = _out(rows[-1])
    out["history"] = [{"version": r["version"], "created_at": r["created_at"], "title": r["title"]} for r in rows]
    return out


def render_lesson(r: dict) -> str:
    """Markdown (with YAML front matter) of a lesson: the ``kb/lessons/LL-NNN.md`` mirror."""
    import frontmatter

    meta = {"ll": r["ll"], "version": r["version"], "title": r["title"],
            "date": r["lesson_date"].isoformat() if r.get("lesson_date") else None,
            "impact_usd": float(r["impact_usd"]) if r.get("impact_usd") is not None else None,
            "tags": list(r.get("tags") or []), "links": dict(r.get("links") or {}), "rule": r.get("rule"),
            "category": "lessons"}
    body = (f"# {r['ll']}: {r['title']}\n\n## Trigger\n\n{r['trigger']}\n\n## Impact\n\n"
            + (f"{float(r['impact_usd']):,.2f} USD" if r.get("impact_usd") is not None else "not quantified")
            + f"\n\n## Root cause\n\n{r['root_cause']}\n\n## Fix applied\n\n{r['fix_applied']}\n\n## Prevention\n\n"
            f"{r['prevention']}\n" + (f"\nMachine-checked rule: `{r['rule']}`\n" if r.get("rule") else ""))
    return frontmatter.dumps(frontmatter.Post(body, **{k: v for k, v in meta.items() if v is not None})) + "\n"


def mirror(conn, kb_root: Path | None = None) -> list[Path]:
    """Write ``kb/lessons/LL-NNN.md`` for every lesson whose mirror is missing or differs; returns paths written."""
    from .. import paths

    d = (kb_root or paths.kb_dir()) / "lessons"
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for r in list_lessons(conn):
        p = d / f"{r['ll']}.md"
        text = render_lesson(r)
        if not p.exists() or p.read_text(encoding="utf-8") != text:
            p.write_text(text, encoding="utf-8")
            out.append(p)
    return out


# ---- retrieval before every entry ------------------------------------------------------------------------

@dataclass(frozen=True)
class Consultation:
    """What the lessons said about one entry: top-k ``[(LL-NNN, score)]`` and the violated rule, if any."""

    retrieved: tuple[tuple[str, float], ...]
    blocked_by: str | None = None      # LL-NNN
    reason: str | None = None

    def audit(self) -> dict:
        """The part recorded in the signal's audit context."""
        return {"lessons": [{"ll": ll, "score": round(s, 4)} for ll, s in self.retrieved],
                **({"lesson_block": {"ll": self.blocked_by, "reason": self.reason}} if self.blocked_by else {})}


class LessonBook:
    """The lessons in force, loaded once per run, answering :meth:`consult` in microseconds.

    Retrieval is BM25+ (rank-bm25, the lexical side of the docs search) over each lesson's title, tags, trigger,
    root cause and prevention, with the :meth:`TradeContext.query` as the query; results are cached per distinct
    context, so a replay pays the ranking once per context. With no lessons, ``consult`` returns an empty
    consultation (and says so: ``retrieved == ()``).
    """

    def __init__(self, lessons: list[dict], k: int = 3):
        from rank_bm25 import BM25Plus

        self.k = k
        self.lessons = lessons
        self.rules = [(r["ll"], parse_rule(r["rule"])) for r in lessons if r.get("rule")]
        docs = [_tokens(" ".join([r["title"], " ".join(r.get("tags") or []), r.get("trigger") or "",
                                  r.get("root_cause") or "", r.get("prevention") or "", r.get("rule") or ""]))
                for r in lessons]
        # BM25Plus: BM25Okapi's IDF is 0 for a term in half of a two-lesson book, so small books would score nothing
        self._bm25 = BM25Plus(docs) if docs else None
        self._terms = [set(d) for d in docs]
        self._ids = [r["ll"] for r in lessons]
        self._cache: dict[TradeContext, Consultation] = {}

    @classmethod
    def load(cls, conn, k: int = 3) -> "LessonBook":
        """Every lesson in force (``lessons_current``)."""
        return cls(list_lessons(conn), k=k)

    def consult(self, ctx: TradeContext) -> Consultation:
        """Top-k lessons for ``ctx`` and the first rule it violates (rules in LL order)."""
        hit = self._cache.get(ctx)
        if hit is not None:
            return hit
        retrieved: tuple = ()
        if self._bm25 is not None:
            q = _tokens(ctx.query())
            scores = self._bm25.get_scores(q)
            qs = set(q)
            cand = [i for i in range(len(scores)) if self._terms[i] & qs]  # a lesson must share a term with the entry
            order = sorted(cand, key=lambda i: (-scores[i], i))[: self.k]
            retrieved = tuple((self._ids[i], float(scores[i])) for i in order)
        blocked = reason = None
        for ll, rule in self.rules:
            why = rule.violated_by(ctx)
            if why:
                blocked, reason = ll, why
                break
        out = Consultation(retrieved, blocked, reason)
        self._cache[ctx] = out
        return out


@lru_cache(maxsize=4096)
def _tokens_cached(text: str) -> tuple[str, ...]:
    return tuple(t for t in re.findall(r"[a-z0-9]+", text.lower()) if len(t) > 1)


def _tokens(text: str) -> list[str]:
    return list(_tokens_cached(text))


__all__ = ["TradeContext", "Rule", "parse_rule", "LessonDraft", "draft_from_file", "add_lesson", "list_lessons",
           "get_lesson", "render_lesson", "mirror", "LessonBook", "Consultation", "ll_id", "parse_ll", "asdict"]
