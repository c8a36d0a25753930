"""Admin resources under /api/v1: templates, categories, SLA calendars and SLA policies.

Staff read them (everyone signed in reads categories); admins create, replace and delete them, and every
write is audited. A write to a calendar or a policy changes deadlines, so every open ticket is queued for
the sweeper to recompute.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service_kit.auth import current_auth
from service_kit.errors import ConflictError, NotFoundError
from tickets_app import models, schemas
from tickets_app.access import admin_only, signed_in, staff_only
from tickets_app.api import api, respond
from tickets_app.business_hours import Calendar
from tickets_app.desk import UnknownReference, check_template
from tickets_app.resources import db_session, desk_of, now

bp = Blueprint("tickets_admin", __name__, url_prefix="/api/v1")


def _get_or_404(model: Any, item_id: int) -> Any:
    item = db_session().get(model, item_id)
    if item is None:
        raise NotFoundError(f"{model.__tablename__} {item_id} not found")
    return item


def _flush_unique(kind: str) -> None:
    """Names are unique per kind: a second one is a 409."""
    try:
        db_session().flush()
    except IntegrityError:
        db_session().rollback()
        raise ConflictError(f"a {kind} with this name exists", {"name": f"a {kind} with this name exists"}) from None


def _commit(affects_sla: bool) -> None:
    if affects_sla:
        desk_of().schedule_recompute(db_session(), now())
    db_session().commit()


def _audit(action: str, kind: str, item_id: object, before: Any = None, after: Any = None) -> None:
    current_auth().record(action, kind, item_id, before=before, after=after, session=db_session())


def _delete(
    item: Any, kind: str, item_id: int, before: dict[str, Any], affects_sla: bool = False
) -> ResponseReturnValue:
    db_session().delete(item)
    try:
        db_session().flush()
    except IntegrityError:
        db_session().rollback()
        raise ConflictError(f"{kind} {item_id} is still in use") from None
    _audit(f"{kind}.delete", kind, item_id, before=before)
    _commit(affects_sla)
    return "", 204


# -- templates ---------------------------------------------------------------------------------------


def _template(item: models.Template) -> schemas.Template:
    return schemas.Template(id=item.id, name=item.name, body=item.body)


@bp.get("/templates")
@staff_only
@api.validate(responses={200: schemas.TemplateList}, tags=("templates",), security="bearer")
def template_list() -> ResponseReturnValue:
    """Quick-reply templates (staff)."""
    items = db_session().scalars(select(models.Template).order_by(models.Template.id))
    return respond(schemas.TemplateList(data=[_template(item) for item in items]))


@bp.post("/templates")
@admin_only
@api.validate(
    json=schemas.TemplateInput,
    responses={201: schemas.Template},
    tags=("templates",),
    security="bearer",
    extra={409: "a template with this name exists"},
)
def template_create() -> ResponseReturnValue:
    """Create a template (admin; audited)."""
    body: schemas.TemplateInput = request.context.json  # type: ignore[attr-defined]
    check_template(body.body)
    item = models.Template(name=body.name, body=body.body)
    db_session().add(item)
    _flush_unique("template")
    _audit("template.create", "template", item.id, after=_template(item).model_dump(mode="json"))
    _commit(affects_sla=False)
    return respond(_template(item), 201)


@bp.put("/templates/<int:template_id>")
@admin_only
@api.validate(
    json=schemas.TemplateInput,
    responses={200: schemas.Template},
    tags=("templates",),
    security="bearer",
    extra={409: "another template has this name"},
)
def template_replace(template_id: int) -> ResponseReturnValue:
    """Replace a template (admin; audited)."""
    body: schemas.TemplateInput = request.context.json  # type: ignore[attr-defined]
    item: models.Template = _get_or_404(models.Template, template_id)
    check_template(body.body)
    before = _template(item).model_dump(mode="json")
    item.name, item.body = body.name, body.body
    _flush_unique("template")
    _audit("template.update", "template", item.id, before=before, after=_template(item).model_dump(mode="json"))
    _commit(affects_sla=False)
    return respond(_template(item))


@bp.delete("/templates/<int:template_id>")
@admin_only
@api.validate(responses={204: None}, tags=("templates",), security="bearer")
def template_delete(template_id: int) -> ResponseReturnValue:
    """Delete a template (admin; audited)."""
    item: models.Template = _get_or_404(models.Template, template_id)
    return _delete(item, "template", template_id, _template(item).model_dump(mode="json"))


# -- categories --------------------------------------------------------------------------------------


def _category(item: models.Category) -> schemas.Category:
    return schemas.Category(id=item.id, name=item.name)


@bp.get("/categories")
@signed_in
@api.validate(responses={200: schemas.CategoryList}, tags=("categories",), security="bearer")
def category_list() -> ResponseReturnValue:
    """Ticket categories (everyone signed in)."""
    items = db_session().scalars(select(models.Category).order_by(models.Category.id))
    return respond(schemas.CategoryList(data=[_category(item) for item in items]))


@bp.post("/categories")
@admin_only
@api.validate(
    json=schemas.CategoryInput,
    responses={201: schemas.Category},
    tags=("categories",),
    security="bearer",
    extra={409: "a category with this name exists"},
)
def category_create() -> ResponseReturnValue:
    """Create a category (admin; audited)."""
    body: schemas.CategoryInput = request.context.json  # type: ignore[attr-defined]
    item = models.Category(name=body.name)
    db_session().add(item)
    _flush_unique("category")
    _audit("category.create", "category", item.id, after=_category(item).model_dump(mode="json"))
    _commit(affects_sla=False)
    return respond(_category(item), 201)


@bp.put("/categories/<int:category_id>")
@admin_only
@api.validate(
    json=schemas.CategoryInput,
    responses={200: schemas.Category},
    tags=("categories",),
    security="bearer",
    extra={409: "another category has this name"},
)
def category_replace(category_id: int) -> ResponseReturnValue:
    """Rename a category (admin; audited)."""
    body: schemas.CategoryInput = request.context.json  # type: ignore[attr-defined]
    item: models.Category = _get_or_404(models.Category, category_id)
    before = _category(item).model_dump(mode="json")
    item.name = body.name
    _flush_unique("category")
    _audit("category.update", "category", item.id, before=before, after=_category(item).model_dump(mode="json"))
    _commit(affects_sla=False)
    return respond(_category(item))


@bp.delete("/categories/<int:category_id>")
@admin_only
@api.validate(responses={204: None}, tags=("categories",), security="bearer", extra={409: "tickets use it"})
def category_delete(category_id: int) -> ResponseReturnValue:
    """Delete a category no ticket uses (admin; audited)."""
    item: models.Category = _get_or_404(models.Category, category_id)
    return _delete(item, "category", category_id, _category(item).model_dump(mode="json"))


# -- SLA calendars -----------------------------------------------------------------------------------


def _calendar(item: models.BusinessCalendar) -> schemas.Calendar:
    return schemas.Calendar.model_validate({"id": item.id, "name": item.name, **item.definition})


def _calendar_definition(body: schemas.CalendarInput) -> dict[str, Any]:
    """The definition as stored, after the rules the schema cannot state (spans in order, not overlapping)."""
    definition = body.definition()
    Calendar.from_dict(definition)
    return definition


@bp.get("/sla/calendars")
@staff_only
@api.validate(responses={200: schemas.CalendarList}, tags=("sla",), security="bearer")
def calendar_list() -> ResponseReturnValue:
    """Business calendars (staff)."""
    items = db_session().scalars(select(models.BusinessCalendar).order_by(models.BusinessCalendar.id))
    return respond(schemas.CalendarList(data=[_calendar(item) for item in items]))


@bp.post("/sla/calendars")
@admin_only
@api.validate(
    json=schemas.CalendarInput,
    responses={201: schemas.Calendar},
    tags=("sla",),
    security="bearer",
    extra={409: "a calendar with this name exists"},
)
def calendar_create() -> ResponseReturnValue:
    """Create a business calendar (admin; audited)."""
    body: schemas.CalendarInput = request.context.json  # type: ignore[attr-defined]
    item = models.BusinessCalendar(name=body.name, definition=_calendar_definition(body))
    db_session().add(item)
    _flush_unique("calendar")
    _audit("calendar.create", "calendar", item.id, after=_calendar(item).model_dump(mode="json"))
    _commit(affects_sla=True)
    return respond(_calendar(item), 201)


@bp.put("/sla/calendars/<int:calendar_id>")
@admin_only
@api.validate(
    json=schemas.CalendarInput,
    responses={200: schemas.Calendar},
    tags=("sla",),
    security="bearer",
    extra={409: "another calendar has this name"},
)
def calendar_replace(calendar_id: int) -> ResponseReturnValue:
    """Replace a business calendar (admin; audited); deadlines are recomputed."""
    body: schemas.CalendarInput = request.context.json  # type: ignore[attr-defined]
    item: models.BusinessCalendar = _get_or_404(models.BusinessCalendar, calendar_id)
    before = _calendar(item).model_dump(mode="json")
    item.name, item.definition = body.name, _calendar_definition(body)
    _flush_unique("calendar")
    _audit("calendar.update", "calendar", item.id, before=before, after=_calendar(item).model_dump(mode="json"))
    _commit(affects_sla=True)
    return respond(_calendar(item))


@bp.delete("/sla/calendars/<int:calendar_id>")
@admin_only
@api.validate(responses={204: None}, tags=("sla",), security="bearer", extra={409: "a policy uses it"})
def calendar_delete(calendar_id: int) -> ResponseReturnValue:
    """Delete a calendar no policy uses (admin; audited)."""
    item: models.BusinessCalendar = _get_or_404(models.BusinessCalendar, calendar_id)
    return _delete(item, "calendar", calendar_id, _calendar(item).model_dump(mode="json"), affects_sla=True)


# -- SLA policies ------------------------------------------------------------------------------------


def _policy(item: models.SlaPolicy) -> schemas.SlaPolicy:
    stored = {"conditions": {}, "targets": {}, "business_hours": False, "pause_statuses": ["waiting"]}
    fields = {"id": item.id, "name": item.name, "position": item.position, "calendar_id": item.calendar_id}
    return schemas.SlaPolicy.model_validate({**stored, **item.definition, **fields})


def _apply_policy(item: models.SlaPolicy, body: schemas.SlaPolicyInput) -> None:
    if body.calendar_id is not None and db_session().get(models.BusinessCalendar, body.calendar_id) is None:
        raise UnknownReference("calendar_id", f"no calendar {body.calendar_id}")
    item.name, item.position, item.calendar_id = body.name, body.position, body.calendar_id
    item.definition = body.definition()


@bp.get("/sla/policies")
@staff_only
@api.validate(responses={200: schemas.SlaPolicyList}, tags=("sla",), security="bearer")
def policy_list() -> ResponseReturnValue:
    """SLA policies in the order they are tried (staff)."""
    query = select(models.SlaPolicy).order_by(models.SlaPolicy.position, models.SlaPolicy.id)
    return respond(schemas.SlaPolicyList(data=[_policy(item) for item in db_session().scalars(query)]))


@bp.post("/sla/policies")
@admin_only
@api.validate(
    json=schemas.SlaPolicyInput,
    responses={201: schemas.SlaPolicy},
    tags=("sla",),
    security="bearer",
    extra={409: "a policy with this name exists, or no calendar calendar_id"},
)
def policy_create() -> ResponseReturnValue:
    """Create an SLA policy (admin; audited); deadlines are recomputed."""
    body: schemas.SlaPolicyInput = request.context.json  # type: ignore[attr-defined]
    item = models.SlaPolicy()
    _apply_policy(item, body)
    db_session().add(item)
    _flush_unique("policy")
    _audit("sla_policy.create", "sla_policy", item.id, after=_policy(item).model_dump(mode="json"))
    _commit(affects_sla=True)
    return respond(_policy(item), 201)


@bp.put("/sla/policies/<int:policy_id>")
@admin_only
@api.validate(
    json=schemas.SlaPolicyInput,
    responses={200: schemas.SlaPolicy},
    tags=("sla",),
    security="bearer",
    extra={409: "another policy has this name, or no calendar calendar_id"},
)
def policy_replace(policy_id: int) -> ResponseReturnValue:
    """Replace an SLA policy (admin; audited); deadlines are recomputed."""
    body: schemas.SlaPolicyInput = request.context.json  # type: ignore[attr-defined]
    item: models.SlaPolicy = _get_or_404(models.SlaPolicy, policy_id)
    before = _policy(item).model_dump(mode="json")
    _apply_policy(item, body)
    _flush_unique("policy")
    _audit("sla_policy.update", "sla_policy", item.id, before=before, after=_policy(item).model_dump(mode="json"))
    _commit(affects_sla=True)
    return respond(_policy(item))


@bp.delete("/sla/policies/<int:policy_id>")
@admin_only
@api.validate(responses={204: None}, tags=("sla",), security="bearer")
def policy_delete(policy_id: int) -> ResponseReturnValue:
    """Delete an SLA policy (admin; audited); deadlines are recomputed."""
    item: models.SlaPolicy = _get_or_404(models.SlaPolicy, policy_id)
    return _delete(item, "sla_policy", policy_id, _policy(item).model_dump(mode="json"), affects_sla=True)
