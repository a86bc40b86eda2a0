"""Helpers for the docs-search tests (knowledge and the ats-docs MCP server): a small corpus and the local model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

DOCS = {
    "kb/risk/circuit-breakers.md": """\
        # Circuit breakers

        Breakers halt new entries; exits keep working. Every trip and reset is a system_events row.

        ## Daily drawdown

        The daily_drawdown breaker trips when equity falls more than 5% below the equity at 00:00 UTC.
        While it is tripped the engine refuses to open positions and records blocked_signals with gate
        breaker:daily_drawdown. It resets at the next UTC day.

        ## Market volatility

        The market_volatility breaker watches the BTC 1h range; above 6% it blocks entries on every symbol.
        """,
    "kb/data/candles.md": """\
        # Candles

        OHLCV candles live in the candles table, one row per symbol, timeframe, open_time and source.

        ## Loading

        ```sql
        # this line is inside a fence and is not a heading
        SELECT symbol, count(*) FROM candles GROUP BY symbol;

        -- a blank line above must not split the fence
        ```

        Loaders run one transaction per file.
        """,
    "plans/2021-05-20-position-sizing.md": """\
        # Plan: smaller positions in high volatility

        ## Motivation

        Kelly fraction sizing over-sized positions during the May 2021 crash.

        ## Steps

        1. Cap the Kelly fraction at 0.25.
        2. Halve trade_amount_usd when the regime is strong_bear.
        """,
    "reports/investigations/2021-05-19_BTCUSDT.md": """\
        # Investigation BTCUSDT 2021-05-19

        ## Summary

        Three BTCUSDT entries were blocked by breaker:daily_drawdown and breaker:market_volatility during the crash.
        Realized P&L of the run reconciles with the hourly portfolio snapshots.
        """,
    ".claude/agents/investigator.md": """\
        ---
        name: investigator
        ---
        # Investigator agent

        Calls mcp__ats-postgres__investigate_symbol, reads the result and writes the report.
        """,
    "CLAUDE.md": """\
        # CLAUDE.md

        ## Anti-patterns

        Never sum net_pnl_daily_usd across snapshots: it is a running cumulative since 00:00 UTC.
        Wrong: SELECT sum(net_pnl_daily_usd). Right: the difference of equity_usd between two snapshots.
        """,
}


def write_corpus(root: Path, docs: dict[str, str] = DOCS) -> Path:
    """Write the corpus under ``root`` (plus one file outside the corpus); returns ``root``."""
    for rel, text in docs.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    (root / "services").mkdir(exist_ok=True)
    (root / "services" / "secret.md").write_text("# not in the corpus\n")
    return root


def load_embedder_or_skip():
    """The local all-MiniLM-L6-v2 embedder, or skip the test with the reason it is unavailable."""
    from ats.knowledge import docs_index as di

    emb, note = di.load_embedder("")
    if emb is None:
        pytest.skip(f"embedding model unavailable: {note}")
    return emb
