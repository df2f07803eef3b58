"""m005_journal_rowid: on SQLite, the journal becomes a rowid table with its key as an index.

As a ``WITHOUT ROWID`` table (m003) the journal's rows (~600 bytes with a small output inline)
sat in the B-tree of its key, ``(run_id, n)``: a run's next event lands in the middle of the
tree, where the pages around it are full, and nearly every append rebalanced three of them. As
a rowid table every append goes at the end of the table's B-tree, and only a small key entry
into the middle of the index's: about 4 µs less per journaled step with 30 runs on file (no
difference with one). Columns, keys and contents are unchanged; PostgreSQL is not affected.
"""

DIALECTS = ("sqlite",)

_COLUMNS = (
    "run_id, n, step_id, kind, name, status, output_hash, error, fence, created_at, prev_hash,"
    " hash, output"
)

STATEMENTS = (
    """CREATE TABLE journal_v5 (
        run_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        output_hash TEXT,
        error TEXT,
        fence {bigint} NOT NULL,
        created_at {real} NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        output {blob},
        PRIMARY KEY (run_id, n)
    )""",
    f"INSERT INTO journal_v5 ({_COLUMNS}) SELECT {_COLUMNS} FROM journal ORDER BY run_id, n",
    "DROP TABLE journal",
    "ALTER TABLE journal_v5 RENAME TO journal",
)
