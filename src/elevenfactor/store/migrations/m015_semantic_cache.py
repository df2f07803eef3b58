"""m015_semantic_cache: the semantic response cache (``routes.NAME.cache.semantic``), and who
owns the exact cache's entries.

- ``semantic_cache``: one complete answer per row, found by meaning. ``namespace`` is the
  SHA-256 of everything in the exact cache key except the last user message's text (system
  prompt, earlier turns, tools, settings, model and prompt versions, the embedder) and of the
  scope (the organisation, or the organisation and the user); ``vector`` is the float32
  (little-endian) embedding of that text, ``query_hash`` its SHA-256 (the text itself is not
  kept); ``response`` the answer as JSON, with the deployment, provider and model that gave
  it; ``org_id`` and ``user_id`` who asked first (``forget_user`` deletes a user's rows);
  ``hits`` counts the times it was served. Ids only grow: each process reads the rows of a
  namespace newer than the last id it saw (``semantic_cache_namespace``). A row past
  ``expires_at`` is never served and ``purge_semantic_expired`` deletes it.
- ``response_cache`` (the exact cache, m008) gains ``org_id`` and ``user_id``: whose call
  stored the entry (the last writer; NULL when unknown), indexed so ``forget_user`` deletes a
  user's rows. The rows already there are deleted first: no one could be told to own them, so
  no privacy request could reach them (it is a cache: they are answered again on demand).
"""

STATEMENTS = (
    """CREATE TABLE semantic_cache (
        id {serial},
        namespace TEXT NOT NULL,
        org_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        vector {blob} NOT NULL,
        query_hash TEXT NOT NULL,
        response TEXT NOT NULL,
        deployment TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        hits {bigint} NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX semantic_cache_namespace ON semantic_cache (namespace, id)",
    "CREATE INDEX semantic_cache_user ON semantic_cache (org_id, user_id)",
    "CREATE INDEX semantic_cache_expires ON semantic_cache (expires_at)",
    "DELETE FROM response_cache",
    "ALTER TABLE response_cache ADD COLUMN org_id TEXT",
    "ALTER TABLE response_cache ADD COLUMN user_id TEXT",
    "CREATE INDEX response_cache_owner ON response_cache (org_id, user_id)",
)
