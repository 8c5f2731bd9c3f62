"""The OpenAPI document lists every route with its body, its answers and its error statuses, and
states name rules exactly as they are checked. (tests/integration/test_openapi.py checks it
against a live server.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enginehouse.api.openapi import api_routes
from enginehouse.core.specs import NAME_PATTERN, check_name
from enginehouse.gateway.router import INFERENCE_ENDPOINTS
from enginehouse.server import create_app
from enginehouse.settings import Settings

KEY = "eh-test-admin"


@pytest.fixture(scope="module")
def app_and_document(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("data"), bootstrap_key=KEY))
    return app, app.openapi()


def test_every_route_is_documented_with_its_error_statuses(app_and_document: tuple[Any, dict[str, Any]]) -> None:
    app, document = app_and_document
    routes = api_routes(app)
    assert len(routes) >= 28
    for route in routes:
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            statuses = set(operation["responses"])
            assert "400" in statuses, (method, route.path_format)
            if route.path_format.startswith("/v1/"):
                assert {"401"} <= statuses and operation["security"], (method, route.path_format)
            if "{" in route.path_format:
                assert "404" in statuses
            if method != "GET":
                assert "413" in statuses
            for status in statuses - {"200", "201", "202"}:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, route.path_format, status)


def test_the_inference_routes_document_their_bodies_and_answers(app_and_document: tuple[Any, dict[str, Any]]) -> None:
    _, document = app_and_document
    schemas = document["components"]["schemas"]
    for path, (request_model, response_model) in INFERENCE_ENDPOINTS.items():
        operation = document["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request_model.__name__}"}
        assert schemas[request_model.__name__]["additionalProperties"] is False
        assert {"400", "401", "404", "409", "413", "503"} <= set(operation["responses"])
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{response_model.__name__}"}
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert chat["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0.0, "maximum": 2.0}
    assert "text/event-stream" in document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]


def test_the_error_envelope_is_exact(app_and_document: tuple[Any, dict[str, Any]]) -> None:
    _, document = app_and_document
    schemas = document["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"message", "type", "code", "param"}
    assert "HTTPValidationError" not in schemas


def test_name_fields_carry_the_pattern_they_are_checked_with(app_and_document: tuple[Any, dict[str, Any]]) -> None:
    _, document = app_and_document
    name = document["components"]["schemas"]["EngineSpec"]["properties"]["name"]
    assert name["pattern"] == NAME_PATTERN.pattern
    undeploy = document["components"]["schemas"]["UndeployRequest"]["properties"]["deployment_name"]
    assert undeploy["pattern"] == NAME_PATTERN.pattern
    # JSON Schema's "$" ends the text; so does the check (a trailing newline is no name).
    for candidate in ["a", "a" * 100, "a\n", "a" * 101, "-a", "a b", "é"]:
        json_schema_says = re.fullmatch(NAME_PATTERN.pattern.strip("^$"), candidate) is not None
        try:
            check_name(candidate)
            checked = True
        except ValueError:
            checked = False
        assert checked == json_schema_says, candidate


def test_a_model_name_no_deployment_can_have_is_404_unknown(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bootstrap_key=KEY)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for model in ["nul\u0000inside", "x" * 100_000, "line\n"]:
            response = client.post("/v1/completions", json={"model": model, "prompt": "hi"},
                                   headers={"Authorization": f"Bearer {KEY}"})
            assert response.status_code == 404, response.text
            error = response.json()["error"]
            assert error["code"] == "model_not_found" and len(error["message"]) < 200


def test_the_document_is_served(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bootstrap_key=KEY)
    with TestClient(create_app(settings)) as client:
        document = client.get("/openapi.json").json()
    assert "/v1/embeddings" in document["paths"] and "/metrics" in document["paths"]


def test_the_artifact_routes_document_the_wait_for_a_first_reading(
        app_and_document: tuple[Any, dict[str, Any]]) -> None:
    _, document = app_and_document
    artifact_paths = [p for p in document["paths"] if p.startswith(("/v1/replica-artifacts/", "/v1/training-artifacts/"))]
    assert len(artifact_paths) == 4
    for path in artifact_paths:  # the manifest, and a file asked for before its directory was read
        assert {"401", "404", "503"} <= set(document["paths"][path]["get"]["responses"]), path
