"""/runbooks: the desk serves docs/runbooks/, so every alert's runbook_url opens a page with its section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service_kit.urls import load_urls
from tests.alerts.helpers import alert_rules
from tickets_app.app import create_app
from tickets_app.settings import RunbookSettings, TicketsSettings

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS_BASE = load_urls(REPO / "config" / "urls.yml", environ={}).runbooks_base


@pytest.fixture
def runbooks_client(settings: TicketsSettings) -> FlaskClient:
    """The desk serving the repository's runbooks, wherever the tests run from."""
    configured = dataclasses.replace(settings, runbooks=RunbookSettings(directory=str(REPO / "docs" / "runbooks")))
    app: Flask = create_app(configured, start_sweeper=False)
    return app.test_client()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: f"{rule['alert']}-{rule['labels']['severity']}")
def test_every_alerts_runbook_url_opens_its_section_without_a_login(runbooks_client: FlaskClient, rule: dict) -> None:
    page, _, anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOKS_BASE).partition("#")
    response = runbooks_client.get(f"/runbooks{page}")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert f'<h2 id="{anchor}">' in response.text
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_index_links_every_page(runbooks_client: FlaskClient) -> None:
    index = runbooks_client.get("/runbooks/")
    assert index.status_code == 200
    for page in sorted((REPO / "docs" / "runbooks").glob("*.md")):
        if page.name != "README.md":
            assert f'href="{page.name}"' in index.text
            assert runbooks_client.get(f"/runbooks/{page.name}").status_code == 200


@pytest.mark.parametrize("name", ["nope.md", "README", "..%2FREADME.md", "x.txt", ".md"])
def test_anything_but_a_page_of_the_directory_is_404(runbooks_client: FlaskClient, name: str) -> None:
    response = runbooks_client.get(f"/runbooks/{name}")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_html_in_a_page_is_shown_as_text(settings: TicketsSettings, tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text("# X\n\n<script>alert(1)</script>\n\n## Check: the `probe`, then fix\n")
    app = create_app(
        dataclasses.replace(settings, runbooks=RunbookSettings(directory=str(tmp_path))), start_sweeper=False
    )
    page = app.test_client().get("/runbooks/x.md").text
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert '<h2 id="check-the-probe-then-fix">' in page
