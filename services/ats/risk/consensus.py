"""The consensus gate: N independent models vote ENTER / HOLD on an entry candidate; a supermajority enters.

Optional and per strategy (setting ``consensus.strategies``). Voters (setting ``consensus.models``) are Claude
models run headless through the Claude Code CLI with no tools (``claude -p PROMPT --model M --output-format json
--tools ""``) or any OpenAI-compatible chat-completions endpoint (``POST {base_url}/chat/completions``). Each voter
gets the same prompt -- the candidate (strategy, symbol, side, price, regime), its market context and the lessons
retrieved for it -- and must answer one JSON object ``{"vote": "ENTER"|"HOLD", "params": {...}, "reason": "..."}``.

Fail-safe: a voter that times out (``consensus.timeout_s``), errs, or answers anything but that object counts as
HOLD, with the error recorded. The candidate enters only when ENTER votes / ALL configured voters >=
``consensus.supermajority`` (default 2/3, i.e. 0.6667). Numeric parameters of the agreeing ENTER votes are
averaged (arithmetic mean) for the strategy to use. With no voter configured the gate is off and the decision
record says ``consensus: off (no model configured)``. Every vote (voter, vote, params, latency ms, cost USD when
the endpoint reports it, error) is a ``consensus_votes`` row. Replays never call a model unless asked:
``mode="replay"`` reuses the votes recorded for the same (account, strategy, symbol, decision time), and a
candidate without recorded votes is HOLD with reason ``no recorded votes``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

ENTER, HOLD = "ENTER", "HOLD"


@dataclass(frozen=True)
class Voter:
    """One configured model.

    Attributes
    ----------
    kind : str
        ``claude`` | ``openai``.
    model : str
        Model name as the endpoint knows it.
    base_url : str, optional
        OpenAI-compatible base URL (``http://host:port/v1``); unused for ``claude``.
    api_key_env : str, optional
        Environment variable holding the endpoint's key (never the key itself).
    """

    kind: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")


@dataclass(frozen=True)
class Vote:
    """One voter's answer (after the fail-safe): ``vote`` is ENTER or HOLD, ``error`` why it was forced to HOLD."""

    voter: str
    vote: str
    params: dict = field(default_factory=dict)
    reason: str | None = None
    latency_ms: float = 0.0
    cost_usd: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Decision:
    """The gate's outcome: ``enter``, the votes, the averaged parameters of the agreeing votes, and a one-line
    ``summary`` for the signal's audit context / the blocked signal's reason."""

    enter: bool
    votes: tuple[Vote, ...]
    params: dict
    summary: str
    off: bool = False


def voters_from_setting(value) -> list[Voter]:
    """``consensus.models`` setting -> voters; UsageError naming the bad entry."""
    from ..errors import UsageError

    out = []
    for i, v in enumerate(value or [], 1):
        if not isinstance(v, dict) or v.get("kind") not in ("claude", "openai") or not v.get("model"):
            raise UsageError(f"consensus.models entry {i}: need kind claude|openai and a model")
        if v["kind"] == "openai" and not v.get("base_url"):
            raise UsageError(f"consensus.models entry {i}: an openai voter needs base_url")
        out.append(Voter(v["kind"], v["model"], v.get("base_url"), v.get("api_key_env")))
    return out


def build_prompt(candidate: dict, lessons: list[dict] | None = None) -> str:
    """The prompt every voter gets (deterministic for a candidate: the same text for every voter)."""
    ls = "\n".join(f"- {x.get('ll')}: {x.get('title', '')}" for x in (lessons or [])) or "- none retrieved"
    return ("You are one of several independent reviewers of an automated trading system's entry candidate. "
            "Answer with ONE JSON object and nothing else: "
            '{"vote": "ENTER" or "HOLD", "params": {optional numeric overrides such as "tp_pct", "sl_pct"}, '
            '"reason": "one sentence"}.\n\n'
            f"Candidate: {json.dumps(candidate, sort_keys=True, default=str)}\n\nLessons learned that apply:\n{ls}\n")


_JSON_OBJ = re.compile(r"\{.*\}", re.S)


def parse_vote(text: str) -> tuple[str, dict, str | None]:
    """(vote, params, reason) from a model's reply; ValueError when it is not the required object."""
    m = _JSON_OBJ.search(text or "")
    if not m:
        raise ValueError("malformed reply: no JSON object")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        raise ValueError("malformed reply: invalid JSON") from None
    vote = str(obj.get("vote", "")).upper()
    if vote not in (ENTER, HOLD):
        raise ValueError(f"malformed reply: vote {obj.get('vote')!r}")
    params = obj.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError("malformed reply: params is not an object")
    return vote, params, (str(obj["reason"])[:500] if obj.get("reason") else None)


def ask_openai(v: Voter, prompt: str, timeout_s: float) -> tuple[str, float | None]:
    """(reply text, cost USD or None) from an OpenAI-compatible ``/chat/completions`` endpoint."""
    import httpx

    headers = {"Authorization": f"Bearer {os.environ.get(v.api_key_env, '')}"} if v.api_key_env else {}
    r = httpx.post(f"{v.base_url.rstrip('/')}/chat/completions", headers=headers, timeout=timeout_s,
                   json={"model": v.model, "temperature": 0, "messages": [{"role": "user", "content": prompt}]})
    if r.status_code != 200:
        raise RuntimeError(f"http {r.status_code}")
    body = r.json()
    cost = (body.get("usage") or {}).get("cost_usd")
    return body["choices"][0]["message"]["content"], (float(cost) if cost is not None else None)


def ask_claude(v: Voter, prompt: str, timeout_s: float) -> tuple[str, float | None]:
    """(reply text, total_cost_usd) from the Claude Code CLI, headless, with no tools."""
    exe = os.environ.get("ATS_CLAUDE_BIN", "claude")
    out = subprocess.run([exe, "-p", prompt, "--model", v.model, "--output-format", "json", "--tools", ""],
                         capture_output=True, text=True, timeout=timeout_s)
    try:
        res = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"claude exited {out.returncode} without a JSON result") from None
    if res.get("is_error"):
        raise RuntimeError(f"claude: {str(res.get('result'))[:120]}")
    return str(res.get("result", "")), res.get("total_cost_usd")


