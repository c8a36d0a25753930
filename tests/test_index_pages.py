"""Every URL `make up` prints answers 200 at `/`: each of the stack's own processes, started for real from
its shipped config on a free port, serves the kit's index (service_kit/index.py) there.

The URLs are read from scripts/up.sh, which prints them, and each one's port is matched against the port in
the config the process is started with, so a URL added to the list, or a port moved, fails here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

import backups.cli
import backups.service
import exporters.business.cli
import exporters.business.settings
import exporters.health.cli
import exporters.health.settings
import exporters.infra.cli
import exporters.infra.settings
import flags_service.app
import flags_service.cli
import ratelimit_proxy.admin
import ratelimit_proxy.app
import ratelimit_proxy.config
import reports_service.app
import reports_service.cli
import tickets_app.app
import tickets_app.cli
from demo import upstream as demo_upstream
from exporters.business.settings import BusinessSettings
from exporters.health.settings import HealthSettings
from exporters.infra.settings import InfraSettings
from exporters.serving import exporter_app
from flags_service.storage import tables as flags_tables
from reports_service import storage as reports_storage
from service_kit.config import load_settings
from service_kit.db import make_engine, upgrade
from service_kit.index import STANDARD_PATHS
from tests import procfile
from tests.servers import serving

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

# Printed, and served by programs of their own with their own `/`: the local S3 (an S3 API, where an
# unsigned GET / is a ListBuckets refused by design), Prometheus and Alertmanager (their UIs), and with HA=1
# the second Prometheus, VictoriaMetrics and the second Alertmanager.
NOT_OURS = {8333: "local S3", 9090: "Prometheus", 9093: "Alertmanager", 9091: "Prometheus 2", 8428: "VictoriaMetrics",
            9095: "Alertmanager 2"}  # fmt: skip

App = Callable[..., Any]


def printed_ports() -> set[int]:
    """Ports of the URLs scripts/up.sh prints for `make up`: its URL list and the HA lines (`:9102/metrics` is
    shorthand). The staging list (`make staging`) is the same components 10000 ports up."""
    script = (REPO / "scripts" / "up.sh").read_text()
    listing = script.split("cat <<'URLS'\nVibeLux Ops is starting", 1)[1].split("\nURLS\n", 1)[0]
    printed = listing + "".join(re.findall(r'echo "(.*)"', script))
    return {int(port) for port in re.findall(r"(?:https?://127\.0\.0\.1)?:(\d+)\b", printed)}


def demo_port() -> int:
    match = re.search(r"--port (\d+)", procfile.commands()["demo"])
    assert match, "the Procfile's demo line names its port"
    return int(match.group(1))


@pytest.fixture(autouse=True)
def run_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """What scripts/up.sh makes per run and the configs refuse to start without."""
    monkeypatch.setenv("BACKUP_S3__ACCESS_KEY", "VLINDEXTEST")
    monkeypatch.setenv("BACKUP_S3__SECRET_KEY", "index-test-secret")


def sqlite(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / f'{name}.sqlite3'}"


# Each component: (its port in the settings it is started with, a context giving its WSGI app on those
# settings with its databases in a temporary directory and no Redis).
Start = Callable[[Path, pytest.MonkeyPatch], AbstractContextManager[App]]


def proxy_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: str = "http://127.0.0.1:9") -> Any:
    monkeypatch.setenv("RATELIMIT_PROXY_REDIS__URL", "")  # in memory: one process
    monkeypatch.setenv("RATELIMIT_PROXY_UPSTREAM__URL", upstream)
    monkeypatch.setenv("RATELIMIT_PROXY_DATABASE__URL", sqlite(tmp_path, "proxy"))
    return ratelimit_proxy.config.load()


@contextmanager
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield demo_upstream.create_app()


@contextmanager
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The proxy's own port: `/` is the upstream's, here the demo API's index passed through."""
    with serving(demo_upstream.create_app()) as upstream:
        app = ratelimit_proxy.app.create_app(proxy_settings(tmp_path, monkeypatch, upstream))
        yield app
        app.extensions["ratelimit_proxy"].close()


@contextmanager
def proxy_admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    app = ratelimit_proxy.admin.create_admin_app(proxy_settings(tmp_path, monkeypatch))
    yield app
    app.extensions["ratelimit_proxy"].close()


@contextmanager
def tickets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    url = sqlite(tmp_path, "tickets")
    tickets_app.cli.migrate(url)
    monkeypatch.setenv("TICKETS_DATABASE__URL", url)
    monkeypatch.setenv("TICKETS_WEB__SECRET_KEY", "index-test-session-key")
    monkeypatch.setenv("TICKETS_ATTACHMENTS__DIRECTORY", str(tmp_path / "attachments"))
    yield tickets_app.app.create_app(tickets_app.cli.load_settings(), start_sweeper=False)


