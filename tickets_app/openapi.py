"""The OpenAPI 3.1 document of /api/v1, served at /openapi.json.

Written by hand next to the code it describes; tests check that every route of the app is in it (and
nothing else), and validate real responses against its schemas.
"""

from __future__ import annotations

from typing import Any

from tickets_app.workflow import PRIORITIES, STATUSES, TIERS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TIME = {"type": "string", "format": "date-time"}
ERRORS = {
    status: {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
    for status, text in (
        ("401", "No or invalid credentials"),
        ("403", "Role not allowed"),
        ("404", "Not found (also another customer's ticket)"),
        ("409", "Conflicts with the ticket's state"),
        ("422", "Invalid fields; details names each"),
    )
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str,
    responses: dict[str, Any],
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("401", "403", "422"),
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **{e: ERRORS[e] for e in errors}}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        operation["parameters"] = params
    if security is not None:
        operation["security"] = security
    return operation


def _path_id(name: str, kind: str = "integer") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _crud_paths(path: str, schema: str, summary: str, read_roles: str) -> dict[str, Any]:
    item = _ref(schema)
    listing = {"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": item}}}
    return {
        path: {
            "get": _operation(f"List {summary} ({read_roles})", {"200": _json(listing)}, errors=("401", "403")),
            "post": _operation(
                f"Create a {summary} (admin; audited)", {"201": _json(item, "Created")}, body=_ref(f"{schema}Input")
            ),
        },
        f"{path}/{{item_id}}": {
            "parameters": [_path_id("item_id")],
            "put": _operation(
                f"Replace a {summary} (admin; audited)",
                {"200": _json(item)},
                body=_ref(f"{schema}Input"),
                errors=("401", "403", "404", "422"),
            ),
            "delete": _operation(
                f"Delete a {summary} (admin; audited)",
                {"204": {"description": "Deleted"}},
                errors=("401", "403", "404", "409"),
            ),
        },
    }


