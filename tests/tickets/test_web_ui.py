"""The staff UI in real headless Chromium (Debian's, driven by Playwright) against a live server."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, Page, expect, sync_playwright
from werkzeug.serving import make_server

from tests.servers import free_port
from tests.tickets.conftest import ticket_input
from tickets_app.desk import Actor
from tickets_app.models import SlaPolicy, StaffUser, Template
from tickets_app.passwords import hash_password

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "s3cret-pw"
XSS_SUBJECT = "<script>window.__xss = 'subject'</script>Broken dashboard"
XSS_BODY = "<img src=x onerror=\"window.__xss = 'body'\"> and <b>bold</b>"


@dataclass
class Live:
    url: str
    refund_id: int
    xss_id: int


@pytest.fixture
def live(app: Flask) -> Iterator[Live]:
    resources = app.extensions["tickets"]
    customer = Actor(id="cust-z", role="customer", name="Zed Zulu", email="zed@example.com", tier="enterprise")
    now = datetime.now(UTC)
    with app.app_context(), resources.db.new_session() as session:
        session.add(StaffUser(id="ann", name="Ann Agent", role="agent", password_hash=hash_password(PASSWORD)))
        session.add(
            SlaPolicy(name="default", position=0, definition={"targets": {"first_response": 60, "resolution": 600}})
        )
        session.add(Template(name="Greeting", body="Hi {{customer_name}}, {{agent_name}} here about #{{ticket_id}}."))
        session.flush()
        refund = resources.desk.create_ticket(
            session, customer, ticket_input({"subject": "Refund for invoice 7781", "body": "Charged twice"}), now
        )
        resources.desk.create_ticket(
            session, customer, ticket_input({"subject": "Other thing", "body": "unrelated"}), now
        )
        xss = resources.desk.create_ticket(
            session, customer, ticket_input({"subject": XSS_SUBJECT, "body": XSS_BODY}), now
        )
        session.commit()
        ids = (refund.id, xss.id)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Live(f"http://127.0.0.1:{port}", *ids)
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def log_in(page: Page, live: Live, password: str = PASSWORD) -> None:
    page.goto(f"{live.url}/login")
    page.get_by_label("User").fill("ann")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.mark.integration
def test_login_search_reply_with_template_and_badge_changes(page: Page, live: Live) -> None:
    log_in(page, live, "wrong")
    expect(page.get_by_role("alert")).to_contain_text("wrong password")
    log_in(page, live)
    expect(page.locator("tr.ticket-row")).to_have_count(3)
    cookie = next(c for c in page.context.cookies() if c["name"] == "vbx_desk")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    page.get_by_label("Search tickets").fill('invoice "charged twice"')
    page.get_by_label("Search tickets").press("Enter")
    expect(page.locator("tr.ticket-row")).to_have_count(1)
    expect(page.locator("tr.ticket-row .tier")).to_have_text("enterprise")
    expect(page.locator("tr.ticket-row mark").first).to_have_text("invoice")
    page.get_by_role("link", name="Refund for invoice 7781").click()

    badge = page.locator("#sla-badge")
    expect(badge).to_have_text(re.compile(r"first reply in 5\dm"))
    page.get_by_label("Template").select_option(label="Greeting")
    expect(page.get_by_label("Reply")).to_have_value(f"Hi Zed Zulu, Ann Agent here about #{live.refund_id}.")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash-ok")).to_have_text("Saved.")
    expect(page.locator("article.message .body").last).to_have_text(
        f"Hi Zed Zulu, Ann Agent here about #{live.refund_id}."
    )
    expect(badge).to_have_text(re.compile(r"resolution in 9h 5\dm"))


@pytest.mark.integration
def test_internal_note_and_status_change(page: Page, live: Live) -> None:
    log_in(page, live)
    page.goto(f"{live.url}/tickets/{live.refund_id}")
    page.get_by_label("Reply").fill("Checking the payment provider logs")
    page.get_by_label("Internal note (staff only)").check()
    page.locator("select[name=status]").select_option("waiting")
    page.get_by_label("Attachments").set_input_files(
        files=[{"name": "trace.txt", "mimeType": "text/html", "buffer": b"<script>alert(1)</script>"}]
    )
    page.get_by_role("button", name="Save").click()
    expect(page.locator("article.message.internal .body")).to_have_text("Checking the payment provider logs")
    expect(page.locator("#sla-badge")).to_have_text("SLA paused")
    link = page.locator("article.message.internal a.attachment")
    expect(link).to_contain_text("trace.txt")
    download = page.request.get(f"{live.url}{link.get_attribute('href')}")
    assert download.status == 200
    assert download.headers["content-type"] == "text/plain; charset=utf-8"  # not the client's text/html
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-disposition"].startswith("attachment;")


@pytest.mark.integration
def test_rejected_upload_keeps_the_reply_unsaved(page: Page, live: Live) -> None:
    log_in(page, live)
    page.goto(f"{live.url}/tickets/{live.refund_id}")
    page.get_by_label("Reply").fill("with a bad file")
    page.get_by_label("Attachments").set_input_files(
        files=[{"name": "evil.exe", "mimeType": "application/octet-stream", "buffer": b"MZ"}]
    )
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash-error")).to_contain_text("not accepted")
    expect(page.locator("article.message")).to_have_count(1)


@pytest.mark.integration
def test_script_payloads_render_as_text(page: Page, live: Live) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, live)
    expect(page.locator("tr.ticket-row", has_text="Broken dashboard")).to_contain_text("<script>")
    page.goto(f"{live.url}/tickets/{live.xss_id}")
    expect(page.locator("h1")).to_contain_text("<script>window.__xss = 'subject'</script>")
    expect(page.locator("article.message .body").first).to_have_text(XSS_BODY)
    assert page.locator("article.message img").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []


def test_forms_without_csrf_token_are_refused(app: Flask, client: FlaskClient) -> None:
    with app.app_context(), app.extensions["tickets"].db.new_session() as session:
        session.add(StaffUser(id="ann", name="Ann", role="agent", password_hash=hash_password("pw")))
        session.commit()
    assert client.post("/login", data={"username": "ann", "password": "pw"}).status_code == 400
    login_page = client.get("/login").get_data(as_text=True)
    token = login_page.split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/login", data={"username": "ann", "password": "pw", "csrf_token": token}).status_code == 302
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200


def test_pages_need_login(client: FlaskClient) -> None:
    response = client.get("/tickets/1")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
