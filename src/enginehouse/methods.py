"""What a 405 answer says: the methods the path does allow, in its ``Allow`` header (RFC 9110).

Starlette names only the methods of the first route whose path matched, and a path served by
several routes (``GET`` and ``POST /v1/engines``) has one route per method; so every method is
tried against the app's routes instead.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def method_not_allowed(request: Request) -> tuple[str, dict[str, str]]:
    """The message and headers of a 405 for ``request``."""
    allowed = allowed_methods(request)
    message = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed) or 'none'}"
    return message, {"Allow": ", ".join(allowed)}
