"""m022_run_feedback: judgements attached to runs (``runtime._feedback``).

- ``run_feedback``: one row per judgement of a run. ``source`` is ``human`` (the feedback API
  and CLI) today; online scorers (``online``) and offline eval results about a run
  (``offline``) are meant to land in the same table, so one query reads every score of a run.
  ``org_id`` is the run's organisation; ``user_id`` and ``key_id`` say who gave it (for a
  scorer, the principal it ran as). At least one of ``score``, ``label`` and ``comment`` is set;
  ``metadata`` is a JSON object (text) or NULL. No foreign key to ``runs``: deleting a run
  deletes its feedback explicitly. The indexes serve a run's list (newest first) and an
  organisation's feedback over time.
"""

STATEMENTS = (
    """CREATE TABLE run_feedback (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        org_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        key_id TEXT,
        score {real},
        label TEXT,
        comment TEXT,
        metadata TEXT,
        source TEXT NOT NULL DEFAULT 'human',
        created_at {real} NOT NULL
    )""",
    "CREATE INDEX run_feedback_run ON run_feedback (run_id, created_at)",
    "CREATE INDEX run_feedback_org ON run_feedback (org_id, created_at)",
)
