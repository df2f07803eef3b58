"""OpenAI-style error responses: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from elevenfactor.errors import (
    BudgetExceeded,
    CallKilled,
    ElevenFactorError,
    GuardBlocked,
    LimitExceeded,
    ModelError,
    RequestError,
)

__all__ = ["error_body", "error_response"]


def _type(exc: ElevenFactorError) -> str:
    if exc.http_status == 401:
        return "authentication_error"
    if exc.http_status == 429:
        return "rate_limit_error"
    if isinstance(exc, RequestError) or exc.http_status < 500:
        return "invalid_request_error"
    return "server_error"


_DETAILED = (BudgetExceeded, CallKilled, LimitExceeded, GuardBlocked)
"""Errors whose ``details`` (which budget, limit, switch, or guard policy and rule) go out with
the error object."""


def error_body(exc: ElevenFactorError) -> dict[str, Any]:
    """The error object for ``exc``."""
    message = exc.message if not exc.hint else f"{exc.message} ({exc.hint})"
    err: dict[str, Any] = {
        "message": message,
        "type": _type(exc),
        "param": getattr(exc, "param", None),
        "code": exc.code,
    }
    if isinstance(exc, ModelError):
        err["error_class"] = exc.error_class
    if isinstance(exc, _DETAILED) and exc.details:
        err["details"] = exc.details
    return {"error": err}


def error_response(exc: ElevenFactorError, headers: dict[str, str] | None = None) -> Response:
    """An HTTP response for ``exc`` with its status and stable code."""
    hdrs = dict(headers or {})
    if (
        isinstance(exc, ModelError)
        and exc.retry_after is not None
        and exc.http_status in (429, 503)
    ):
        hdrs["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, (BudgetExceeded, CallKilled)):
        hdrs["x-should-retry"] = "false"  # official clients would retry a 429/403 otherwise
    return Response(
        orjson.dumps(error_body(exc)),
        status_code=exc.http_status,
        media_type="application/json",
        headers=hdrs,
    )
