"""OFREP endpoints: exact shapes, errors, key kinds, ETag/304, CORS, the provider configuration, and the
official Python provider."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from flags_service.cli import cli
from flags_service.snapshots import content_hash
from service_kit.cli import run
from tests.flags.conftest import LiveServer, SdkKeys

H = dict[str, str]
CONFIGURATION = "/ofrep/v1/configuration"
SPEC_FLAG_TYPES = {"int", "float", "string", "boolean", "object"}  # the spec's flagEvaluation.supportedTypes enum
PRO_RULE = {
    "id": "pro",
    "clauses": [{"attribute": "tier", "op": "in", "values": ["professional"]}],
    "serve": {"variant": "on"},
}


@pytest.fixture
def flags(create_flag: Callable) -> None:
    create_flag(
        "new-checkout",
        clientVisible=True,
        owner="payments",
        environments={"production": {"enabled": True, "rules": [PRO_RULE]}},
    )
    create_flag("internal-only", environments={"production": {"enabled": True, "fallthrough": {"variant": "on"}}})
    create_flag(
        "rollout",
        clientVisible=True,
        environments={
            "production": {
                "enabled": True,
                "fallthrough": {"rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}]},
            }
        },
    )


def bearer(token: str) -> H:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.usefixtures("flags")
def test_single_evaluation_has_exact_ofrep_shape(client: FlaskClient, sdk_keys: SdkKeys) -> None:
    response = client.post(
        "/ofrep/v1/evaluate/flags/new-checkout",
        json={"context": {"targetingKey": "user-1", "tier": "professional"}},
        headers=bearer(sdk_keys.server),
    )
    assert response.status_code == 200
    assert response.json == {
        "key": "new-checkout",
        "value": True,
        "reason": "TARGETING_MATCH",
        "variant": "on",
        "metadata": {"kind": "release", "owner": "payments"},
    }
    free = client.post(
        "/ofrep/v1/evaluate/flags/new-checkout",
        json={"context": {"tier": "free"}},
        headers={"X-API-Key": sdk_keys.client},
    )
    assert (free.json["value"], free.json["reason"], free.json["variant"]) == (False, "DEFAULT", "off")


@pytest.mark.usefixtures("flags")
@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/ofrep/v1/evaluate/flags/nope", {"context": {}}, 404, "FLAG_NOT_FOUND"),
        ("/ofrep/v1/evaluate/flags/new-checkout", b"{not json", 400, "PARSE_ERROR"),
        ("/ofrep/v1/evaluate/flags/new-checkout", {"context": [1]}, 400, "INVALID_CONTEXT"),
        ("/ofrep/v1/evaluate/flags/new-checkout", {"context": {"targetingKey": 5}}, 400, "INVALID_CONTEXT"),
        ("/ofrep/v1/evaluate/flags/rollout", {"context": {"tier": "professional"}}, 400, "TARGETING_KEY_MISSING"),
    ],
)
def test_single_evaluation_errors(
    client: FlaskClient, sdk_keys: SdkKeys, path: str, body: object, status: int, code: str
) -> None:
    kwargs = {"data": body, "content_type": "application/json"} if isinstance(body, bytes) else {"json": body}
    response = client.post(path, headers=bearer(sdk_keys.server), **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.json["errorCode"] == code
    assert response.json["key"] == path.rsplit("/", 1)[1]
    assert isinstance(response.json["errorDetails"], str)


@pytest.mark.usefixtures("flags")
def test_unauthenticated_requests_get_401_without_a_body(client: FlaskClient) -> None:
    for headers in ({}, bearer("fsk_not_a_key"), {"X-API-Key": "fsk_not_a_key"}):
        responses = [
            client.post("/ofrep/v1/evaluate/flags/new-checkout", json={"context": {}}, headers=headers),
            client.post("/ofrep/v1/evaluate/flags", json={"context": {}}, headers=headers),
            client.get(CONFIGURATION, headers=headers),
        ]
        assert [(response.status_code, response.data) for response in responses] == [(401, b"")] * 3


@pytest.mark.usefixtures("flags")
def test_client_keys_cannot_read_server_only_flags(client: FlaskClient, sdk_keys: SdkKeys) -> None:
    single = client.post(
        "/ofrep/v1/evaluate/flags/internal-only", json={"context": {}}, headers=bearer(sdk_keys.client)
    )
    assert single.status_code == 404
    assert single.json["errorCode"] == "FLAG_NOT_FOUND"
    context = {"context": {"targetingKey": "u1"}}
    client_keys = {
        i["key"]
        for i in client.post("/ofrep/v1/evaluate/flags", json=context, headers=bearer(sdk_keys.client)).json["flags"]
    }
    server_keys = {
        i["key"]
        for i in client.post("/ofrep/v1/evaluate/flags", json=context, headers=bearer(sdk_keys.server)).json["flags"]
    }
    assert client_keys == {"new-checkout", "rollout"}
    assert server_keys == {"new-checkout", "rollout", "internal-only"}
    assert client.get("/api/v1/sdk/snapshot", headers=bearer(sdk_keys.client)).status_code == 403


@pytest.mark.usefixtures("flags")
def test_bulk_has_etag_and_answers_304_until_something_changes(
    client: FlaskClient, sdk_keys: SdkKeys, admin: H
) -> None:
    context = {"context": {"targetingKey": "user-7", "tier": "professional"}}
    first = client.post("/ofrep/v1/evaluate/flags", json=context, headers=bearer(sdk_keys.server))
    assert first.status_code == 200
    items = {item["key"]: item for item in first.json["flags"]}
    assert items["new-checkout"] == {
        "key": "new-checkout", "value": True, "reason": "TARGETING_MATCH", "variant": "on",
        "metadata": {"kind": "release", "owner": "payments"},
    }  # fmt: skip
    assert items["rollout"]["reason"] == "SPLIT"
    etag = first.headers["ETag"]
    again = client.post(
        "/ofrep/v1/evaluate/flags", json=context, headers={**bearer(sdk_keys.server), "If-None-Match": etag}
    )
    assert again.status_code == 304
    other_context = {"context": {"targetingKey": "user-8"}}
    other = client.post(
        "/ofrep/v1/evaluate/flags", json=other_context, headers={**bearer(sdk_keys.server), "If-None-Match": etag}
    )
    assert other.status_code == 200
    client.post("/api/v1/flags/new-checkout/environments/production/toggle", json={}, headers=admin)
    changed = client.post(
        "/ofrep/v1/evaluate/flags", json=context, headers={**bearer(sdk_keys.server), "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert {i["key"]: i for i in changed.json["flags"]}["new-checkout"]["reason"] == "DISABLED"
    missing = client.post("/ofrep/v1/evaluate/flags", json={"context": {}}, headers=bearer(sdk_keys.server))
    errors = {i["key"]: i for i in missing.json["flags"]}
    assert errors["rollout"] == {
        "key": "rollout",
        "errorCode": "TARGETING_KEY_MISSING",
        "errorDetails": errors["rollout"]["errorDetails"],
    }


@pytest.mark.usefixtures("flags")
def test_cors_preflight_and_exposed_etag_for_browsers(client: FlaskClient, sdk_keys: SdkKeys) -> None:
    origin = {"Origin": "https://app.example.com"}
    preflight = client.options(
        "/ofrep/v1/evaluate/flags",
        headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    bulk = client.post(
        "/ofrep/v1/evaluate/flags",
        json={"context": {"targetingKey": "u"}},
        headers={**origin, **bearer(sdk_keys.client)},
    )
    assert bulk.headers["Access-Control-Expose-Headers"] == "ETag"
    assert bulk.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.integration
@pytest.mark.usefixtures("flags")
def test_official_openfeature_ofrep_provider_against_the_live_endpoint(
    live_server: LiveServer, sdk_keys: SdkKeys
) -> None:
    provider = OFREPProvider(live_server.url, headers_factory=lambda: {"Authorization": f"Bearer {sdk_keys.server}"})
    api.set_provider(provider, domain="ofrep-test")
    client = api.get_client(domain="ofrep-test")
    pro = EvaluationContext("user-1", {"tier": "professional"})
    details = client.get_boolean_details("new-checkout", False, pro)
    assert (details.value, details.reason, details.variant) == (True, Reason.TARGETING_MATCH, "on")
    assert details.flag_metadata == {"kind": "release", "owner": "payments"}
    split = client.get_boolean_details("rollout", False, EvaluationContext("user-1"))
    assert split.reason == Reason.SPLIT
    missing = client.get_boolean_details("does-not-exist", True, pro)
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    no_key = client.get_boolean_details("rollout", True, EvaluationContext(None, {"tier": "professional"}))
    assert (no_key.value, no_key.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)
    wrong_type = client.get_string_details("new-checkout", "x", pro)
    assert wrong_type.error_code == ErrorCode.TYPE_MISMATCH
    api.shutdown()


@pytest.mark.usefixtures("flags")
def test_ofrep_evaluations_are_counted_by_flag_and_variant_only_for_known_flags(
    app: Flask, client: FlaskClient, sdk_keys: SdkKeys
) -> None:
    for user in ("u1", "u2", "u3"):
        client.post(
            "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": user}}, headers=bearer(sdk_keys.server)
        )
    client.post(
        "/ofrep/v1/evaluate/flags/new-checkout",
        json={"context": {"tier": "professional"}},
        headers=bearer(sdk_keys.server),
    )
    client.post("/ofrep/v1/evaluate/flags/unknown-flag", json={"context": {}}, headers=bearer(sdk_keys.server))
    app.extensions["flags"].recorder.flush()
    registry = app.extensions["service_kit"].metrics.registry
    samples = {
        (sample.labels["flag"], sample.labels["variant"]): sample.value
        for metric in registry.collect()
        if metric.name == "flags_evaluations"
        for sample in metric.samples
        if sample.name == "flags_evaluations_total"
    }
    assert samples[("new-checkout", "off")] == 3
    assert samples[("new-checkout", "on")] == 1
    assert samples[("internal-only", "on")] == 3
    assert sum(v for (flag, _), v in samples.items() if flag == "rollout") == 3
    assert {flag for flag, _ in samples} == {"new-checkout", "internal-only", "rollout"}


def test_memoised_results_keep_json_types_apart_and_skip_list_values(
    client: FlaskClient, sdk_keys: SdkKeys, create_flag: Callable
) -> None:
    rule = {"clauses": [{"attribute": "beta", "op": "equals", "values": [True]}], "serve": {"variant": "on"}}
    create_flag("typed", environments={"production": {"enabled": True, "rules": [rule]}})

    def served(value: object) -> str:
        body = {"context": {"targetingKey": "u", "beta": value}}
        response = client.post("/ofrep/v1/evaluate/flags/typed", json=body, headers=bearer(sdk_keys.server))
        return str(response.json["variant"])

    assert [served(v) for v in (True, 1, True, 1.0, [True], [0], "true")] == [
        "on",
        "off",
        "on",
        "off",
        "on",
        "off",
        "off",
    ]


@pytest.mark.usefixtures("flags")
def test_bulk_items_equal_single_evaluations_in_snapshot_order(
    app: Flask, client: FlaskClient, sdk_keys: SdkKeys, create_flag: Callable
) -> None:
    """The bulk layout (context-free items made once, memoised and per-user flags filled per request) answers
    exactly what the single-flag endpoint answers, for both key kinds, memo hits and unhashable values."""
    create_flag(
        "needs-checkout",
        clientVisible=True,
        environments={
            "production": {
                "enabled": True,
                "prerequisites": [{"flag": "new-checkout", "variant": "on"}],
                "fallthrough": {"variant": "on"},
            }
        },
    )
    create_flag("switched-off", clientVisible=True)
    contexts = [
        {"targetingKey": "u1", "tier": "professional"},
        {"targetingKey": "u2", "tier": "free"},
        {"tier": "professional"},  # the rollout's item is an error
        {"targetingKey": "u3", "tier": "enterprise"},
        {"targetingKey": "u1", "tier": "professional"},  # memo hits now
    ]
    snapshot_order = list(app.extensions["flags"].cache.get("production").flags)
    for token in (sdk_keys.server, sdk_keys.client):
        for context in contexts:
            bulk = client.post("/ofrep/v1/evaluate/flags", json={"context": context}, headers=bearer(token)).json
            keys = [item["key"] for item in bulk["flags"]]
            assert keys == [key for key in snapshot_order if key in keys]
            singles = [
                client.post(f"/ofrep/v1/evaluate/flags/{key}", json={"context": context}, headers=bearer(token)).json
                for key in keys
            ]
            assert bulk["flags"] == singles
    assert len(keys) == 4 and "internal-only" not in keys
    bulk = client.post("/ofrep/v1/evaluate/flags", json={"context": contexts[0]}, headers=bearer(sdk_keys.server))
    items = {item["key"]: item for item in bulk.json["flags"]}
    assert (items["needs-checkout"]["variant"], items["switched-off"]["reason"]) == ("on", "DISABLED")


def test_bulk_etag_hash_stays_the_same_across_releases_and_key_order() -> None:
    """Clients keep ETags across deploys, so the hash of (environment, version, key kind, context) is pinned."""
    context = {"targetingKey": "u-1", "tier": "pro", "beta": True, "n": 1.5, "tags": ["a", "b"]}
    reordered = dict(reversed(context.items()))
    assert content_hash("production", 7, "client", context) == "269093e77a8a9e8c555d4c2edda84efe"
    assert content_hash("production", 7, "client", reordered) == "269093e77a8a9e8c555d4c2edda84efe"


def test_configuration_has_the_spec_shape_for_both_key_kinds(client: FlaskClient, sdk_keys: SdkKeys) -> None:
    """The spec's configurationResponse: ``name`` (string) and ``capabilities`` with
    ``cacheInvalidation.polling`` {``enabled``: boolean, ``minPollingIntervalMs``: number} and
    ``flagEvaluation.supportedTypes`` (array of the type enum)."""
    server = client.get(CONFIGURATION, headers=bearer(sdk_keys.server))
    browser = client.get(CONFIGURATION, headers={"X-API-Key": sdk_keys.client})
    assert (server.status_code, browser.status_code, server.mimetype) == (200, 200, "application/json")
    assert (
        server.json
        == browser.json
        == {
            "name": "vibelux-flags",
            "capabilities": {
                "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": 10_000}},
                "flagEvaluation": {"supportedTypes": ["boolean", "string", "int", "float", "object"]},
            },
        }
    )
    assert set(server.json["capabilities"]["flagEvaluation"]["supportedTypes"]) == SPEC_FLAG_TYPES
    assert server.headers["ETag"] == browser.headers["ETag"]


def test_configuration_etag_answers_304(client: FlaskClient, sdk_keys: SdkKeys) -> None:
    etag = client.get(CONFIGURATION, headers=bearer(sdk_keys.server)).headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
    weak_in_a_list = client.get(CONFIGURATION, headers={**bearer(sdk_keys.server), "If-None-Match": f'"x", W/{etag}'})
    assert (weak_in_a_list.status_code, weak_in_a_list.data, weak_in_a_list.headers["ETag"]) == (304, b"", etag)
    other = client.get(CONFIGURATION, headers={**bearer(sdk_keys.server), "If-None-Match": '"other"'})
    assert (other.status_code, other.json["name"]) == (200, "vibelux-flags")
    unauthenticated = client.get(CONFIGURATION, headers={"If-None-Match": etag})
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize(
    ("settings", "interval_ms"),
    [({}, 10_000), ({"ofrep_min_polling_seconds": 2.5}, 2_500), ({"ofrep_min_polling_seconds": 0.0004}, 1)],
    indirect=["settings"],
)
def test_configuration_polling_interval_follows_the_setting(
    client: FlaskClient, sdk_keys: SdkKeys, interval_ms: int
) -> None:
    """Whole milliseconds, rounded up: a provider never polls under the configured minimum."""
    response = client.get(CONFIGURATION, headers=bearer(sdk_keys.server))
    assert response.json["capabilities"]["cacheInvalidation"]["polling"]["minPollingIntervalMs"] == interval_ms


def test_configuration_cors_preflight_and_headers(client: FlaskClient, sdk_keys: SdkKeys) -> None:
    origin = {"Origin": "https://app.example.com"}
    preflight = client.options(
        CONFIGURATION,
        headers={**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    for headers in ({**origin, "X-API-Key": sdk_keys.client}, origin):  # a browser reads the 401 too
        response = client.get(CONFIGURATION, headers=headers)
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Expose-Headers"] == "ETag"


@pytest.mark.parametrize("settings", [{"cors_origins": ["https://app.example.com"]}], indirect=True)
def test_configuration_cors_only_for_configured_origins(client: FlaskClient, sdk_keys: SdkKeys) -> None:
    allowed = client.get(CONFIGURATION, headers={"Origin": "https://app.example.com", "X-API-Key": sdk_keys.client})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert allowed.headers["Vary"] == "Origin"
    other = client.get(CONFIGURATION, headers={"Origin": "https://evil.example", "X-API-Key": sdk_keys.client})
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "a number greater than 0, got 0"),
        ("-5", "a number greater than 0, got -5"),
        ("soon", "a number, got 'soon'"),
    ],
)
def test_bad_polling_interval_stops_start_up_with_one_line(
    tmp_path: Path, value: str, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "flags.yml"
    config.write_text(f"flags:\n  ofrep_min_polling_seconds: {value}\n")
    monkeypatch.setenv("VIBELUX_FLAGS_CONFIG", str(config))
    with pytest.raises(SystemExit) as stopped:
        run(cli, ["check-config"])
    assert stopped.value.code == 2
    assert (
        capsys.readouterr().err == f"config error in {config}: flags.ofrep_min_polling_seconds: expected {expected}\n"
    )


def invalid_contexts(app: Flask) -> dict[str, float]:
    registry = app.extensions["service_kit"].metrics.registry
    return {
        reason: registry.get_sample_value("flags_invalid_context_total", {"reason": reason}) or 0.0
        for reason in ("unknown_tier", "malformed")
    }


@pytest.mark.usefixtures("flags")
@pytest.mark.parametrize("tier", ["pro", "gold", "Professional", 3])
def test_an_unknown_tier_is_invalid_context_not_the_default(
    app: Flask, client: FlaskClient, sdk_keys: SdkKeys, tier: object
) -> None:
    """A paying customer sent as ``pro`` (the old name) used to get the default quietly."""
    body = {"context": {"targetingKey": "user-1", "tier": tier}}
    single = client.post("/ofrep/v1/evaluate/flags/new-checkout", json=body, headers=bearer(sdk_keys.server))
    assert single.status_code == 400
    assert (single.json["key"], single.json["errorCode"]) == ("new-checkout", "INVALID_CONTEXT")
    assert single.json["errorDetails"].startswith("context.tier: Input should be 'free', 'startup'")
    bulk = client.post("/ofrep/v1/evaluate/flags", json=body, headers=bearer(sdk_keys.client))
    assert bulk.status_code == 400
    assert bulk.json["errorCode"] == "INVALID_CONTEXT" and "key" not in bulk.json
    assert invalid_contexts(app) == {"unknown_tier": 2.0, "malformed": 0.0}
    known = client.post(
        "/ofrep/v1/evaluate/flags/new-checkout",
        json={"context": {"targetingKey": "user-1", "tier": "professional"}},
        headers=bearer(sdk_keys.server),
    )
    assert (known.status_code, known.json["variant"]) == (200, "on")


@pytest.mark.usefixtures("flags")
def test_a_malformed_context_is_counted_apart_from_unknown_tiers(
    app: Flask, client: FlaskClient, sdk_keys: SdkKeys
) -> None:
    for context in ([1], {"targetingKey": 5}, None, {"country\u0000": "NL"}):
        response = client.post("/ofrep/v1/evaluate/flags", json={"context": context}, headers=bearer(sdk_keys.server))
        assert (response.status_code, response.json["errorCode"]) == (400, "INVALID_CONTEXT")
    assert invalid_contexts(app) == {"unknown_tier": 0.0, "malformed": 4.0}


@pytest.mark.usefixtures("flags")
@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"", "application/json"), (b"", None), (b'{"context": {"tier": "free"}}', "text/plain")],
)
def test_an_empty_body_is_an_empty_context_and_any_media_type_is_read(
    client: FlaskClient, sdk_keys: SdkKeys, body: bytes, content_type: str | None
) -> None:
    response = client.post(
        "/ofrep/v1/evaluate/flags/new-checkout", data=body, content_type=content_type, headers=bearer(sdk_keys.server)
    )
    assert (response.status_code, response.json["reason"], response.json["variant"]) == (200, "DEFAULT", "off")


def test_openapi_document_states_ofreps_own_shapes_and_statuses(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    single = document["paths"]["/ofrep/v1/evaluate/flags/{key}"]["post"]
    assert {"200", "400", "401", "403", "404"} <= single["responses"].keys()
    assert "422" not in single["responses"]
    assert "content" not in single["responses"]["401"]  # the spec's 401/403 have no body
    failure = single["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert failure == "#/components/schemas/EvaluationFailure"
    schemas = document["components"]["schemas"]
    assert set(schemas["EvaluationFailure"]["required"]) == {"key", "errorCode", "errorDetails"}
    context = schemas["EvaluationContext"]["properties"]
    assert {"enum": ["free", "startup", "professional", "enterprise"], "type": "string"} in context["tier"]["anyOf"]
    bulk = document["paths"]["/ofrep/v1/evaluate/flags"]["post"]["responses"]
    assert {"200", "304", "400", "401", "403"} <= bulk.keys()
    for path in ("/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/{key}"):  # beside their OPTIONS routes
        assert document["paths"][path]["post"]["requestBody"]["required"] is False  # no body: empty context
    assert "/ofrep/v1/configuration" in document["paths"]
    assert "/api/v1/flags/{key}/environments/{env}/toggle" in document["paths"]
