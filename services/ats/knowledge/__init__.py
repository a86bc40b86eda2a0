"""Knowledge: what the project knows about itself, kept current.

- :mod:`.kb`            the MD5-drift knowledge base registry (``kb_registry``, ``kb/**.md`` front matter)
- :mod:`.kb_builder`    the deterministic article builder (ast: docstrings, public API, imports, tables)
- :mod:`.docs_index`    hybrid docs search (BM25 + embeddings, reciprocal rank fusion) over kb/, plans/, reports/
- :mod:`.docs_records`  lessons and report records written by the narrow MCP write tools
- :mod:`.plans`         approved plans saved verbatim to ``plans/``
- :mod:`.cli`           ``ats kb ...``, ``ats docs ...``, ``ats plan ...``
"""
