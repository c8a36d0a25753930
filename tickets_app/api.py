"""REST API under /api/v1: tickets, messages, events, merge, attachments, templates, categories, SLA."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from service_kit.auth import current_auth
from service_kit.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from tickets_app import alerts
from tickets_app.access import current_actor, require_admin, require_staff
from tickets_app.attachments import accept_upload
from tickets_app.business_hours import Calendar, CalendarError
from tickets_app.desk import Actor, template_errors
from tickets_app.listing import list_tickets, parse_list_args
from tickets_app.models import Attachment, BusinessCalendar, Category, Message, SlaPolicy, Template, Ticket
from tickets_app.resources import db_session, desk_of, now, resources
from tickets_app.serialize import attachment_json, event_json, message_json, ticket_json
from tickets_app.sla import Policy

api = Blueprint("tickets_api", __name__, url_prefix="/api/v1")


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError({"body": "expected a JSON object"})
    refuse_nul(body)
    return body


def refuse_nul(value: Any, path: str = "") -> None:
    """A 422 naming the first field whose text (or key) holds NUL: valid JSON (``\\u0000``), but
    PostgreSQL text cannot store it, so it is refused on every backend alike."""
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError({path or "body": "must not contain NUL characters"})
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key, path or "body")
            refuse_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_nul(item, f"{path}[{index}]")


# -- tickets ---------------------------------------------------------------------------------------


@api.get("/tickets")
def list_view() -> ResponseReturnValue:
    actor = current_actor()
    parsed, size, cursor = parse_list_args(request.args)
    page = list_tickets(db_session(), desk_of().index, actor, parsed, size, cursor)
    tags = desk_of().tags_of(db_session(), [t.id for t in page.tickets])
    data = [
        ticket_json(t, tags.get(t.id, []), actor, resources().at_risk, now(), page.snippets.get(t.id))
        for t in page.tickets
    ]
    links = {}
    if page.next_cursor:
        args = {**request.args.to_dict(), "page[cursor]": page.next_cursor}
        links["next"] = url_for("tickets_api.list_view", **args)  # type: ignore[arg-type]
    return jsonify({"data": data, "meta": {"has_more": page.next_cursor is not None}, "links": links})


@api.post("/tickets")
def create_view() -> ResponseReturnValue:
    actor = current_actor()
    ticket = desk_of().create_ticket(db_session(), actor, json_body(), now())
    if actor.is_staff:
        _audit_ticket("ticket.create", ticket, None, {"customer": ticket.customer_id})
    db_session().commit()
    return _ticket_response(ticket, actor, status=201)


@api.get("/tickets/<int:ticket_id>")
def get_view(ticket_id: int) -> ResponseReturnValue:
    actor = current_actor()
    ticket = desk_of().get_ticket(db_session(), actor, ticket_id)
    return _ticket_response(ticket, actor)


@api.patch("/tickets/<int:ticket_id>")
@api.post("/tickets/<int:ticket_id>/messages")
def update_view(ticket_id: int) -> ResponseReturnValue:
    """Fields and a message in one request; POST …/messages takes the message at the top level."""
    actor = current_actor()
    body = json_body()
    if request.method == "POST":
        fields = body.pop("fields", {})
        if not isinstance(fields, dict):
            raise ValidationError({"fields": "expected an object"})
        body = {**fields, "message": body}
    desk = desk_of()
    ticket = desk.get_ticket(db_session(), actor, ticket_id, for_update=True)
    change = desk.update_ticket(db_session(), actor, ticket, body, now())
    if actor.is_staff and change.after:
        _audit_ticket("ticket.update", ticket, change.before, change.after)
    db_session().commit()
    payload: dict[str, Any] = {"ticket": _ticket_data(ticket, actor)}
    if change.message is not None:
        payload["message"] = message_json(change.message, attachment_url)
    if change.follow_up is not None:
        payload["follow_up"] = _ticket_data(change.follow_up, actor)
    status = 201 if request.method == "POST" else 200
    return jsonify(payload), status


@api.get("/tickets/<int:ticket_id>/events")
def events_view(ticket_id: int) -> ResponseReturnValue:
    actor = require_staff()
    ticket = desk_of().get_ticket(db_session(), actor, ticket_id)
    return jsonify({"data": [event_json(e) for e in desk_of().events(db_session(), ticket)]})


@api.get("/tickets/<int:ticket_id>/sla")
def sla_view(ticket_id: int) -> ResponseReturnValue:
    """The SLA clock replayed now, per metric: state, deadline, elapsed and remaining time, breaches (staff)."""
    actor = require_staff()
    ticket = desk_of().get_ticket(db_session(), actor, ticket_id)
    return jsonify(desk_of().sla_state(db_session(), ticket, now()).as_dict())


@api.post("/tickets/<int:ticket_id>/merge")
def merge_view(ticket_id: int) -> ResponseReturnValue:
    actor = require_staff()
    body = json_body()
    target_id = body.get("target_id")
    if not isinstance(target_id, int) or isinstance(target_id, bool):
        raise ValidationError({"target_id": "required, the id of the ticket to merge into"})
    desk = desk_of()
    source = desk.get_ticket(db_session(), actor, ticket_id, for_update=True)
    try:
        target = desk.get_ticket(db_session(), actor, target_id, for_update=True)
    except NotFoundError:
        raise ValidationError({"target_id": f"no ticket {target_id}"}) from None
    desk.merge(db_session(), actor, source, target, now())
    _audit_ticket("ticket.merge", source, None, {"merged_into": target.id})
    db_session().commit()
    return _ticket_response(target, actor)


@api.get("/tickets/<int:ticket_id>/templates/<int:template_id>")
def render_template_view(ticket_id: int, template_id: int) -> ResponseReturnValue:
    actor = require_staff()
    ticket = desk_of().get_ticket(db_session(), actor, ticket_id)
    template = _get_or_404(Template, template_id)
    return jsonify({"template_id": template.id, "body": desk_of().render_template(template, ticket, actor)})


def _ticket_data(ticket: Ticket, actor: Actor) -> dict[str, Any]:
    tags = desk_of().tags_of(db_session(), [ticket.id]).get(ticket.id, [])
    return ticket_json(ticket, tags, actor, resources().at_risk, now())


def _ticket_response(ticket: Ticket, actor: Actor, status: int = 200) -> ResponseReturnValue:
    data = _ticket_data(ticket, actor)
    data["messages"] = [message_json(m, attachment_url) for m in desk_of().thread(db_session(), actor, ticket)]
    return jsonify(data), status


def _audit_ticket(action: str, ticket: Ticket, before: Any, after: Any) -> None:
    current_auth().record(action, "ticket", ticket.id, before=before, after=after, session=db_session())


# -- attachments -------------------------------------------------------------------------------------


def attachment_url(attachment: Attachment) -> str:
    return url_for("tickets_api.download_attachment", attachment_id=attachment.id)


@api.post("/attachments")
def upload_attachment() -> ResponseReturnValue:
    """Step one of two: store the file, return its token; a message then attaches it."""
    actor = current_actor()
    upload = request.files.get("file")
    if upload is None:
        raise ValidationError({"file": "required, a multipart form field named file"})
    attachment = store_upload(actor, upload, "file")
    db_session().commit()
    return jsonify(attachment_json(attachment, attachment_url)), 201


def store_upload(actor: Actor, upload: FileStorage, field: str) -> Attachment:
    found = resources()
    limits = (found.settings.attachments.max_file_bytes, found.settings.attachments.max_user_bytes_per_day)
    data = upload.read(limits[0] + 1)
    return accept_upload(
        db_session(), found.attachment_store, actor.id, upload.filename or "", data, limits, found.scanner, now(), field
    )


@api.get("/attachments/<attachment_id>")
def download_attachment(attachment_id: str) -> ResponseReturnValue:
    return attachment_response(current_actor(), attachment_id)


def attachment_response(actor: Actor, attachment_id: str) -> Response:
    """Served only to who may see its message: internal-note files are as hidden as the note (404)."""
    attachment = db_session().get(Attachment, attachment_id)
    if attachment is None or not _may_see(actor, attachment):
        raise NotFoundError("attachment not found")
    try:
        data = resources().attachment_store.read(attachment.id)
    except FileNotFoundError:
        raise NotFoundError("attachment not found") from None
    response = Response(data, headers={"Content-Type": attachment.content_type})
    response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(attachment.filename)}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _may_see(actor: Actor, attachment: Attachment) -> bool:
    if attachment.message_id is None:
        return attachment.uploader_id == actor.id
    message = db_session().get(Message, attachment.message_id)
    if message is None:
        return False
    if actor.is_staff:
        return True
    ticket = db_session().get(Ticket, message.ticket_id)
    return not message.internal and ticket is not None and ticket.customer_id == actor.id


# -- alert webhook -----------------------------------------------------------------------------------


@api.post("/alerts/webhook")
def alert_webhook() -> ResponseReturnValue:
    """Alertmanager (payload v4) with the shared token as a Bearer credential."""
    expected = resources().settings.alerts.webhook_token
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise AuthenticationError("The webhook token is missing or wrong.")
    body = request.get_json(silent=True)
    refuse_nul(body)
    try:
        ticket, action = alerts.handle(db_session(), desk_of(), body, now())
        db_session().commit()
    except IntegrityError:
        # Two notifications of a group raced to insert its ticket or an alert's state: apply ours on top of the other.
        db_session().rollback()
        ticket, action = alerts.handle(db_session(), desk_of(), body, now())
        db_session().commit()
    return jsonify({"ticket_id": ticket.id, "action": action, "status": ticket.status}), 200


# -- admin: templates, categories, SLA policies, calendars --------------------------------------------


def _get_or_404(model: Any, item_id: int) -> Any:
    item = db_session().get(model, item_id)
    if item is None:
        raise NotFoundError(f"{model.__tablename__} {item_id} not found")
    return item


def _crud(
    path: str,
    name: str,
    model: Any,
    to_json: Callable[[Any], dict[str, Any]],
    apply: Callable[[Any, dict[str, Any]], None],
    read_role: Callable[[], Actor],
    affects_sla: bool = False,
) -> None:
    """List/create/update/delete routes for one admin-managed resource; every write is audited.

    `affects_sla`: a write changes deadlines, so every open ticket is queued for the sweeper to recompute.
    """

    def commit() -> None:
        if affects_sla:
            desk_of().schedule_recompute(db_session(), now())
        db_session().commit()

    def list_items() -> ResponseReturnValue:
        read_role()
        items = db_session().scalars(select(model).order_by(model.id)).all()
        return jsonify({"data": [to_json(item) for item in items]})

    def create_item() -> ResponseReturnValue:
        require_admin()
        item = model()
        apply(item, json_body())
        db_session().add(item)
        _flush_unique(name)
        current_auth().record(f"{name}.create", name, item.id, after=to_json(item), session=db_session())
        commit()
        return jsonify(to_json(item)), 201

    def update_item(item_id: int) -> ResponseReturnValue:
        require_admin()
        item = _get_or_404(model, item_id)
        before = to_json(item)
        apply(item, json_body())
        _flush_unique(name)
        current_auth().record(f"{name}.update", name, item.id, before=before, after=to_json(item), session=db_session())
        commit()
        return jsonify(to_json(item))

    def delete_item(item_id: int) -> ResponseReturnValue:
        require_admin()
        item = _get_or_404(model, item_id)
        before = to_json(item)
        db_session().delete(item)
        try:
            db_session().flush()
        except IntegrityError:
            db_session().rollback()
            raise ConflictError(f"{name} {item_id} is still in use") from None
        current_auth().record(f"{name}.delete", name, item_id, before=before, session=db_session())
        commit()
        return "", 204

    api.add_url_rule(path, f"list_{name}", list_items, methods=["GET"])
    api.add_url_rule(path, f"create_{name}", create_item, methods=["POST"])
    api.add_url_rule(f"{path}/<int:item_id>", f"update_{name}", update_item, methods=["PUT"])
    api.add_url_rule(f"{path}/<int:item_id>", f"delete_{name}", delete_item, methods=["DELETE"])


def _flush_unique(name: str) -> None:
    try:
        db_session().flush()
    except IntegrityError:
        db_session().rollback()
        raise ValidationError({"name": f"a {name.replace('_', ' ')} with this name exists"}) from None


def _name(body: dict[str, Any], errors: dict[str, str], limit: int = 80) -> str:
    value = body.get("name")
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        errors["name"] = f"required, 1 to {limit} characters"
        return ""
    return value.strip()


def _apply_template(item: Template, body: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    name = _name(body, errors, 120)
    text = body.get("body")
    if not isinstance(text, str) or not text.strip() or len(text) > 20_000:
        errors["body"] = "required, 1 to 20000 characters"
    else:
        errors.update(template_errors(text))
    if errors:
        raise ValidationError(errors)
    item.name, item.body = name, str(text)


def _apply_category(item: Category, body: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    item.name = _name(body, errors)
    if errors:
        raise ValidationError(errors)


def _apply_calendar(item: BusinessCalendar, body: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    name = _name(body, errors)
    definition: dict[str, Any] = {k: body.get(k) for k in ("timezone", "hours", "holidays") if k in body}
    try:
        Calendar.from_dict(definition)
    except CalendarError as exc:
        errors[exc.field] = exc.message
    if errors:
        raise ValidationError(errors)
    item.name, item.definition = name, definition


def _apply_policy(item: SlaPolicy, body: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    name = _name(body, errors)
    keys = ("conditions", "targets", "business_hours", "pause_statuses")
    definition: dict[str, Any] = {k: body[k] for k in keys if k in body}
    try:
        Policy.from_dict({**definition, "name": name or "x"})
    except (ValueError, TypeError, AttributeError) as exc:
        field, _, message = str(exc).partition(": ")
        errors[field if message else "targets"] = message or str(exc)
    position = body.get("position", 0)
    if not isinstance(position, int):
        errors["position"] = "expected an integer (lower is tried first)"
    calendar_id = body.get("calendar_id")
    if calendar_id is not None and db_session().get(BusinessCalendar, calendar_id) is None:
        errors["calendar_id"] = f"no calendar {calendar_id}"
    if definition.get("business_hours") and calendar_id is None:
        errors["calendar_id"] = "business-hours policies need a calendar"
    if errors:
        raise ValidationError(errors)
    item.name, item.definition, item.position, item.calendar_id = name, definition, position, calendar_id


_crud(
    "/templates",
    "template",
    Template,
    lambda t: {"id": t.id, "name": t.name, "body": t.body},
    _apply_template,
    require_staff,
)
_crud("/categories", "category", Category, lambda c: {"id": c.id, "name": c.name}, _apply_category, current_actor)
_crud(
    "/sla/calendars",
    "calendar",
    BusinessCalendar,
    lambda c: {"id": c.id, "name": c.name, **c.definition},
    _apply_calendar,
    require_staff,
    affects_sla=True,
)
_crud(
    "/sla/policies",
    "sla_policy",
    SlaPolicy,
    lambda p: {"id": p.id, "name": p.name, "position": p.position, "calendar_id": p.calendar_id, **p.definition},
    _apply_policy,
    require_staff,
    affects_sla=True,
)
