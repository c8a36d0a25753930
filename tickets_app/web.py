"""Staff web UI (filled in below)."""

from __future__ import annotations

from flask import Blueprint

web = Blueprint("tickets_web", __name__, template_folder="templates", static_folder="static")
