"""The desk's JSON API under /api/v1: tickets, messages, events, merge, attachments and the alert webhook.

Each operation is declared once with ``api.validate``: the models of tickets_app.schemas validate its body
and query and document it in /openapi.json, with every status it can answer. The caller is checked first
(``access.signed_in``, ``staff_only``), then the request, then the view runs. The admin resources
(templates, categories, SLA calendars and policies) are in tickets_app/admin_api.py.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from service_kit.auth import current_auth
from service_kit.errors import AuthenticationError, NotFoundError, UnsupportedMediaTypeError, ValidationError
from service_kit.openapi import ApiDocument
from service_kit.requests import bearer_credential
from tickets_app import alerts, schemas
from tickets_app.access import current_actor, signed_in, staff_only
from tickets_app.attachments import accept_upload
from tickets_app.desk import Actor, UnknownReference
from tickets_app.listing import SlaWindow, list_tickets
from tickets_app.models import Attachment, Message, Template, Ticket
from tickets_app.resources import db_session, desk_of, now, resources
from tickets_app.serialize import attachment_out, event_out, message_out, ticket_out

P = ParamSpec("P")
R = TypeVar("R")

api = ApiDocument(
    "VibeLux support desk",
    "Customers act with an identity-provider JWT, or a service token plus X-On-Behalf-Of (the customer's id) "
    "and X-Customer-Name, X-Customer-Email and X-Customer-Tier (one of free, startup, professional, "
    "enterprise). Agents and admins use their vbx_ tokens.",
    security={
        "bearer": {"type": "http", "scheme": "bearer", "description": "vbx_… API token or an identity-provider JWT"},
        "webhook_token": {
            "type": "http",
            "scheme": "bearer",
            "description": "the token Alertmanager sends (alerts.webhook_token)",
        },
    },
)
bp = Blueprint("tickets_api", __name__, url_prefix="/api/v1")
TICKET_CONFLICTS = (
    "no category, or no unattached upload of yours, of the name or id given; or the ticket was merged into "
    "another; or its status cannot change to the one asked"
)


def respond(model: BaseModel, status: int = 200) -> Response:
    """`model` as JSON, leaving out what was not set (a customer's ticket has no assignee, not a null one)."""
    return current_app.response_class(model.model_dump_json(exclude_unset=True), status, mimetype="application/json")


# -- tickets -----------------------------------------------------------------------------------------


@bp.get("/tickets")
@signed_in
@api.validate(query=schemas.TicketQuery, responses={200: schemas.TicketPage}, tags=("tickets",), security="bearer")
def ticket_list() -> ResponseReturnValue:
    """List and search tickets (a customer sees their own), a page at a time."""
    actor = current_actor()
    query: schemas.TicketQuery = request.context.query  # type: ignore[attr-defined]
    page = list_tickets(db_session(), desk_of().index, actor, query, SlaWindow(now(), resources().at_risk))
    tags = desk_of().tags_of(db_session(), [t.id for t in page.tickets])
    data = [
        ticket_out(t, tags.get(t.id, []), actor, resources().at_risk, now(), page.snippets.get(t.id))
        for t in page.tickets
    ]
    links = schemas.TicketPageLinks()
    args: dict[str, Any] = {k: v for k, v in request.args.items() if k not in ("page[cursor]", "page[before]")}
    if page.next_cursor:
        links.next = url_for("tickets_api.ticket_list", **{**args, "page[cursor]": page.next_cursor})
    if page.prev_cursor:
        links.prev = url_for("tickets_api.ticket_list", **{**args, "page[before]": page.prev_cursor})
    meta = schemas.TicketPageMeta(
        has_more=page.next_cursor is not None, total=page.total, total_capped=page.total_capped
    )
    return respond(schemas.TicketPage(data=data, meta=meta, links=links))


@bp.post("/tickets")
@signed_in
@api.validate(
    json=schemas.TicketInput,
    responses={201: schemas.TicketWithThread},
    tags=("tickets",),
    security="bearer",
    extra={409: "no category, or no unattached upload of yours, of the name or id given"},
)
def ticket_create() -> ResponseReturnValue:
    """Open a ticket with its first message."""
    actor = current_actor()
    ticket = desk_of().create_ticket(db_session(), actor, request.context.json, now())  # type: ignore[attr-defined]
    if actor.is_staff:
        _audit_ticket("ticket.create", ticket, None, {"customer": ticket.customer_id})
    db_session().commit()
    return respond(_with_thread(ticket, actor), 201)


@bp.get("/tickets/<int:ticket_id>")
@signed_in
@api.validate(responses={200: schemas.TicketWithThread}, tags=("tickets",), security="bearer")
def ticket_detail(ticket_id: int) -> ResponseReturnValue:
    """A ticket with its thread (a customer sees public messages only, and only their own tickets)."""
    actor = current_actor()
    return respond(_with_thread(desk_of().get_ticket(db_session(), actor, ticket_id), actor))


@bp.patch("/tickets/<int:ticket_id>")
@signed_in
@api.validate(
    json=schemas.TicketChange,
    responses={200: schemas.TicketUpdate},
    tags=("tickets",),
    security="bearer",
    extra={409: TICKET_CONFLICTS},
)
def ticket_update(ticket_id: int) -> ResponseReturnValue:
    """Change fields (staff) and/or add a message, atomically."""
    change: schemas.TicketChange = request.context.json  # type: ignore[attr-defined]
    return _apply(ticket_id, change, 200)


@bp.post("/tickets/<int:ticket_id>/messages")
@signed_in
@api.validate(
    json=schemas.NewMessage,
    responses={201: schemas.TicketUpdate},
    tags=("tickets",),
    security="bearer",
    extra={409: TICKET_CONFLICTS},
)
def message_create(ticket_id: int) -> ResponseReturnValue:
    """Add a message; `fields` change the ticket in the same step. A customer's reply to a closed ticket
    opens a linked follow-up, returned as follow_up."""
    message: schemas.NewMessage = request.context.json  # type: ignore[attr-defined]
    return _apply(ticket_id, message.as_change(), 201, "attachments")


def _apply(
    ticket_id: int, change: schemas.TicketChange, status: int, attachments_field: str = "message.attachments"
) -> ResponseReturnValue:
    actor = current_actor()
    desk = desk_of()
    ticket = desk.get_ticket(db_session(), actor, ticket_id, for_update=True)
    done = desk.update_ticket(db_session(), actor, ticket, change, now(), attachments_field)
    if actor.is_staff and done.after:
        _audit_ticket("ticket.update", ticket, done.before, done.after)
    db_session().commit()
    update = schemas.TicketUpdate(ticket=_ticket(ticket, actor))
    if done.message is not None:
        update.message = message_out(done.message, attachment_url)
    if done.follow_up is not None:
        update.follow_up = _ticket(done.follow_up, actor)
    return respond(update, status)


@bp.get("/tickets/<int:ticket_id>/events")
@staff_only
@api.validate(responses={200: schemas.EventList}, tags=("tickets",), security="bearer")
def ticket_events(ticket_id: int) -> ResponseReturnValue:
    """The ticket's event log (staff)."""
    ticket = desk_of().get_ticket(db_session(), current_actor(), ticket_id)
    return respond(schemas.EventList(data=[event_out(e) for e in desk_of().events(db_session(), ticket)]))


@bp.get("/tickets/<int:ticket_id>/sla")
@staff_only
@api.validate(responses={200: schemas.SlaState}, tags=("tickets",), security="bearer")
def ticket_sla(ticket_id: int) -> ResponseReturnValue:
    """The SLA clock replayed now, per metric: state, deadline, elapsed and remaining time (staff)."""
    ticket = desk_of().get_ticket(db_session(), current_actor(), ticket_id)
    return respond(schemas.SlaState.model_validate(desk_of().sla_state(db_session(), ticket, now()).as_dict()))


@bp.post("/tickets/<int:ticket_id>/merge")
@staff_only
@api.validate(
    json=schemas.MergeRequest,
    responses={200: schemas.TicketWithThread},
    tags=("tickets",),
    security="bearer",
    extra={409: "no ticket target_id, a merged ticket, or a ticket into itself"},
)
def ticket_merge(ticket_id: int) -> ResponseReturnValue:
    """Merge this ticket into target_id (staff): both threads show on the target."""
    actor = current_actor()
    target_id = request.context.json.target_id  # type: ignore[attr-defined]
    desk = desk_of()
    source = desk.get_ticket(db_session(), actor, ticket_id, for_update=True)
    try:
        target = desk.get_ticket(db_session(), actor, target_id, for_update=True)
    except NotFoundError:
        raise UnknownReference("target_id", f"no ticket {target_id}") from None
    desk.merge(db_session(), actor, source, target, now())
    _audit_ticket("ticket.merge", source, None, {"merged_into": target.id})
    db_session().commit()
    return respond(_with_thread(target, actor))


@bp.get("/tickets/<int:ticket_id>/templates/<int:template_id>")
@staff_only
@api.validate(responses={200: schemas.RenderedTemplate}, tags=("tickets",), security="bearer")
def template_render(ticket_id: int, template_id: int) -> ResponseReturnValue:
    """A template rendered for this ticket (staff)."""
    actor = current_actor()
    ticket = desk_of().get_ticket(db_session(), actor, ticket_id)
    template = db_session().get(Template, template_id)
    if template is None:
        raise NotFoundError(f"template {template_id} not found")
    body = desk_of().render_template(template, ticket, actor)
    return respond(schemas.RenderedTemplate(template_id=template.id, body=body))


def _ticket(ticket: Ticket, actor: Actor) -> schemas.Ticket:
    tags = desk_of().tags_of(db_session(), [ticket.id]).get(ticket.id, [])
    return ticket_out(ticket, tags, actor, resources().at_risk, now())


def _with_thread(ticket: Ticket, actor: Actor) -> schemas.TicketWithThread:
    thread = [message_out(m, attachment_url) for m in desk_of().thread(db_session(), actor, ticket)]
    fields = _ticket(ticket, actor).model_dump(exclude_unset=True)
    return schemas.TicketWithThread.model_validate({**fields, "messages": thread})


def _audit_ticket(action: str, ticket: Ticket, before: object, after: object) -> None:
    current_auth().record(action, "ticket", ticket.id, before=before, after=after, session=db_session())


# -- attachments -------------------------------------------------------------------------------------


def attachment_url(attachment: Attachment) -> str:
    return url_for("tickets_api.attachment_download", attachment_id=attachment.id)


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "allowed: " + ", ".join(schemas.SERVED_TYPES) + "; its content is "
                            "checked to be of the type its extension names",
                        }
                    },
                }
            }
        },
    }
}


