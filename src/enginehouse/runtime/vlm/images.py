"""A request's images as RGB PIL images, through the shared decoder (``runtime.images``): data:
URIs, bare base64, and file:// only where the settings allow local files; bad ones are 400s."""

from __future__ import annotations

from PIL import Image

from enginehouse.errors import BadRequestError
from enginehouse.runtime.images import decode_image
from enginehouse.settings import Settings


def decode_rgb(value: str, *, param: str) -> Image.Image:
    """``value`` decoded; a 400 names ``param`` (for chat, the message whose part it is, not the
    ``image`` field the shared decoder names)."""
    try:
        image = decode_image(value, Settings().allow_local_files)
    except BadRequestError as exc:
        raise BadRequestError(exc.message, code=exc.code, param=param) from None
    return image.convert("RGB")
