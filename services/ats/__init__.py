"""ATS: a PostgreSQL-backed automated trading core operated with Claude Code.

Subpackages (one job each):
    db           connection (embedded pgserver | ATS_DATABASE_URL), migrations, config store
    market_data  loaders, resampling, coverage, anomalies
    strategies, regime, risk, execution, engine, portfolio   the decision path
    procedures   deterministic cores that agents call (investigate, health check, reports, KB, docs)
    ops          headless runner, cron/systemd rendering
"""

__version__ = "0.1.0"
