"""A replica's Retry-After reaches the client through the gateway; its other headers do not."""

from __future__ import annotations

from multidict import CIMultiDict

from enginehouse.gateway.service import passed_headers


def test_retry_after_is_passed_through_whatever_its_case() -> None:
    upstream = CIMultiDict({"retry-after": "7", "content-length": "12", "server": "uvicorn"})
    assert passed_headers(upstream) == {"Retry-After": "7"}


def test_no_retry_after_adds_none() -> None:
    assert passed_headers(CIMultiDict({"content-type": "application/json"})) == {}
