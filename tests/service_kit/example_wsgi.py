"""WSGI target for granian; ``serve`` has already validated the settings and migrated the database."""

from tests.service_kit.example_service import create_app, load_settings

app = create_app(load_settings())
