"""A small service built only from the kit, as every real service is; the kit's tests drive it."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue

from service_kit.app import ServiceKit
from service_kit.auth import Auth, require_role
from service_kit.cli import run, service_cli, settings_loader
from service_kit.db import Database
from service_kit.errors import ExternalAPIError, NotFoundError, ValidationError
from service_kit.settings import DatabaseSettings, LoggingSettings, SentrySettings, ServerSettings

ITEMS = {1: "first", 2: "second"}


@dataclass(frozen=True)
class ExampleSettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    greeting: str = "hello"


def create_app(settings: ExampleSettings) -> Flask:
    app = Flask(__name__)
    kit = ServiceKit.from_settings("example", settings)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    auth = Auth(db)
    auth.init_app(app)
    app.register_blueprint(items_blueprint(auth, db))
    return app


def items_blueprint(auth: Auth, db: Database) -> Blueprint:
    blueprint = Blueprint("items", __name__)

    @blueprint.get("/items/<int:item_id>")
    def get_item(item_id: int) -> ResponseReturnValue:
        if item_id not in ITEMS:
            raise NotFoundError(f"No item {item_id}.")
        return jsonify({"id": item_id, "name": ITEMS[item_id]})

    @blueprint.post("/items")
    def create_item() -> ResponseReturnValue:
        body = request.get_json(silent=True) or {}
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise ValidationError({"name": "is required and must be a non-empty string"})
        return jsonify({"name": body["name"]}), 201

    @blueprint.post("/boom")
    def boom() -> ResponseReturnValue:
        body = request.get_json(silent=True) or {}
        raise RuntimeError(f"exploded while handling password={body.get('password')}")

    @blueprint.get("/upstream")
    def upstream() -> ResponseReturnValue:
        raise ExternalAPIError("The payments provider timed out.", timeout=True)

    @blueprint.post("/admin/greeting")
    @require_role("admin")
    def set_greeting() -> ResponseReturnValue:
        body = request.get_json(silent=True) or {}
        auth.record("greeting.update", "greeting", "default", before={"text": "hello"}, after=body)
        db.session.commit()
        return jsonify(body)

    @blueprint.get("/agent-only")
    @require_role("agent")
    def agent_only() -> ResponseReturnValue:
        return jsonify({"ok": True})

    return blueprint


load_settings = settings_loader("example", ExampleSettings, "EXAMPLE", "config/example.yml")
cli = service_cli(
    "example",
    load_settings,
    ExampleSettings,
    "EXAMPLE",
    "tests.service_kit.example_wsgi:app",
    database_url=lambda settings: settings.database.url,
)

if __name__ == "__main__":
    run(cli)
