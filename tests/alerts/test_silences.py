"""Pure parts of the ack: durations, matchers and the silence payload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service_kit.alerting import AlertmanagerError, parse_duration, parse_matchers, silence_payload

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1d", timedelta(days=1)),
    ],
)
def test_parse_duration_accepts_compound_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "2 h", "1w", "-5m", "0m", "h", "1h 30m"])
def test_parse_duration_rejects_anything_else(text: str) -> None:
    with pytest.raises(AlertmanagerError) as error:
        parse_duration(text)
    assert error.value.field == "duration"


def test_parse_matchers_puts_the_alertname_first_and_adds_labels() -> None:
    assert parse_matchers("ServiceDown", ["service=redis", "instance=a:1"]) == {
        "alertname": "ServiceDown",
        "service": "redis",
        "instance": "a:1",
    }


@pytest.mark.parametrize("pair", ["service", "service=", "=redis", "9x=1", "se rvice=redis"])
def test_parse_matchers_rejects_malformed_pairs(pair: str) -> None:
    with pytest.raises(AlertmanagerError, match="label=value"):
        parse_matchers("ServiceDown", [pair])


def test_silence_payload_is_an_exact_match_silence_marked_as_ack() -> None:
    payload = silence_payload(
        {"alertname": "ServiceDown", "service": "redis"},
        created_by="ana",
        comment=" restarting redis ",
        starts_at=NOW,
        ends_at=NOW + timedelta(minutes=30),
    )
    assert payload == {
        "matchers": [
            {"name": "alertname", "value": "ServiceDown", "isRegex": False, "isEqual": True},
            {"name": "service", "value": "redis", "isRegex": False, "isEqual": True},
        ],
        "startsAt": "2026-11-24T03:00:00Z",
        "endsAt": "2026-11-24T03:30:00Z",
        "createdBy": "ana",
        "comment": "ACK: restarting redis",
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"matchers": {"service": "redis"}}, "alertname"),
        ({"matchers": {"alertname": "X", "bad name": "v"}}, "matchers"),
        ({"created_by": "  "}, "created_by"),
        ({"comment": ""}, "comment"),
        ({"ends_at": NOW}, "ends_at"),
        ({"ends_at": NOW + timedelta(days=8)}, "ends_at"),
        (
            {"starts_at": NOW.replace(tzinfo=None), "ends_at": NOW.replace(tzinfo=None) + timedelta(hours=1)},
            "ends_at",
        ),
    ],
)
def test_silence_payload_names_the_bad_field(overrides: dict, field: str) -> None:
    arguments = {
        "matchers": {"alertname": "ServiceDown"},
        "created_by": "ana",
        "comment": "why",
        "starts_at": NOW,
        "ends_at": NOW + timedelta(hours=1),
    } | overrides
    matchers = arguments.pop("matchers")
    with pytest.raises(AlertmanagerError) as error:
        silence_payload(matchers, **arguments)
    assert error.value.field == field
