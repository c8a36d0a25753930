"""schemathesis against the real desk: its CLI server (granian, two workers) on a real SQLite database
filled with the demo's tickets, policies and calendars, an admin token, and a real Alertmanager for acks.

The webhook's shared token is the admin's token too, so the one Authorization header schemathesis sends
reaches the alert webhook's validation as well as every other operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from service_kit.auth import create_token
from service_kit.db import make_engine
from tests.schema_fuzz import fuzz
from tests.servers import AlertmanagerServer
from tests.tickets.test_server import DeskServer
from tickets_app.cli import migrate
from tickets_app.demo import seed
from tickets_app.desk import Desk
from tickets_app.search import SqliteFtsIndex

pytestmark = pytest.mark.integration

# Where a schema-valid request may still be refused with a 422, for a rule no JSON Schema can state. Only
# that check, only there, and only by adding 422 to what it expects: it still fails on anything else.
DEFAULT_POSITIVE = '"2xx", "3xx", "401", "403", "404", "409", "429", "5xx"'
RULES_NO_SCHEMA_STATES = {
    # The file's extension must be on the allow-list and its bytes of that type (magic bytes, UTF-8 text).
    "POST /api/v1/attachments": "file content",
    # A day's spans must end after they start and must not overlap (tickets_app.business_hours).
    "POST /api/v1/sla/calendars": "spans",
    "PUT /api/v1/sla/calendars/{calendar_id}": "spans",
    # `until` must lie in the next 7 days: relative to the clock, which a static document cannot be.
    "POST /api/v1/alerts/acks": "until",
}
CONFIG = "".join(
    f'[[operations]]\ninclude-name = "{name}"  # {why}\n'
    f'checks.positive_data_acceptance.expected-statuses = [{DEFAULT_POSITIVE}, "422"]\n\n'
    for name, why in RULES_NO_SCHEMA_STATES.items()
)


@pytest.fixture
def desk(alertmanager_server: AlertmanagerServer) -> Iterator[tuple[DeskServer, str]]:
    server = DeskServer(TICKETS_ALERTS__ALERTMANAGER_URL=alertmanager_server.url)
    migrate(server.database_url)
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        seed(session, Desk(SqliteFtsIndex()), tickets=12, now=datetime.now(UTC))
        token, _ = create_token(session, "schemathesis", "admin", subject="admin")
        session.commit()
    engine.dispose()
    server.settings["TICKETS_ALERTS__WEBHOOK_TOKEN"] = token
    server.start()
    yield server, token
    server.close()


@pytest.mark.slow
@pytest.mark.timeout(300)  # about 70 s here; CI has two shared cores
def test_schemathesis_finds_nothing_in_the_desk(desk: tuple[DeskServer, str], tmp_path: Path) -> None:
    server, token = desk
    (tmp_path / "schemathesis.toml").write_text(CONFIG)  # found by st in its working directory
    report = fuzz(server.url, tmp_path, headers={"Authorization": f"Bearer {token}"})
    assert report.failures == [], "\n".join(report.failures[:20])
    assert report.operations >= 32 and report.cases > 1000, report.output[-3000:]
