"""m008_cache: the exact response cache, when answers live in the store (no ``REDIS_URL``).

- ``response_cache``: one complete answer per key (the SHA-256 of the normalised request, the
  model versions and the prompt version), as JSON; ``model`` is the deployment that answered;
  ``hits`` counts the times it was served. A row past ``expires_at`` is never served: reads
  skip it and delete it, and ``purge_expired`` deletes them all (the index serves that).
"""

STATEMENTS = (
    """CREATE TABLE response_cache (
        key TEXT PRIMARY KEY,
        response TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        hits {bigint} NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX response_cache_expires ON response_cache (expires_at)",
)
