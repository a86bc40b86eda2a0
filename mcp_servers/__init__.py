"""Thin MCP servers over ATS procedures (ats-postgres, ats-docs). Tools delegate to `ats.forensics`, `ats.knowledge` and
`ats.db.readonly_query`."""
