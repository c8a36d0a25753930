"""Structured JSON logs: one object per line, scrubbed like Sentry events."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from service_kit.scrub import DEFAULT_SCRUBBER

# LogRecord attributes that are plumbing, not data worth a field of its own.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(DEFAULT_SCRUBBER.scrub(entry), default=str, separators=(",", ":"))


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is emitted (test capture swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    """Send every logger to stdout, once per process, as JSON lines (or plain text for local debugging)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_service_kit", False):
            root.removeHandler(handler)
    handler = _StdoutHandler()
    handler._service_kit = True  # type: ignore[attr-defined]
    handler.setFormatter(JSONFormatter(service) if as_json else logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # Werkzeug's own access log duplicates the request line the kit writes.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
