"""The staff UI in real headless Chromium (Debian's, driven by Playwright) against a live server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import event

import tickets_app.listing
from tests.servers import serving
from tests.tickets.conftest import ticket_change, ticket_input
from tickets_app.demo import seed
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
    with serving(app) as url:
        yield Live(url, *ids)


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
    expect(page.locator("tr.ticket-row .tier")).to_have_text("Enterprise")
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


# -- the queue and the ticket page, on a desk with work in every state ---------------------------------


@dataclass
class Desk:
    """A live desk whose clock stands at `now`, with the tickets of `queue_desk` by name."""

    url: str
    now: datetime
    ids: dict[str, int]
    password: str = PASSWORD


ZED = Actor(id="cust-z", role="customer", name="Zed Zulu", email="zed@example.com", tier="enterprise")
ANN = Actor(id="ann", role="agent", name="Ann Agent")
RAJ = Actor(id="raj", role="agent", name="Raj Rao")
MIA = Actor(id="cust-m", role="customer", name="Mia Moss", tier="startup")
BULK = 30  # low-priority questions, due within hours: enough for a second page
DASH = "\N{EN DASH}"  # between the first and the last of a page: 1-25 of 34


@pytest.fixture
def queue_desk(app: Flask) -> Iterator[Desk]:
    """34 tickets of open work (one breached, one at risk, two Ann's, one waiting on Zed) and one closed,
    the most recently changed; the SLA margin is the default 60 minutes."""
    resources = app.extensions["tickets"]
    now = datetime.now(UTC).replace(microsecond=0)
    resources.clock = lambda: now
    desk = resources.desk
    ids: dict[str, int] = {}
    with app.app_context(), resources.db.new_session() as session:
        session.add_all(
            StaffUser(id=a.id, name=a.name, role=a.role, password_hash=hash_password(PASSWORD)) for a in (ANN, RAJ)
        )
        session.add_all(
            [
                SlaPolicy(
                    name="Fast",
                    position=0,
                    definition={"conditions": {"priority": ["urgent", "high"]}, "targets": {"first_response": 60}},
                ),
                SlaPolicy(
                    name="Standard", position=1, definition={"targets": {"first_response": 240, "resolution": 2400}}
                ),
            ]
        )
        session.flush()

        def make(name: str, customer: Actor, priority: str, minutes_ago: float, subject: str) -> None:
            new = ticket_input({"subject": subject, "body": f"About {subject.lower()}.", "priority": priority})
            ids[name] = desk.create_ticket(session, customer, new, now - timedelta(minutes=minutes_ago)).id

        def change(name: str, actor: Actor, minutes_ago: float, **fields: object) -> None:
            ticket = desk.get_ticket(session, actor, ids[name])
            desk.update_ticket(session, actor, ticket, ticket_change(fields), now - timedelta(minutes=minutes_ago))

        make("closed", ZED, "urgent", 3 * 24 * 60, "Closed outage")
        change("closed", ANN, 2 * 24 * 60, message={"body": "Fixed, sorry for the trouble."})
        make("waiting", ZED, "medium", 24 * 60, "Waiting on logs")
        change("waiting", ANN, 23 * 60, assignee="ann", status="waiting", message={"body": "Could you send logs?"})
        change("waiting", ANN, 22 * 60, message={"body": "Zed is on the old SDK.", "internal": True})
        change("waiting", ZED, 21 * 60, message={"body": "Here they are."})
        make("breached", ZED, "high", 120, "Breached refund")  # first reply was due an hour ago
        make("at_risk", ZED, "high", 30, "At-risk login")  # due in 30 minutes
        change("at_risk", RAJ, 25, assignee="raj", status="in_progress", message={"body": "Mine.", "internal": True})
        make("mine", MIA, "medium", 10, "Export bug")
        change("mine", ANN, 5, assignee="ann")
        for n in range(BULK):
            make(
                f"bulk{n}",
                Actor(f"cust-{n}", "customer", f"Customer {n}", tier="free"),
                "low",
                2 + 2 * n,
                f"Question {n}",
            )
        change("closed", ANN, 1, status="closed")  # the most recently updated ticket of all
        session.commit()
    with serving(app) as url:
        yield Desk(url, now, ids)


def log_in_to(page: Page, desk: Desk) -> None:
    page.goto(f"{desk.url}/login")
    page.get_by_label("User").fill("ann")
    page.get_by_label("Password").fill(desk.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_have_text("Open work")


def rows(page: Page) -> list[dict[str, str]]:
    """The queue's rows as the DOM has them: id, status, priority, deadline, subject."""
    return page.eval_on_selector_all(
        "tr.ticket-row",
        """rows => rows.map(row => ({id: row.dataset.ticketId, status: row.dataset.status,
            priority: row.dataset.priority, due: row.dataset.due,
            subject: row.querySelector('.subject a').textContent}))""",
    )


def in_due_order(found: list[dict[str, str]]) -> bool:
    """Earliest deadline first, tickets without one last."""
    keys = [(row["due"] == "", row["due"]) for row in found]
    return keys == sorted(keys)


@pytest.mark.integration
def test_the_desk_opens_on_open_work_most_urgent_sla_first(page: Page, queue_desk: Desk) -> None:
    """It opened on every ticket, recently updated first, so a ticket closed a minute ago came first."""
    log_in_to(page, queue_desk)
    first = rows(page)
    assert [row["subject"] for row in first[:2]] == ["Breached refund", "At-risk login"]
    expect(page.locator("tr.ticket-row").first.locator(".sla")).to_have_text(re.compile(r"first reply overdue 1h"))
    page.get_by_role("link", name="Next page →").click()
    expect(page.locator("#page-summary")).to_have_text(f"26{DASH}34 of 34")
    second = rows(page)
    assert second[-1]["subject"] == "Waiting on logs"  # paused, waiting on the customer: no deadline runs
    assert in_due_order(first + second)
    assert {row["status"] for row in first + second} == {"open", "in_progress"}
    assert str(queue_desk.ids["closed"]) not in {row["id"] for row in first + second}


@pytest.mark.integration
def test_views_count_their_tickets_and_list_them(page: Page, queue_desk: Desk) -> None:
    log_in_to(page, queue_desk)
    views = page.get_by_role("navigation", name="Views")
    counts = {
        link.locator(".view-name").inner_text(): link.locator(".count").text_content()
        if link.locator(".count").count()
        else ""
        for link in views.get_by_role("link").all()
    }
    assert counts == {
        "Open work": "34 tickets",
        "Assigned to me": "2 tickets",
        "Unassigned": "31 tickets",
        "At risk": "1 ticket",
        "SLA breached": "1 ticket",
        "All tickets": "",
    }
    expect(views.get_by_role("link", name=re.compile("^Open work"))).to_have_attribute("aria-current", "page")
    for name, expected in (("At risk", ["At-risk login"]), ("SLA breached", ["Breached refund"])):
        views.get_by_role("link", name=re.compile(f"^{name}")).click()
        expect(page.locator("h1")).to_have_text(name)
        assert [row["subject"] for row in rows(page)] == expected
    views.get_by_role("link", name=re.compile("^Assigned to me")).click()
    assert [row["subject"] for row in rows(page)] == ["Export bug", "Waiting on logs"]
    views.get_by_role("link", name="All tickets").click()
    expect(page.locator("#page-summary")).to_have_text(f"1{DASH}25 of 35")
    assert rows(page)[0]["subject"] == "Closed outage"  # all tickets: recently updated first


@pytest.mark.integration
def test_search_and_filter_bar_show_the_same_query(page: Page, queue_desk: Desk) -> None:
    """Searching status:open left the Status filter on "any"."""
    log_in_to(page, queue_desk)
    search = page.get_by_label("Search tickets")
    search.fill("status:open")
    search.press("Enter")
    expect(page.get_by_label("Status")).to_have_value("open")
    assert {row["status"] for row in rows(page)} == {"open"}  # At-risk login is in progress
    page.get_by_label("Priority").select_option("high")
    page.get_by_role("button", name="Apply filters").click()
    expect(search).to_have_value("status:open priority:high")
    expect(page.get_by_label("Status")).to_have_value("open")
    assert [row["subject"] for row in rows(page)] == ["Breached refund"]
    search.fill("status:open,in_progress priority:high sort:-created login")
    search.press("Enter")
    expect(page.get_by_label("Status")).to_have_value("open,in_progress")
    expect(page.get_by_label("Status").locator("option:checked")).to_have_text("Open, In progress")
    expect(page.get_by_label("Sort")).to_have_value("-created")
    assert [row["subject"] for row in rows(page)] == ["At-risk login"]
    page.get_by_label("Status").select_option("")
    page.get_by_role("button", name="Apply filters").click()
    expect(search).to_have_value("priority:high sort:-created login")  # the words survive the filter bar
    expect(page.locator("h1")).to_have_text("Open work")  # both stay inside the view


@pytest.mark.integration
def test_pages_go_forward_and_back_with_a_total(page: Page, queue_desk: Desk) -> None:
    """There was only "Next page", with no count and no way back."""
    log_in_to(page, queue_desk)
    summary = page.locator("#page-summary")
    expect(summary).to_have_text(f"1{DASH}25 of 34")
    expect(page.get_by_role("link", name="← Previous page")).to_have_count(0)  # shown, but not a link
    first = rows(page)
    page.get_by_role("link", name="Next page →").click()
    expect(summary).to_have_text(f"26{DASH}34 of 34")
    assert len(rows(page)) == 9
    expect(page.get_by_role("link", name="Next page →")).to_have_count(0)
    page.get_by_role("link", name="← Previous page").click()
    expect(summary).to_have_text(f"1{DASH}25 of 34")
    assert rows(page) == first


@pytest.mark.integration
def test_a_phrase_past_its_cap_shows_more_than_its_cap(
    page: Page, queue_desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phrase is counted to its own, lower cap (PHRASE_TOTAL_CAP): the summary names that cap, and a word
    in as many tickets still has its exact count and position."""
    monkeypatch.setattr(tickets_app.listing, "PHRASE_TOTAL_CAP", 20)
    log_in_to(page, queue_desk)
    search = page.get_by_label("Search tickets")
    summary = page.locator("#page-summary")
    search.fill('"about question"')
    search.press("Enter")
    expect(summary).to_have_text("25 shown of more than 20")
    search.fill("question")
    search.press("Enter")
    expect(summary).to_have_text(f"1{DASH}25 of {BULK}")


@pytest.mark.integration
def test_the_thread_tells_customer_staff_and_notes_apart_and_reads_the_log(page: Page, queue_desk: Desk) -> None:
    """Customer and staff messages looked the same; events were raw JSON, statuses raw in_progress."""
    log_in_to(page, queue_desk)
    expect(page.locator("tr.ticket-row", has_text="At-risk login").locator(".status")).to_have_text("In progress")
    page.goto(f"{queue_desk.url}/tickets/{queue_desk.ids['waiting']}")
    messages = page.locator("article.message")
    assert [m.get_attribute("data-role") for m in messages.all()] == ["customer", "staff", "internal", "customer"]
    assert messages.locator(".role-label").all_inner_texts() == ["Customer", "Staff", "Internal note", "Customer"]
    looks = page.eval_on_selector_all(
        "article.message",
        "ms => ms.map(m => [getComputedStyle(m).backgroundColor, getComputedStyle(m).borderLeftColor].join())",
    )
    assert looks[0] == looks[3] and len({looks[0], looks[1], looks[2]}) == 3
    activity = page.locator(".activity li").all_inner_texts()
    assert any("Ann Agent took the ticket" in line for line in activity), activity
    assert any("Ann Agent changed the status from Open to Waiting on customer" in line for line in activity), activity
    assert any("Zed Zulu changed the status from Waiting on customer to Open" in line for line in activity), activity
    assert not any(mark in line for line in activity for mark in ("{", "_", '"')), activity
    expect(page.get_by_label("Status")).to_have_value("open")
    expect(page.get_by_label("Status").locator("option:checked")).to_have_text("Open")


@pytest.mark.integration
def test_the_requesters_tier_and_other_open_tickets_are_beside_the_thread(page: Page, queue_desk: Desk) -> None:
    log_in_to(page, queue_desk)
    page.goto(f"{queue_desk.url}/tickets/{queue_desk.ids['waiting']}")
    requester = page.get_by_role("region", name="Requester")
    expect(requester.locator(".requester-name")).to_contain_text("Zed Zulu")
    expect(requester.locator(".tier")).to_have_text("Enterprise")
    others = requester.locator(".other-tickets li")
    expect(others).to_have_count(2)  # not the closed one, not this one
    expect(others.nth(0)).to_contain_text("At-risk login")
    expect(others.nth(1)).to_contain_text("Breached refund")
    expect(others.nth(1).locator(".sla")).to_have_text(re.compile("first reply overdue"))
    requester.get_by_role("link", name="All tickets from this requester").click()
    expect(page.get_by_label("Search tickets")).to_have_value("requester:cust-z")
    assert [row["subject"] for row in rows(page)] == [
        "Closed outage",
        "At-risk login",
        "Breached refund",
        "Waiting on logs",
    ]


@pytest.mark.integration
def test_screenshots_of_the_demo_desk(app: Flask, page: Page, tmp_path: Path) -> None:
    """The demo's data, as `make up` shows it, in a window of a laptop's size: the screenshots go to
    tmp_path for a person to look at (run with --basetemp to keep them); the checks hold for any data."""
    resources = app.extensions["tickets"]
    with app.app_context(), resources.db.new_session() as session:
        password = seed(session, resources.desk, tickets=80)
    page.set_viewport_size({"width": 1400, "height": 900})
    with serving(app) as url:
        log_in_to(page, Desk(url, datetime.now(UTC), {}, password))
        assert in_due_order(rows(page)) and {row["status"] for row in rows(page)} <= {"open", "in_progress", "waiting"}
        page.screenshot(path=tmp_path / "queue.png")
        page.get_by_role("link", name=re.compile("^SLA breached")).click()
        breached = str(page.locator(".view-link[aria-current=page] .count").text_content())
        expect(page.locator("#page-summary")).to_contain_text(f"of {breached.split()[0]}")
        page.screenshot(path=tmp_path / "breached.png", full_page=True)
        page.get_by_label("Search tickets").fill("status:waiting tag:vip")
        page.get_by_label("Search tickets").press("Enter")
        expect(page.get_by_label("Status")).to_have_value("waiting")
        page.screenshot(path=tmp_path / "search.png")
        page.goto(f"{url}/?view=all")
        busiest = page.locator("tr.ticket-row").first.locator(".subject a")
        busiest.click()
        expect(page.locator(".activity li").first).to_contain_text("opened the ticket")
        page.screenshot(path=tmp_path / "ticket.png", full_page=True)
        page.get_by_label("Internal note (staff only)").check()
        page.get_by_label("Reply").focus()
        page.screenshot(path=tmp_path / "ticket-note.png")
    print(f"screenshots in {tmp_path}")


# Text the desk draws, and the WCAG contrast ratio of its colour on the first opaque background behind it.
CONTRAST = """selector => {
  const rgba = text => {
    const p = text.match(/[\\d.]+/g).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p[3] ?? 1};
  };
  const channel = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const luminance = c => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  const behind = element => {
    for (let e = element; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.a > 0) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  return [...document.querySelectorAll(selector)]
    .filter(e => e.getClientRects().length && e.textContent.trim() && !e.closest('.visually-hidden'))
    .map(e => {
      const [light, dark] = [luminance(rgba(getComputedStyle(e).color)), luminance(behind(e))].sort((a, b) => b - a);
      return [e.className || e.tagName, e.textContent.trim().slice(0, 24), (light + 0.05) / (dark + 0.05)];
    });
}"""
TEXT = (
    ".status, .prio, .sla, .tier, .count, .role-label, .tag, .muted, .ticket-id, a, th, label, button, .avatar, time, p"
)


@pytest.mark.integration
def test_text_meets_contrast_and_the_keyboard_reaches_search(page: Page, queue_desk: Desk) -> None:
    """WCAG AA (4.5:1) for every badge, link and label of the queue and the ticket page; "/" focuses search."""
    log_in_to(page, queue_desk)
    low = [found for found in page.evaluate(CONTRAST, TEXT) if found[2] < 4.5]
    page.goto(f"{queue_desk.url}/tickets/{queue_desk.ids['waiting']}")
    low += [found for found in page.evaluate(CONTRAST, TEXT) if found[2] < 4.5]
    assert low == []
    page.locator("body").press("/")
    expect(page.get_by_label("Search tickets")).to_be_focused()
    page.get_by_label("Reply").press("/")
    expect(page.get_by_label("Reply")).to_have_value("/")  # typing a slash in a field stays a slash


def test_the_queue_page_runs_as_many_queries_for_forty_tickets_as_for_two(app: Flask, client: FlaskClient) -> None:
    """Counts, names, tags and SLA badges come from a fixed set of statements: none per ticket or per view."""
    resources = app.extensions["tickets"]
    with app.app_context(), resources.db.new_session() as session:
        session.add(StaffUser(id="ann", name="Ann", role="agent", password_hash=hash_password("pw")))
        session.add(SlaPolicy(name="default", position=0, definition={"targets": {"first_response": 60}}))
        session.commit()
    token = client.get("/login").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    client.post("/login", data={"username": "ann", "password": "pw", "csrf_token": token})

    shown: list[int] = []

    def statements_for_queue(tickets: int) -> int:
        with app.app_context(), resources.db.new_session() as session:
            for n in range(tickets):
                new = ticket_input({"subject": f"Question {n}", "body": "b", "tags": ["eu", f"t{n}"]})
                resources.desk.create_ticket(session, ZED, new, datetime.now(UTC))
            session.commit()
        seen: list[str] = []

        def record(_connection: object, _cursor: object, statement: str, *_rest: object) -> None:
            seen.append(statement)

        event.listen(resources.db.engine, "before_cursor_execute", record)
        try:
            page = client.get("/?page[size]=50").get_data(as_text=True)
        finally:
            event.remove(resources.db.engine, "before_cursor_execute", record)
        shown.append(page.count('class="ticket-row'))
        return len(seen)

    assert statements_for_queue(2) == statements_for_queue(40)
    assert shown == [2, 42]
