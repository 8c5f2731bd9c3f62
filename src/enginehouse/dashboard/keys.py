"""The API keys page: the organization's keys by prefix, a new key shown once, and revoking one
(which also ends every dashboard session it opened)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from enginehouse.api.deps import SessionDep
from enginehouse.dashboard.web import FormDep, PageNotFound, UserDep, refusal_page, render, see_other
from enginehouse.db.models import ApiKeyModel
from enginehouse.errors import EnginehouseError, NotFoundError
from enginehouse.services import orgs
from enginehouse.services.dashboard_sessions import SignedIn

router = APIRouter(include_in_schema=False)


@router.get("/api-keys")
def keys_page(request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    return _keys_page(request, session, user)


@router.post("/api-keys")
def create_key(request: Request, session: SessionDep, user: UserDep, _form: FormDep) -> HTMLResponse:
    issued = orgs.create_api_key(session, user.organization_name)
    session.commit()
    # Shown in this answer only (not behind a redirect, so it is in no URL or history entry).
    return _keys_page(request, session, user, new_key=issued.key)


def _keys_page(request: Request, session: SessionDep, user: SignedIn, new_key: str | None = None) -> HTMLResponse:
    return render(request, "keys.html", user, keys=orgs.list_api_keys(session, user.organization_id), new_key=new_key)


@router.get("/api-keys/{key_id}/revoke")
def confirm_revoke(key_id: str, request: Request, session: SessionDep, user: UserDep) -> HTMLResponse:
    key = _key(session, user, key_id)
    return render(request, "confirm.html", user, title=f"Revoke the key {key.prefix}…?",
                  consequence="Calls made with it answer 401 from now on, and dashboard sessions signed in with "
                              "it end (yours too, if you signed in with it). This cannot be undone.",
                  action=f"/api-keys/{key_id}/revoke", button="Revoke", back="/api-keys")


@router.post("/api-keys/{key_id}/revoke")
def revoke(key_id: str, request: Request, session: SessionDep, user: UserDep, _form: FormDep) -> Response:
    try:
        orgs.revoke_api_key_by_id(session, user.organization_id, key_id)
    except NotFoundError as error:
        raise PageNotFound(error.message) from None
    except EnginehouseError as error:
        return refusal_page(request, user, error, "/api-keys")
    return see_other("/api-keys")


def _key(session: SessionDep, user: SignedIn, key_id: str) -> ApiKeyModel:
    try:
        return orgs.get_api_key(session, user.organization_id, key_id)
    except NotFoundError as error:
        raise PageNotFound(error.message) from None
