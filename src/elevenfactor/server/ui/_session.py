"""Dashboard sign-in: API key in, a session cookie out; the principal of every page.

A browser signs in once with an API key (``POST /ui/login``). The server stores the SHA-256 of a
random token (``ui_sessions``, m029) and hands the token out as an ``HttpOnly``,
``SameSite=Strict`` cookie scoped to ``/ui``. Every page resolves the principal through the
key the session was made with, so revoking the key or disabling the user signs the browser out
at the next page view. Clients that are not browsers may send ``Authorization: Bearer <key>``
instead, and dev mode (loopback, no key) is the local administrator, as for the JSON API.

Forms are protected against cross-site requests three ways: the cookie is ``SameSite=Strict``,
every form carries a token that must equal the ``ef_csrf`` cookie (double submit), and an
``Origin`` (or ``Sec-Fetch-Site``) header, when the browser sends one, must be this site.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from elevenfactor.config import Settings
from elevenfactor.errors import AuthenticationFailed, ElevenFactorError, RequestError
from elevenfactor.governance import Principal
from elevenfactor.governance._ui_sessions import (
    end_ui_session,
    start_ui_session,
    ui_session_principal,
)
from elevenfactor.server._auth import authenticate, header
from elevenfactor.server._state import Gateway
from elevenfactor.store import Store

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "UiUser",
    "check_csrf",
    "check_form_origin",
    "end_session",
    "resolve",
    "set_cookies",
    "start_session",
]

SESSION_COOKIE = "ef_session"
CSRF_COOKIE = "ef_csrf"
_PATH = "/ui"


@dataclass(frozen=True, slots=True)
class UiUser:
    """Who is looking at a page, and the token its forms must carry."""

    principal: Principal
    csrf: str
    new_csrf: bool
    """The CSRF cookie was missing and must be set on the response."""
    session: bool
    """Signed in with a session cookie (it can sign out)."""


def _secure(request: Request, settings: Settings) -> bool:
    return settings.ui_secure_cookies or request.url.scheme == "https"


async def start_session(store: Store, settings: Settings, principal: Principal) -> str:
    """Record a new sign-in for ``principal`` (signed in with a key) and return its token."""
    return await start_ui_session(
        store, principal, settings.ui_session_idle, settings.ui_session_max
    )


async def end_session(store: Store, request: Request) -> None:
    """Sign out: forget the session the request's cookie names (if any)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await end_ui_session(store, token)


async def resolve(request: Request, gw: Gateway) -> UiUser | None:
    """The user behind a dashboard request, or None if it must sign in first."""
    assert gw.store is not None
    csrf = request.cookies.get(CSRF_COOKIE) or ""
    new_csrf = len(csrf) < 20 or len(csrf) > 64
    if new_csrf:
        csrf = secrets.token_urlsafe(24)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        principal = await ui_session_principal(
            gw.store, token, gw.settings.ui_session_idle, gw.settings.ui_session_max
        )
        if principal is not None:
            return UiUser(principal, csrf, new_csrf, session=True)
    try:
        principal = await authenticate(request, gw)
    except AuthenticationFailed:
        return None
    return UiUser(principal, csrf, new_csrf, session=False)


def set_cookies(
    response: Response,
    request: Request,
    settings: Settings,
    *,
    csrf: str | None = None,
    session: str | None = None,
    clear_session: bool = False,
) -> None:
    """Set (or clear) the dashboard's cookies on ``response``."""
    secure = _secure(request, settings)
    if csrf is not None:
        response.set_cookie(
            CSRF_COOKIE, csrf, path=_PATH, httponly=True, samesite="strict", secure=secure
        )
    if session is not None:
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=int(settings.ui_session_max),
            path=_PATH,
            httponly=True,
            samesite="strict",
            secure=secure,
        )
    if clear_session:
        response.delete_cookie(
            SESSION_COOKIE, path=_PATH, httponly=True, samesite="strict", secure=secure
        )


def check_form_origin(request: Request) -> None:
    """Refuse a form post another site's page made: the browser's ``Origin`` (or
    ``Sec-Fetch-Site``) must say it came from this site."""
    site = header(request.scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise _cross_site(f"Sec-Fetch-Site: {site}")
    origin = header(request.scope, b"origin")
    if origin is None or (origin == "null" and site in ("same-origin", "none")):
        return
    host = header(request.scope, b"host") or ""
    try:
        parts = urlsplit(origin)
        netloc = parts.netloc
    except ValueError:
        raise _cross_site(f"Origin: {origin}") from None
    if netloc.lower() != host.lower():
        raise _cross_site(f"Origin: {origin}")


def check_csrf(user: UiUser, submitted: str | None) -> None:
    """The form's token must equal the browser's CSRF cookie."""
    if user.new_csrf or not submitted or not hmac.compare_digest(submitted, user.csrf):
        raise RequestError(
            "the form's security token is missing or stale",
            code="ui_csrf_failed",
            status=403,
            hint="reload the page and submit the form again",
        )


def _cross_site(what: str) -> ElevenFactorError:
    return RequestError(
        f"a form posted from another site was refused ({what})",
        code="ui_cross_site",
        status=403,
        hint="use the dashboard's own pages",
    )
