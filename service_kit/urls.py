"""The stack's public base URLs (config/urls.yml): where a person's browser reaches each part.

One place, as service_kit/tiers.py is for tiers: links are only useful if everything that writes one (alert
annotations, Prometheus's and Alertmanager's external URLs, notification templates, incident tickets) agrees
on the addresses. A process's own listen address says nothing about them: `make up` listens on loopback,
compose inside its network, and either may sit behind a host name or a proxy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service_kit.config import ConfigError, checked, load_settings, url_check

DEFAULT_PATH = Path("config/urls.yml")
ENV_PREFIX = "VIBELUX_URLS"  # VIBELUX_URLS_ALERTMANAGER=http://vm:9093
_HTTP = url_check("http", "https")


@dataclass(frozen=True)
class PublicUrls:
    """Base URLs without a trailing slash. Required: their defaults live in config/urls.yml only."""

    prometheus: str = checked("", _HTTP)
    alertmanager: str = checked("", _HTTP)
    grafana: str = checked("", _HTTP)
    desk: str = checked("", _HTTP)
    flags: str = checked("", _HTTP)
    runbooks: str = checked("", _HTTP)  # empty: the desk's /runbooks

    @property
    def runbooks_base(self) -> str:
        return self.runbooks or f"{self.desk}/runbooks"

    def runbook(self, page: str, anchor: str) -> str:
        """A runbook section: `page` is a file of docs/runbooks/ (`services.md`), `anchor` its heading's."""
        return f"{self.runbooks_base}/{page}#{anchor}"

    def dashboard(self, uid: str) -> str:
        """A Grafana dashboard by its uid (Grafana redirects /d/<uid> to the dashboard's full address)."""
        return f"{self.grafana}/d/{uid}"


def load_urls(path: Path | None = None, environ: Mapping[str, str] | None = None) -> PublicUrls:
    """config/urls.yml (or VIBELUX_URLS_CONFIG, or `path`) with VIBELUX_URLS_<KEY> overrides."""
    environ = os.environ if environ is None else environ
    path = path or Path(environ.get(f"{ENV_PREFIX}_CONFIG", DEFAULT_PATH))
    urls = load_settings(PublicUrls, path, ENV_PREFIX, environ)
    for field in dataclasses.fields(PublicUrls):
        if field.name != "runbooks" and not getattr(urls, field.name):
            expected = f"an http:// or https:// URL (or {ENV_PREFIX}_{field.name.upper()})"
            raise ConfigError(field.name, str(path), expected)
    return dataclasses.replace(
        urls, **{field.name: getattr(urls, field.name).rstrip("/") for field in dataclasses.fields(PublicUrls)}
    )
