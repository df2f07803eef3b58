"""m021_guard_vault: the encrypted placeholder maps of agent runs (``governance._guard_vault``).

- ``guard_vault``: one row per organisation and run whose guards issued reversible placeholders
  (``redact`` in ``placeholder`` mode). ``ciphertext`` is the AES-GCM encryption of the run's
  placeholder map under ``ELEVENFACTOR_GUARD_VAULT_KEY`` (``nonce``: its 12-byte nonce; the
  organisation and run are its associated data, so a row moved to another run does not
  decrypt). ``expires_at`` is NULL while the run lives and set to its end plus ``ttl`` seconds
  when it ends; the housekeeper deletes expired rows, and rows of runs that ended more than
  ``ttl`` seconds ago (or no longer exist) without setting it. The index serves the purge.
"""

STATEMENTS = (
    """CREATE TABLE guard_vault (
        org_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        ciphertext {blob} NOT NULL,
        nonce {blob} NOT NULL,
        ttl {real} NOT NULL,
        expires_at {real},
        updated_at {real} NOT NULL,
        PRIMARY KEY (org_id, run_id)
    )""",
    "CREATE INDEX guard_vault_expires ON guard_vault (expires_at)",
)
