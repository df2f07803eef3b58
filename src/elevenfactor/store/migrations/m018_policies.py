"""m018_policies: guard policy versions ever used (`policy_versions`).

- ``policy_versions``: one row per policy id and content hash (the full SHA-256 of the policy
  file, line endings normalised) the first time a process used it: the short version shown to
  people and carried by verdicts (``id@version``), the file it was read from (relative to the
  project, or the shipped default's name) and its whole text, so a call or run checked under
  an old version can be explained and re-checked after the file changed. Rows are inserted
  once and never updated (``ON CONFLICT DO NOTHING``).
"""

STATEMENTS = (
    """CREATE TABLE policy_versions (
        policy_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        content TEXT NOT NULL,
        first_used_at {real} NOT NULL,
        PRIMARY KEY (policy_id, hash)
    )""",
)
