"""The response cache's RFC 9111 decisions (ratelimit_proxy/cache_policy.py), pinned by the JSON vectors in
tests/vectors/ratelimit_proxy_cache/: one pytest case per vector case, named file-case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_proxy import cache_policy as policy

FILES = sorted((Path(__file__).parents[1] / "vectors" / "ratelimit_proxy_cache").glob("*.json"))


def cases() -> list[Any]:
    found = []
    for path in FILES:
        spec = json.loads(path.read_text())
        for case in spec["cases"]:
            found.append(pytest.param(spec["check"], case, id=f"{path.stem}-{case['name']}"))
    return found


def fields(pairs: list[list[str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs]


@pytest.mark.parametrize(("check", "case"), cases())
def test_cache_policy_follows_vector(check: str, case: dict[str, Any]) -> None:
    if check == "storable":
        got: Any = list(
            policy.storable(
                case["method"], case["status"], case["request"], fields(case["response"]), case["authenticated"]
            )
        )
    elif check == "lifetime":
        response = fields(case["response"])
        got = {
            "lifetime": policy.freshness_lifetime(response),
            "age": policy.initial_age(response, case["request_time"], case["response_time"]),
        }
    elif check in ("verdict", "stale_if_error"):
        decide = policy.serve_verdict if check == "verdict" else policy.stale_if_error
        got = decide(
            fields(case["response"]), case["lifetime"], case["initial"], case["stored_at"], case["request"], case["now"]
        )
        got = got.value if isinstance(got, policy.Verdict) else got
    elif check == "validators":
        stored = fields(case["stored"])
        if case["kind"] == "conditional":
            got = [list(f) for f in policy.conditional_headers(stored)]
        elif case["kind"] == "update":
            got = [list(f) for f in policy.updated_headers(stored, fields(case["not_modified"]))]
        else:
            got = policy.client_not_modified(case["request"], stored)
    else:
        assert check == "variants"
        a, b = policy.variant_key(case["vary"], case["a"]), policy.variant_key(case["vary"], case["b"])
        assert (a == b) is case["same"]
        if "key_a" in case:
            assert a == case["key_a"]
        return
    assert got == case["expect"]


def test_every_check_has_vectors() -> None:
    checks = {json.loads(p.read_text())["check"] for p in FILES}
    assert checks == {"storable", "lifetime", "verdict", "stale_if_error", "validators", "variants"}


def test_directives_keep_quoted_commas_together() -> None:
    assert policy.directives('private="a, b", max-age=5') == {"private": "a, b", "max-age": "5"}


FIELD_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=40)
DIRECTIVE = st.sampled_from(
    ["max-age", "s-maxage", "no-cache", "no-store", "private", "public", "must-revalidate", "max-stale",
     "min-fresh", "stale-while-revalidate", "stale-if-error", "x"]
)  # fmt: skip
CONTROL = st.lists(st.tuples(DIRECTIVE, st.one_of(st.just(""), FIELD_VALUES)), max_size=4).map(
    lambda ds: ", ".join(f"{d}={v}" if v else d for d, v in ds)
)


@settings(max_examples=200, deadline=None)
@given(
    response=st.lists(
        st.tuples(
            st.sampled_from(["Cache-Control", "Expires", "Date", "Age", "ETag", "Vary", "Last-Modified"]),
            CONTROL | FIELD_VALUES,
        ),
        max_size=6,
    ),
    request=st.dictionaries(
        st.sampled_from(["cache-control", "pragma", "if-none-match", "if-modified-since"]), CONTROL | FIELD_VALUES
    ),
    now=st.floats(0, 4e9),
)
def test_cache_policy_never_raises_on_any_header_values(
    response: list[tuple[str, str]], request: dict[str, str], now: float
) -> None:
    """What clients and origins send is never an error: every decision answers (a 500 would be ours)."""
    policy.storable("GET", 200, request, response, authenticated=False)
    lifetime = policy.freshness_lifetime(response) or 0.0
    age = policy.initial_age(response, now, now)
    policy.serve_verdict(response, lifetime, age, now, request, now + 1)
    policy.stale_if_error(response, lifetime, age, now, request, now + 1)
    policy.client_not_modified(request, response)
    policy.variant_key(policy.vary_names(response), request)
