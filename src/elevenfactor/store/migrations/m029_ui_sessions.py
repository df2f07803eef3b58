"""m029_ui_sessions: dashboard sign-ins (``server.ui._session``).

- ``ui_sessions``: one row per browser signed in to ``/ui`` with an API key. The cookie holds a
  random token; only its SHA-256 (``token_hash``) is stored, so a copy of the table signs
  nobody in. ``key_id`` is the key the user signed in with: every page resolves the principal
  through it, so revoking the key (or disabling the user) ends the session at once.
  ``expires_at`` is sliding (``last_seen_at`` + the idle timeout, capped by ``created_at`` +
  the absolute lifetime); signing out deletes the row; the housekeeper purges expired rows.
"""

STATEMENTS = (
    """CREATE TABLE ui_sessions (
        token_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        org_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at {real} NOT NULL,
        last_seen_at {real} NOT NULL,
        expires_at {real} NOT NULL
    )""",
    "CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at)",
    "CREATE INDEX ui_sessions_key ON ui_sessions (key_id)",
)