ASKERS: dict[str, Callable[[Voter, str, float], tuple[str, float | None]]] = {"openai": ask_openai,
                                                                             "claude": ask_claude}


def _one(v: Voter, prompt: str, timeout_s: float) -> Vote:
    t0 = time.perf_counter()
    try:
        text, cost = ASKERS[v.kind](v, prompt, timeout_s)
        vote, params, reason = parse_vote(text)
        return Vote(v.name, vote, params, reason, (time.perf_counter() - t0) * 1000, cost)
    except Exception as exc:  # noqa: BLE001 - fail-safe: any failure is a HOLD with its cause
        kind = "timeout" if "timeout" in type(exc).__name__.lower() or isinstance(exc, subprocess.TimeoutExpired) \
            else str(exc) if isinstance(exc, (ValueError, RuntimeError)) else type(exc).__name__
        return Vote(v.name, HOLD, {}, None, (time.perf_counter() - t0) * 1000, None, kind)


def votes_needed(n_voters: int, supermajority: float) -> int:
    """ENTER votes needed: ceil(supermajority x n - 0.01), so a 2/3 written as 0.6667 needs 2 of 3, 67 of 100."""
    import math

    return max(1, math.ceil(supermajority * n_voters - 0.01))


def decide(votes: list[Vote], n_voters: int, supermajority: float) -> Decision:
    """Apply the supermajority rule to the votes (missing voters count as HOLD); average the agreeing params."""
    enters = [v for v in votes if v.vote == ENTER]
    need = votes_needed(n_voters, supermajority)
    ok = n_voters > 0 and len(enters) >= need
    params: dict = {}
    if ok:
        keys = sorted({k for v in enters for k, x in v.params.items() if isinstance(x, (int, float))})
        for k in keys:
            xs = [float(v.params[k]) for v in enters if isinstance(v.params.get(k), (int, float))]
            params[k] = sum(xs) / len(xs)
    errs = sum(1 for v in votes if v.error)
    summary = (f"consensus {'ENTER' if ok else 'HOLD'}: {len(enters)}/{n_voters} ENTER "
               f"(need {need})" + (f", {errs} failed as HOLD" if errs else ""))
    return Decision(ok, tuple(votes), params, summary)


def vote_on(candidate: dict, voters: list[Voter], *, supermajority: float = 0.6667, timeout_s: float = 30.0,
            lessons: list[dict] | None = None) -> Decision:
    """Ask every voter in parallel (each bounded by ``timeout_s``) and decide.

    Returns
    -------
    Decision
        ``off=True`` and ``enter=True`` (the gate does not block) when no voter is configured.
    """
    if not voters:
        return Decision(True, (), {}, "consensus: off (no model configured)", off=True)
    prompt = build_prompt(candidate, lessons)
    with ThreadPoolExecutor(max_workers=len(voters)) as ex:
        votes = list(ex.map(lambda v: _one(v, prompt, timeout_s), voters))
    return decide(votes, len(voters), supermajority)


def record(conn, decision: Decision, *, run_id: str, account_id: str, ts, strategy: str, symbol: str, side: str,
           source: str = "live") -> None:
    """Write one ``consensus_votes`` row per vote. Does not commit."""
    from psycopg.types.json import Jsonb

    for v in decision.votes:
        conn.execute(
            """INSERT INTO consensus_votes (run_id, account_id, ts, strategy, symbol, side, voter, vote, params, reason,
                                            latency_ms, cost_usd, error, decided, source)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (run_id, account_id, ts, strategy, symbol, side, v.voter, v.vote, Jsonb(v.params), v.reason, v.latency_ms,
             v.cost_usd, v.error, "enter" if decision.enter else "hold", source))


def recorded_decision(conn, *, account_id: str, ts, strategy: str, symbol: str, n_voters: int,
                      supermajority: float) -> Decision:
    """``--consensus replay``: decide from the votes recorded for this candidate (latest recording wins);
    HOLD with reason when there are none."""
    rows = conn.execute(
        """SELECT DISTINCT ON (voter) voter, vote, params, reason, latency_ms, cost_usd, error FROM consensus_votes
            WHERE account_id=%s AND ts=%s AND strategy=%s AND symbol=%s AND source='live'
            ORDER BY voter, recorded_at DESC""", (account_id, ts, strategy, symbol)).fetchall()
    if not rows:
        return Decision(False, (), {}, "consensus HOLD: no recorded votes for this candidate")
    votes = [Vote(r["voter"], r["vote"], dict(r["params"] or {}), r["reason"], r["latency_ms"],
                  float(r["cost_usd"]) if r["cost_usd"] is not None else None, r["error"]) for r in rows]
    return decide(votes, max(n_voters, len(votes)), supermajority)
