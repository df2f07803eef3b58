"""m003_trust: organisations, teams, users and reviewer groups; owners on runs, approvals and
call records; the global hash-chained ledger and its sealed blocks;
small step outputs inline in the journal.

Existing rows move into the default organisation: runs are owned by the built-in ``local``
administrator, and each existing API key gets a service account of its own with the ``member``
role (it used to act on everything; now it acts on what it owns).
"""

STATEMENTS = (
    # The journal keeps small step outputs inline (one row, one B-tree per step on SQLite, where
    # the table is WITHOUT ROWID); larger ones stay in the content-addressed blob table.
    """CREATE TABLE journal_v3 (
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
    ){without_rowid}""",
    "INSERT INTO journal_v3 (run_id, n, step_id, kind, name, status, output_hash, error, fence,"
    " created_at, prev_hash, hash) SELECT run_id, n, step_id, kind, name, status, output_hash,"
    " error, fence, created_at, prev_hash, hash FROM journal",
    "DROP TABLE journal",
    "ALTER TABLE journal_v3 RENAME TO journal",
    """CREATE TABLE orgs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at {real} NOT NULL
    )""",
    """CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs (id),
        name TEXT NOT NULL,
        shares INTEGER NOT NULL,
        created_at {real} NOT NULL,
        UNIQUE (org_id, name)
    )""",
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs (id),
        team_id TEXT REFERENCES teams (id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        roles TEXT NOT NULL,
        created_at {real} NOT NULL,
        disabled_at {real},
        UNIQUE (org_id, name)
    )""",
    """CREATE TABLE group_members (
        org_id TEXT NOT NULL,
        group_name TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id),
        PRIMARY KEY (org_id, group_name, user_id)
    )""",
    "CREATE INDEX group_members_user ON group_members (user_id)",
    "INSERT INTO orgs (id, name, created_at) VALUES ('org_default', 'default', 0)",
    "INSERT INTO users (id, org_id, team_id, name, kind, roles, created_at)"
    " VALUES ('user_local', 'org_default', NULL, 'local', 'user', 'admin', 0)",
    "ALTER TABLE api_keys ADD COLUMN user_id TEXT",
    "INSERT INTO users (id, org_id, team_id, name, kind, roles, created_at)"
    " SELECT 'svc_' || id, 'org_default', NULL, 'key-' || prefix, 'service', 'member', created_at"
    " FROM api_keys",
    "UPDATE api_keys SET user_id = 'svc_' || id",
    "ALTER TABLE runs ADD COLUMN org_id TEXT",
    "ALTER TABLE runs ADD COLUMN team_id TEXT",
    "ALTER TABLE runs ADD COLUMN user_id TEXT",
    "ALTER TABLE runs ADD COLUMN key_id TEXT",
    "UPDATE runs SET org_id = 'org_default', user_id = 'user_local'",
    "CREATE INDEX runs_owner ON runs (org_id, user_id, created_at)",
    "CREATE INDEX runs_team ON runs (org_id, team_id, created_at)",
    "ALTER TABLE approvals ADD COLUMN org_id TEXT",
    "ALTER TABLE approvals ADD COLUMN team_id TEXT",
    "ALTER TABLE approvals ADD COLUMN user_id TEXT",
    "ALTER TABLE approvals ADD COLUMN key_id TEXT",
    "ALTER TABLE approvals ADD COLUMN decided_by_id TEXT",
    "ALTER TABLE approvals ADD COLUMN decision_hash TEXT",
    "UPDATE approvals SET org_id = 'org_default', user_id = 'user_local'",
    "CREATE INDEX approvals_run ON approvals (run_id)",
    "ALTER TABLE model_calls ADD COLUMN org_id TEXT",
    "ALTER TABLE model_calls ADD COLUMN team_id TEXT",
    "ALTER TABLE model_calls ADD COLUMN user_id TEXT",
    "ALTER TABLE model_calls ADD COLUMN run_id TEXT",
    "ALTER TABLE model_calls ADD COLUMN record_hash TEXT",
    "CREATE INDEX model_calls_owner ON model_calls (org_id, user_id, created_at)",
    """CREATE TABLE ledger (
        seq {serial},
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        actor TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at {real} NOT NULL,
        hash TEXT NOT NULL,
        block {bigint}
    )""",
    "CREATE INDEX ledger_subject ON ledger (subject, kind)",
    "CREATE INDEX ledger_block ON ledger (block, seq)",
    """CREATE TABLE ledger_blocks (
        n {bigint} PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        root TEXT NOT NULL,
        entries {bigint} NOT NULL,
        sealed_at {real} NOT NULL,
        hash TEXT NOT NULL
    )""",
)
