"""m013_retrieval: the registry of retrieval indexes and their versions.

The documents, chunks, postings and vectors live in the retrieval backend (the embedded files or
pgvector, see ``elevenfactor.context``); the main store says which indexes exist and which
version of each queries see.

- ``retrieval_indexes``: one index of an organisation (``name`` unique per organisation), the
  backend that holds it and its location (a folder or a masked URL), the embedder (its name and
  dimension) and the settings of its active version, ``active_version`` (NULL until the first
  build completes).
- ``retrieval_versions``: each build of an index: ``building`` while documents are written
  (an interrupted build resumes it), ``ready`` once complete (then it may become active),
  ``failed`` when it could not be resumed (another embedder or other chunk settings) and
  ``retired`` once its data is deleted; its counts (documents, chunks, chunks embedded vs.
  reused, total terms for BM25), the files skipped (JSON) and its times.
"""

STATEMENTS = (
    """CREATE TABLE retrieval_indexes (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        name TEXT NOT NULL,
        backend TEXT NOT NULL,
        location TEXT NOT NULL,
        embedder TEXT NOT NULL,
        dim INTEGER NOT NULL,
        settings TEXT NOT NULL,
        source TEXT,
        active_version INTEGER,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        UNIQUE (org_id, name)
    )""",
    """CREATE TABLE retrieval_versions (
        index_id TEXT NOT NULL REFERENCES retrieval_indexes (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        embedder TEXT NOT NULL,
        dim INTEGER NOT NULL,
        settings TEXT NOT NULL,
        documents INTEGER NOT NULL DEFAULT 0,
        chunks INTEGER NOT NULL DEFAULT 0,
        embedded INTEGER NOT NULL DEFAULT 0,
        reused INTEGER NOT NULL DEFAULT 0,
        total_terms {bigint} NOT NULL DEFAULT 0,
        skipped TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        started_at {real} NOT NULL,
        finished_at {real},
        PRIMARY KEY (index_id, version)
    )""",
)
