"""Inference calls are matched by the gateway's routes before any management route: Starlette
tries routes in order, and every call pays for each route tried before its own."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Match

from enginehouse.gateway.router import INFERENCE_ENDPOINTS
from enginehouse.server import create_app
from enginehouse.settings import Settings

MANAGEMENT_CALLS = [
    ("GET", "/v1/engines"), ("POST", "/v1/engines"), ("GET", "/v1/training-jobs"), ("GET", "/v1/datasets"),
    ("GET", "/v1/experiments"), ("GET", "/metrics"),
]


def _first_match(routes: list, method: str, path: str) -> int:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return next(i for i, route in enumerate(routes) if route.matches(scope)[0] is Match.FULL)


def test_inference_routes_are_tried_before_every_management_route(tmp_path: Path) -> None:
    routes = create_app(Settings(data_dir=tmp_path, bootstrap_key="eh-test-admin")).router.routes
    management = min(_first_match(routes, method, path) for method, path in MANAGEMENT_CALLS)
    for path in INFERENCE_ENDPOINTS:
        assert _first_match(routes, "POST", path) < management, path
    assert _first_match(routes, "GET", "/v1/models") < management
