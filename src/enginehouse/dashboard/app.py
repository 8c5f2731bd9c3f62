"""Mounting the dashboard on the server: its pages, its static files, and how its own errors
become pages (the API's errors stay JSON)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from enginehouse.dashboard import keys, pages, training, try_it
from enginehouse.dashboard.web import HERE, CrossSiteRequest, PageNotFound, SignInRequired, render, sign_in_redirect


def install_dashboard(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(try_it.router)
    app.include_router(training.router)
    app.include_router(keys.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static")
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(CrossSiteRequest, _cross_site)
    app.add_exception_handler(PageNotFound, _not_found)


async def _sign_in(request: Request, _exc: Exception) -> Response:
    if request.method == "GET" and not request.url.path.endswith(".json"):
        return sign_in_redirect(request)
    return render(request, "error.html", None, 401, message="you are signed out; sign in again",
                  back="/login")


async def _cross_site(request: Request, _exc: Exception) -> HTMLResponse:
    return render(request, "error.html", None, 403, back="/engines",
                  message="this form did not come from this dashboard (a missing or wrong CSRF token, or "
                          "another site's page); nothing was changed")


async def _not_found(request: Request, exc: Exception) -> HTMLResponse:
    return render(request, "not_found.html", None, 404, what=str(exc))
