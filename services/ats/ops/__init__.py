"""Operations: headless Claude Code runs (`ats run`, `.claude-cron/run.sh`) and their schedule (`ats cron`).

Modules:
    tasks     the headless tasks: slash command, explicit tool allowlist, deterministic core, limits
    headless  the runner: lock, timeout, MCP config, `claude --print`, fallback to the core, system_events row
    schedule  `.claude-cron/schedule.toml` + `.claude-cron/prompts/*.md` -> systemd units and crontab lines
    cli       `ats run`, `ats cron render|install|list`
"""
