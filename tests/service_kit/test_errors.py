from __future__ import annotations

import pytest
from flask.testing import FlaskClient


def error_of(response) -> dict:  # type: ignore[no-untyped-def, type-arg]
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]  # type: ignore[no-any-return]


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_missing_item_raises_not_found_with_message(client: FlaskClient) -> None:
    response = client.get("/items/99")
    assert response.status_code == 404
    assert error_of(response)["message"] == "No item 99."


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/items/1")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_oversized_body_is_json_413(client: FlaskClient, app) -> None:  # type: ignore[no-untyped-def]
    app.config["MAX_CONTENT_LENGTH"] = 1024
    response = client.post("/items", data=b"x" * 4096, content_type="application/json")
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_entity_too_large"


def test_validation_error_is_422_naming_the_field(client: FlaskClient) -> None:
    response = client.post("/items", json={"name": ""})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert error["details"] == {"name": "String should have at least 1 character"}


def test_unhandled_exception_is_500_without_internals(client: FlaskClient) -> None:
    response = client.post("/boom", json={"password": "hunter2"}, headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error"
    assert error["details"] == {"request_id": "req-123"}
    text = response.get_data(as_text=True)
    assert "RuntimeError" not in text and "hunter2" not in text and "Traceback" not in text


def test_timeout_of_a_dependency_is_504(client: FlaskClient) -> None:
    response = client.get("/upstream")
    assert response.status_code == 504
    assert error_of(response)["code"] == "gateway_timeout"


@pytest.mark.parametrize("incoming", ["abc-123", "x" * 128])
def test_valid_request_id_is_echoed(client: FlaskClient, incoming: str) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": incoming}).headers["X-Request-ID"] == incoming


def test_hostile_request_id_is_replaced(client: FlaskClient) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": "bad id;<script>"}).headers["X-Request-ID"]
    assert len(echoed) == 32 and echoed.isalnum()
