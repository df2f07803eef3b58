"""A run's session, as journaled steps: an agent run submitted with a session id reads the
session's earlier conversation (``session.load``: the history its context assembly fits into the
window, with the summaries kept for it) and, when it answers, appends its own messages
(``session.append``: its input, its turns and its answer), so the next run — in any process —
continues the conversation. The session belongs to the run's owner; another user's session is
``NotFound``. An append retried after a crash is written once (its run's messages are looked for
first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from elevenfactor.governance import Principal, local_admin
from elevenfactor.memory import append_messages, load_session, set_state
from elevenfactor.models import Message
from elevenfactor.runtime._context import RunContext
from elevenfactor.store import Store

__all__ = ["HISTORY_LIMIT", "load_history", "owner_of", "save_turns"]

HISTORY_LIMIT = 2000
"""The most recent messages of a session a run reads (older ones are in its summaries)."""

_MESSAGES = TypeAdapter(list[Message])


def owner_of(ctx: RunContext) -> Principal:
    """Whom the run acts for (the local administrator for a run submitted without one)."""
    return ctx.lease.owner if ctx.lease.owner is not None else local_admin("runtime")


async def load_history(ctx: RunContext) -> tuple[list[Message], dict[str, str]]:
    """The session's messages and its summaries (by span); nothing without a session."""
    session = ctx.lease.session_id
    if session is None:
        return [], {}
    out = await ctx.step("session.load", _load, ctx.store, owner_of(ctx), session, kind="session")
    summaries = out.get("summaries") or {}
    return list(_MESSAGES.validate_python(out["messages"])), {
        str(k): str(v) for k, v in summaries.items()
    }


async def _load(store: Store, owner: Principal, session: str) -> dict[str, Any]:
    found = await load_session(store, owner, session, HISTORY_LIMIT, missing_ok=True)
    summaries = found.state.get("summaries") if isinstance(found.state, dict) else None
    return {
        "messages": [m.model_dump(mode="json", exclude_none=True) for m in found.messages],
        "summaries": summaries if isinstance(summaries, dict) else {},
    }


async def save_turns(
    ctx: RunContext, messages: Sequence[Message], summaries: dict[str, str]
) -> None:
    """Append the run's ``messages`` to its session and keep the ``summaries`` in its state."""
    session = ctx.lease.session_id
    if session is None:
        return
    encoded = [m.model_dump(mode="json", exclude_none=True) for m in messages]
    await ctx.step(
        "session.append", _append, ctx.store, owner_of(ctx), session, encoded, ctx.run_id,
        summaries, kind="session",
    )  # fmt: skip


async def _append(
    store: Store,
    owner: Principal,
    session: str,
    messages: list[dict[str, Any]],
    run_id: str,
    summaries: dict[str, str],
) -> dict[str, Any]:
    done = await store.fetchone(
        "SELECT count(*) FROM session_messages WHERE org_id = ? AND session_id = ? AND run_id = ?",
        (owner.org_id, session, run_id),
    )
    if done is not None and int(done[0]) > 0:  # appended before a crash: not twice
        return {"appended": 0}
    seqs = await append_messages(store, owner, session, messages, run_id=run_id)
    if summaries:
        found = await load_session(store, owner, session, 1, missing_ok=True)
        state = dict(found.state) if isinstance(found.state, dict) else {}
        state["summaries"] = dict(list(summaries.items())[-8:])  # the newest few spans
        await set_state(store, owner, session, state)
    return {"appended": len(seqs)}
