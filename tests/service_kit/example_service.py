"""A small service built only from the kit, as every real service is; the kit's tests drive it."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from service_kit.app import ServiceKit
from service_kit.auth import Auth, current_auth, require_role
from service_kit.cli import run, service_cli, settings_loader
from service_kit.db import Database, current_db
from service_kit.errors import ExternalAPIError, NotFoundError
from service_kit.index import ServiceDocs
from service_kit.openapi import ApiDocument, Strict
from service_kit.settings import DatabaseSettings, LoggingSettings, SentrySettings, ServerSettings

ITEMS = {1: "first", 2: "second"}
DOCS = ServiceDocs("Example service", "Items <and> greetings: the kit's template.", "Service kit (service_kit/)")


@dataclass(frozen=True)
class ExampleSettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    greeting: str = "hello"


api = ApiDocument(
    "Example service",
    security={"bearer": {"type": "http", "scheme": "bearer", "description": "vbx_… API token"}},
)
bp = Blueprint("items", __name__)


def create_app(settings: ExampleSettings) -> Flask:
    app = Flask(__name__)
    ServiceKit.from_settings("example", settings, docs=DOCS).init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    Auth(db).init_app(app)
    api.init_app(app)
    app.register_blueprint(bp)
    return app


class Item(BaseModel):
    id: int
    name: str


class NewItem(Strict):
    name: str = Field(min_length=1, max_length=200)


class Greeting(Strict):
    text: str = Field(min_length=1, max_length=200)


class Ok(BaseModel):
    ok: bool


@bp.get("/items/<int:item_id>")
@api.validate(responses={200: Item}, tags=("items",))
def get_item(item_id: int) -> ResponseReturnValue:
    if item_id not in ITEMS:
        raise NotFoundError(f"No item {item_id}.")
    return jsonify({"id": item_id, "name": ITEMS[item_id]})


@bp.post("/items")
@api.validate(json=NewItem, responses={201: NewItem}, tags=("items",))
def create_item() -> ResponseReturnValue:
    body: NewItem = request.context.json  # type: ignore[attr-defined]
    return jsonify({"name": body.name}), 201


@bp.post("/boom")
def boom() -> ResponseReturnValue:
    body = request.get_json(silent=True) or {}
    raise RuntimeError(f"exploded while handling password={body.get('password')}")


@bp.get("/upstream")
def upstream() -> ResponseReturnValue:
    raise ExternalAPIError("The payments provider timed out.", timeout=True)


@bp.post("/admin/greeting")
@require_role("admin")
@api.validate(json=Greeting, responses={200: Greeting}, tags=("admin",), security="bearer")
def set_greeting() -> ResponseReturnValue:
    body: Greeting = request.context.json  # type: ignore[attr-defined]
    current_auth().record("greeting.update", "greeting", "default", before={"text": "hello"}, after=body.model_dump())
    current_db().session.commit()
    return jsonify(body.model_dump())


@bp.get("/agent-only")
@require_role("agent")
@api.validate(responses={200: Ok}, tags=("items",), security="bearer")
def agent_only() -> ResponseReturnValue:
    return jsonify({"ok": True})


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
