"""Long-term memory and sessions over HTTP: list, search, write and forget memories; list, read
and delete sessions; an admin forgets a user (and the gateway's cached answers to the user).

Every endpoint authenticates and acts as the caller (a ``MemoryActor`` without an agent): the
library's queries carry the caller's organisation and scope, so another user's memory or session
is ``404``, as if absent. A space needs a grant naming ``user:ID`` (admins reach every space of
their organisation). Writing and searching need the server's embedder (``memory.embedder``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from elevenfactor.context import Embedder
from elevenfactor.errors import ContextError, ModelNotFound
from elevenfactor.governance import ID_PATTERN, get_user
from elevenfactor.memory import (
    MemoryActor,
    Provenance,
    Scope,
    delete_session,
    forget,
    forget_user,
    get_memory,
    history,
    list_memories,
    list_sessions,
    load_session,
    recall,
    remember,
)
from elevenfactor.server import _memory_schemas as ms
from elevenfactor.server._admin_api import admin
from elevenfactor.server._op_types import Operation, PathParam
from elevenfactor.server._runs_api import _Call, endpoint

__all__ = ["OPERATIONS", "ROUTES"]


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _actor(call: _Call) -> MemoryActor:
    return MemoryActor(call.principal)


def _embedder(call: _Call) -> Embedder:
    """The server's embedder for memory (``memory.embedder``, a name under ``embeddings``)."""
    name = call.gw.project.memory.embedder
    registry = call.gw.embedders
    try:
        if registry is None:
            raise ModelNotFound("the server has no embedders open")
        return registry.get(name)
    except ModelNotFound:
        raise ContextError(
            f"memory.embedder {name!r} is not an embedder this server has",
            code="embedder_unavailable",
            status=503,
            hint="name one of `embeddings.models` as memory.embedder in elevenfactor.yaml",
        ) from None


def _write_scope(call: _Call, ref: str) -> Scope:
    return Scope.user(call.principal.user_id) if ref == "user" else Scope.parse(ref)


# -- memories ---------------------------------------------------------------------------------


@endpoint
async def index_memories(call: _Call) -> Response:
    """``GET /v1/memories``: the caller's memories (and the spaces it may read), newest first."""
    q = call.query(ms.MemoryQuery)
    found = await list_memories(
        call.store,
        _actor(call),
        [Scope.parse(q.scope)] if q.scope else None,
        kind=q.kind,
        key=q.key,
        include_inactive=q.include_inactive == "true",
        limit=q.limit,
    )
    return _json({"object": "list", "data": [m.to_dict() for m in found]})


@endpoint
async def post_memory(call: _Call) -> Response:
    """``POST /v1/memories``: remember in the caller's memory or a space it may write."""
    body = await call.body(ms.MemoryCreate)
    memory = await remember(
        call.store,
        _embedder(call),
        _actor(call),
        _write_scope(call, body.scope),
        body.text,
        kind=body.kind,
        key=body.key,
        importance=body.importance,
        ttl=body.ttl_seconds,
        provenance=Provenance("api"),
        config=call.gw.project.memory,
    )
    return _json(memory.to_dict(), 201)


@endpoint
async def search_memories(call: _Call) -> Response:
    """``POST /v1/memories/search``: recall, best first."""
    body = await call.body(ms.MemorySearch)
    found = await recall(
        call.store,
        _embedder(call),
        _actor(call),
        body.query,
        [Scope.parse(s) for s in body.scopes] if body.scopes is not None else None,
        body.k,
        body.min_score,
        config=call.gw.project.memory,
    )
    return _json({"object": "list", "data": [r.to_dict() for r in found]})


@endpoint
async def show_memory(call: _Call) -> Response:
    """``GET /v1/memories/{id}``: a memory and its history."""
    actor = _actor(call)
    memory = await get_memory(call.store, actor, call.path_id("id"))
    chain = await history(call.store, actor, memory.id)
    return _json({**memory.to_dict(), "history": [m.to_dict() for m in chain]})


@endpoint
async def delete_memory(call: _Call) -> Response:
    """``DELETE /v1/memories/{id}``: forget a memory and its history."""
    ident = call.path_id("id")
    deleted = await forget(call.store, _actor(call), ident)
    return _json({"id": ident, "object": "memory.deleted", "deleted": deleted})


@admin("forgetting a user's memory")
async def forget_user_memory(call: _Call) -> Response:
    """``POST /v1/admin/memory/forget``: erase a user's memories, sessions, grants and cached
    answers (the store's and the gateway's response cache backend's)."""
    body = await call.body(ms.ForgetUser)
    user = await get_user(call.store, call.principal, body.user)
    cache = call.gw.registry.cache if call.gw.registry is not None else None
    done = await forget_user(call.store, call.principal, user.id, cache=cache)
    return _json({"object": "memory.forgotten", **done.to_dict()})


