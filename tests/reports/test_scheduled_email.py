"""End to end: a report is scheduled over the API, the service's own runner thread runs it, the PDF arrives
as an attachment on a real SMTP server (aiosmtpd: STARTTLS with a private CA, AUTH with a password read from
a file), its text is what the report says (pdftotext), and its pages become PNGs (pdftoppm)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from croniter import croniter
from flask import Flask
from sqlalchemy import update
from sqlalchemy.orm import Session

from reports_service.app import create_app
from reports_service.settings import ReportsSettings
from reports_service.storage import ReportSchedule, utcnow
from service_kit.auth import create_token
from service_kit.config import load_settings
from tests.reports.smtp import PASSWORD, USERNAME, SmtpServer, start_smtp_server
from tests.servers import wait_until

COHORT_SPEC = {"source": "retention_cohorts", "cohorts": 12, "periods": 12}


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    (tmp_path / "smtp").mkdir()
    server = start_smtp_server(tmp_path / "smtp")
    yield server
    server.controller.stop()


def mail_settings(settings: ReportsSettings, smtp: SmtpServer, tmp_path: Path) -> ReportsSettings:
    """The smtp section as an operator writes it: host and TLS in the file, the password in a file named by
    REPORTS_SMTP__PASSWORD_FILE."""
    config = tmp_path / "reports.yml"
    config.write_text(
        f"smtp:\n  host: 127.0.0.1\n  port: {smtp.port}\n  security: starttls\n  ca_file: {smtp.ca_file}\n"
        f"  username: {USERNAME}\n  from_address: reports@vibelux.test\n  timeout_seconds: 10\n"
    )
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    loaded = load_settings(ReportsSettings, config, "REPORTS", {"REPORTS_SMTP__PASSWORD_FILE": str(secret)})
    assert loaded.smtp.password == PASSWORD
    return replace(settings, smtp=loaded.smtp)


def agent_headers(app: Flask) -> dict[str, str]:
    with Session(app.extensions["database"].engine) as session:
        plain, _ = create_token(session, "analyst", "agent", "agent-1")
        session.commit()
    return {"Authorization": f"Bearer {plain}"}


def make_due(app: Flask, schedule_id: int, cron: str, back: int = 1) -> datetime:
    """As if the schedule's last ``back`` occurrences had come while no runner looked (the service was down):
    ``next_run_at`` becomes the ``back``-th latest occurrence up to now. Returns it."""
    moment: datetime = croniter(cron, utcnow()).get_prev(datetime)
    for _ in range(back - 1):
        moment = croniter(cron, moment).get_prev(datetime)
    with Session(app.extensions["database"].engine) as session:
        session.execute(update(ReportSchedule).where(ReportSchedule.id == schedule_id).values(next_run_at=moment))
        session.commit()
    return moment


@pytest.mark.integration
def test_a_scheduled_cohort_report_arrives_by_email_with_its_pdf(
    settings: ReportsSettings, smtp_server: SmtpServer, tmp_path: Path, sample_pngs: Callable[[Path, Path], list[Path]]
) -> None:
    app = create_app(mail_settings(settings, smtp_server, tmp_path))  # with its runner thread, as served
    try:
        client = app.test_client()
        agent = agent_headers(app)
        report = client.post(
            "/api/v1/reports",
            json={
                "name": "Weekly retention cohorts",
                "description": "Demo accounts by sign-up week.",
                "spec": COHORT_SPEC,
            },
            headers=agent,
        ).json
        created = client.post(
            "/api/v1/schedules",
            json={
                "report_id": report["id"],
                "cron": "*/5 * * * *",
                "recipients": ["ops@example.com", "cfo@example.com"],
            },
            headers=agent,
        )
        assert created.status_code == 201, created.json
        schedule = created.json
        make_due(app, schedule["id"], "*/5 * * * *")

        messages = smtp_server.mailbox.wait_for(1, timeout=60)
        assert len(messages) == 1
        message = messages[0]
        assert message["Subject"].startswith("Weekly retention cohorts (")
        assert message["From"] == "reports@vibelux.test"
        assert message["Message-ID"].startswith(f"<report-{schedule['id']}-")
        assert sorted(smtp_server.mailbox.envelopes[0]) == ["cfo@example.com", "ops@example.com"]
        assert smtp_server.mailbox.logins == [USERNAME]
        (attachment,) = list(message.iter_attachments())
        assert attachment.get_content_type() == "application/pdf"
        pdf = attachment.get_content()
        assert pdf.startswith(b"%PDF")

        path = tmp_path / "report.pdf"
        path.write_bytes(pdf)
        text = subprocess.run(
            ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert "Weekly retention cohorts" in text
        assert "Demo accounts by sign-up week." in text
        assert "week_11" in text and "cohort" in text and "retention_cohorts" in text
        assert "Week N is the Nth whole week after each account's sign-up" in text
        assert "100.0%" in text  # week 0, by definition
        pages = sample_pngs(path, tmp_path / "pages")
        assert pages, "pdftoppm made no pages"

        # kept for download: the run is listed with its PDF, the same bytes
        wait_until(
            lambda: client.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=agent).json["data"], timeout=10
        )
        (run,) = client.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=agent).json["data"]
        assert run["status"] == "succeeded" and run["trigger"] == "schedule"
        assert sorted(run["delivered_to"]) == ["cfo@example.com", "ops@example.com"]
        download = client.get(f"/api/v1/runs/{run['id']}/pdf", headers=agent)
        assert download.status_code == 200 and download.data == pdf
        next_run = client.get(f"/api/v1/schedules/{schedule['id']}", headers=agent).json["next_run_at"]
        assert next_run > run["scheduled_for"]
    finally:
        app.extensions["jobs"].stop()


@pytest.mark.integration
def test_a_refused_login_fails_the_run_counts_it_and_keeps_the_pdf(
    settings: ReportsSettings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    configured = mail_settings(settings, smtp_server, tmp_path)
    app = create_app(replace(configured, smtp=replace(configured.smtp, password="wrong")), start_jobs=False)
    client = app.test_client()
    agent = agent_headers(app)
    report = client.post("/api/v1/reports", json={"name": "r", "spec": COHORT_SPEC}, headers=agent).json
    schedule = client.post(
        "/api/v1/schedules",
        json={"report_id": report["id"], "cron": "0 * * * *", "recipients": ["a@example.com"]},
        headers=agent,
    ).json
    make_due(app, schedule["id"], "0 * * * *")
    app.extensions["jobs"].run_due()
    (run,) = client.get(f"/api/v1/schedules/{schedule['id']}/runs", headers=agent).json["data"]
    assert run["status"] == "failed" and run["error"].startswith("email: SMTP authentication failed")
    assert run["pdf_bytes"] > 1000
    registry = app.extensions["service_kit"].metrics.registry
    assert registry.get_sample_value("reports_run_failures_total", {"stage": "email"}) == 1
    assert registry.get_sample_value("reports_runs_total", {"trigger": "schedule", "status": "failed"}) == 1
    assert smtp_server.mailbox.messages == []


@pytest.mark.integration
def test_tls_against_an_untrusted_certificate_is_refused(
    settings: ReportsSettings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    from reports_service.mailer import DeliveryError, build_message, send

    configured = mail_settings(settings, smtp_server, tmp_path).smtp
    message = build_message(configured, ["a@example.com"], "s", "b", b"%PDF-1.7", "r.pdf", "<x@y>", utcnow())
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        send(replace(configured, ca_file=""), message)  # the system store does not know the test CA
    assert send(configured, message) == ["a@example.com"]


@pytest.fixture
def sample_pngs() -> Callable[[Path, Path], list[Path]]:
    def convert(pdf: Path, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(out / "page")], check=True)
        return sorted(out.glob("page*.png"))

    return convert
