"""WSGI entry point for granian: `tickets_app.wsgi:app`."""

from __future__ import annotations

from tickets_app.app import create_app
from tickets_app.cli import load_settings

app = create_app(load_settings())
