"""Statement fingerprints: values never matter, shape always does; the scanner copes with any text."""

from __future__ import annotations

import pytest

from service_kit import sqltext

SAME_SHAPE = [
    pytest.param("SELECT * FROM users WHERE id = ? AND name = ?", id="qmark"),
    pytest.param("select *  from users\n where id = %(id_1)s and name = %(name_1)s", id="pyformat"),
    pytest.param("SELECT * FROM users WHERE id = %s AND name = %s", id="format"),
    pytest.param("SELECT * FROM users WHERE id = :id AND name = :name", id="named"),
    pytest.param("SELECT * FROM users WHERE id = $1 AND name = $2", id="postgres-normalised"),
    pytest.param("SELECT * FROM users WHERE id = 42 AND name = 'o''brien'", id="literals"),
    pytest.param("SELECT * FROM users /* from the desk */ WHERE id = 1.5e3 -- note\n AND name = 'x'", id="comments"),
]


@pytest.mark.parametrize("sql", SAME_SHAPE)
def test_fingerprint_of_one_shape_is_the_same_whatever_the_values_or_parameter_style(sql: str) -> None:
    assert sqltext.fingerprint(sql) == sqltext.fingerprint(SAME_SHAPE[0].values[0])
    assert sqltext.normalise(sql) == "select * from users where id = ? and name = ?"


def test_lists_of_any_length_share_one_fingerprint() -> None:
    assert sqltext.normalise("SELECT 1 FROM t WHERE id IN (?, ?, ?)") == "select ? from t where id in (?)"
    assert sqltext.fingerprint("DELETE FROM t WHERE id IN ($1, $2)") == sqltext.fingerprint(
        "DELETE FROM t WHERE id IN (1, 2, 3, 4, 5)"
    )


def test_different_shapes_get_different_fingerprints() -> None:
    shapes = [
        "SELECT a FROM t",
        "SELECT b FROM t",
        "SELECT a FROM u",
        "SELECT 1 + 2",
        "SELECT 1 * 2",
        'SELECT "A" FROM t',
    ]
    assert len({sqltext.fingerprint(sql) for sql in shapes}) == len(shapes)
    assert len(sqltext.fingerprint("SELECT 1")) == sqltext.FINGERPRINT_HEX_DIGITS


def test_casts_stay_shape_and_quoted_values_never_survive() -> None:
    normalised = sqltext.normalise("SELECT CAST(:x AS text), ts::date FROM t WHERE token = 'vbx_secret ''quoted'''")
    assert normalised == "select cast (? as text), ts : : date from t where token = ?"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "select"),
        ("  insert INTO t VALUES (?)", "insert"),
        ("UPDATE t SET a = ?", "update"),
        ("/* why */ DELETE FROM t", "delete"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "other"),
        ("BEGIN", "other"),
        ("", "other"),
    ],
)
def test_statement_type_is_one_of_the_fixed_set(sql: str, expected: str) -> None:
    assert sqltext.statement_type(sql) == expected
    assert expected in sqltext.STATEMENT_TYPES


def test_unterminated_quotes_and_comments_end_the_text_instead_of_failing() -> None:
    for sql in ["SELECT 'open", 'SELECT "open', "SELECT /* open", "SELECT %(open"]:
        assert sqltext.normalise(sql).startswith("select")


def test_identifiers_of_a_plan_filter_skip_literals() -> None:
    assert sqltext.identifiers("(customer_id = $1) AND ((status)::text = 'open'::text)") == {
        "customer_id",
        "and",
        "status",
        "text",
    }
