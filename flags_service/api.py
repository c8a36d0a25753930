"""The admin and SDK APIs' OpenAPI document: its pydantic models validate each request and are served,
with the OFREP document (``flags_service.ofrep``), at ``/openapi.json``."""

from __future__ import annotations

from service_kit.openapi import ApiDocument

ADMIN_TOKEN, SDK_KEY = "bearer", "sdk_key"
api = ApiDocument(
    "VibeLux feature flags",
    "Admin API (flags, segments, SDK keys), the server SDKs' snapshot and stream, and OFREP.",
    security={
        ADMIN_TOKEN: {"type": "http", "scheme": "bearer", "description": "vbx_… API token: viewers read, admins write"},
        SDK_KEY: {"type": "http", "scheme": "bearer", "description": "fsk_… server SDK key (X-API-Key works too)"},
    },
)
