"""/runbooks: docs/runbooks/*.md as HTML pages, where every alert's runbook_url points by default.

Why the desk serves them: a repository path (`docs/runbooks/support.md#…`) opened from Slack goes nowhere, and
a repository browser's link needs the repository to be reachable and shows its newest version, not the one
running. The desk runs in every deployment (`make up` and compose), and reads the pages of its own checkout
or image, so each link shows the runbook of the code that raised the alert. No login: the pages are the
repository's docs, with no secrets, and the engineer on call may have no desk account. Headings get GitHub's
anchors, so a `runbook_url` also works pointed at the repository browser instead (config/urls.yml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import escape

from service_kit.errors import NotFoundError
from tickets_app.resources import resources

bp = Blueprint("runbooks", __name__, url_prefix="/runbooks")
PAGE_NAME = re.compile(r"^[\w-]+\.md$")
INDEX = "README.md"
CSP = "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def _heading_with_anchor(renderer: Any, tokens: list[Token], index: int, options: Any, env: Any) -> str:
    inline = tokens[index + 1]
    text = "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))
    tokens[index].attrSet("id", github_anchor(text))
    return str(renderer.renderToken(tokens, index, options, env))


MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in a page stays text
MARKDOWN.add_render_rule("heading_open", _heading_with_anchor)


def render_page(markdown: str, title: str) -> str:
    """One runbook as a whole HTML page, styled like the desk."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · runbooks</title>'
        '<link rel="stylesheet" href="/ui/static/desk.css"></head>\n'
        f'<body><header class="top"><a class="brand" href="/runbooks/">Runbooks</a></header>\n'
        f"<main>{MARKDOWN.render(markdown)}</main></body></html>\n"
    )


@bp.get("/")
def runbook_index() -> Response:
    """The list of runbook pages (docs/runbooks/README.md)."""
    return _page(INDEX)


@bp.get("/<name>")
def runbook_page(name: str) -> Response:
    """One page, e.g. /runbooks/support.md#supporturgentticketunassigned."""
    return _page(name)


def _page(name: str) -> Response:
    directory = Path(resources().settings.runbooks.directory)
    path = directory / name
    if not PAGE_NAME.match(name) or not path.is_file():
        raise NotFoundError(f"no runbook {name}")
    text = path.read_text(encoding="utf-8")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), name)
    response = current_app.response_class(render_page(text, title), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
