"""Factor 3, memory: sessions (a conversation and its state, in the store) and long-term memory
(facts and preferences with provenance, scoped to a user, an agent or a shared space).

Every function takes the store, who acts and its arguments; ownership and grants are checked
in the SQL that reads and writes the rows.

- Sessions: ``load_session``, ``load_or_new``, ``append_messages``, ``set_state``,
  ``list_sessions``, ``delete_session``.
- Long-term memory: ``remember`` (a contradicting memory is superseded and kept as history),
  ``recall``, ``list_memories``, ``get_memory``, ``history``, ``forget``, ``forget_user``,
  ``purge_expired``; scopes (``Scope``) and who acts (``MemoryActor``).
- Shared spaces: ``grant``, ``revoke``, ``list_grants``, ``apply_spaces`` (the project file's).
- For agents: ``MemoryToolset`` (``remember``, ``recall``, ``forget_memory`` as tools) and
  ``extract_memories`` (facts from a run's conversation, by a model).
"""

from __future__ import annotations

from elevenfactor.memory._extract import (
    Dropped,
    Extraction,
    Fact,
    extract_facts,
    extract_memories,
    extraction_request,
    parse_facts,
    remember_facts,
)
from elevenfactor.memory._forget import Forgotten, forget_user
from elevenfactor.memory._recall import Recalled, list_memories, recall
from elevenfactor.memory._records import KINDS, Memory, Provenance
from elevenfactor.memory._scopes import (
    MemoryActor,
    Scope,
    check_access,
    default_scopes,
    scope_for,
)
from elevenfactor.memory._sessions import (
    Session,
    SessionInfo,
    append_messages,
    delete_session,
    list_sessions,
    load_or_new,
    load_session,
    set_state,
)
from elevenfactor.memory._spaces import Grant, apply_spaces, grant, list_grants, revoke
from elevenfactor.memory._tool import MemoryToolset
from elevenfactor.memory._write import forget, get_memory, history, purge_expired, remember

__all__ = [
    "KINDS",
    "Dropped",
    "Extraction",
    "Fact",
    "Forgotten",
    "Grant",
    "Memory",
    "MemoryActor",
    "MemoryToolset",
    "Provenance",
    "Recalled",
    "Scope",
    "Session",
    "SessionInfo",
    "append_messages",
    "apply_spaces",
    "check_access",
    "default_scopes",
    "delete_session",
    "extract_facts",
    "extract_memories",
    "extraction_request",
    "forget",
    "forget_user",
    "get_memory",
    "grant",
    "history",
    "list_grants",
    "list_memories",
    "list_sessions",
    "load_or_new",
    "load_session",
    "parse_facts",
    "purge_expired",
    "recall",
    "remember",
    "remember_facts",
    "revoke",
    "scope_for",
    "set_state",
]
