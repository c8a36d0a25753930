"""The compiled SQL: identifiers only from the allow-list, values bound, and the same answers on SQLite and a
real PostgreSQL for every source, dimension, measure, time grain and the cohort grid; the cohort grid also
against a brute-force computation row by row in Python."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.dialects import postgresql, sqlite

from exporters.business.schema import metadata as platform_metadata
from exporters.business.schema import sessions, users
from reports_service.catalog import SOURCES
from reports_service.query import compile_cohort, compile_table, run_report
from reports_service.scheduler import spec_adapter
from tests.reports.conftest import ROLLUPS_END

NOW = ROLLUPS_END
HOSTILE = "x'); DROP TABLE users; --"


def every_spec() -> Iterator[Any]:
    """Per source: every dimension with every measure, and each time grain; filters on every dimension."""
    for name, source in SOURCES.items():
        dims, measures = list(source.dimensions), list(source.measures)
        yield pytest.param(
            {"source": name, "dimensions": dims, "measures": measures, "time_range": {"last_days": 120}},
            id=f"{name}-all",
        )
        for grain in ("hour", "day", "week", "month"):
            if grain == "hour" and name != "api_usage":
                continue
            yield pytest.param(
                {
                    "source": name,
                    "dimensions": dims[:1],
                    "measures": measures[:2],
                    "time_grain": grain,
                    "time_range": {"last_days": 3 if grain == "hour" else 120},
                    "order_by": [{"field": "time", "descending": False}],
                },
                id=f"{name}-{grain}",
            )
        yield pytest.param(
            {
                "source": name,
                "dimensions": dims[:1],
                "measures": measures[:1],
                "time_range": {"last_days": 120},
                "filters": [{"field": d, "op": "not_in", "values": [HOSTILE]} for d in dims],
            },
            id=f"{name}-filters",
        )


@pytest.mark.parametrize("spec", list(every_spec()))
def test_compiled_sql_names_only_catalog_identifiers_and_binds_every_value(spec: dict[str, Any]) -> None:
    parsed = spec_adapter.validate_python(spec)
    statement, *_ = compile_table(parsed, NOW, 1000)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        compiled = statement.compile(dialect=dialect)
        assert HOSTILE not in str(compiled)
        if parsed.filters:
            assert HOSTILE in [
                v for value in compiled.params.values() for v in (value if isinstance(value, list) else [value])
            ]


@pytest.fixture(scope="module")
def postgres_platform(platform_url: str, postgres_server: Any) -> Iterator[Engine]:
    """The same platform data copied into a fresh PostgreSQL database."""
    engine = create_engine(postgres_server.fresh_database("reports_platform"))
    platform_metadata.create_all(engine)
    source = create_engine(platform_url)
    with source.connect() as reading, engine.begin() as writing:
        for table in platform_metadata.sorted_tables:
            rows = [dict(row._mapping) for row in reading.execute(select(table))]
            if rows:
                writing.execute(table.insert(), rows)
    source.dispose()
    yield engine
    engine.dispose()


def _normal(rows: list[list[Any]]) -> list[list[Any]]:
    return [[round(v, 4) if isinstance(v, float) else v for v in row] for row in rows]


@pytest.mark.integration
@pytest.mark.parametrize("spec", [*every_spec(), pytest.param({"source": "retention_cohorts"}, id="cohorts")])
def test_sqlite_and_postgresql_give_the_same_result(
    spec: dict[str, Any], platform_url: str, postgres_platform: Engine
) -> None:
    parsed = spec_adapter.validate_python(spec)
    # the demo's rollups end at ROLLUPS_END; its accounts, sessions and AI requests at generation time
    now = NOW if parsed.source == "api_usage" else datetime.now(UTC)
    on_sqlite = run_report(create_engine(platform_url), parsed, now, 10_000, 30)
    on_postgres = run_report(postgres_platform, parsed, now, 10_000, 30)
    assert on_sqlite.rows, "the demo data should give every spec some rows"
    assert _normal(on_sqlite.rows) == _normal(on_postgres.rows)
    assert on_sqlite.in_progress == on_postgres.in_progress


def test_cohort_grid_matches_a_brute_force_computation_row_by_row(platform_url: str) -> None:
    today = datetime.now(UTC).replace(hour=9, minute=30, second=0, microsecond=0)
    end = today - timedelta(days=(today.weekday() - 2) % 7)  # a Wednesday: the last cohort is young
    spec = spec_adapter.validate_python(
        {"source": "retention_cohorts", "cohorts": 8, "periods": 6, "end": end.isoformat()}
    )
    result = run_report(create_engine(platform_url), spec, datetime.now(UTC), 10_000, 30)
    engine = create_engine(platform_url)
    with engine.connect() as connection:
        accounts = {row.id: row.signed_up_at.replace(tzinfo=UTC) for row in connection.execute(select(users))}
        activity = [(row.user_id, row.started_at.replace(tzinfo=UTC)) for row in connection.execute(select(sessions))]
    _, _, first, _ = compile_cohort(spec, datetime.now(UTC))
    for index, row in enumerate(result.rows):
        monday = first + timedelta(weeks=index)
        members = {
            uid for uid, signed in accounts.items() if monday <= signed < monday + timedelta(weeks=1) and signed < end
        }
        assert row[0] == monday.strftime("%Y-%m-%d") and row[1] == len(members)
        for week in range(6):
            cell = row[2 + week]
            if monday + timedelta(weeks=week + 1) > end:
                assert cell is None, (row[0], week)  # too young: no value, never 0
                continue
            if not members:
                assert cell is None
                continue
            if week == 0:
                assert cell == 1.0
                continue
            active = {
                uid
                for uid, started in activity
                if uid in members
                and started < end
                and accounts[uid] + timedelta(weeks=week) <= started < accounts[uid] + timedelta(weeks=week + 1)
            }
            assert cell == pytest.approx(len(active) / len(members), abs=1e-6), (row[0], week)
            assert result.in_progress is not None
            assert result.in_progress[index][week] == (monday + timedelta(weeks=week + 2) > end)


def test_a_report_past_its_time_limit_is_a_422_naming_the_spec(platform_url: str) -> None:
    from reports_service.errors import ReportTooExpensiveError

    spec = spec_adapter.validate_python(
        {
            "source": "api_usage",
            "dimensions": ["owner", "key_id", "route", "status_class"],
            "measures": ["calls", "keys"],
            "time_grain": "hour",
            "time_range": {"last_days": 60},
        }
    )
    with pytest.raises(ReportTooExpensiveError) as caught:
        run_report(create_engine(platform_url), spec, NOW, 10_000, 0.001)
    assert caught.value.status == 422 and "spec" in caught.value.details


SUMMARY_SPECS = [
    {"dimensions": ["owner", "tier"], "measures": ["calls", "server_errors", "refused", "avg_latency_ms"]},
    {"dimensions": ["key_id", "route", "status_class"], "measures": ["calls", "max_latency_ms", "within_250ms_ratio"]},
    {"dimensions": ["tier"], "measures": ["keys", "error_ratio", "client_errors"], "time_grain": "day"},
    {"dimensions": [], "measures": ["calls", "refused_ratio"], "time_grain": "week"},
    {
        "dimensions": ["route"],
        "measures": ["calls"],
        "filters": [{"field": "owner", "op": "in", "values": ["customer-001", "customer-004"]}],
    },
]
RANGES = [
    {"start": "2026-11-03T07:31:00Z", "end": "2026-11-29T18:02:00Z"},  # partial days at both ends
    {"start": "2026-11-10T00:00:00Z", "end": "2026-11-17T00:00:00Z"},  # whole days only
    {"start": "2026-11-29T01:00:00Z", "end": "2026-11-30T12:00:00Z"},  # no whole day inside
    {"last_days": 7},
]


def _summary_cases() -> list[Any]:
    return [
        pytest.param({"source": "api_usage", **spec, "time_range": window, "limit": 10_000}, id=f"{n}-{m}")
        for n, spec in enumerate(SUMMARY_SPECS)
        for m, window in enumerate(RANGES)
    ]


@pytest.fixture(scope="module")
def summarised(platform_url: str, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A copy of the platform database with the usage summaries made as of ROLLUPS_END."""
    import shutil

    from reports_service.summary import SUMMARIES, refresh, summary_metadata

    path = tmp_path_factory.mktemp("summary") / "platform.sqlite3"
    shutil.copy(platform_url.removeprefix("sqlite:///"), path)
    engine = create_engine(f"sqlite:///{path}")
    summary_metadata.drop_all(engine)  # app tests' jobs may have summarised the shared database already
    assert refresh(engine, NOW - timedelta(days=1))  # a first pass, then the next day's
    assert refresh(engine, NOW)
    # later passes the same day recompute from the day before the summaries' end (rows the proxy flushed late)
    again = refresh(engine, NOW)
    assert sorted(again) == sorted(summary.name for summary in SUMMARIES)
    assert again["reports_usage_days"] == (datetime(2026, 11, 29), datetime(2026, 11, 30))
    assert again["reports_usage_tier_hours"] == (datetime(2026, 11, 29), datetime(2026, 11, 30, 11))
    return engine


