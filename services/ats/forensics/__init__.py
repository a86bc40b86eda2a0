"""Deterministic procedures behind the operator's daily reading: forensics (investigate, health summary,
blocked signals), reports (investigation, health check, 24 h, weekly, watchlist), the MD5-drift knowledge base
and plans. Every procedure is a plain Python function; the CLI (`ats ...`) and the MCP tools call it, and an
agent adds judgement on top of its output.
"""
