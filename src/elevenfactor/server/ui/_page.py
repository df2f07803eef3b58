"""``ui_page``: what every dashboard handler shares — sign-in, errors as pages, forms.

A handler receives a ``Page``: the request, the gateway, the signed-in user and helpers to
render a template, read a form (checked against cross-site posts) and redirect. A visitor who
is not signed in is sent to ``/ui/login``; an ``ElevenFactorError`` (a run that is not yours, a
malformed filter) becomes an error page with its status, code and hint — never a 500.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from elevenfactor.errors import ElevenFactorError, RequestError
from elevenfactor.server._auth import read_body
from elevenfactor.server._state import Gateway
from elevenfactor.server.ui._render import PAGE_HEADERS, render
from elevenfactor.server.ui._session import (
    UiUser,
    check_csrf,
    check_form_origin,
    resolve,
    set_cookies,
)
from elevenfactor.store import Store

__all__ = ["NAV", "Page", "ui_page"]

logger = logging.getLogger("elevenfactor.ui")

NAV = (
    ("runs", "/ui/runs", "Runs"),
    ("approvals", "/ui/approvals", "Approvals"),
    ("cost", "/ui/cost", "Cost"),
    ("quality", "/ui/quality", "Quality"),
    ("health", "/ui/health", "Health"),
)
"""The navigation bar: (section, path, label)."""

_FORM_LIMIT = 256 * 1024


@dataclass(slots=True)
class Page:
    """One dashboard request being answered."""

    request: Request
    gw: Gateway
    user: UiUser
    section: str

    @property
    def store(self) -> Store:
        """The gateway's store."""
        assert self.gw.store is not None
        return self.gw.store

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        """``template`` inside the dashboard's layout (``base.html``)."""
        response = render(template, {**self._base(), **context}, status)
        if self.user.new_csrf:
            set_cookies(response, self.request, self.gw.settings, csrf=self.user.csrf)
        return response

    def _base(self) -> dict[str, Any]:
        p = self.user.principal
        return {
            "nav": NAV,
            "section": self.section,
            "me": p,
            "roles": ", ".join(sorted(p.roles)),
            "csrf": self.user.csrf,
            "can_sign_out": self.user.session,
            "path": self.request.url.path,
        }

    async def form(self) -> dict[str, str]:
        """The posted form (url-encoded), after the cross-site checks and the CSRF token; a
        field given twice keeps its last value (``form_lists`` keeps them all)."""
        return dict(await self.form_lists())

    async def form_lists(self) -> list[tuple[str, str]]:
        """The posted form's fields in order, checked as ``form`` is."""
        check_form_origin(self.request)
        ctype = (self.request.headers.get("content-type") or "").split(";", 1)[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise RequestError(
                f"dashboard forms are url-encoded (got {ctype or 'none'!r})",
                code="unsupported_media_type",
                status=415,
            )
        raw = await read_body(self.request, _FORM_LIMIT)
        try:
            fields = parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=2000)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestError(f"the form could not be read: {exc}", code="ui_bad_form") from exc
        check_csrf(self.user, dict(fields).get("csrf"))
        return [(k, v) for k, v in fields if k != "csrf"]

    def redirect(self, url: str) -> Response:
        """303 to ``url`` (a path of this site), after a form."""
        if not url.startswith("/ui") or url.startswith("//"):
            url = "/ui/runs"
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


Handler = Callable[[Page], Awaitable[Response]]


def ui_page(section: str) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a dashboard handler: sign-in, the ``Page``, errors rendered as pages."""

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def handler(request: Request) -> Response:
            gw: Gateway = request.app.state.gateway
            try:
                user = await resolve(request, gw)
            except ElevenFactorError as exc:
                return _error(request, exc, None)
            if user is None:
                return _to_login(request)
            page = Page(request, gw, user, section)
            try:
                return await fn(page)
            except ElevenFactorError as exc:
                return _error(request, exc, page)

        return handler

    return wrap


def _to_login(request: Request) -> Response:
    if request.method != "GET":
        target = "/ui/login"
    else:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = f"/ui/login?next={quote(here, safe='')}"
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


def _error(request: Request, exc: ElevenFactorError, page: Page | None) -> Response:
    if exc.http_status >= 500:
        logger.error("dashboard page %s failed: %s", request.url.path, exc.message)
    context = {
        "status": exc.http_status,
        "code": exc.code,
        "message": exc.message,
        "hint": exc.hint,
    }
    if page is None:
        return render(
            "error.html", {**context, "nav": (), "me": None, "section": ""}, exc.http_status
        )
    response = render("error.html", {**page._base(), **context}, exc.http_status)
    if page.user.new_csrf:
        set_cookies(response, request, page.gw.settings, csrf=page.user.csrf)
    return response
