"""Assertions on HTTP answers shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["expect_error"]


def expect_error(
    resp: httpx.Response, status: int, code: str, param: str | None = None
) -> dict[str, Any]:
    """Assert ``resp`` is the error object with ``status`` and ``code`` (and ``param`` when
    given); return the error."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    err: dict[str, Any] = resp.json()["error"]
    assert err["code"] == code, resp.text
    if param is not None:
        assert err["param"] == param, resp.text
    return err