def openapi_document() -> dict[str, Any]:
    ticket_id = _path_id("ticket_id")
    message_input: dict[str, Any] = {
        "type": "object",
        "required": ["body"],
        "properties": {
            "body": {"type": "string", "minLength": 1, "maxLength": 50000},
            "internal": {"type": "boolean", "default": False, "description": "Staff only"},
            "attachments": {
                "type": "array",
                "maxItems": 10,
                "items": {"type": "string"},
                "description": "Upload tokens from POST /attachments",
            },
        },
    }
    field_changes = {
        "status": {"enum": list(STATUSES)},
        "priority": {"enum": list(PRIORITIES)},
        "assignee": _nullable({"type": "string"}),
        "category": _nullable({"type": "string"}),
        "tags": {
            "type": "array",
            "maxItems": 20,
            "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"},
        },
    }
    update_result = {
        "type": "object",
        "required": ["ticket"],
        "properties": {"ticket": _ref("Ticket"), "message": _ref("Message"), "follow_up": _ref("Ticket")},
    }
    list_params = [
        _query(
            "q",
            "Query language: status:open priority:urgent tag:billing assignee:none tier:pro "
            'requester:ID created>2026-01-01 sort:-updated "exact phrase" words',
        ),
        *[
            _query(name, f"Filter (comma-separated values) on {name}")
            for name in ("status", "priority", "category", "tag", "assignee", "requester", "tier")
        ],
        *[
            _query(f"{field}_{bound}", f"{field} {bound} this ISO 8601 time")
            for field in ("created", "updated")
            for bound in ("after", "before")
        ],
        _query(
            "sort",
            "relevance (with words), created, updated, priority; prefix - for descending",
            {"enum": ["relevance", "created", "-created", "updated", "-updated", "priority", "-priority"]},
        ),
        _query("page[size]", "1 to 100", {"type": "integer", "minimum": 1, "maximum": 100, "default": 25}),
        _query("page[cursor]", "Opaque cursor from links.next"),
    ]
    ticket_list = {
        "type": "object",
        "required": ["data", "meta", "links"],
        "properties": {
            "data": {"type": "array", "items": _ref("Ticket")},
            "meta": {"type": "object", "required": ["has_more"], "properties": {"has_more": {"type": "boolean"}}},
            "links": {"type": "object", "properties": {"next": {"type": "string"}}},
        },
    }
    paths: dict[str, Any] = {
        "/api/v1/tickets": {
            "get": _operation(
                "List and search tickets (customers: their own)", {"200": _json(ticket_list)}, params=list_params
            ),
            "post": _operation(
                "Create a ticket with its first message (staff must give the customer)",
                {"201": _json(_ref("TicketWithThread"), "Created")},
                body=_ref("TicketInput"),
            ),
        },
        "/api/v1/tickets/{ticket_id}": {
            "parameters": [ticket_id],
            "get": _operation(
                "A ticket with its thread (customers: public messages only)",
                {"200": _json(_ref("TicketWithThread"))},
                errors=("401", "403", "404"),
            ),
            "patch": _operation(
                "Change fields and/or add a message atomically (field changes: staff only)",
                {"200": _json(update_result)},
                body={"type": "object", "properties": {**field_changes, "message": message_input}},
                errors=("401", "403", "404", "409", "422"),
            ),
        },
        "/api/v1/tickets/{ticket_id}/messages": {
            "parameters": [ticket_id],
            "post": _operation(
                "Add a message; optional `fields` change the ticket in the same step. A customer reply "
                "to a closed ticket opens a linked follow-up (returned as follow_up).",
                {"201": _json(update_result, "Created")},
                body={
                    **message_input,
                    "properties": {
                        **message_input["properties"],
                        "fields": {"type": "object", "properties": field_changes},
                    },
                },
                errors=("401", "403", "404", "409", "422"),
            ),
        },
        "/api/v1/tickets/{ticket_id}/events": {
            "parameters": [ticket_id],
            "get": _operation(
                "The ticket's event log (staff)",
                {"200": _json({"type": "object", "properties": {"data": {"type": "array", "items": _ref("Event")}}})},
                errors=("401", "403", "404"),
            ),
        },
        "/api/v1/tickets/{ticket_id}/sla": {
            "parameters": [ticket_id],
            "get": _operation(
                "The SLA clock replayed now (staff): per metric state, due_at, elapsed and remaining seconds",
                {"200": _json(_ref("SlaState"))},
                errors=("401", "403", "404"),
            ),
        },
        "/api/v1/tickets/{ticket_id}/merge": {
            "parameters": [ticket_id],
            "post": _operation(
                "Merge this ticket into target_id (staff): both threads show on the target",
                {"200": _json(_ref("TicketWithThread"))},
                body={"type": "object", "required": ["target_id"], "properties": {"target_id": {"type": "integer"}}},
                errors=("401", "403", "404", "409", "422"),
            ),
        },
        "/api/v1/tickets/{ticket_id}/templates/{template_id}": {
            "parameters": [ticket_id, _path_id("template_id")],
            "get": _operation(
                "A template rendered for this ticket (staff)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"template_id": {"type": "integer"}, "body": {"type": "string"}},
                        }
                    )
                },
                errors=("401", "403", "404"),
            ),
        },
        "/api/v1/attachments": {
            "post": {
                "summary": "Upload a file (step one); attach its id to a message (step two)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {"file": {"type": "string", "format": "binary"}},
                            }
                        }
                    },
                },
                "responses": {"201": _json(_ref("Attachment"), "Stored"), "401": ERRORS["401"], "422": ERRORS["422"]},
            },
        },
        "/api/v1/attachments/{attachment_id}": {
            "parameters": [_path_id("attachment_id", "string")],
            "get": {
                "summary": "Download (as attachment, nosniff); 404 unless the caller may see its message",
                "responses": {
                    "200": {"description": "The file", "content": {"application/octet-stream": {}}},
                    "401": ERRORS["401"],
                    "404": ERRORS["404"],
                },
            },
        },
        "/api/v1/alerts/webhook": {
            "post": _operation(
                "Alertmanager webhook (payload version 4), Bearer shared token: one incident ticket per groupKey",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["ticket_id", "action", "status"],
                            "properties": {
                                "ticket_id": {"type": "integer"},
                                "action": {"enum": ["created", "updated", "repeat", "resolved", "stale"]},
                                "status": {"enum": list(STATUSES)},
                            },
                        }
                    )
                },
                body=_ref("AlertmanagerPayload"),
                errors=("401", "422"),
                security=[{"webhookToken": []}],
            ),
        },
        "/api/v1/alerts/acks": {
            "get": _operation(
                "Active acknowledgements (agents): Alertmanager silences created through the desk",
                {"200": _json({"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}})},
                errors=("401", "403"),
            ),
            "post": _operation(
                "Acknowledge an alert (agents): a silence with who (the caller), why and until when; audited",
                {"201": _json(_ref("Ack"), "Created")},
                body={
                    "type": "object",
                    "required": ["alertname", "comment"],
                    "properties": {
                        "alertname": {"type": "string"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "comment": {"type": "string", "minLength": 1},
                        "duration": {"type": "string", "description": "e.g. 30m, 2h (or give until)"},
                        "until": TIME,
                    },
                },
            ),
        },
        "/api/v1/alerts/acks/{silence_id}": {
            "delete": _operation(
                "Remove an acknowledgement (unack); audited",
                {"204": {"description": "Removed"}},
                params=[_path_id("silence_id", "string")],
                errors=("401", "403", "404"),
            ),
        },
        "/api/v1/audit": {
            "get": _operation(
                "Audit log (admin): every admin action and staff change of a ticket",
                {"200": _json({"type": "object"})},
                errors=("401", "403", "422"),
                params=[
                    _query(n, f"Filter on {n}")
                    for n in ("actor", "action", "target_type", "target_id", "limit", "cursor")
                ],
            ),
        },
        **_crud_paths("/api/v1/templates", "Template", "template", "staff"),
        **_crud_paths("/api/v1/categories", "Category", "category", "everyone signed in"),
        **_crud_paths("/api/v1/sla/policies", "SlaPolicy", "SLA policy", "staff"),
        **_crud_paths("/api/v1/sla/calendars", "Calendar", "business calendar", "staff"),
    }
    customer = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "email": {"type": "string"},
            "tier": {"enum": list(TIERS)},
        },
    }
    ticket = {
        "type": "object",
        "required": ["id", "subject", "status", "priority", "tags", "customer", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "integer"},
            "subject": {"type": "string"},
            "status": {"enum": list(STATUSES)},
            "priority": {"enum": list(PRIORITIES)},
            "category": _nullable({"type": "string"}),
            "tags": {"type": "array", "items": {"type": "string"}},
            "customer": customer,
            "assignee": _nullable({"type": "string"}),
            "created_at": TIME,
            "updated_at": TIME,
            "first_response_at": _nullable(TIME),
            "resolved_at": _nullable(TIME),
            "closed_at": _nullable(TIME),
            "merged_into_id": _nullable({"type": "integer"}),
            "follow_up_of_id": _nullable({"type": "integer"}),
            "snippet": {"type": "string", "description": "Search hits in [brackets]"},
            "sla": {
                "type": "object",
                "description": "Staff only",
                "properties": {
                    "policy": _nullable({"type": "string"}),
                    **{
                        f"{m}_due_at": _nullable(TIME)
                        for m in ("first_response", "next_response", "resolution", "next")
                    },
                    "breached": {"type": "boolean"},
                    "at_risk": {"type": "boolean"},
                },
            },
        },
    }
    attachment = {
        "type": "object",
        "required": ["id", "filename", "content_type", "size_bytes", "url"],
        "properties": {
            "id": {"type": "string"},
            "filename": {"type": "string"},
            "content_type": {"type": "string"},
            "size_bytes": {"type": "integer"},
            "sha256": {"type": "string"},
            "url": {"type": "string"},
        },
    }
    message = {
        "type": "object",
        "required": ["id", "ticket_id", "author", "body", "internal", "created_at", "attachments"],
        "properties": {
            "id": {"type": "integer"},
            "ticket_id": {"type": "integer"},
            "author": {
                "type": "object",
                "properties": {
                    "kind": {"enum": ["customer", "staff", "system"]},
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                },
            },
            "body": {"type": "string"},
            "internal": {"type": "boolean"},
            "created_at": TIME,
            "attachments": {"type": "array", "items": _ref("Attachment")},
        },
    }
    named = {"name": {"type": "string", "minLength": 1, "maxLength": 80}}
    spans = {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}}
    calendar_input = {
        "type": "object",
        "required": ["name", "hours"],
        "properties": {
            **named,
            "timezone": {"type": "string", "default": "UTC"},
            "hours": {
                "type": "object",
                "description": 'Weekday (mon..sun) to [["09:00", "17:00"], ...]',
                "additionalProperties": spans,
            },
            "holidays": {"type": "array", "items": {"type": "string", "format": "date"}},
        },
    }
    policy_input = {
        "type": "object",
        "required": ["name", "targets"],
        "properties": {
            **named,
            "position": {"type": "integer", "description": "Lower is tried first; first match wins"},
            "conditions": {
                "type": "object",
                "properties": {
                    "priority": {"type": "array", "items": {"enum": list(PRIORITIES)}},
                    "tier": {"type": "array", "items": {"enum": list(TIERS)}},
                    "source": {"type": "array", "items": {"enum": ["customer", "alert"]}},
                },
            },
            "targets": {
                "type": "object",
                "description": "Minutes",
                "properties": {
                    m: {"type": "number", "exclusiveMinimum": 0}
                    for m in ("first_response", "next_response", "resolution")
                },
            },
            "business_hours": {"type": "boolean", "default": False},
            "pause_statuses": {"type": "array", "items": {"enum": list(STATUSES)}, "default": ["waiting"]},
            "calendar_id": _nullable({"type": "integer"}),
        },
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
        "Ack": {
            "type": "object",
            "required": ["silence_id", "matchers", "created_by", "comment", "starts_at", "ends_at"],
            "properties": {
                "silence_id": {"type": "string"},
                "matchers": {"type": "object", "additionalProperties": {"type": "string"}},
                "created_by": {"type": "string"},
                "comment": {"type": "string"},
                "starts_at": TIME,
                "ends_at": TIME,
            },
        },
        "Ticket": ticket,
        "TicketWithThread": {
            "allOf": [
                ticket,
                {
                    "type": "object",
                    "required": ["messages"],
                    "properties": {"messages": {"type": "array", "items": _ref("Message")}},
                },
            ]
        },
        "TicketInput": {
            "type": "object",
            "required": ["subject", "body"],
            "properties": {
                "subject": {"type": "string", "minLength": 1, "maxLength": 300},
                "body": {"type": "string", "minLength": 1, "maxLength": 50000},
                "priority": {"enum": list(PRIORITIES), "default": "medium"},
                "category": {"type": "string"},
                "tags": field_changes["tags"],
                "attachments": message_input["properties"]["attachments"],
                "customer": {**customer, "required": ["id"], "description": "Required when staff create a ticket"},
            },
        },
        "Message": message,
        "SlaState": {
            "type": "object",
            "required": ["policy", "metrics", "breaches"],
            "properties": {
                "policy": _nullable({"type": "string"}),
                "metrics": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["state", "due_at", "elapsed_seconds", "remaining_seconds", "breached"],
                        "properties": {
                            "state": {"enum": ["active", "paused", "fulfilled", "inactive"]},
                            "started_at": _nullable(TIME),
                            "due_at": _nullable(TIME),
                            "fulfilled_at": _nullable(TIME),
                            "elapsed_seconds": {"type": "number"},
                            "remaining_seconds": {"type": "number"},
                            "breached": {"type": "boolean"},
                            "breached_at": _nullable(TIME),
                        },
                    },
                },
                "breaches": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"metric": {"type": "string"}, "started_at": TIME, "breached_at": TIME},
                    },
                },
            },
        },
        "Attachment": attachment,
        "Event": {
            "type": "object",
            "required": ["id", "at", "actor", "kind", "data"],
            "properties": {
                "id": {"type": "integer"},
                "at": TIME,
                "actor": {"type": "string"},
                "kind": {
                    "type": "string",
                    "description": "created, status, priority, assignee, category, tags, "
                    "merged, follow_up, sla_breach, alert, alert_stale",
                },
                "data": {"type": "object"},
            },
        },
        "Template": {
            "type": "object",
            "required": ["id", "name", "body"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "body": {"type": "string"}},
        },
        "TemplateInput": {
            "type": "object",
            "required": ["name", "body"],
            "properties": {
                "name": {"type": "string"},
                "body": {
                    "type": "string",
                    "description": "Placeholders: {{customer_name}}, {{ticket_id}}, {{agent_name}}",
                },
            },
        },
        "Category": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
        },
        "CategoryInput": {"type": "object", "required": ["name"], "properties": named},
        "Calendar": {
            "allOf": [calendar_input, {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}]
        },
        "CalendarInput": calendar_input,
        "SlaPolicy": {
            "allOf": [policy_input, {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}]
        },
        "SlaPolicyInput": policy_input,
        "AlertmanagerPayload": {
            "type": "object",
            "required": ["version", "groupKey", "status", "alerts"],
            "properties": {
                "version": {"const": "4"},
                "groupKey": {"type": "string", "minLength": 1},
                "status": {"enum": ["firing", "resolved"]},
                "receiver": {"type": "string"},
                "groupLabels": {"type": "object"},
                "commonLabels": {"type": "object"},
                "commonAnnotations": {"type": "object"},
                "externalURL": {"type": "string"},
                "alerts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["status", "startsAt"],
                        "description": "endsAt is required when resolved; startsAt/endsAt order the "
                        "notifications of each alert (fingerprint), so a stale one is answered 'stale'",
                        "properties": {
                            "status": {"enum": ["firing", "resolved"]},
                            "fingerprint": {"type": "string", "minLength": 1, "maxLength": 64},
                            "labels": {"type": "object"},
                            "annotations": {"type": "object"},
                            "startsAt": {"type": "string", "format": "date-time"},
                            "endsAt": {"type": "string", "format": "date-time"},
                        },
                    },
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VibeLux support desk",
            "version": "1.0.0",
            "description": "Customers act with an identity-provider JWT, or a service token plus "
            "X-On-Behalf-Of (customer id) and X-Customer-Name/-Email/-Tier headers.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "vbx_… token or JWT"},
                "webhookToken": {"type": "http", "scheme": "bearer", "description": "Shared Alertmanager token"},
            },
        },
    }
