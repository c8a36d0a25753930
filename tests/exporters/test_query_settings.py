"""The query exporter's config: one line naming the key and where it came from, for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.queries.settings import ENV_PREFIX, QueriesSettings
from service_kit.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "exporters" / "queries.yml"
URL = {f"{ENV_PREFIX}_DATABASE__URL": "postgresql+psycopg://insights@db/tickets"}


def load(environ: dict[str, str], path: Path | None = SHIPPED) -> QueriesSettings:
    settings = load_settings(QueriesSettings, path, ENV_PREFIX, environ)
    settings.validate(str(path))
    return settings


def test_the_shipped_config_loads_with_a_url_from_the_environment() -> None:
    settings = load(URL)
    assert settings.server.port == 9105 and settings.statements.top_k == 50


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param({}, "EXPORTER_QUERIES_DATABASE__URL: database.url: expected a postgresql", id="no-url"),
        pytest.param(
            {f"{ENV_PREFIX}_DATABASE__URL": "sqlite:///x.db"}, "database.url: expected a postgresql", id="sqlite"
        ),
        pytest.param({**URL, f"{ENV_PREFIX}_STATEMENTS__TOP_K": "1000"}, "statements.top_k", id="top-k"),
        pytest.param(
            {**URL, f"{ENV_PREFIX}_SUGGESTIONS__MIN_COST_REDUCTION": "2"}, "suggestions.min_cost_reduction", id="ratio"
        ),
        pytest.param(
            {**URL, f"{ENV_PREFIX}_STATEMENTS__TIMEOUT_SECONDS": "60"},
            f"{SHIPPED}: statements.timeout_seconds: expected at most statements.interval_seconds",
            id="timeout-over-interval",
        ),
    ],
)
def test_bad_settings_stop_with_one_line_naming_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(environ)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_url_is_a_secret_a_file_may_not_set(tmp_path: Path) -> None:
    path = tmp_path / "queries.yml"
    path.write_text("database: {url: 'postgresql+psycopg://u:pw@db/x'}\n")
    with pytest.raises(ConfigError, match="no secret in the file"):
        load(URL, path)
