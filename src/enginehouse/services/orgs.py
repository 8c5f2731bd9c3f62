"""Organizations and API keys. Keys are stored only as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from enginehouse.core.ids import new_id, utcnow
from enginehouse.core.specs import check_name
from enginehouse.db.models import ApiKeyModel, OrganizationModel
from enginehouse.errors import AuthenticationError, ConflictError, NotFoundError, ValidationFailedError

DEFAULT_ORGANIZATION = "default"
KEY_PREFIX = "eh-"


@dataclass(frozen=True)
class IssuedKey:
    organization: str
    organization_id: str
    key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_organization(session: Session, name: str) -> OrganizationModel:
    try:
        check_name(name)
    except ValueError as exc:
        raise ValidationFailedError(str(exc), param="name") from None
    if session.scalar(select(OrganizationModel).where(OrganizationModel.name == name)):
        raise ConflictError(f"organization {name!r} already exists", code="name_taken")
    org = OrganizationModel(id=new_id("org"), name=name, created_at=utcnow())
    session.add(org)
    session.flush()
    return org


def get_organization_by_name(session: Session, name: str) -> OrganizationModel:
    org = session.scalar(select(OrganizationModel).where(OrganizationModel.name == name))
    if org is None:
        raise NotFoundError(f"organization {name!r} not found")
    return org


def create_api_key(session: Session, organization: str, key: str | None = None) -> IssuedKey:
    """Issue a key for the organization named ``organization``; the key is returned once."""
    org = get_organization_by_name(session, organization)
    key = key or generate_key()
    if session.scalar(select(ApiKeyModel).where(ApiKeyModel.key_hash == hash_key(key))):
        raise ConflictError("that key is already in use", code="key_taken")
    session.add(
        ApiKeyModel(
            id=new_id("key"),
            organization_id=org.id,
            key_hash=hash_key(key),
            prefix=key[:10],
            created_at=utcnow(),
        )
    )
    session.flush()
    return IssuedKey(organization=org.name, organization_id=org.id, key=key)


def revoke_api_key(session: Session, key: str) -> None:
    row = session.scalar(select(ApiKeyModel).where(ApiKeyModel.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        raise NotFoundError("no such active key")
    row.revoked_at = utcnow()


def list_api_keys(session: Session, org_id: str) -> list[ApiKeyModel]:
    """The organization's keys (their prefixes; the keys themselves are never stored), newest first."""
    return list(session.scalars(select(ApiKeyModel).where(ApiKeyModel.organization_id == org_id)
                                .order_by(ApiKeyModel.created_at.desc(), ApiKeyModel.id)))


def get_api_key(session: Session, org_id: str, key_id: str) -> ApiKeyModel:
    """One of the organization's keys by its id (what the dashboard knows of a key)."""
    row = session.get(ApiKeyModel, key_id)
    if row is None or row.organization_id != org_id:
        raise NotFoundError(f"API key {key_id!r} not found", param="key_id")
    return row


def revoke_api_key_by_id(session: Session, org_id: str, key_id: str) -> ApiKeyModel:
    row = get_api_key(session, org_id, key_id)
    if row.revoked_at is not None:
        raise ConflictError(f"API key {row.prefix}… is already revoked", code="key_revoked")
    row.revoked_at = utcnow()
    return row


def authenticate(session: Session, key: str | None) -> str:
    """The organization id that ``key`` belongs to; 401 when missing, unknown or revoked."""
    if not key:
        raise AuthenticationError(
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    row = active_key(session, key)
    if row is None:
        raise AuthenticationError("invalid API key")
    return row.organization_id


def active_key(session: Session, key: str) -> ApiKeyModel | None:
    """The stored key ``key`` is, unless unknown or revoked."""
    row = session.scalar(select(ApiKeyModel).where(ApiKeyModel.key_hash == hash_key(key)))
    return row if row is not None and row.revoked_at is None else None


def bootstrap(session: Session, bootstrap_key: str | None) -> IssuedKey | None:
    """First start: create the ``default`` organization and its admin key.

    Returns the issued key when one was created now, None when the organization already existed
    (a given bootstrap key that is not stored yet is added, so changing the variable works).
    """
    org = session.scalar(
        select(OrganizationModel).where(OrganizationModel.name == DEFAULT_ORGANIZATION)
    )
    if org is None:
        create_organization(session, DEFAULT_ORGANIZATION)
        return create_api_key(session, DEFAULT_ORGANIZATION, bootstrap_key or None)
    if bootstrap_key and not session.scalar(
        select(ApiKeyModel).where(ApiKeyModel.key_hash == hash_key(bootstrap_key))
    ):
        return create_api_key(session, DEFAULT_ORGANIZATION, bootstrap_key)
    return None
