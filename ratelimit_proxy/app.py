"""The proxy app (port 8080): ``create_app`` wires the kit, the shared runtime and the upstream client
around the data path, ``Gateway`` (ratelimit_proxy/gateway.py), which serves every path and method."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from prometheus_client import CollectorRegistry

from ratelimit_proxy.gateway import Gateway
from ratelimit_proxy.key_ban_storage import Store
from ratelimit_proxy.limiter_storage import LimiterBackend
from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.settings import ProxySettings
from service_kit.app import ServiceKit


def create_app(
    settings: ProxySettings,
    *,
    registry: CollectorRegistry | None = None,
    limiter: LimiterBackend | None = None,
    store: Store | None = None,
    reload: Callable[[], ProxySettings] | None = None,
) -> Flask:
    """The proxy. ``reload`` reads the config file again (tier reloads announced by the admin API)."""
    app = Flask("ratelimit_proxy", static_folder=None)  # every path belongs to the upstream
    kit = ServiceKit(
        "ratelimit-proxy",
        sentry=settings.sentry,
        logging_settings=settings.logging,
        log_requests=settings.log_proxied_requests,
        endpoints=False,
        database=settings.database,
    )
    kit.init_app(app)
    runtime = Runtime(settings, registry or kit.metrics.registry, limiter, store, reload)
    runtime.listen_for_changes()
    runtime.start_lease_returns()
    if runtime.usage is not None:
        kit.statements.instrument(runtime.usage.writer.engine, "usage")
        runtime.usage.start()
    app.extensions["ratelimit_proxy"] = runtime
    app.wsgi_app = Gateway(runtime, runtime.pools, kit)  # type: ignore[method-assign]
    return app
