"""schemathesis against the real flags service (PostgreSQL and Redis), once per credential: the admin API
(and the kit's routes) with an admin token, the SDK endpoints and OFREP with a server SDK key; each run
leaves out the other credential's operations, which would only answer 401."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.schema_fuzz import fuzz, served

# Requests valid by the schema that the service may still refuse, each for a rule a JSON Schema cannot state:
# - 422: a flag's cross-field rules (offVariant and every serve name one of its variants, values fit the
#   flag type and each clause's operator, rule ids unique, segments and prerequisite flags exist) and the
#   configured environments (a body's or query's environment name);
# - 412: If-Match names a version other than the current one (the generator cannot know it);
# - 400: OFREP's own answer to a context that lacks what the flag needs (TARGETING_KEY_MISSING).
CONFIG = """
[[operations]]
include-path-regex = "{other}"
enabled = false

[[operations]]
include-path-regex = "^/api/v1/(flags|environments|sdk-keys|stale-flags)"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422"]

[[operations]]
include-path-regex = "^/ofrep/v1/evaluate/flags/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404"]
"""


@pytest.mark.slow
@pytest.mark.timeout(300)  # one to two minutes here; CI runs two test files at once on two cores
@pytest.mark.integration
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("settings", [{"stream_max_seconds": 1.0}], indirect=True)  # SSE ends, no 10 s timeout
def test_schemathesis_finds_nothing_in_the_flags_service(
    app: Flask, client: FlaskClient, admin: dict[str, str], tmp_path: Path, create_flag: Any
) -> None:
    create_flag("new-checkout", clientVisible=True, environments={"production": {"enabled": True}})
    created = client.post(
        "/api/v1/sdk-keys", json={"environment": "production", "kind": "server", "name": "fuzz"}, headers=admin
    )
    with served(app) as url:
        # The SDK key's run first: the admin run may revoke keys.
        sdk = fuzz(url, workdir(tmp_path / "sdk", other=ADMIN_PATHS), headers=bearer(created.json["token"]))
        administration = fuzz(url, workdir(tmp_path / "admin", other=SDK_PATHS), headers=admin)
    assert sdk.failures == [], "\n".join(sdk.failures)[:8000]
    assert administration.failures == [], "\n".join(administration.failures)[:8000]
    assert (sdk.operations, administration.operations) == (6, 24)
    # 251 and 2279 cases on an idle machine; fewer when it is loaded (the whole suite on two cores).
    assert sdk.cases > 50 and administration.cases > 300, (sdk.output[-2000:], administration.output[-2000:])


SDK_PATHS = "^/(ofrep/v1|api/v1/sdk)/"
ADMIN_PATHS = "^/(api/v1/(?!sdk/)|metrics|health|openapi)"


def workdir(path: Path, *, other: str) -> Path:
    path.mkdir()
    (path / "schemathesis.toml").write_text(CONFIG.replace("{other}", other))
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
