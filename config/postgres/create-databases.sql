-- docker-compose.production.yml: one database per service on the shared PostgreSQL (each service keeps its own
-- migrations and alembic version table). Run once by the postgres image on an empty data directory.
CREATE DATABASE tickets OWNER vibelux;
CREATE DATABASE flags OWNER vibelux;
CREATE DATABASE ratelimit_proxy OWNER vibelux;
CREATE DATABASE reports OWNER vibelux;
-- The query exporter's view of every database's statements (exporters/queries; the server preloads the library).
-- A data directory made before this line: run it once by hand in the tickets database.
\connect tickets
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
