"""Thin MCP servers over ATS procedures (ats-postgres, ats-docs). Tools delegate to `ats.procedures`."""
