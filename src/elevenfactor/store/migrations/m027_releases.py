"""m027_releases: immutable releases and which one each environment runs (``runtime._release``).

- ``releases``: one row per release. ``id`` is the SHA-256 of the canonical manifest (code
  version, project config without secrets, prompt, policy, price and index versions, agent
  specs): the same manifest is the same release. ``files_hash`` is the SHA-256 of the manifest
  without its retrieval index versions — what a process compares with the files on disk.
  ``name`` is an optional unique label. Releases are deployment-wide (no ``org_id``): the code
  and the project files are the same for every organisation.
- ``release_pointers``: the history of each environment's active release; every activation and
  rollback is a row (and a ledger entry). The active release of an environment is its newest
  row; a rollback pops the newest activation.
- ``runs.release_id`` and ``model_calls.release_id``: the release a run was submitted under and
  a model call made under; NULL when no release applied (and for rows written before this
  migration: a call record's hash covers ``release_id`` only when it is set).
"""

STATEMENTS = (
    """CREATE TABLE releases (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE,
        files_hash TEXT NOT NULL,
        manifest TEXT NOT NULL,
        created_at {real} NOT NULL,
        created_by TEXT NOT NULL,
        created_by_id TEXT
    )""",
    "CREATE INDEX releases_created ON releases (created_at)",
    """CREATE TABLE release_pointers (
        seq {serial},
        environment TEXT NOT NULL,
        release_id TEXT NOT NULL,
        previous_id TEXT,
        action TEXT NOT NULL,
        switched_at {real} NOT NULL,
        switched_by TEXT NOT NULL
    )""",
    "CREATE INDEX release_pointers_env ON release_pointers (environment, seq)",
    "ALTER TABLE runs ADD COLUMN release_id TEXT",
    "ALTER TABLE model_calls ADD COLUMN release_id TEXT",
)
