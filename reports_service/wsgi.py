"""WSGI target for granian; ``serve`` has already validated the settings and migrated the database."""

from reports_service.app import create_app
from reports_service.cli import load_settings

app = create_app(load_settings())
