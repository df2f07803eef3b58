"""``/v1/admin/...``: users, teams and API keys of the caller's organisation (admins only).

Every endpoint checks the admin role before reading the request, so a non-admin learns nothing
but ``403 permission_denied``; objects of another organisation are ``404``, as if absent. Each
change is recorded in the ledger under the authenticated user by the governance library.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from elevenfactor.governance import (
    check_name,
    create_key,
    create_team,
    create_user,
    disable_user,
    get_key,
    get_user,
    list_keys,
    list_teams,
    list_users,
    rename_key,
    revoke_key,
    update_user,
)
from elevenfactor.server._runs_api import _Call, endpoint
from elevenfactor.server._schemas import (
    AdminKeyCreate,
    AdminKeyUpdate,
    AdminTeamCreate,
    AdminUserCreate,
    AdminUserUpdate,
)

__all__ = ["ROUTES"]

_Handler = Callable[[_Call], Awaitable[Response]]


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _list(items: list[Any]) -> Response:
    return _json({"object": "list", "data": [i.to_dict() for i in items]})


def admin(action: str) -> Callable[[_Handler], Callable[[Request], Awaitable[Response]]]:
    """An ``endpoint`` that refuses non-admins (``action`` names what was refused)."""

    def wrap(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def checked(call: _Call) -> Response:
            call.principal.require_admin(action)
            return await handler(call)

        return endpoint(checked)

    return wrap


def _name(call: _Call) -> str:
    return check_name(call.request.path_params["name"], "name")


# -- users ----------------------------------------------------------------------------------


@admin("listing users")
async def index_users(call: _Call) -> Response:
    """``GET /v1/admin/users``."""
    return _list(await list_users(call.store, call.principal))


@admin("creating a user")
async def post_user(call: _Call) -> Response:
    """``POST /v1/admin/users``."""
    body = await call.body(AdminUserCreate)
    user = await create_user(
        call.store,
        call.principal,
        body.name,
        team=body.team,
        roles=body.roles,
        groups=body.groups,
        kind=body.kind,
    )
    return _json(user.to_dict(), 201)


@admin("reading a user")
async def show_user(call: _Call) -> Response:
    """``GET /v1/admin/users/{name}``."""
    return _json((await get_user(call.store, call.principal, _name(call))).to_dict())


@admin("updating a user")
async def patch_user(call: _Call) -> Response:
    """``PATCH /v1/admin/users/{name}``: only the fields given change; ``"team": null`` takes
    the user out of its team."""
    name = _name(call)
    body = await call.body(AdminUserUpdate)
    user = await update_user(
        call.store,
        call.principal,
        name,
        team=body.team,
        clear_team="team" in body.model_fields_set and body.team is None,
        roles=body.roles,
        groups=body.groups,
        enabled=body.enabled,
    )
    return _json(user.to_dict())


@admin("disabling a user")
async def delete_user(call: _Call) -> Response:
    """``DELETE /v1/admin/users/{name}``: disable the user (its keys stop working)."""
    return _json((await disable_user(call.store, call.principal, _name(call))).to_dict())


# -- teams ----------------------------------------------------------------------------------


@admin("listing teams")
async def index_teams(call: _Call) -> Response:
    """``GET /v1/admin/teams``."""
    return _list(await list_teams(call.store, call.principal))


@admin("creating a team")
async def post_team(call: _Call) -> Response:
    """``POST /v1/admin/teams``."""
    body = await call.body(AdminTeamCreate)
    team = await create_team(call.store, call.principal, body.name, shares=body.shares)
    return _json(team.to_dict(), 201)


# -- keys -----------------------------------------------------------------------------------


@admin("listing API keys")
async def index_keys(call: _Call) -> Response:
    """``GET /v1/admin/keys``: never the secrets."""
    return _list(await list_keys(call.store, call.principal))


@admin("creating an API key")
async def post_key(call: _Call) -> Response:
    """``POST /v1/admin/keys``: the answer holds the secret (``key``), shown this once."""
    body = await call.body(AdminKeyCreate)
    key, secret = await create_key(call.store, call.principal, body.name, user=body.user)
    return _json({**key.to_dict(), "key": secret}, 201)


@admin("reading an API key")
async def show_key(call: _Call) -> Response:
    """``GET /v1/admin/keys/{key_id}`` (an id or a prefix)."""
    return _json((await get_key(call.store, call.principal, call.path_id("key_id"))).to_dict())


@admin("renaming an API key")
async def patch_key(call: _Call) -> Response:
    """``PATCH /v1/admin/keys/{key_id}``: ``{"name": NEW}``."""
    key_id = call.path_id("key_id")
    body = await call.body(AdminKeyUpdate)
    key = await rename_key(call.store, call.principal, key_id, body.name)
    return _json(key.to_dict())


@admin("revoking an API key")
async def delete_key(call: _Call) -> Response:
    """``DELETE /v1/admin/keys/{key_id}``: revoke the key (idempotent)."""
    key = await revoke_key(call.store, call.principal, call.path_id("key_id"))
    return _json(key.to_dict())


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/admin/users", index_users, ["GET"]),
    ("/v1/admin/users", post_user, ["POST"]),
    ("/v1/admin/users/{name}", show_user, ["GET"]),
    ("/v1/admin/users/{name}", patch_user, ["PATCH"]),
    ("/v1/admin/users/{name}", delete_user, ["DELETE"]),
    ("/v1/admin/teams", index_teams, ["GET"]),
    ("/v1/admin/teams", post_team, ["POST"]),
    ("/v1/admin/keys", index_keys, ["GET"]),
    ("/v1/admin/keys", post_key, ["POST"]),
    ("/v1/admin/keys/{key_id}", show_key, ["GET"]),
    ("/v1/admin/keys/{key_id}", patch_key, ["PATCH"]),
    ("/v1/admin/keys/{key_id}", delete_key, ["DELETE"]),
]
"""``(path, handler, methods)`` for the Starlette routes."""
