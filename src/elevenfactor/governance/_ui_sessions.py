"""Dashboard sign-ins in the store (``ui_sessions``, m029): start, resolve, end, purge.

Only the SHA-256 of a session token is stored, so a copy of the table signs nobody in. A
session resolves through the API key it was made with: revoking the key or disabling the user
ends it at the next page view. The cookie side lives in ``server.ui._session``.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from elevenfactor.errors import RequestError
from elevenfactor.governance._keys import principal_for_key_id
from elevenfactor.governance._principal import Principal
from elevenfactor.store import Store

__all__ = ["end_ui_session", "purge_ui_sessions", "start_ui_session", "ui_session_principal"]

_SLIDE_EVERY = 60.0
"""Seconds between writes that slide a session's idle timeout (not one write per page)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_ui_session(store: Store, principal: Principal, idle: float, cap: float) -> str:
    """Record a sign-in of ``principal`` (who authenticated with a key) and return its token;
    it lasts ``idle`` seconds without use and ``cap`` seconds at most."""
    if principal.key_id is None:
        raise RequestError("only an API key can sign in", code="ui_key_required", status=400)
    token = secrets.token_urlsafe(32)
    now = time.time()
    await store.execute(
        "INSERT INTO ui_sessions (token_hash, key_id, org_id, user_id, created_at,"
        " last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            _digest(token),
            principal.key_id,
            principal.org_id,
            principal.user_id,
            now,
            now,
            now + min(idle, cap),
        ),
    )
    return token


async def ui_session_principal(
    store: Store, token: str, idle: float, cap: float
) -> Principal | None:
    """The principal a session token stands for, or None (unknown, expired, signed out, or
    its key revoked — then the session is deleted too). Slides the idle timeout."""
    if not token or len(token) > 128:
        return None
    now = time.time()
    digest = _digest(token)
    row = await store.fetchone(
        "SELECT key_id, created_at, last_seen_at FROM ui_sessions"
        " WHERE token_hash = ? AND expires_at > ?",
        (digest, now),
    )
    if row is None:
        return None
    key_id, created, seen = row
    principal = await principal_for_key_id(store, key_id)
    if principal is None:
        await store.execute("DELETE FROM ui_sessions WHERE token_hash = ?", (digest,))
        return None
    if now - float(seen) > _SLIDE_EVERY:
        await store.execute(
            "UPDATE ui_sessions SET last_seen_at = ?, expires_at = ? WHERE token_hash = ?",
            (now, min(now + idle, float(created) + cap), digest),
        )
    return principal


async def end_ui_session(store: Store, token: str) -> None:
    """Sign out: delete the session ``token`` names (nothing if none)."""
    await store.execute("DELETE FROM ui_sessions WHERE token_hash = ?", (_digest(token),))


async def purge_ui_sessions(store: Store, now: float) -> int:
    """Delete sign-ins expired at ``now``; how many went (a housekeeping job)."""
    rows = await store.fetchall(
        "DELETE FROM ui_sessions WHERE expires_at <= ? RETURNING token_hash", (now,)
    )
    return len(rows)
