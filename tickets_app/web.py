"""Staff web UI: server-rendered pages over the same Desk as the API.

Login sets a signed session cookie (HttpOnly, SameSite=Lax, Secure by config). Every POST carries the
session's CSRF token, compared in constant time. Jinja autoescaping renders all ticket text as text;
search snippets are escaped first and only then get their <mark> tags.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape
from sqlalchemy import select

from service_kit.auth import Principal, current_auth
from service_kit.errors import APIError
from tickets_app.api import attachment_response, store_upload
from tickets_app.desk import Actor
from tickets_app.listing import list_tickets
from tickets_app.models import StaffUser, Template, Ticket
from tickets_app.passwords import check_login
from tickets_app.resources import db_session, desk_of, now, resources
from tickets_app.schemas import TicketChange, TicketQuery, parse
from tickets_app.search import MARK_END, MARK_START
from tickets_app.workflow import PRIORITIES, STATUSES, TRANSITIONS

bp = Blueprint(
    "tickets_web", __name__, template_folder="templates", static_folder="static", static_url_path="/ui/static"
)


@bp.before_request
def load_staff() -> ResponseReturnValue | None:
    """Pages need a logged-in staff user; the login page itself and static files do not."""
    if request.endpoint in ("tickets_web.login", "tickets_web.static"):
        return None
    user_id = session.get("staff_id")
    user = db_session().get(StaffUser, user_id) if user_id else None
    expires = session.get("expires_at", 0)
    if user is None or expires < now().timestamp():
        session.clear()
        return redirect(url_for("tickets_web.login", next=request.full_path if request.method == "GET" else None))
    g.actor = Actor(id=user.id, role=user.role, name=user.name)
    if request.method == "POST":
        check_csrf()
    return None


@bp.after_request
def security_headers(response: Response) -> Response:
    """Defence in depth behind autoescaping: no inline script runs, no framing, no sniffing."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent, str(session.get("csrf", ""))):
        abort(400, "missing or wrong CSRF token; reload the page and try again")


@bp.app_context_processor
def helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "sla_badge": sla_badge, "marked": marked}


def marked(snippet: str | None) -> Markup:
    """Escape the snippet, then turn the search index's markers into <mark> tags."""
    text = str(escape(snippet or ""))
    return Markup(text.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>"))  # noqa: S704 - escaped above


def sla_badge(ticket: Ticket) -> tuple[str, str]:
    """(css class, text) for the queue's and ticket page's countdown badge."""
    current = now()
    if ticket.sla_policy is None or ticket.status in ("resolved", "closed"):
        return "sla-none", "no SLA" if ticket.sla_policy is None else "SLA done"
    pending = [
        (due, label)
        for due, label in (
            (ticket.first_response_due_at, "first reply"),
            (ticket.next_response_due_at, "next reply"),
            (ticket.resolution_due_at, "resolution"),
        )
        if due is not None
    ]
    if not pending:
        return ("sla-breached", "SLA breached") if ticket.sla_breached else ("sla-paused", "SLA paused")
    due, label = min(pending)
    if due <= current or ticket.sla_breached:
        return "sla-breached", f"{label} overdue {_duration(current - due)}" if due <= current else "SLA breached"
    margin = timedelta(minutes=resources().settings.sla.at_risk_minutes)
    css = "sla-risk" if due - current <= margin else "sla-ok"
    return css, f"{label} in {_duration(due - current)}"


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h {minutes % 60}m"
    return f"{minutes // 1440}d {minutes // 60 % 24}h"


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    error = None
    if request.method == "POST":
        check_csrf()
        user = db_session().get(StaffUser, request.form.get("username", "").strip())
        if check_login(user, request.form.get("password", "")) and user is not None:
            db_session().commit()  # an outdated hash was just replaced
            session.clear()
            session["staff_id"] = user.id
            session["expires_at"] = (now() + timedelta(hours=resources().settings.web.session_hours)).timestamp()
            session["csrf"] = secrets.token_urlsafe(32)
            target = request.args.get("next") or ""
            # Only local paths: an absolute or protocol-relative URL would be an open redirect.
            if not target.startswith("/") or target.startswith(("//", "/\\")):
                target = url_for("tickets_web.queue")
            return redirect(target)
        error = "Unknown user or wrong password."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("tickets_web.login"))


