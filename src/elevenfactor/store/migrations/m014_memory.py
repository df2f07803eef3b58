"""m014_memory: sessions and long-term memory.

- ``sessions``: one conversation, keyed by ``(org_id, id)`` (the id is the caller's), owned by
  ``user_id``; ``state`` is a JSON object; ``next_seq`` is the sequence number the next message
  gets (raised by the append that takes it, so concurrent appends never share one).
- ``session_messages``: the messages in ``seq`` order, each a JSON message, with the run that
  added it.
- ``memories``: long-term facts and preferences, scoped (``scope_kind`` ``user``, ``agent`` or
  ``space`` + ``scope_id``); ``fact_key`` the optional subject; ``embedding`` the float32 vector
  of ``text`` by ``embedder``; ``user_id`` the user on whose behalf it was written;
  ``superseded_by`` / ``supersedes`` link a memory's versions (one active version per key:
  ``memories_active_key``); ``provenance`` is JSON (run, step, message or ``api``).
- ``memory_spaces`` and ``memory_grants``: shared spaces and who (an agent, or ``user:ID``) may
  read or write each; ``source`` says whether a grant comes from the project file or an admin.
"""

STATEMENTS = (
    """CREATE TABLE sessions (
        org_id TEXT NOT NULL,
        id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        state TEXT NOT NULL,
        next_seq {bigint} NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        PRIMARY KEY (org_id, id)
    )""",
    "CREATE INDEX sessions_owner ON sessions (org_id, user_id, updated_at)",
    """CREATE TABLE session_messages (
        org_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        seq {bigint} NOT NULL,
        message TEXT NOT NULL,
        run_id TEXT,
        created_at {real} NOT NULL,
        PRIMARY KEY (org_id, session_id, seq)
    )""",
    """CREATE TABLE memories (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        scope_kind TEXT NOT NULL,
        scope_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        fact_key TEXT,
        text TEXT NOT NULL,
        embedding {blob} NOT NULL,
        embedder TEXT NOT NULL,
        importance {real} NOT NULL,
        user_id TEXT NOT NULL,
        created_at {real} NOT NULL,
        recalled_at {real},
        expires_at {real},
        superseded_by TEXT,
        supersedes TEXT,
        provenance TEXT NOT NULL
    )""",
    "CREATE INDEX memories_scope ON memories (org_id, scope_kind, scope_id)"
    " WHERE superseded_by IS NULL",
    "CREATE UNIQUE INDEX memories_active_key ON memories (org_id, scope_kind, scope_id, fact_key)"
    " WHERE superseded_by IS NULL AND fact_key IS NOT NULL",
    "CREATE INDEX memories_user ON memories (org_id, user_id)",
    "CREATE INDEX memories_expires ON memories (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE memory_spaces (
        org_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at {real} NOT NULL,
        PRIMARY KEY (org_id, name)
    )""",
    """CREATE TABLE memory_grants (
        org_id TEXT NOT NULL,
        space TEXT NOT NULL,
        grantee TEXT NOT NULL,
        can_read INTEGER NOT NULL,
        can_write INTEGER NOT NULL,
        source TEXT NOT NULL,
        granted_at {real} NOT NULL,
        PRIMARY KEY (org_id, space, grantee)
    )""",
)
