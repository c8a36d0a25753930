"""`/` of every service (service_kit/index.py): JSON for scripts, a page for browsers, links to what is served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service_kit.app import ServiceKit
from service_kit.index import ServiceDocs, runbooks_base, wants_html
from tests.service_kit.example_service import DOCS

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"  # Firefox's


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("", False),
        ("*/*", False),  # curl's
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        (BROWSER, True),
        ("text/html", True),
        ("text/*", True),
    ],
)
def test_accept_header_chooses_html_only_when_the_client_ranks_it_first(accept: str, html: bool) -> None:
    assert wants_html(accept) is html


def test_index_as_json_links_the_services_own_paths_and_its_docs(client: FlaskClient) -> None:
    response = client.get("/", headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Vary"] == "Accept"
    body = response.get_json()
    assert body["service"] == "example" and body["title"] == "Example service"
    assert [link["href"] for link in body["links"]] == ["/openapi.json", "/metrics", "/healthz", "/readyz"]
    assert body["docs"] == {"readme": "README.md, section “Service kit (service_kit/)”", "runbook": None}
    for link in body["links"]:
        assert client.get(link["href"]).status_code == 200, link


def test_index_for_a_browser_is_an_escaped_page_of_links(client: FlaskClient) -> None:
    response = client.get("/", headers={"Accept": BROWSER})
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert '<a href="/openapi.json">/openapi.json</a>' in page
    assert "Items &lt;and&gt; greetings" in page  # the summary is text, never markup


def test_index_lists_no_openapi_document_where_the_service_has_none() -> None:
    app = Flask("bare")
    ServiceKit("bare", docs=DOCS).init_app(app)
    body = app.test_client().get("/").get_json()
    assert [link["href"] for link in body["links"]] == ["/metrics", "/healthz", "/readyz"]


def test_no_index_without_docs_leaves_root_unclaimed() -> None:
    """A kit without docs (the proxy's data path: `/` is the upstream's) adds no `/` route."""
    app = Flask("proxy-like")
    ServiceKit("proxy-like").init_app(app)
    assert app.test_client().get("/").status_code == 404


@pytest.fixture
def fresh_urls() -> Iterator[None]:
    """The runbook base is read once per process: these tests read it again, and leave it to be read again."""
    runbooks_base.cache_clear()
    yield
    runbooks_base.cache_clear()


RUNBOOK_DOCS = ServiceDocs("Flags-like", "A service with a runbook page.", "Feature flags (flags_service/)", "flags.md")


def test_runbook_link_is_built_on_the_public_desk_url(fresh_urls: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBELUX_URLS_DESK", "http://vm:8081")
    app = Flask("with-runbook")
    ServiceKit("with-runbook", docs=RUNBOOK_DOCS).init_app(app)
    assert app.test_client().get("/").get_json()["docs"]["runbook"] == "http://vm:8081/runbooks/flags.md"


def test_a_process_started_away_from_config_still_serves_its_index_without_a_runbook_link(
    fresh_urls: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # no config/urls.yml here
    app = Flask("elsewhere")
    ServiceKit("elsewhere", docs=RUNBOOK_DOCS).init_app(app)
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert response.get_json()["docs"]["runbook"] is None
    assert "index pages link no runbook: config error in config/urls.yml" in caplog.text
