"""What every dashboard page shares: the templates, who is signed in, and the guard on forms.

Signed in means a ``eh_session`` cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) whose
token resolves to a live session of an unrevoked key (``services/dashboard_sessions.py``). A
state-changing form must carry the session's CSRF token and, when the browser sends an Origin,
come from this server's own origin: a cross-site page can make a browser post a form, but it can
neither read the token nor forge the Origin.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import orjson
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from enginehouse.api.deps import SessionDep
from enginehouse.errors import EnginehouseError
from enginehouse.services import dashboard_sessions
from enginehouse.services.dashboard_sessions import SignedIn

COOKIE = "eh_session"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Test results, parameters and the like as one line: "accuracy 0.97, eval_loss 0.12" ("" when none).
templates.env.filters["pairs"] = lambda mapping: ", ".join(f"{k} {v}" for k, v in (mapping or {}).items())


class SignInRequired(Exception):
    """No live session: GETs go to the sign-in page (and come back after), the rest get a 401 page."""


class PageNotFound(Exception):
    """An object this organization does not have: a 404 page, not the API's JSON."""


class CrossSiteRequest(Exception):
    """A form post without this session's token, or from another origin."""


def session_token(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def current_user(request: Request, session: SessionDep) -> SignedIn:
    user = dashboard_sessions.resolve(session, session_token(request))
    if user is None:
        raise SignInRequired()
    return user


UserDep = Annotated[SignedIn, Depends(current_user)]


async def checked_form(request: Request, user: UserDep) -> dict[str, str]:
    """The posted form, once it is shown to come from this dashboard's own pages."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    check_csrf(request, user, fields.get("csrf_token", ""))
    return fields


def check_csrf(request: Request, user: SignedIn, token: str) -> None:
    """A state-changing call from this dashboard's own pages: this session's token (a form field,
    or a header for the page's scripts) and, when the browser names one, this server's origin."""
    check_origin(request)
    if not secrets.compare_digest(token, user.csrf_token):
        raise CrossSiteRequest()


FormDep = Annotated[dict[str, str], Depends(checked_form)]


def check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:
        return  # old browsers and non-browser clients send none; the token still guards the post
    # "null" (a sandboxed frame, a redirect across sites) has no host and is refused too.
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise CrossSiteRequest()


def set_session_cookie(response: RedirectResponse, request: Request, token: str) -> None:
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure,
                        max_age=int(dashboard_sessions.SESSION_LIFETIME.total_seconds()), path="/")


def render(request: Request, template: str, user: SignedIn | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    page = templates.TemplateResponse(request, template, {"user": user, **context}, status_code=status_code)
    errors: dict[str, str] = context.get("errors") or {}
    unseen = [field for field in errors if f'id="{field}-error"'.encode() not in page.body]
    if unseen:
        # A refusal about a field this page has no place for is shown atop its form instead:
        # none may be invisible.
        shown = {field: message for field, message in errors.items() if field not in unseen}
        shown["form"] = "; ".join(m for m in (shown.get("form"), *(errors[f] for f in unseen)) if m)
        page = templates.TemplateResponse(request, template, {"user": user, **context, "errors": shown},
                                          status_code=status_code)
    # No other site may frame a page (a click on a hidden Deactivate button), and none caches it.
    page.headers["X-Frame-Options"] = "DENY"
    page.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    page.headers["Cache-Control"] = "no-store"
    return page


def refusal_page(request: Request, user: SignedIn, error: EnginehouseError, back: str) -> HTMLResponse:
    """A service refused an action that has no form to show the error in: its words, and a way back."""
    return render(request, "error.html", user, error.status_code, message=error.message, back=back)


def see_other(path: str) -> RedirectResponse:
    """After a form: the browser loads ``path`` with a GET (a reload does not post twice)."""
    return RedirectResponse(path, status_code=303)


def sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other(f"/login?next={quote(target, safe='')}")


def plain(value: Mapping[str, Any]) -> dict[str, Any]:
    """An API view (which embeds stored JSON as orjson fragments) as plain Python values."""
    return dict(orjson.loads(orjson.dumps(value)))
