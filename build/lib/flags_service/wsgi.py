"""WSGI target for granian; ``serve`` has already validated the settings and migrated the database."""

from flags_service.app import create_app
from flags_service.cli import load_settings

app = create_app(load_settings())
