"""What the dashboard's page tests share: an in-process server on either database, with the
training supervisor and the reconciler stopped (nothing trains, no replica starts), and signing
in as a browser does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.app_clients import app_client
from tests.databases import BACKENDS

KEY = "eh-dashboard-admin-key"
ORIGIN = "http://testserver"


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    with app_client(request.param, tmp_path, KEY, quiet=("training", "reconciler")) as client:
        yield client


def sign_in(client: TestClient, key: str = KEY) -> str:
    """Signs ``client`` in; returns the CSRF token its forms carry."""
    answer = client.post("/login", data={"api_key": key, "next": "/engines"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    return csrf_of(client.get("/engines"))


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def errors_in(page: httpx.Response) -> list[str]:
    return re.findall(r'class="error"[^>]*>([^<]+)<', page.text)
