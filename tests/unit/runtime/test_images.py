"""Decoding the ``image`` field: every accepted form, and a 400 that says why for the rest."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from enginehouse.errors import BadRequestError
from enginehouse.runtime.images import decode_image


def png_bytes(width: int = 12, height: int = 7, seed: int = 0) -> bytes:
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.fixture
def png() -> bytes:
    return png_bytes()


def test_data_uri_and_bare_base64_decode_to_the_same_pixels(png: bytes) -> None:
    expected = as_array(Image.open(io.BytesIO(png)))
    encoded = base64.b64encode(png).decode()
    from_uri = decode_image(f"data:image/png;base64,{encoded}", allow_local_files=False)
    bare = decode_image(encoded, allow_local_files=False)
    assert from_uri.mode == "RGB" and from_uri.size == (12, 7)
    assert np.array_equal(as_array(from_uri), expected) and np.array_equal(as_array(bare), expected)
    # Line-wrapped base64 (as MIME writes it) and missing padding are accepted.
    wrapped = "\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60)).rstrip("=")
    assert np.array_equal(as_array(decode_image(wrapped, allow_local_files=False)), expected)


def test_grayscale_and_alpha_images_become_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("LA", (5, 4), (100, 50)).save(buffer, format="PNG")
    assert decode_image(base64.b64encode(buffer.getvalue()).decode(), allow_local_files=False).mode == "RGB"


def test_file_paths_only_when_allowed(png: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cat image.png"
    path.write_bytes(png)
    uri = path.as_uri()
    assert decode_image(uri, allow_local_files=True).size == (12, 7)
    with pytest.raises(BadRequestError) as refused:
        decode_image(uri, allow_local_files=False)
    assert "ENGINEHOUSE_ALLOW_LOCAL_FILES" in refused.value.message and refused.value.code == "local_files_not_allowed"
    with pytest.raises(BadRequestError, match="cannot read"):
        decode_image((tmp_path / "missing.png").as_uri(), allow_local_files=True)


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "HTTPS://example.com/cat.png"])
def test_network_urls_are_refused(url: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        decode_image(url, allow_local_files=True)
    assert refused.value.status_code == 400 and "not fetched" in refused.value.message


@pytest.mark.parametrize("value, message", [
    ("not base64 at all!", "not valid base64"),
    (base64.b64encode(b"plain text, not an image").decode(), "does not decode to an image"),
    ("data:image/png;base64," + base64.b64encode(b"garbage").decode(), "does not decode to an image"),
    ("data:text/plain;base64,aGVsbG8=", "expected image/*"),
    ("data:image/png,rawdata", "must be base64"),
    ("   ", "empty"),
])
def test_garbage_is_a_400_that_says_why(value: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message) as refused:
        decode_image(value, allow_local_files=False)
    assert refused.value.status_code == 400 and refused.value.param == "image"


def test_a_truncated_image_is_a_400(png: bytes) -> None:
    with pytest.raises(BadRequestError, match="does not decode"):
        decode_image(base64.b64encode(png[: len(png) // 2]).decode(), allow_local_files=False)
