"""``create_app(settings)``: the flag service's Flask app (admin API, OFREP, SDK endpoints)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from flags_service import admin, ofrep, sdk_api
from flags_service.api import api
from flags_service.metrics import EnvironmentGaugeCollector, ScalarGaugeCollector
from flags_service.service import FlagsService
from flags_service.settings import FlagsSettings
from service_kit.app import ServiceKit
from service_kit.auth import Auth
from service_kit.db import Database
from service_kit.index import ServiceDocs

MIGRATIONS = Path(__file__).with_name("migrations")
DOCS = ServiceDocs(
    "Feature flags",
    "Flags, segments and rollouts per environment: the admin API, OFREP, and the snapshots the SDKs poll.",
    "Feature flags (flags_service/)",
    "flags.md",
)


def create_app(settings: FlagsSettings | None = None) -> Flask:
    settings = settings or FlagsSettings()
    app = Flask(__name__)
    kit = ServiceKit.from_settings("flags", settings, docs=DOCS)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    auth = Auth(db)
    auth.init_app(app)
    service = FlagsService(settings, kit, db, auth)
    app.extensions["flags"] = service
    service.ensure_environments()
    kit.metrics.add_scrape_collector(
        EnvironmentGaugeCollector(
            "flags_snapshot_version", "Current snapshot version per environment.", service.snapshot_versions
        )
    )
    kit.metrics.add_scrape_collector(
        EnvironmentGaugeCollector(
            "flags_last_change_timestamp_seconds",
            "When a flag or segment change last moved the environment's snapshot (from the database; absent "
            "until the first change): dashboards draw flag-change annotations at that moment.",
            service.last_changes,
        )
    )
    kit.metrics.add_scrape_collector(
        EnvironmentGaugeCollector(
            "flags_stale_flags", "Flags past expiry or not evaluated lately, per environment.", service.stale_counts
        )
    )
    # Without Redis the service still serves, from the database: degraded, never a failed readiness.
    if service.cache.uses_redis:
        kit.health.add_check("redis", service.cache.readiness)
        kit.metrics.add_scrape_collector(
            ScalarGaugeCollector(
                "flags_redis_connected",
                "1 while the answering process follows snapshot changes over Redis; 0: serving from the database.",
                lambda: float(service.cache.redis_connected),
            )
        )
    api.init_app(app)
    ofrep.ofrep_api.init_app(app)
    app.register_blueprint(admin.bp)
    app.register_blueprint(ofrep.bp)
    app.register_blueprint(sdk_api.bp)
    return app
