"""VibeLux flags SDK for Python services: local evaluation with the service's own engine.

Importable on its own (needs only ``requests``, ``mmh3`` and ``cbor2``); ``flags_service.sdk.flask``,
``flags_service.sdk.openfeature`` and ``flags_service.sdk.prometheus`` are optional integrations that import
Flask / openfeature-sdk / prometheus-client.
"""

from flags_service.sdk.client import NOT_READY, READY, STALE, ClientEvent, Details, FlagsClient

__all__ = ["NOT_READY", "READY", "STALE", "ClientEvent", "Details", "FlagsClient"]
