"""Turning the ``image`` field of a request into a decoded RGB ``PIL.Image`` (SPEC §6).

Shared by every task type that takes images (CLIP, detection, VLM). Accepted forms:

* ``data:image/<type>;base64,<data>``: a data URI;
* bare base64 of the image file's bytes;
* ``file:///abs/path`` (or ``file://localhost/...``): a file on the replica's machine, only when
  ``allow_local_files`` is set (``ENGINEHOUSE_ALLOW_LOCAL_FILES``): off by default, since it lets
  any caller read files the server can read.

``http(s)://`` URLs are refused: the replica never fetches from the network. Anything that does
not decode to an image is a 400 whose message says which form was tried and why it failed.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from enginehouse.errors import BadRequestError

# Decoded pixels allowed in one image: large enough for any photo, small enough that a crafted
# header cannot make the replica allocate gigabytes (PIL's own bomb check only warns below 2×).
MAX_IMAGE_PIXELS = 64_000_000
_PARAM = "image"


def decode_image(value: str, allow_local_files: bool) -> Image.Image:
    """The image ``value`` names or carries, decoded and converted to RGB. Raises ``BadRequestError``."""
    text = value.strip()
    if not text:
        raise BadRequestError("image is empty; send a data: URI, base64 image bytes or a file:// path",
                              param=_PARAM)
    lowered = text[:16].lower()
    if lowered.startswith(("http://", "https://")):
        raise BadRequestError(
            "image URLs over the network are not fetched by this server; send the image inline as a "
            "data: URI or base64", code="image_url_not_supported", param=_PARAM)
    if lowered.startswith("file:"):
        return _open(_read_local(text, allow_local_files), "the file")
    if lowered.startswith("data:"):
        return _open(_data_uri_bytes(text), "the data: URI")
    return _open(_base64_bytes(text, "image"), "the base64 data")


def _data_uri_bytes(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise BadRequestError("image data: URI has no ',' before its data", param=_PARAM)
    media = header[5:].lower()
    if not media.endswith(";base64"):
        raise BadRequestError("image data: URI must be base64-encoded (data:image/png;base64,...)", param=_PARAM)
    if media and not media.startswith("image/"):
        raise BadRequestError(f"image data: URI has media type {media[:-7]!r}; expected image/*", param=_PARAM)
    return _base64_bytes(payload, "the data: URI's payload")


def _base64_bytes(text: str, what: str) -> bytes:
    # Tolerate line breaks (MIME-style base64) but nothing else outside the alphabet.
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(
            f"{what} is not valid base64; send a data: URI, base64 image bytes or a file:// path",
            code="invalid_image", param=_PARAM) from None


def _read_local(uri: str, allow_local_files: bool) -> bytes:
    if not allow_local_files:
        raise BadRequestError(
            "file:// images are turned off on this server; send the image as a data: URI or base64, or "
            "have the operator set ENGINEHOUSE_ALLOW_LOCAL_FILES=true",
            code="local_files_not_allowed", param=_PARAM)
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise BadRequestError(f"file:// image on host {parsed.netloc!r}: only this machine's files are read",
                              param=_PARAM)
    path = Path(unquote(parsed.path))
    if not path.is_absolute():
        raise BadRequestError("file:// image path must be absolute (file:///path/to/image.png)", param=_PARAM)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadRequestError(f"cannot read image file {path}: {exc.strerror or exc}",
                              code="invalid_image", param=_PARAM) from None


def _open(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise BadRequestError(f"image is {width}×{height} pixels; at most {MAX_IMAGE_PIXELS} are accepted",
                                  code="image_too_large", param=_PARAM)
        image.load()  # decode now: a truncated file should fail here, not in the model
        return image.convert("RGB")
    except BadRequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not a known image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise BadRequestError(f"{what} does not decode to an image ({reason})", code="invalid_image",
                              param=_PARAM) from None
