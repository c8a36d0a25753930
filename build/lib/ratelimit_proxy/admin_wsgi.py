"""WSGI target for granian: the admin API and metrics (``ratelimit_proxy.admin_wsgi:app``)."""

from __future__ import annotations

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.config import load

app = create_admin_app(load(), reload=load)
