"""Forensics: the deterministic cores behind the operator's daily reading.

- :mod:`.queries`      read-only audit-trail queries: ``investigate_symbol``, ``health_summary``, ``blocked_signals``
- :mod:`.investigate`  the investigation report (markdown + JSON) of one symbol
- :mod:`.health`       the post-trade adherence audit and health-check report
- :mod:`.periodic`     the 24 h, weekly and watchlist reports
- :mod:`.sqlfmt`       appendix SQL (queries recorded with their parameters), markdown tables, money formatting
- :mod:`.cli`          ``ats investigate``, ``ats health-check``, ``ats report ...``

Every core is a plain Python function; the CLI and the MCP tools (``mcp_servers/postgres.py``) call it, and an
agent adds judgement on top of its output.
"""
