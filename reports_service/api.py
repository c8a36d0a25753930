"""The reports service's OpenAPI document: its pydantic models (reports_service.schemas) validate each
request and are served, with the kit's routes, at ``/openapi.json``."""

from __future__ import annotations

from service_kit.openapi import ApiDocument

BEARER = "bearer"
api = ApiDocument(
    "VibeLux reports",
    "Reports over the platform data and the API usage rollups (CSV, JSON, charts) and scheduled PDF reports.",
    security={
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "vbx_… API token: agents build reports, viewers and services run the ones shared with them",
        }
    },
)
