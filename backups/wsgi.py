"""WSGI entry point for granian: `backups.wsgi:app`."""

from __future__ import annotations

from backups.cli import load_settings
from backups.service import create_app

app = create_app(load_settings())
