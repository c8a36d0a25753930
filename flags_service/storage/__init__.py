"""Flag storage in SQL (SQLite by default, PostgreSQL works), one module per aggregate.

``tables``: the schema (Alembic migrates it); ``errors``: what a store refuses, as the kit's API errors;
``environments``: snapshot versions and the snapshot an SDK downloads; ``flags``: flag documents, their
versions, history and rollback; ``segments``; ``sdk_keys``; ``evaluation_stats``: evaluation counts and
stale flags. Every store works over one SQLAlchemy session and never commits: the caller does.

Every flag write bumps the flag's version (optimistic concurrency: ``UPDATE ... WHERE version = :expected``)
and appends the full document to ``flags_flag_versions``, so history, diffs and rollback need no other
bookkeeping. Each environment has a snapshot version that moves only when something it serves changed;
SDKs and the OFREP bulk ETag key off it.
"""
