"""Alert acknowledgement as Alertmanager silences (API v2).

Alertmanager has no "ack" of its own; like karma, an ack here is a silence with the acknowledger as
`createdBy` and a comment starting with ``ACK:``, so anyone looking at the silences sees it for what it is,
and `unack` expires it. The payload builder and parsers are pure; `AlertmanagerClient` is the thin HTTP part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict

from service_kit.errors import ExternalAPIError

ACK_PREFIX = "ACK: "
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
QUOTED, ESCAPED = re.compile(r'([\\"])'), r"\\\1"  # what a matcher's quoted value escapes with a backslash
DURATION_PART = re.compile(r"(\d+)([dhms])")
DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Long enough for a fix, short enough that a forgotten ack does not hide the alert for good.
MAX_ACK = timedelta(days=7)


class AlertmanagerError(ExternalAPIError):
    """Alertmanager refused a request or could not be reached (502). The base of every ack error, so the
    CLI catches one type and an API answers each with its own status, without translating."""


class AckInputError(AlertmanagerError):
    """Input an ack cannot be made of: a 422 naming `field`."""

    status, code, expected = 422, "validation_error", True

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, details={field: message})
        self.field = field


class SilenceNotFoundError(AlertmanagerError):
    status, code, expected = 404, "not_found", True


class Ack(BaseModel):
    """An active acknowledgement as read back from Alertmanager; also the acks API's response body."""

    model_config = ConfigDict(frozen=True)

    silence_id: str
    matchers: dict[str, str]
    created_by: str
    comment: str
    starts_at: datetime
    ends_at: datetime


def parse_duration(text: str) -> timedelta:
    """Parse "90m", "2h", "1h30m", "1d" into a timedelta; anything else is an error naming the input."""
    text = text.strip()
    parts = DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise AckInputError(f"duration {text!r} is not like 30m, 2h, 1h30m or 1d", "duration")
    seconds = sum(int(number) * DURATION_UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise AckInputError("duration must be positive", "duration")
    return timedelta(seconds=seconds)


def parse_matchers(alertname: str, pairs: Sequence[str]) -> dict[str, str]:
    """Turn an alert name and ``label=value`` words into exact-match label pairs."""
    matchers = {"alertname": alertname}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not LABEL_NAME.match(name) or not value:
            raise AckInputError(f"matcher {pair!r} is not label=value", "matchers")
        matchers[name] = value
    return matchers


def silence_payload(
    matchers: Mapping[str, str],
    *,
    created_by: str,
    comment: str,
    starts_at: datetime,
    ends_at: datetime,
) -> dict[str, Any]:
    """Build the POST /api/v2/silences body of an ack, refusing input Alertmanager would misread."""
    if not matchers.get("alertname"):
        raise AckInputError("an ack needs the alert name", "alertname")
    for name, value in matchers.items():
        if not LABEL_NAME.match(name) or not value:
            raise AckInputError(f"matcher {name}={value!r} is not label=value", "matchers")
    if not created_by.strip():
        raise AckInputError("an ack needs who acknowledges it", "created_by")
    if not comment.strip():
        raise AckInputError("an ack needs a reason", "comment")
    if ends_at <= starts_at:
        raise AckInputError("an ack must end after it starts", "ends_at")
    if ends_at - starts_at > MAX_ACK:
        raise AckInputError(f"an ack may last at most {MAX_ACK.days} days", "ends_at")
    return {
        "matchers": [
            {"name": name, "value": value, "isRegex": False, "isEqual": True}
            for name, value in sorted(matchers.items())
        ],
        "startsAt": _iso(starts_at),
        "endsAt": _iso(ends_at),
        "createdBy": created_by.strip(),
        "comment": ACK_PREFIX + comment.strip(),
    }


def silence_url(external_url: str, labels: Mapping[str, str]) -> str:
    """Alertmanager's new-silence form prefilled with `labels` as equality matchers, as the notification
    templates write it (config/alertmanager.tmpl, `vibelux.silence_url`): alertname first, then by name (Go's
    SortedPairs), each value quoted with backslash and quote escaped, the whole filter percent-encoded."""
    ordered = sorted(labels.items(), key=lambda item: (item[0] != "alertname", item[0]))
    matchers = ", ".join(f'{name}="{QUOTED.sub(ESCAPED, value)}"' for name, value in ordered)
    return f"{external_url.rstrip('/')}/#/silences/new?filter=" + quote("{" + matchers + "}", safe="")


class AlertmanagerClient:
    """Creates, lists and expires acks on one Alertmanager."""

    def __init__(self, base_url: str, session: requests.Session | None = None, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout

    def ack(
        self,
        matchers: Mapping[str, str],
        *,
        by: str,
        comment: str,
        until: datetime | None = None,
        duration: timedelta | None = None,
        now: datetime | None = None,
    ) -> str:
        """Silence the alerts matching `matchers` until `until` (or for `duration`); return the silence id."""
        starts_at = now or datetime.now(UTC)
        if (until is None) == (duration is None):
            raise AckInputError("give either until or duration", "until")
        ends_at = until if until is not None else starts_at + (duration or timedelta())
        payload = silence_payload(matchers, created_by=by, comment=comment, starts_at=starts_at, ends_at=ends_at)
        body = self._request("POST", "/api/v2/silences", json=payload)
        return str(body["silenceID"])

    def unack(self, silence_id: str) -> None:
        """Expire one ack; Alertmanager keeps it in its history as expired."""
        if not re.fullmatch(r"[0-9a-fA-F-]{1,64}", silence_id):
            raise AckInputError(f"silence id {silence_id!r} is malformed", "silence_id")
        self._request("DELETE", f"/api/v2/silence/{silence_id}")

    def unack_matching(self, matchers: Mapping[str, str]) -> list[str]:
        """Expire every active ack whose matchers are exactly `matchers`; return their ids."""
        expired = []
        for ack in self.acks():
            if ack.matchers == dict(matchers):
                self.unack(ack.silence_id)
                expired.append(ack.silence_id)
        return expired

    def acks(self) -> list[Ack]:
        """Active acks (silences created by `ack`), soonest to end first."""
        silences = self._request("GET", "/api/v2/silences")
        found = [
            Ack(
                silence_id=silence["id"],
                matchers={m["name"]: m["value"] for m in silence["matchers"]},
                created_by=silence["createdBy"],
                comment=silence["comment"].removeprefix(ACK_PREFIX),
                starts_at=_parse_time(silence["startsAt"]),
                ends_at=_parse_time(silence["endsAt"]),
            )
            for silence in silences
            if silence["status"]["state"] == "active" and silence["comment"].startswith(ACK_PREFIX)
        ]
        return sorted(found, key=lambda ack: ack.ends_at)

    def alerts(self, matchers: Mapping[str, str]) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds for `matchers`, silenced or not (each has `status.silencedBy`)."""
        params = {"filter": [f'{name}="{value}"' for name, value in matchers.items()]}
        result: list[dict[str, Any]] = self._request("GET", "/api/v2/alerts", params=params)
        return result

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise AlertmanagerError(f"Alertmanager at {self.base_url} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            message = f"Alertmanager refused {method} {path}: {response.status_code} {response.text.strip()}"
            # Alertmanager 0.25 answers an unknown silence id with 500 "silence not found".
            raise SilenceNotFoundError(message) if "not found" in response.text else AlertmanagerError(message)
        return response.json() if response.content else None


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise AckInputError("times must carry a time zone", "ends_at")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