@contextmanager
def flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    url = sqlite(tmp_path, "flags")
    upgrade(make_engine(url), flags_service.app.MIGRATIONS, flags_tables.metadata)
    monkeypatch.setenv("FLAGS_DATABASE__URL", url)
    monkeypatch.setenv("FLAGS_REDIS__URL", "")  # served from the database
    app = flags_service.app.create_app(flags_service.cli.load_settings())
    yield app
    app.extensions["flags"].recorder.close()
    app.extensions["flags"].cache.close()


@contextmanager
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    url = sqlite(tmp_path, "reports")
    upgrade(make_engine(url), reports_service.app.MIGRATIONS, reports_storage.metadata)
    monkeypatch.setenv("REPORTS_DATABASE__URL", url)
    monkeypatch.setenv("REPORTS_PLATFORM__URL", sqlite(tmp_path, "platform"))
    yield reports_service.app.create_app(reports_service.cli.load_settings(), start_jobs=False)


@contextmanager
def backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("BACKUP_DATABASE__URL", sqlite(tmp_path, "backups"))
    monkeypatch.setenv("BACKUP_WORK_DIR", str(tmp_path / "backups"))
    yield backups.service.create_app(backups.cli.load_settings(), start_jobs=False)


def exporter(name: str, cli: Any, settings_cls: type, env_prefix: str) -> tuple[Callable[[], int], Start]:
    """An exporter from its shipped config, as `vibelux-exporter-<name> serve` builds it (probes and
    queries not started: `/` needs none of them)."""

    def settings() -> Any:
        return load_settings(settings_cls, REPO / "config" / "exporters" / f"{name}.yml", env_prefix, {})

    @contextmanager
    def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
        yield exporter_app(cli.build(settings()), name, cli.DOCS)

    return lambda: settings().server.port, start


COMPONENTS: dict[str, tuple[Callable[[], int], Start]] = {
    "demo": (demo_port, demo),
    "proxy": (lambda: ratelimit_proxy.config.load().server.port, proxy),
    "proxy-admin": (lambda: ratelimit_proxy.config.load().admin.server.port, proxy_admin),
    "tickets": (lambda: tickets_app.cli.load_settings().server.port, tickets),
    "flags": (lambda: flags_service.cli.load_settings().server.port, flags),
    "reports": (lambda: reports_service.cli.load_settings().server.port, reports),
    "backup": (lambda: backups.cli.load_settings().server.port, backup),
    "exporter-infra": exporter("infra", exporters.infra.cli, InfraSettings, exporters.infra.settings.ENV_PREFIX),
    "exporter-health": exporter("health", exporters.health.cli, HealthSettings, exporters.health.settings.ENV_PREFIX),
    "exporter-business": exporter(
        "business", exporters.business.cli, BusinessSettings, exporters.business.settings.ENV_PREFIX
    ),
}


def test_every_printed_url_is_a_component_started_here_or_a_program_of_its_own() -> None:
    ours = {name: port() for name, (port, _) in COMPONENTS.items()}
    assert len(set(ours.values())) == len(ours), ours
    assert printed_ports() == set(ours.values()) | set(NOT_OURS)


def test_printed_urls_are_found_in_the_list_up_sh_prints() -> None:
    """The parser reads what a person sees: the list's first and last lines and the exporters' shorthand."""
    assert {8000, 8080, 9180, 9102, 9103, 9093, 9095} <= printed_ports()


@pytest.mark.parametrize("name", COMPONENTS)
def test_root_answers_200_for_a_browser_and_a_script(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, start = COMPONENTS[name]
    with start(tmp_path, monkeypatch) as app, serving(app) as url:
        page = requests.get(f"{url}/", headers={"Accept": BROWSER}, timeout=10)
        assert page.status_code == 200, page.text[:300]
        assert page.headers["Content-Type"].startswith("text/html")
        answer = requests.get(f"{url}/", headers={"Accept": "*/*"}, timeout=10)  # what curl sends
        assert answer.status_code == 200, answer.text[:300]
        if name == "tickets":  # the desk's `/` is its queue, which sends a stranger to the login page
            assert "/login" in page.url
            return
        index = answer.json()
        if name == "proxy":
            assert index["service"] == "demo-api"  # the upstream's `/`, passed through
        links = [link["href"] for link in index["links"]]
        assert "/healthz" in links and set(links) <= set(STANDARD_PATHS)
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        # /metrics and /readyz are left alone: here they would ask for what the stack runs beside them
        assert ("/metrics" in links) is (name not in ("demo", "proxy"))
        runbook = index["docs"]["runbook"]
        if runbook is not None:
            page_name = runbook.removeprefix("http://127.0.0.1:8081/runbooks/")
            assert (REPO / "docs" / "runbooks" / page_name).is_file(), runbook
        section = index["docs"]["readme"].split("“", 1)[1].removesuffix("”")
        assert re.search(rf"^##+ {re.escape(section)}$", README, re.MULTILINE), section