@bp.get("/")
def queue() -> ResponseReturnValue:
    args = {k: v for k, v in request.args.items() if v}
    actor: Actor = g.actor
    error = None
    try:
        query = parse(TicketQuery, args)
    except APIError as exc:
        error = "; ".join(f"{k}: {v}" for k, v in exc.details.items()) or exc.message
        query = TicketQuery()
    page = list_tickets(db_session(), desk_of().index, actor, query)
    tags = desk_of().tags_of(db_session(), [t.id for t in page.tickets])
    next_url = None
    if page.next_cursor:
        next_url = url_for("tickets_web.queue", **{**args, "page[cursor]": page.next_cursor})  # type: ignore[arg-type]
    return render_template(
        "queue.html",
        page=page,
        tags=tags,
        args=args,
        error=error,
        next_url=next_url,
        statuses=STATUSES,
        priorities=PRIORITIES,
    )


@bp.get("/tickets/<int:ticket_id>")
def ticket_page(ticket_id: int) -> ResponseReturnValue:
    db = db_session()
    actor: Actor = g.actor
    ticket = desk_of().get_ticket(db, actor, ticket_id)
    templates = db.scalars(select(Template).order_by(Template.name)).all()
    rendered = [(t, desk_of().render_template(t, ticket, actor)) for t in templates]
    staff = db.scalars(select(StaffUser).order_by(StaffUser.name)).all()
    return render_template(
        "ticket.html",
        ticket=ticket,
        thread=desk_of().thread(db, actor, ticket),
        events=desk_of().events(db, ticket),
        tags=desk_of().tags_of(db, [ticket.id]).get(ticket.id, []),
        templates=rendered,
        staff=staff,
        statuses=[ticket.status, *sorted(TRANSITIONS[ticket.status])],
        priorities=PRIORITIES,
    )


@bp.post("/tickets/<int:ticket_id>/reply")
def reply(ticket_id: int) -> ResponseReturnValue:
    """The ticket form: fields and an optional message (with files) in one atomic change."""
    db = db_session()
    actor: Actor = g.actor
    desk = desk_of()
    ticket = desk.get_ticket(db, actor, ticket_id, for_update=True)
    form = request.form
    payload: dict[str, Any] = {}
    for field in ("status", "priority"):
        if form.get(field) and form[field] != getattr(ticket, field):
            payload[field] = form[field]
    if "assignee" in form and (form["assignee"] or None) != ticket.assignee_id:
        payload["assignee"] = form["assignee"] or None
    stored: list[str] = []
    try:
        attachment_ids = _store_uploads(actor, stored)
        if form.get("body", "").strip() or attachment_ids:
            payload["message"] = {
                "body": form.get("body", "").strip() or "(attachment)",
                "internal": form.get("internal") == "on",
                "attachments": attachment_ids,
            }
        if not payload:
            flash("Nothing to save.", "info")
            return redirect(url_for("tickets_web.ticket_page", ticket_id=ticket_id))
        change = desk.update_ticket(db, actor, ticket, parse(TicketChange, payload), now())
        if change.after:
            current_auth().record(
                "ticket.update", "ticket", ticket.id, change.before, change.after, session=db, actor=_principal(actor)
            )
        db.commit()
    except APIError as exc:
        db.rollback()
        for attachment_id in stored:
            resources().attachment_store.remove(attachment_id)
        flash("; ".join(f"{k}: {v}" for k, v in exc.details.items()) or exc.message, "error")
        return redirect(url_for("tickets_web.ticket_page", ticket_id=ticket_id))
    flash("Saved.", "ok")
    return redirect(url_for("tickets_web.ticket_page", ticket_id=ticket_id))


def _store_uploads(actor: Actor, stored: list[str]) -> list[str]:
    ids = []
    for upload in request.files.getlist("files"):
        if upload.filename:
            attachment = store_upload(actor, upload, "files")
            stored.append(attachment.id)
            ids.append(attachment.id)
    return ids


@bp.get("/ui/attachments/<attachment_id>")
def attachment(attachment_id: str) -> ResponseReturnValue:
    return attachment_response(g.actor, attachment_id)


def _principal(actor: Actor) -> Principal:
    return Principal(id=actor.id, role=actor.role, kind="session")


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


bp.add_app_template_filter(format_time, "time")
