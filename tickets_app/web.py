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
from service_kit.tiers import DESK_TIERS
from tickets_app import wording
from tickets_app.alerts import ALERTMANAGER
from tickets_app.api import attachment_response, store_upload
from tickets_app.desk import Actor
from tickets_app.listing import SlaWindow, default_sort, list_tickets, parsed_query, view_counts
from tickets_app.models import Category, StaffUser, Template, Ticket, TicketEvent
from tickets_app.passwords import check_login
from tickets_app.query import VIEWS, ParsedQuery, format_query
from tickets_app.resources import db_session, desk_of, now, resources
from tickets_app.schemas import TicketChange, TicketQuery, parse
from tickets_app.search import MARK_END, MARK_START
from tickets_app.workflow import OPEN_STATUSES, PRIORITIES, STATUSES, TRANSITIONS

# The filter bar's controls: each shows (and sets) one filter of the search box's query.
BAR_FILTERS = ("status", "priority", "assignee", "tier", "category", "tag")
OTHER_OPEN_TICKETS = 8  # beside a ticket: the requester's other unresolved ones, newest first

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
    return {
        "csrf_token": csrf_token,
        "sla_badge": sla_badge,
        "marked": marked,
        "ago": ago,
        "status_labels": wording.STATUS_LABELS,
        "priority_labels": wording.PRIORITY_LABELS,
        "tier_labels": wording.TIER_LABELS,
        "sort_labels": wording.SORT_LABELS,
    }


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
    """A view of tickets narrowed by the search box or the filter bar (two editors of one query, each
    drawn from it), a page at a time; the desk opens on open work, the nearest deadline first."""
    args: dict[str, Any] = {k: v for k, v in request.args.items() if v}
    args.setdefault("view", "open")
    actor: Actor = g.actor
    db = db_session()
    error = None
    try:
        query = parse(TicketQuery, args)
    except APIError as exc:
        error = "; ".join(f"{k}: {v}" for k, v in exc.details.items()) or exc.message
        args = {"view": "open"}
        query = parse(TicketQuery, args)
    window = SlaWindow(now(), resources().at_risk)
    page = list_tickets(db, desk_of().index, actor, query, window)
    parsed = parsed_query(query)
    default = default_sort(query.view, parsed)
    sort = parsed.sort or default
    # The search box shows the whole query (a sort only when it is not the view's own); the filter bar's
    # form carries the rest of it, what its controls do not show, so submitting either keeps the other.
    shown = ParsedQuery(parsed.terms, parsed.filters, parsed.ranges, None if sort == default else sort)
    rest = ParsedQuery(parsed.terms, {k: v for k, v in parsed.filters.items() if k not in BAR_FILTERS}, parsed.ranges)
    paging = {k: v for k, v in args.items() if k not in ("page[cursor]", "page[before]")}
    staff = {user.id: user.name for user in db.scalars(select(StaffUser).order_by(StaffUser.name))}
    return render_template(
        "queue.html",
        page=page,
        tags=desk_of().tags_of(db, [t.id for t in page.tickets]),
        view=query.view,
        views=[(v, wording.VIEW_LABELS[v]) for v in VIEWS],
        counts=view_counts(db, actor, window),
        search_text=format_query(shown),
        rest_text=format_query(rest),
        chosen={key: ",".join(parsed.filters.get(key, [])) for key in BAR_FILTERS},
        sort=sort,
        sorts=[s for s in wording.SORT_LABELS if s != "relevance" or parsed.terms],
        error=error,
        prev_url=_page_url(paging, "page[before]", page.prev_cursor),
        next_url=_page_url(paging, "page[cursor]", page.next_cursor),
        everywhere_url=url_for("tickets_web.queue", **{**paging, "view": "all"}) if query.view != "all" else None,
        statuses=STATUSES,
        priorities=PRIORITIES,
        tiers=DESK_TIERS,
        categories=db.scalars(select(Category.name).order_by(Category.name)).all(),
        staff=staff,
    )


def _page_url(args: dict[str, Any], name: str, cursor: str | None) -> str | None:
    return url_for("tickets_web.queue", **{**args, name: cursor}) if cursor else None


@bp.get("/tickets/<int:ticket_id>")
def ticket_page(ticket_id: int) -> ResponseReturnValue:
    db = db_session()
    actor: Actor = g.actor
    desk = desk_of()
    ticket = desk.get_ticket(db, actor, ticket_id)
    templates = db.scalars(select(Template).order_by(Template.name)).all()
    rendered = [(t, desk.render_template(t, ticket, actor)) for t in templates]
    staff = db.scalars(select(StaffUser).order_by(StaffUser.name)).all()
    # Who is who in the log: the requester, staff, and the desk's own actors (an incident's requester is
    # Alertmanager's receiver, but what Alertmanager itself did is signed Alertmanager).
    names = {
        ticket.customer_id: ticket.customer_name or ticket.customer_id,
        **{user.id: user.name for user in staff},
        "system": "System",
        ALERTMANAGER.id: ALERTMANAGER.name,
    }
    requester = format_query(ParsedQuery(filters={"requester": [ticket.customer_id]}))
    return render_template(
        "ticket.html",
        ticket=ticket,
        thread=desk.thread(db, actor, ticket),
        activity=[_activity(event, names) for event in desk.events(db, ticket)],
        tags=desk.tags_of(db, [ticket.id]).get(ticket.id, []),
        other_open=desk.open_tickets_of(db, ticket, OTHER_OPEN_TICKETS),
        requester_url=url_for("tickets_web.queue", view="all", q=requester),
        templates=rendered,
        staff=staff,
        statuses=[ticket.status, *sorted(TRANSITIONS[ticket.status], key=STATUSES.index)],
        priorities=PRIORITIES,
        unresolved=ticket.status in OPEN_STATUSES,
    )


def _activity(event: TicketEvent, names: dict[str, str]) -> tuple[TicketEvent, str, str]:
    """(event, who, what they did) for the ticket's activity list."""

    def name_of(person: str | None) -> str:
        return names.get(person or "", person or "nobody")

    return event, name_of(event.actor), wording.describe_event(event.kind, event.data, event.actor, name_of)


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


def ago(value: datetime | None) -> str:
    """How long ago, as a person says it; the exact time goes in the element's title."""
    if value is None:
        return ""
    minutes = int((now() - value).total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes}m ago"
    return f"{minutes // 60}h ago" if minutes < 48 * 60 else f"{minutes // 1440}d ago"


def status_label(status: str) -> str:
    return wording.label(wording.STATUS_LABELS, status)


def priority_label(priority: str) -> str:
    return wording.label(wording.PRIORITY_LABELS, priority)


def tier_label(tier: str | None) -> str:
    return wording.label(wording.TIER_LABELS, tier, "no tier")


bp.add_app_template_filter(format_time, "time")
bp.add_app_template_filter(status_label)
bp.add_app_template_filter(priority_label)
bp.add_app_template_filter(tier_label)
