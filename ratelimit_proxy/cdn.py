"""Forwarding the proxy's purges to a CDN's purge API, in the request shapes the providers document:

- Fastly: a surrogate-key purge is ``POST {api}/service/{service_id}/purge`` with the header
  ``Fastly-Key: <token>`` and the body ``{"surrogate_keys": [...]}`` (up to 256 keys per call); a URL purge
  is ``POST {api}/purge/{host and path}`` with the same header.
- Cloudflare: ``POST {api}/zones/{zone_id}/purge_cache`` with ``Authorization: Bearer <token>`` and the body
  ``{"files": [absolute URLs]}`` (up to 30 per call) or ``{"tags": [...]}`` (cache tags; Enterprise plans).

Where the provider's plan has no tag purges (``cdn.tag_purge: false``), a tag is sent as the URLs the
proxy stored under it: the tag -> URL map the cache keeps for its own purges.

The token comes from the environment or a file only (``RATELIMIT_PROXY_CACHE__CDN__TOKEN[_FILE]``) and is
never logged: log lines and results name the provider, the call's kind and the status, nothing else.
A CDN that fails does not undo the proxy's own purge: the admin API answers with the CDN's result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from ratelimit_proxy.settings import CdnSettings

log = logging.getLogger("ratelimit_proxy")
DEFAULT_API = {"fastly": "https://api.fastly.com", "cloudflare": "https://api.cloudflare.com/client/v4"}
BATCH = {"fastly": 256, "cloudflare": 30}


def batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class CdnPurger:
    def __init__(self, settings: CdnSettings, on_result: Callable[[str, str], None] = lambda p, r: None) -> None:
        self.settings = settings
        self.provider = settings.provider
        self.api = (settings.api_url or DEFAULT_API.get(settings.provider, "")).rstrip("/")
        self._on_result = on_result

    def purge(self, targets: Sequence[str], tags: Sequence[str], tag_targets: Sequence[str]) -> dict[str, Any]:
        """Forward one purge: ``targets`` (paths with queries), ``tags``, and the targets the proxy knew under
        those tags (sent instead of the tags when the plan has no tag purges). Returns what happened:
        ``{"provider", "calls": [{"kind", "status"|"error"}]}``."""
        if self.provider == "none" or not (targets or tags):
            return {"provider": self.provider, "calls": []}
        calls: list[dict[str, Any]] = []
        urls = [self.absolute(t) for t in targets]
        if not self.settings.tag_purge:
            urls += [self.absolute(t) for t in tag_targets if self.absolute(t) not in urls]
            tags = []
        if self.provider == "fastly":
            for url in urls:
                calls.append(self._call("url", f"{self.api}/purge/{url.split('://', 1)[-1]}", None))
            for group in batches(list(tags), BATCH["fastly"]):
                path = f"{self.api}/service/{self.settings.service_id}/purge"
                calls.append(self._call("tags", path, {"surrogate_keys": group}))
        else:
            path = f"{self.api}/zones/{self.settings.service_id}/purge_cache"
            for group in batches(urls, BATCH["cloudflare"]):
                calls.append(self._call("url", path, {"files": group}))
            for group in batches(list(tags), BATCH["cloudflare"]):
                calls.append(self._call("tags", path, {"tags": group}))
        return {"provider": self.provider, "calls": calls}

    def absolute(self, target: str) -> str:
        return self.settings.public_url.rstrip("/") + target

    def _headers(self) -> dict[str, str]:
        if self.provider == "fastly":
            return {"Fastly-Key": self.settings.token, "Accept": "application/json"}
        return {"Authorization": f"Bearer {self.settings.token}", "Accept": "application/json"}

    def _call(self, kind: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = requests.post(url, json=body, headers=self._headers(), timeout=self.settings.timeout_seconds)
        except requests.RequestException as exc:
            # the exception's text names the host, never the token (it is a header)
            log.warning("CDN purge (%s, %s) failed: %s", self.provider, kind, type(exc).__name__)
            self._on_result(self.provider, "error")
            return {"kind": kind, "error": type(exc).__name__}
        result = "ok" if response.ok else "error"
        if not response.ok:
            log.warning("CDN purge (%s, %s) answered %d", self.provider, kind, response.status_code)
        self._on_result(self.provider, result)
        return {"kind": kind, "status": response.status_code}


def validate_cdn(settings: CdnSettings) -> tuple[str, str] | None:
    """(key, expected) of the first unusable CDN setting, or None."""
    if settings.provider == "none":
        return None
    if not settings.service_id:
        return (
            "cache.cdn.service_id",
            f"the {settings.provider} {'service' if settings.provider == 'fastly' else 'zone'} id",
        )
    if not settings.token:
        return "cache.cdn.token", "a token from RATELIMIT_PROXY_CACHE__CDN__TOKEN or …_TOKEN_FILE"
    parts = urlsplit(settings.public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return "cache.cdn.public_url", "the API's public origin, http(s)://host[:port] (URL purges need it)"
    if settings.api_url:
        api = urlsplit(settings.api_url)
        if api.scheme not in ("http", "https") or not api.hostname:
            return "cache.cdn.api_url", "empty (the provider's API) or http(s)://host[:port][/path]"
    return None
