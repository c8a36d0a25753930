"""``ServiceKit``: the one resource a service's ``create_app`` installs to get the platform's behaviour.

It wires request ids, the JSON request log, RED metrics and `/metrics`, `/healthz` and `/readyz`, the index
at `/` (given the service's docs), the JSON error shape and Sentry, so each service's factory only adds its
own blueprints and resources.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

import sentry_sdk
from flask import Flask, Response, g, request

from service_kit import __version__
from service_kit.errors import register_error_handlers
from service_kit.health import Health
from service_kit.index import ServiceDocs, install_index
from service_kit.logs import configure_logging
from service_kit.metrics import Metrics, elapsed_seconds, route_template
from service_kit.openapi import BoundedIntegerConverter
from service_kit.sentry import init_sentry
from service_kit.settings import DatabaseSettings, LoggingSettings, SentrySettings
from service_kit.statements import StatementTimer

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
request_log = logging.getLogger("service_kit.request")


class ServiceKit:
    def __init__(
        self,
        service: str,
        version: str = __version__,
        *,
        sentry: SentrySettings | None = None,
        logging_settings: LoggingSettings | None = None,
        max_body_bytes: int | None = None,
        log_requests: bool = True,
        endpoints: bool = True,
        database: DatabaseSettings | None = None,
        docs: ServiceDocs | None = None,
    ) -> None:
        self.service = service
        self.version = version
        self.sentry_settings = sentry or SentrySettings()
        self.logging_settings = logging_settings or LoggingSettings()
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests
        # False for an app that must not claim paths of its own (a proxy): /metrics and the health
        # endpoints are then served by a companion app (e.g. an admin app on another port).
        self.endpoints = endpoints
        # What `/` says the service is and where it is documented (service_kit/index.py); None: no index.
        self.docs = docs
        self.metrics = Metrics(service, version)
        self.health = Health(service)
        # Every engine the service uses is timed by this one (Database.init_app attaches it to its own).
        self.statements = StatementTimer(self.metrics.registry, service, database or DatabaseSettings())
        self.sentry_enabled = False

    @classmethod
    def from_settings(cls, service: str, settings: Any, **options: Any) -> ServiceKit:
        """A kit configured from the sections every service's settings share (sentry, logging, server,
        database)."""
        return cls(
            service,
            sentry=settings.sentry,
            logging_settings=settings.logging,
            max_body_bytes=settings.server.max_body_bytes,
            database=getattr(settings, "database", None),
            **options,
        )

    def init_app(self, app: Flask) -> None:
        app.extensions["service_kit"] = self
        app.url_map.converters["int"] = BoundedIntegerConverter  # before any route is added
        if self.max_body_bytes is not None:
            app.config["MAX_CONTENT_LENGTH"] = self.max_body_bytes
        configure_logging(self.service, self.logging_settings.level, self.logging_settings.json)
        self.sentry_enabled = init_sentry(self.sentry_settings, self.service, self.version)
        register_error_handlers(app)
        if self.endpoints:
            self.metrics.init_app(app)
            self.health.init_app(app)
            if self.docs is not None:
                install_index(app, self.service, self.docs)
        app.before_request(self._before_request)
        app.after_request(self._after_request)

    def _before_request(self) -> None:
        g.request_started = time.perf_counter()
        g.request_id = request_id(request.headers.get("X-Request-ID", ""))
        if self.sentry_enabled:
            sentry_sdk.get_isolation_scope().set_tag("request_id", g.request_id)

    def _after_request(self, response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        self.record_request(
            request.method, route_template(), request.path, response.status_code, elapsed_seconds(), g.get("request_id")
        )
        return response

    def record_request(
        self, method: str, route: str, path: str, status: int, seconds: float, request_id: str | None
    ) -> None:
        """RED metrics and the request log line of one request (also for a WSGI data path beside Flask)."""
        self.metrics.observe(method, route, status, seconds)
        if self.log_requests:
            request_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_seconds": round(seconds, 6),
                },
            )


def request_id(incoming: str) -> str:
    """The caller's X-Request-ID when it is a plain token of sane length, otherwise a new one."""
    return incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(16)


def current_kit(app: Flask) -> ServiceKit:
    kit: ServiceKit = app.extensions["service_kit"]
    return kit
