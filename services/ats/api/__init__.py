"""The FastAPI dashboard: pages (Assets, Analytics, Data Hub, Knowledge base, Reports and plans, Backtests, Events)
and the JSON API under ``/api`` behind them. Entry point: ``create_app``; command: ``ats dashboard``."""
