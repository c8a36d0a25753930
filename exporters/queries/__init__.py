"""Query insights for PostgreSQL: pg_stat_statements as bounded top-K series, and index suggestions."""
