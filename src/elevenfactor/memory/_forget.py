"""``forget_user``: erase what memory holds of one user, physically, with a ledger record.

It deletes, in one transaction: every memory of the user's scope; every memory written on the
user's behalf in an agent's scope or a shared space (facts drawn from the user's conversations
are copies of the user's data); the vectors with them (they are columns of those rows); the
user's sessions and their messages; the space grants naming the user; the semantic response
cache's answers to the user's questions (``semantic_cache`` rows the user asked first, in any
scope: each holds the embedding of the user's question and the answer to it); and the exact
response cache's answers to the user's calls (``response_cache`` rows the user's calls stored
last, whatever backend the deployment uses now: rows from before ``REDIS_URL`` was set go too).
Then, once that has committed, the entries the user owns in the deployment's response cache
backend when it is not that table (``cache``: Redis, or process memory). Nothing is flagged or
kept. Memory keeps no other copy (no cache of vectors or texts). A process that had read a
deleted semantic cache row never serves it (a hit is read back from its row); its in-memory
copy of the vector goes at its first cache lookup a minute later at most.

An exact cache entry belongs to the last user whose call stored it (identical requests share an
entry, and a later answer overwrites an earlier one), so a user's answer that another user's
identical request rewrote is that user's now. Entries stored by calls of no known user (a
library call without ``org_id`` and ``user_id``) cannot be attributed, and expire with their
ttl.

The user's **run evidence** goes in the same transaction, by the mechanism retention uses
(``governance._retention_erase``): the content of the runs the user owns that have ended (input,
step outputs, result, approval requests and decisions), their encrypted placeholder maps, and
the request and response payloads of the user's call records and of those runs' calls are
erased physically while every hash stays, so each chain, approval and call record still
verifies in ``audit verify``. A run still active keeps its content (``active_runs`` counts it:
cancel it and forget again). Error texts stay (they are inside the event hashes).

The admin action is a ledger entry: who (the admin), whom (the user id) and how many rows of
each kind went in the transaction, never the forgotten content; when run evidence was erased,
the entry also holds the Merkle root over the erased references. The returned counts add the
entries of a separate cache backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from elevenfactor.errors import StoreError
from elevenfactor.governance import Principal, append_entry, check_id
from elevenfactor.governance._retention_erase import erase, lock_erasures
from elevenfactor.governance._retention_user import user_evidence
from elevenfactor.models._cache_backends import CacheBackend, StoreCache, forget_owner
from elevenfactor.store import Store

__all__ = ["Forgotten", "forget_user"]


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget_user`` removed: counts only."""

    user_id: str
    memories: int
    derived_memories: int
    sessions: int
    messages: int
    grants: int
    cache_entries: int = 0
    """Semantic response cache entries (the user's questions, embedded, and their answers)."""
    response_cache_entries: int = 0
    """Exact response cache entries (answers to the user's calls): rows of the store's table
    and entries of the deployment's backend (Redis, process memory)."""
    runs: int = 0
    """Ended runs the user owns whose content was erased (hashes kept)."""
    run_payloads: int = 0
    """Their inputs, step outputs and results erased."""
    approval_payloads: int = 0
    """Requests and decisions of their approvals erased."""
    call_records: int = 0
    """Call records (the user's calls, and those runs' calls) whose payloads were erased."""
    call_payloads: int = 0
    """Their request and response payloads erased."""
    active_runs: int = 0
    """Runs of the user still queued, running or waiting: their content is kept."""

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON."""
        return asdict(self)


async def forget_user(
    store: Store, admin: Principal, user_id: str, *, cache: CacheBackend | None = None
) -> Forgotten:
    """Delete every memory, session, message, grant and response cache entry (semantic and
    exact) of ``user_id`` in the admin's organisation and erase the content of their run
    evidence, hashes kept (see the module docstring); recorded in the ledger with the counts.

    ``cache`` is the deployment's exact response cache backend (``open_response_cache``); the
    store's ``response_cache`` table is always cleared of the user's rows, in the transaction.
    A ``cache`` that fails after the transaction committed raises ``StoreError``: the rest is
    forgotten, and running ``forget_user`` again clears the cache.
    """
    admin.require_admin("forgetting a user's memory")
    check_id(user_id, "user")
    org = admin.org_id
    async with store.transaction() as tx:
        own = await tx.execute(
            "DELETE FROM memories WHERE org_id = ? AND scope_kind = 'user' AND scope_id = ?",
            (org, user_id),
        )
        derived = await tx.execute(
            "DELETE FROM memories WHERE org_id = ? AND user_id = ?", (org, user_id)
        )
        messages = await tx.execute(
            "DELETE FROM session_messages WHERE org_id = ? AND session_id IN"
            " (SELECT id FROM sessions WHERE org_id = ? AND user_id = ?)",
            (org, org, user_id),
        )
        sessions = await tx.execute(
            "DELETE FROM sessions WHERE org_id = ? AND user_id = ?", (org, user_id)
        )
        grants = await tx.execute(
            "DELETE FROM memory_grants WHERE org_id = ? AND grantee = ?",
            (org, f"user:{user_id}"),
        )
        cached = await tx.execute(
            "DELETE FROM semantic_cache WHERE org_id = ? AND user_id = ?", (org, user_id)
        )
        answers = await forget_owner(tx, org, user_id)
        # Links from surviving versions to deleted ones would name rows that are gone.
        await tx.execute(
            "UPDATE memories SET supersedes = NULL WHERE org_id = ? AND supersedes IS NOT NULL"
            " AND supersedes NOT IN (SELECT id FROM memories WHERE org_id = ?)",
            (org, org),
        )
        await lock_erasures(tx, store.dialect)
        evidence = await user_evidence(tx, org, user_id)
        done = Forgotten(
            user_id,
            own,
            derived,
            sessions,
            messages,
            grants,
            cached,
            answers,
            runs=evidence.runs,
            run_payloads=evidence.run_payloads,
            approval_payloads=evidence.approval_payloads,
            call_records=evidence.call_records,
            call_payloads=evidence.call_payloads,
            active_runs=evidence.active_runs,
        )
        kind, actor = "admin.memory.forget_user", admin.actor()
        seq, _ = await erase(
            tx,
            store.dialect,
            evidence.items,
            kind=kind,
            subject=user_id,
            actor=actor,
            body=done.to_dict(),
        )
        if seq is None:
            await append_entry(tx, kind, user_id, actor, done.to_dict())
    if cache is None or (isinstance(cache, StoreCache) and cache.store is store):
        return done
    try:
        more = await cache.forget(org, user_id)
    except Exception as exc:
        raise StoreError(
            f"user {user_id!r} is forgotten except for the response cache's entries, which"
            f" could not be deleted: {type(exc).__name__}: {exc}",
            hint="run the forget again once the cache (REDIS_URL) is reachable",
        ) from exc
    return replace(done, response_cache_entries=answers + more)
