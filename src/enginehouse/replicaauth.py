"""A replica answers only its own control plane: every call carries the replica's secret.

The secret is made when the replica is launched, handed to its process in the environment
(``SECRET_ENV``; a command line is visible to every user in ``ps``, a process's environment only
to its own user), and kept with the replica's row in the database, where the gateway, the
reconciler and the metrics scrape read it. The replica refuses any call without it
(``REFUSED_STATUS``, 401), before it reads the body: a process that can reach the replica's port
but not the database cannot use it, and an address whose port another process took after the
replica died is not mistaken for it.

Both sides of that contract are here: what callers send (``ReplicaAddress``) and what the
replica checks (``ReplicaSecretMiddleware``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from enginehouse.errors import AuthenticationError

SECRET_HEADER = "X-Enginehouse-Replica-Secret"
SECRET_ENV = "ENGINEHOUSE_REPLICA_SECRET"
# What a replica answers a call without its secret, and nothing else it answers: a caller that
# gets it knows the address is no longer that replica's (see gateway/failover.py).
REFUSED_STATUS = 401
_HEADER_KEY = SECRET_HEADER.lower().encode("latin-1")  # ASGI gives header names lowercased


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ReplicaAddress:
    """Where a replica answers and the secret it answers to. ``secret`` is None for a replica
    launched by a server older than replica secrets: it checks none, so none is sent."""

    url: str
    secret: str | None = field(default=None, repr=False)  # never in a log line or a traceback
    # Made once: the gateway sends them with every call it forwards.
    _headers: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = {} if self.secret is None else {SECRET_HEADER: self.secret}
        object.__setattr__(self, "_headers", MappingProxyType(headers))

    def headers(self) -> Mapping[str, str]:
        """The headers every call to the replica carries (read-only, shared by all callers)."""
        return self._headers


def is_foreign_replica(status: int) -> bool:
    """Only a replica's secret check answers ``REFUSED_STATUS``: the address answers to another
    secret, so it is no longer our replica's (its port taken by another process after it died).
    Never a verdict on the call itself: not the client's answer, nor a reason to fail anything."""
    return status == REFUSED_STATUS


class ReplicaSecretMiddleware:
    """Refuses every HTTP request whose ``SECRET_HEADER`` is not ``secret``. Outermost, so a
    refused caller costs the replica nothing: no body is read, no route is matched."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        if not secret:
            raise ValueError("an empty replica secret would let anyone in")
        self.app = app
        self._secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == _HEADER_KEY]
        if len(given) == 1 and secrets.compare_digest(given[0], self._secret):
            await self.app(scope, receive, send)
            return
        # The value given is never echoed: the answer says only which case it was.
        problem = "is missing" if not given else "is wrong"
        error = AuthenticationError(
            f"this replica answers only its control plane: the {SECRET_HEADER} header {problem}",
            code="replica_secret_refused",
        )
        await JSONResponse(error.to_body(), status_code=REFUSED_STATUS)(scope, receive, send)
