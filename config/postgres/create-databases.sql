-- docker-compose.production.yml: one database per service on the shared PostgreSQL (each service keeps its own
-- migrations and alembic version table). Run once by the postgres image on an empty data directory.
CREATE DATABASE tickets OWNER vibelux;
CREATE DATABASE flags OWNER vibelux;
CREATE DATABASE ratelimit_proxy OWNER vibelux;
CREATE DATABASE reports OWNER vibelux;
