"""Dashboard sign-in: an API key buys a browser session; the cookie holds a random token.

Only the token's sha256 is stored, so a copy of the database signs nobody in. Every request
resolves the session together with its key, so revoking a key ends the sessions it opened at
once; signing out deletes the row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from enginehouse.core.ids import utcnow
from enginehouse.db.models import ApiKeyModel, DashboardSessionModel, OrganizationModel
from enginehouse.errors import AuthenticationError
from enginehouse.services.orgs import active_key, hash_key

SESSION_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class SignedIn:
    organization_id: str
    organization_name: str
    csrf_token: str
    key_prefix: str


def sign_in(session: Session, key: str) -> str:
    """A new session for ``key``; returns the cookie's token (shown to the browser once)."""
    row = active_key(session, key.strip())
    if row is None:
        raise AuthenticationError("that API key is not valid (unknown or revoked)")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    # Sessions that ran out are swept here rather than by a timer: sign-ins are rare.
    session.execute(delete(DashboardSessionModel).where(DashboardSessionModel.expires_at < now))
    session.add(DashboardSessionModel(
        id=hash_key(token), api_key_id=row.id, organization_id=row.organization_id,
        csrf_token=secrets.token_urlsafe(32), created_at=now, expires_at=now + SESSION_LIFETIME,
    ))
    return token


def resolve(session: Session, token: str | None) -> SignedIn | None:
    """Who the cookie's token signs in, or None (no such session, expired, or its key revoked)."""
    if not token:
        return None
    found = session.execute(
        select(DashboardSessionModel.organization_id, OrganizationModel.name, DashboardSessionModel.csrf_token,
               ApiKeyModel.prefix)
        .join(ApiKeyModel, ApiKeyModel.id == DashboardSessionModel.api_key_id)
        .join(OrganizationModel, OrganizationModel.id == DashboardSessionModel.organization_id)
        .where(DashboardSessionModel.id == hash_key(token), ApiKeyModel.revoked_at.is_(None),
               DashboardSessionModel.expires_at > utcnow())
    ).first()
    return None if found is None else SignedIn(*found)


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(DashboardSessionModel).where(DashboardSessionModel.id == hash_key(token)))

