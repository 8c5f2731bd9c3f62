"""The gateway decides from the validated body, never from raw JSON values: only a ``stream``
that is really ``true`` is relayed as an event stream."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from enginehouse.errors import BadRequestError
from enginehouse.gateway.service import parse_body, wants_stream


class LenientRequest(BaseModel):
    """A request model that lets any ``stream`` value through, as a lax one would."""

    model: str
    stream: Any = None


def test_only_a_real_true_is_a_stream() -> None:
    assert wants_stream(parse_body(b'{"model": "m", "stream": true}', LenientRequest))
    for value in ('"true"', '"false"', "1", '"yes"', "null", "false", "[true]"):
        body = parse_body(f'{{"model": "m", "stream": {value}}}'.encode(), LenientRequest)
        assert not wants_stream(body), value
    assert not wants_stream(parse_body(b'{"model": "m"}', LenientRequest))


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"stream": true}'])
def test_bodies_that_do_not_fit_are_400(raw: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_body(raw, LenientRequest)