@pytest.mark.parametrize("spec", _summary_cases())
def test_usage_reports_read_from_the_summaries_give_the_minute_rows_answer(
    spec: dict[str, Any], summarised: Engine
) -> None:
    parsed = spec_adapter.validate_python(spec)
    raw = run_report(summarised, parsed, NOW, 10_000, 30, daily_summary=False)
    fast = run_report(summarised, parsed, NOW, 10_000, 30, daily_summary=True)
    assert raw.rows
    assert _normal(fast.rows) == _normal(raw.rows)


def test_the_summaries_are_used_for_whole_periods_only(summarised: Engine) -> None:
    from reports_service.summary import covered_through

    through = covered_through(summarised)
    assert through["reports_usage_days"] == datetime(2026, 11, 30)
    parsed = spec_adapter.validate_python({"source": "api_usage", "measures": ["calls"], "time_range": RANGES[0]})
    statement, *_ = compile_table(parsed, NOW, 100, through)
    assert "reports_usage_tier_days" in str(statement.compile(dialect=sqlite.dialect()))
    hourly = spec_adapter.validate_python({**parsed.model_dump(mode="json"), "time_grain": "hour"})
    statement, *_ = compile_table(hourly, NOW, 100, through)
    sql = str(statement.compile(dialect=sqlite.dialect()))
    assert "reports_usage_tier_hours" in sql and "_days" not in sql
    by_key = spec_adapter.validate_python(
        {"source": "api_usage", "dimensions": ["key_id"], "measures": ["calls"], "time_range": RANGES[2]}
    )
    statement, *_ = compile_table(by_key, NOW, 100, through)  # no whole day inside, no hour summary by key
    assert "reports_usage" not in str(statement.compile(dialect=sqlite.dialect()))


@pytest.mark.integration
def test_the_summaries_on_postgresql_give_the_same_answers(postgres_platform: Engine) -> None:
    from reports_service.summary import refresh

    refresh(postgres_platform, NOW)
    for case in _summary_cases():
        parsed = spec_adapter.validate_python(case.values[0])
        raw = run_report(postgres_platform, parsed, NOW, 10_000, 30, daily_summary=False)
        fast = run_report(postgres_platform, parsed, NOW, 10_000, 30, daily_summary=True)
        assert _normal(fast.rows) == _normal(raw.rows), case.id