# -- sessions ---------------------------------------------------------------------------------


@endpoint
async def index_sessions(call: _Call) -> Response:
    """``GET /v1/sessions``: the caller's sessions (an admin's: its organisation's)."""
    q = call.query(ms.SessionsQuery)
    found = await list_sessions(call.store, call.principal, limit=q.limit)
    return _json({"object": "list", "data": [s.to_dict() for s in found]})


@endpoint
async def show_session(call: _Call) -> Response:
    """``GET /v1/sessions/{id}``: state and messages in order."""
    q = call.query(ms.SessionQuery)
    session = await load_session(call.store, call.principal, call.path_id("id"), q.limit)
    return _json(session.to_dict())


@endpoint
async def remove_session(call: _Call) -> Response:
    """``DELETE /v1/sessions/{id}``: delete the session and its messages."""
    info = await delete_session(call.store, call.principal, call.path_id("id"))
    return _json({**info.to_dict(), "deleted": True})


ROUTES: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
    ("/v1/memories", index_memories, ["GET"]),
    ("/v1/memories", post_memory, ["POST"]),
    ("/v1/memories/search", search_memories, ["POST"]),
    ("/v1/memories/{id}", show_memory, ["GET"]),
    ("/v1/memories/{id}", delete_memory, ["DELETE"]),
    ("/v1/sessions", index_sessions, ["GET"]),
    ("/v1/sessions/{id}", show_session, ["GET"]),
    ("/v1/sessions/{id}", remove_session, ["DELETE"]),
    ("/v1/admin/memory/forget", forget_user_memory, ["POST"]),
]
"""``(path, handler, methods)`` for the Starlette routes."""

MEMORY_ID = PathParam("id", "The memory's id.", ID_PATTERN)
SESSION_ID = PathParam("id", "The session's id.", ID_PATTERN)
_EMBED = " Needs the server's embedder (`memory.embedder`): 503 `embedder_unavailable` without."
_OWN = " Another user's is 404, as if absent."

OPERATIONS: tuple[Operation, ...] = (
    Operation("/v1/memories", "get", "List memories", "memory", ms.MemoryList,
              "The caller's memories and those of the spaces it may read, newest first; only"
              " active ones (not superseded, not expired) unless `include_inactive`. Another"
              " user's or agent's scope is 403 `memory_denied`.", query=ms.MemoryQuery),
    Operation("/v1/memories", "post", "Remember", "memory", ms.MemoryObject,
              "Write a fact or preference to the caller's memory or to a space it holds a"
              " write grant on (403 `memory_denied` otherwise). A memory with the same `key`,"
              " or (without a key) a near-duplicate, is superseded and kept as history."
              + _EMBED, body=ms.MemoryCreate, status=201),
    Operation("/v1/memories/search", "post", "Recall", "memory", ms.RecalledList,
              "Active memories ranked by similarity, recency and importance (weights in"
              " `memory.recall`); 409 `embedder_mismatch` if they were embedded by another"
              " embedder." + _EMBED, body=ms.MemorySearch),
    Operation("/v1/memories/{id}", "get", "Retrieve a memory", "memory", ms.MemoryDetail,
              "With its history (every version, oldest first)." + _OWN, params=(MEMORY_ID,)),
    Operation("/v1/memories/{id}", "delete", "Forget a memory", "memory", ms.MemoryDeleted,
              "Deletes it and its history physically." + _OWN, params=(MEMORY_ID,)),
    Operation("/v1/sessions", "get", "List sessions", "memory", ms.SessionList,
              "The caller's sessions (an admin: its organisation's).", query=ms.SessionsQuery),
    Operation("/v1/sessions/{id}", "get", "Retrieve a session", "memory", ms.SessionDetail,
              "Its state and messages in order." + _OWN, query=ms.SessionQuery,
              params=(SESSION_ID,)),
    Operation("/v1/sessions/{id}", "delete", "Delete a session", "memory", ms.SessionDeleted,
              "With its messages, physically." + _OWN, params=(SESSION_ID,)),
    Operation("/v1/admin/memory/forget", "post", "Forget a user", "admin", ms.ForgetUserResult,
              "Admins only (others get 403 `permission_denied`). Deletes every memory of the"
              " user's scope and every memory written on the user's behalf, the user's sessions"
              " and messages, the grants naming the user, the semantic cache's answers to the"
              " user's questions and the exact response cache's answers to the user's calls (in"
              " the store and in Redis); recorded in the ledger with the counts, never the"
              " content. If Redis fails after the rest is deleted: 503 `store_error`, and"
              " forgetting again clears it.", body=ms.ForgetUser),
)  # fmt: skip
