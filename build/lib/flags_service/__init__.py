"""Feature flag service: the pure engine (``engine``), the service (``app``) and the Python SDK (``sdk``).

Kept free of imports so ``flags_service.sdk`` and ``flags_service.engine`` load without Flask or SQLAlchemy.
"""
