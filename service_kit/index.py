"""`/` of every service and exporter: what answers on this port, and where to read and look next.

A person opening a URL that `make up` printed lands on `/`, where a 404 says nothing. Browsers get a small HTML
page, anything else (curl, scripts) JSON, chosen by the Accept header: browsers rank text/html first, curl
sends `*/*`. The page links what the process itself serves (its OpenAPI document, /metrics, /healthz,
/readyz), read from its URL map when it is a Flask app, so a link is never listed for a path that is not
there; and its docs: the README section and the runbook page, opened where every alert's runbook link opens
(config/urls.yml).

One helper for all: the kit's `ServiceKit(docs=...)` installs it on a service, `install_index` on a plain
Flask app (the demo upstream), and `build_index(...).response(accept)` answers in a WSGI app of its own
(the exporters).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, request
from markupsafe import escape
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from service_kit.config import ConfigError
from service_kit.urls import load_urls

log = logging.getLogger(__name__)

# The paths the kit and the exporters serve, in the order a person wants them, with what each is for.
STANDARD_PATHS = {
    "/openapi.json": "OpenAPI document of the API",
    "/metrics": "Prometheus metrics",
    "/healthz": "liveness: the process answers",
    "/readyz": "readiness: each dependency, with its duration",
}
EXPORTER_PATHS = ("/metrics", "/healthz", "/readyz")


@dataclass(frozen=True)
class ServiceDocs:
    """What a service is, and where it is documented: a heading of README.md and a page of docs/runbooks/
    (none for the demo upstream, which pages nobody)."""

    title: str
    summary: str
    readme_section: str
    runbook: str | None = None


def wants_html(accept: str) -> bool:
    """True when the client ranks HTML above JSON (a browser); no Accept header or `*/*` gets JSON."""
    offered = parse_accept_header(accept, MIMEAccept)
    return offered.best_match(["application/json", "text/html"]) == "text/html"


@dataclass(frozen=True)
class Link:
    href: str
    title: str


@dataclass(frozen=True)
class Index:
    """What `/` answers: as JSON for scripts, as a page for browsers."""

    service: str
    title: str
    summary: str
    links: list[Link]
    docs: dict[str, str | None]  # readme: where in README.md; runbook: the page's URL

    def as_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    def as_html(self) -> bytes:
        items = [f'<li><a href="{escape(x.href)}">{escape(x.href)}</a>: {escape(x.title)}</li>' for x in self.links]
        if runbook := self.docs["runbook"]:
            items.append(
                f'<li><a href="{escape(runbook)}">runbook</a>: what its alerts mean, how to check and fix</li>'
            )
        items.append(f"<li>{escape(self.docs['readme'])}</li>")
        title = escape(self.title)
        return (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title} · VibeLux Ops</title>'
            f"</head>\n<body><h1>{title}</h1><p>{escape(self.summary)}</p><ul>{''.join(items)}</ul></body></html>\n"
        ).encode()

    def response(self, accept: str) -> tuple[bytes, str]:
        """(body, content type) for a client sending `accept`."""
        if wants_html(accept):
            return self.as_html(), "text/html; charset=utf-8"
        return self.as_json(), "application/json"


@functools.cache
def runbooks_base() -> str | None:
    """Where runbook links point (config/urls.yml), read once, when the first index is asked for: a process
    started away from the stack's config (a test's working directory) still starts, and its index links no
    runbook, as its log says once. The stack's own processes run where config/ is (make up, the image)."""
    try:
        return load_urls().runbooks_base
    except ConfigError as error:
        log.warning("index pages link no runbook: %s", error)
        return None


def build_index(service: str, docs: ServiceDocs, paths: Iterable[str]) -> Index:
    """The index of a process serving `paths`: the standard ones among them, in STANDARD_PATHS' order."""
    served = set(paths)
    return Index(
        service,
        docs.title,
        docs.summary,
        [Link(path, title) for path, title in STANDARD_PATHS.items() if path in served],
        {
            "readme": f"README.md, section “{docs.readme_section}”",
            "runbook": f"{base}/{docs.runbook}" if docs.runbook and (base := runbooks_base()) else None,
        },
    )


bp = Blueprint("service_kit_index", __name__)
EXTENSION = "service_kit_index"


def install_index(app: Flask, service: str, docs: ServiceDocs) -> None:
    """`GET /` on a Flask app."""
    app.extensions[EXTENSION] = (service, docs)
    app.register_blueprint(bp)


@bp.get("/")
def index() -> Response:
    """The app's index, linking the standard paths its URL map serves."""
    service, docs = current_app.extensions[EXTENSION]
    served = {rule.rule for rule in current_app.url_map.iter_rules() if "GET" in (rule.methods or ())}
    page = build_index(service, docs, served)
    body, content_type = page.response(request.headers.get("Accept", ""))
    response = current_app.response_class(body, content_type=content_type)
    response.vary.add("Accept")  # a cache must not hand a browser's page to a script
    return response
