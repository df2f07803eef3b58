"""Request authentication (hashed API keys; loopback-only dev mode) and bounded body reads."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from elevenfactor.errors import AuthenticationFailed, RequestError
from elevenfactor.server._state import Gateway

__all__ = ["authenticate", "read_body"]


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def authenticate(request: Request, gw: Gateway) -> str | None:
    header = request.headers.get("authorization")
    assert gw.keys is not None
    if gw.settings.dev and _loopback(request):
        return None
    if not header:
        raise AuthenticationFailed(
            "You didn't provide an API key",
            hint="send 'Authorization: Bearer <key>'; create one with `elevenfactor keys create`",
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("expected 'Authorization: Bearer <key>'")
    return await gw.keys.verify(token.strip())


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = RequestError(
        f"the request body is larger than {limit} bytes",
        code="request_too_large",
        status=413,
        param="body",
        hint="raise ELEVENFACTOR_MAX_BODY_BYTES",
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
