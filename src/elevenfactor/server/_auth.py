"""Request authentication (hashed API keys; loopback-only dev mode), the cross-site guard, and
bounded body reads.

Dev mode lets a local developer call the server without a key, as the built-in ``local`` admin.
Anything a browser could send from another site must not reach it, so in dev mode:

- the ``Host`` must be a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or one
  of ``ELEVENFACTOR_ALLOWED_HOSTS`` — a DNS-rebound name is refused;
- an ``Origin``, when sent, must be a loopback origin or one of ``ELEVENFACTOR_ALLOWED_ORIGINS``;
- a key that is given is checked (a mistyped key fails in development as it would in production);
  ``api_key="dev"`` is the documented placeholder for "no key", for clients that must send one.

In every mode, POST requests must be ``application/json``: a browser cannot send that cross-site
without a CORS preflight, which this server never grants (PUT, PATCH and DELETE always need one).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import Scope

from elevenfactor.config import Settings
from elevenfactor.errors import AuthenticationFailed, RequestError
from elevenfactor.governance import Principal, local_admin
from elevenfactor.server._state import Gateway

__all__ = ["authenticate", "check_cross_site", "header", "owner_fields", "read_body"]

DEV_PLACEHOLDER = "Bearer dev"
"""What clients that insist on a key (the ``openai`` SDK) send in dev mode: ``api_key="dev"``.
It is no key at all (real keys start with ``ef_``), so a mistyped real key is still refused."""
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_UNSAFE = frozenset({"POST"})  # PUT, PATCH and DELETE always need a preflight cross-site
_OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), as Starlette's ``Headers.get``
    gives it, without building a ``Headers`` object (this runs several times per request)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> str | None:
    """The host name of a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``)."""
    try:
        parts = urlsplit("//" + value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return None
    return parts.hostname


@lru_cache(maxsize=64)
def _csv(value: str) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in value.split(",") if v.strip())


def check_cross_site(scope: Scope, settings: Settings) -> None:
    """Refuse requests a foreign web page could have made (see the module docstring)."""
    if scope["path"] in _OPEN_PATHS:
        return
    if scope["method"] in _UNSAFE:
        ctype = (header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        # The dashboard's forms are url-encoded; they carry a CSRF token and are checked for
        # their origin where they are read (``server.ui._page``).
        if ctype != "application/json" and not (
            ctype == "application/x-www-form-urlencoded" and scope["path"].startswith("/ui/")
        ):
            raise RequestError(
                f"{scope['method']} requests must have 'Content-Type: application/json'"
                f" (got {ctype or 'none'!r})",
                code="unsupported_media_type",
                status=415,
                param="content-type",
                hint="send a JSON body with 'Content-Type: application/json'",
            )
    hosts = _csv(settings.allowed_hosts)
    origins = _csv(settings.allowed_origins)
    if not settings.dev and not hosts:
        return
    host_value = header(scope, b"host") or ""
    host = _split_host(host_value)
    if host is None or not (
        (settings.dev and host in _LOOPBACK_NAMES)
        or host_value.lower() in hosts
        or (host or "") in hosts
    ):
        raise RequestError(
            f"Host {host_value!r} is not served here",
            code="host_not_allowed",
            status=421,
            param="host",
            hint="dev mode serves loopback names only; add others to ELEVENFACTOR_ALLOWED_HOSTS",
        )
    origin = header(scope, b"origin")
    if origin is None:
        return
    try:
        parts = urlsplit(origin)
        _ = parts.port  # a malformed port ("localhost:3000.evil.com") is not loopback
    except ValueError:
        parts = urlsplit("")
    loopback_origin = (
        parts.scheme in ("http", "https")
        and parts.hostname in _LOOPBACK_NAMES
        and parts.path in ("", "/")
    )
    if not ((settings.dev and loopback_origin) or origin.lower() in origins):
        raise RequestError(
            f"requests from origin {origin!r} are not accepted",
            code="origin_not_allowed",
            status=403,
            param="origin",
            hint="add the origin to ELEVENFACTOR_ALLOWED_ORIGINS",
        )


async def authenticate(request: Request, gw: Gateway) -> Principal:
    """The principal behind a request: its API key's user, or in dev mode with no key from
    loopback, the local administrator."""
    value = header(request.scope, b"authorization")
    assert gw.keys is not None
    if not value or value == DEV_PLACEHOLDER:
        if gw.settings.dev and _loopback(request):
            return local_admin("dev")
        raise AuthenticationFailed(
            "You didn't provide an API key",
            hint="send 'Authorization: Bearer <key>'; create one with `elevenfactor keys create`",
        )
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("expected 'Authorization: Bearer <key>'")
    return await gw.keys.verify(token.strip())


def owner_fields(principal: Principal) -> dict[str, str | None]:
    """The owner columns of a call record."""
    return {
        "api_key_id": principal.key_id,
        "org_id": principal.org_id,
        "team_id": principal.team_id,
        "user_id": principal.user_id,
    }


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes."""
    declared = header(request.scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_big(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_big(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_big(limit: int) -> RequestError:
    return RequestError(
        f"the request body is larger than {limit} bytes",
        code="request_too_large",
        status=413,
        param="body",
        hint="raise ELEVENFACTOR_MAX_BODY_BYTES",
    )
