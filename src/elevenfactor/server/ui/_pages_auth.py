"""Signing in and out of the dashboard, and its static files."""

from __future__ import annotations

import hashlib
import importlib.resources
import secrets
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from elevenfactor.errors import AuthenticationFailed, ElevenFactorError, RequestError
from elevenfactor.server._auth import read_body
from elevenfactor.server._state import Gateway
from elevenfactor.server.ui._page import Page, ui_page
from elevenfactor.server.ui._render import render
from elevenfactor.server.ui._session import (
    CSRF_COOKIE,
    check_form_origin,
    end_session,
    resolve,
    set_cookies,
    start_session,
)

__all__ = ["ROUTES"]

_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path of this site, never another site."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/runs"


async def login_form(request: Request) -> Response:
    """``GET /ui/login``: the sign-in form (straight on if already signed in)."""
    gw: Gateway = request.app.state.gateway
    target = _next(request.query_params.get("next"))
    try:
        user = await resolve(request, gw)
    except ElevenFactorError:
        user = None
    if user is not None:
        return RedirectResponse(target, status_code=303)
    return _login_page(request, target, None, 200)


def _login_page(
    request: Request, target: str, error: str | None, status: int, code: str = ""
) -> Response:
    """The sign-in form; after a failed attempt with ``error`` and its ``code`` shown."""
    gw: Gateway = request.app.state.gateway
    csrf = request.cookies.get(CSRF_COOKIE) or ""
    fresh = not (20 <= len(csrf) <= 64)
    if fresh:
        csrf = secrets.token_urlsafe(24)
    context = {"next": target, "error": error, "code": code, "status": status, "csrf": csrf}
    response = render("login.html", {**context, "nav": (), "me": None, "section": ""}, status)
    if fresh:
        set_cookies(response, request, gw.settings, csrf=csrf)
    return response


async def login(request: Request) -> Response:
    """``POST /ui/login``: check the key, start a session, set its cookie, go on."""
    gw: Gateway = request.app.state.gateway
    assert gw.keys is not None and gw.store is not None
    try:
        check_form_origin(request)
        raw = await read_body(request, 16 * 1024)
        fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    except ElevenFactorError as exc:  # another site's form (403), or a body too large
        status = 403 if exc.http_status == 403 else 400
        return _login_page(request, "/ui/runs", exc.message, status, exc.code)
    except ValueError as exc:
        return _login_page(request, "/ui/runs", str(exc), 400, "ui_bad_form")
    target = _next(fields.get("next"))
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or fields.get("csrf") != cookie:
        expired = "The form expired; please sign in again."
        return _login_page(request, target, expired, 403, "ui_csrf_failed")
    key = (fields.get("api_key") or "").strip()
    if not key:
        return _login_page(request, target, "Enter an API key.", 400, "ui_bad_form")
    try:
        principal = await gw.keys.verify(key)
    except AuthenticationFailed as exc:
        return _login_page(request, target, "That API key is not valid.", 401, exc.code)
    token = await start_session(gw.store, gw.settings, principal)
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    set_cookies(response, request, gw.settings, session=token)
    return response


@ui_page("")
async def logout(page: Page) -> Response:
    """``POST /ui/logout``: end the session and go back to the sign-in form."""
    await page.form()
    await end_session(page.store, page.request)
    response = RedirectResponse("/ui/login", status_code=303)
    set_cookies(response, page.request, page.gw.settings, clear_session=True)
    return response


async def home(request: Request) -> Response:
    """``GET /ui``: the runs list."""
    return RedirectResponse("/ui/runs", status_code=303)


def _static_file(name: str) -> bytes | None:
    if "/" in name or name.startswith("."):
        return None
    ref = importlib.resources.files("elevenfactor.server.ui").joinpath("static", name)
    try:
        return ref.read_bytes()
    except (FileNotFoundError, IsADirectoryError, OSError):
        return None


async def static(request: Request) -> Response:
    """``GET /ui/static/{name}``: the dashboard's stylesheet and script (shipped in the wheel),
    cached by browsers and revalidated by ETag."""
    name = request.path_params["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    body = _static_file(name) if suffix in _STATIC_TYPES else None
    if body is None:
        error = RequestError(f"no dashboard file {name!r}", code="not_found", status=404)
        return render(
            "error.html",
            {
                "status": 404,
                "code": error.code,
                "message": error.message,
                "hint": None,
                "nav": (),
                "me": None,
                "section": "",
            },
            404,
        )
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=300, must-revalidate",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_STATIC_TYPES[suffix], headers=headers)


ROUTES: list[tuple[str, object, list[str]]] = [
    ("/ui", home, ["GET"]),
    ("/ui/", home, ["GET"]),
    ("/ui/login", login_form, ["GET"]),
    ("/ui/login", login, ["POST"]),
    ("/ui/logout", logout, ["POST"]),
    ("/ui/static/{name}", static, ["GET"]),
]