@bp.post("/attachments")
@signed_in
@api.validate(
    responses={201: schemas.Attachment},
    tags=("attachments",),
    security="bearer",
    extra={
        413: "the body is too large",
        415: "the body is not multipart/form-data",
        422: "no file, or a file refused (type, content, size, daily quota)",
    },
    openapi=UPLOAD_BODY,
)
def attachment_upload() -> ResponseReturnValue:
    """Upload a file (step one of two): a message then attaches it by its id."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaTypeError(f"The body must be multipart/form-data, not {request.mimetype or 'empty'}.")
    upload = request.files.get("file")
    if upload is None:
        raise ValidationError({"file": "required, a multipart form field named file"})
    attachment = store_upload(current_actor(), upload, "file")
    db_session().commit()
    return respond(attachment_out(attachment, attachment_url), 201)


def store_upload(actor: Actor, upload: FileStorage, field: str) -> Attachment:
    found = resources()
    limits = (found.settings.attachments.max_file_bytes, found.settings.attachments.max_user_bytes_per_day)
    data = upload.read(limits[0] + 1)
    return accept_upload(
        db_session(), found.attachment_store, actor.id, upload.filename or "", data, limits, found.scanner, now(), field
    )


@bp.get("/attachments/<attachment_id>")
@signed_in
@api.validate(
    responses={200: None},
    tags=("attachments",),
    security="bearer",
    openapi={
        "responses": {
            "200": {
                "description": "the file, as the type it was accepted as (Content-Disposition: attachment)",
                "content": {content_type: {} for content_type in schemas.SERVED_TYPES},
            }
        }
    },
)
def attachment_download(attachment_id: str) -> ResponseReturnValue:
    """Download a file; a 404 unless the caller may see the message it is attached to."""
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


def webhook_token_required(view: Callable[P, R]) -> Callable[P, R]:
    """Alertmanager's shared token as a Bearer credential, checked before the body."""

    @functools.wraps(view)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        expected = resources().settings.alerts.webhook_token
        given = bearer_credential(request.headers.get("Authorization", "")) or ""
        if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise AuthenticationError("The webhook token is missing or wrong.")
        return view(*args, **kwargs)

    return checked


@bp.post("/alerts/webhook")
@webhook_token_required
@api.validate(
    json=schemas.AlertmanagerPayload,
    responses={200: schemas.WebhookResult},
    tags=("alerts",),
    security="webhook_token",
    extra={409: "a resolved notification for a group with no incident ticket"},
)
def alert_webhook() -> ResponseReturnValue:
    """Alertmanager's webhook (payload version 4): one incident ticket per group key."""
    payload: schemas.AlertmanagerPayload = request.context.json  # type: ignore[attr-defined]
    try:
        ticket, action = alerts.handle(db_session(), desk_of(), payload, now())
        db_session().commit()
    except IntegrityError:
        # Two notifications of a group raced to insert its ticket or an alert's state: apply ours on top of the other.
        db_session().rollback()
        ticket, action = alerts.handle(db_session(), desk_of(), payload, now())
        db_session().commit()
    return respond(
        schemas.WebhookResult.model_validate({"ticket_id": ticket.id, "action": action, "status": ticket.status})
    )
