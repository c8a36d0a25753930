from service_kit.db import run_migrations_env

run_migrations_env()
