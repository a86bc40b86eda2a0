"""ATS: a PostgreSQL-backed automated trading core operated with Claude Code.

Subpackages (one job each):
    db           connection (embedded pgserver | ATS_DATABASE_URL), migrations, config store
    market_data  loaders, resampling, coverage, anomalies
    strategies, regime, risk, execution, engine, portfolio   the decision path
    forensics    investigate, health check, 24h / weekly / watchlist reports, blocked signals, appendix SQL
    knowledge    KB registry and builder, docs index and records (lessons, reports), plans
    ops          headless runner, cron/systemd rendering, `ats mcp` (serving mcp_servers/)
"""

__version__ = "0.1.0"
