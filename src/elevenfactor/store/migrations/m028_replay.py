"""m028_replay: what-if replays (``runtime._replay_whatif``).

- ``replays``: one row per what-if replay — ``run_id`` the recorded run replayed,
  ``replay_run_id`` the new run executed with one thing changed (``options``: a JSON object
  ``{"model", "prompt", "policy", "release", "live_tools"}``), ``batch_id`` the many-runs
  replay it belongs to (``elevenfactor replay --runs QUERY``; NULL for a single run). The owner
  columns are whoever asked for the replay (the new run acts for them too); reads are scoped
  by them. The report is computed when read (both runs' journals and model calls), so it is
  never stale and no copy of run content is kept here. No foreign key to ``runs``: deleting a
  run leaves the replay row, whose report then says the run is gone.
"""

STATEMENTS = (
    """CREATE TABLE replays (
        id TEXT PRIMARY KEY,
        batch_id TEXT,
        run_id TEXT NOT NULL,
        replay_run_id TEXT NOT NULL,
        options TEXT NOT NULL,
        org_id TEXT NOT NULL,
        team_id TEXT,
        user_id TEXT NOT NULL,
        key_id TEXT,
        created_at {real} NOT NULL
    )""",
    "CREATE INDEX replays_run ON replays (run_id)",
    "CREATE INDEX replays_replay_run ON replays (replay_run_id)",
    "CREATE INDEX replays_batch ON replays (batch_id)",
    "CREATE INDEX replays_owner ON replays (org_id, user_id, created_at)",
)
