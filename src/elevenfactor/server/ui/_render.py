"""Server-side rendering of dashboard pages: one Jinja2 environment (autoescaped), filters
for times, durations and money, and the headers every page carries.

Pages load only the dashboard's own stylesheet and script (``/ui/static``): the content
security policy allows nothing else, no inline script and no inline style attribute handlers,
so a model output shown on a page cannot run anything even if escaping were missed.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

__all__ = ["PAGE_HEADERS", "environment", "not_found_page", "render"]

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def _ts(value: float | None) -> str:
    """``2026-12-02 09:41:07`` (UTC) for an epoch time; an em dash for none."""
    if value is None:
        return "—"
    return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: float | None) -> str:
    """ISO 8601 in UTC, for ``<time datetime=...>``."""
    if value is None:
        return ""
    return dt.datetime.fromtimestamp(float(value), dt.UTC).isoformat(timespec="seconds")


def _duration(seconds: float | None) -> str:
    """``840 ms``, ``12.4 s``, ``3 min 05 s``, ``2 h 07 min``, ``3 d 4 h``."""
    if seconds is None:
        return "—"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def _money(value: float | None) -> str:
    """US dollars with enough digits for model-call prices: ``$0.000420``, ``$12.50``."""
    if value is None:
        return "—"
    v = float(value)
    if v == 0:
        return "$0"
    if v < 0:
        return "-" + _money(-v)
    if abs(v) < 0.01:
        return f"${v:.6f}"
    if abs(v) < 1:  # four places, trailing zeros dropped down to cents: $0.0042, $0.50
        text = f"{v:.4f}".rstrip("0")
        whole, _, frac = text.partition(".")
        return f"${whole}.{frac.ljust(2, '0')}"
    if abs(v) < 100:
        return f"${v:,.2f}"
    return f"${v:,.0f}"


def _count(n: int | None, noun: str, plural: str | None = None) -> str:
    """``1 event``, ``3 events``, ``1,204 runs`` (``plural`` when adding an s is wrong)."""
    value = int(n or 0)
    return f"{value:,} {noun if value == 1 else (plural or noun + 's')}"


@functools.cache
def environment() -> jinja2.Environment:
    """The dashboard's template environment (built on first use)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("elevenfactor.server.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ts=_ts, iso=_iso, duration=_duration, money=_money, count=_count)
    return env


def render(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """``template`` rendered with ``context``, with the dashboard's security headers."""
    html = environment().get_template(template).render(context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def not_found_page(request: object, status: int, code: str) -> HTMLResponse:
    """The dashboard's page for an unknown path (404) or method (405)."""
    message = "no such page" if status == 404 else "this page does not take that method"
    context = {"status": status, "code": code, "message": message, "hint": None}
    return render("error.html", {**context, "nav": (), "me": None, "section": ""}, status)


def error_page(status: int, code: str, message: str, hint: str | None = None) -> HTMLResponse:
    """The dashboard's error page for a request refused before any page saw it (e.g. a form
    posted with a body the dashboard does not take)."""
    context = {"status": status, "code": code, "message": message, "hint": hint}
    return render("error.html", {**context, "nav": (), "me": None, "section": ""}, status)
