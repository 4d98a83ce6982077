"""Errors are RFC 9457 problem details everywhere, and the OpenAPI document lists every route's error answers."""

from __future__ import annotations

import httpx
import pytest

from broker.topics import Topics
from control.api.app import create_app
from control.api.problems import api_routes, error_statuses
from control.client import ApiError, Client
from control.services.tasks import TaskEngine

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def _problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status and body["type"] == "about:blank", body
    return body


def test_every_error_is_a_problem(stack):
    url, token = stack.server.url, stack.cli.token
    auth = {"Authorization": f"Bearer {token}"}
    missing = _problem(httpx.get(f"{url}/api/v1/clusters/nope", headers=auth), 404)
    assert missing["title"] == "Not Found" and missing["instance"] == "/api/v1/clusters/nope"
    assert "no cluster named 'nope'" in missing["detail"]
    anonymous = httpx.get(f"{url}/api/v1/clusters")
    assert _problem(anonymous, 401)["detail"].startswith("missing token")
    assert anonymous.headers["www-authenticate"] == "Bearer"
    bad = _problem(httpx.post(f"{url}/api/v1/login", json={"username": 5}), 422)
    assert bad["errors"] == [
        {"loc": "body.username", "msg": "Input should be a valid string"},
        {"loc": "body.password", "msg": "Field required"},
    ]
    assert bad["detail"] == "username: Input should be a valid string; password: Field required"
    assert "no route /api/v1/nothing" in _problem(httpx.get(f"{url}/api/v1/nothing", headers=auth), 404)["detail"]
    _problem(httpx.put(f"{url}/healthz"), 405)
    wrong = _problem(httpx.post(f"{url}/api/v1/login", json={"username": "admin", "password": "not-it-at-all"}), 401)
    assert wrong["detail"] == "wrong user name or password"

    # the client library keeps the detail as the message and the whole problem
    with pytest.raises(ApiError) as err:
        Client(url, token=token).post("/api/v1/clusters", {"name": 7})
    assert err.value.status == 422 and err.value.problem["errors"][0]["loc"] == "body.name"
    assert str(err.value) == "name: Input should be a valid string"


def test_openapi_documents_every_routes_errors():
    app = create_app(TaskEngine(Topics()))
    doc = app.openapi()
    assert "HTTPValidationError" not in str(doc)
    routes = api_routes(app)
    assert len(routes) > 30
    for route in routes:
        for method in route.methods - {"HEAD"}:
            responses = doc["paths"][route.path][method.lower()]["responses"]
            errors = {int(code) for code in responses if int(code) >= 400}
            assert errors == set(error_statuses(route, method)), f"{method} {route.path}"
            for code in errors:
                content = responses[str(code)]["content"]
                assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            if route.path not in ("/healthz", "/api/v1/login"):
                assert 401 in errors, f"{method} {route.path} does not document 401"
            if method != "GET":
                assert {404, 409, 422} <= errors, f"{method} {route.path}"
    login = doc["paths"]["/api/v1/login"]["post"]["responses"]
    assert {"401", "422", "429"} <= set(login)
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {"title", "status", "detail", "instance"}
