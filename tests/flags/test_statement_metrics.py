"""The flags service times its database statements with the kit's hook (service_kit/statements.py)."""

from __future__ import annotations

from flask import Flask

from tests.service_kit.service_statements import assert_readiness_probe_counted


def test_flags_statements_are_counted_by_fingerprint(app: Flask) -> None:
    assert_readiness_probe_counted(app)
