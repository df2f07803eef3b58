"""m032_feedback_owner: the owner of a feedback row's run, on the row.

- ``run_user_id``, ``run_team_id``: the user and team that own the row's run (its
  ``runs.user_id`` and ``runs.team_id``; ``run_feedback.user_id`` is who gave the judgement,
  not whose run it judges). Every writer copies them from the run as it inserts the row
  (``runtime._feedback``, ``evals._store``); the rows written before are filled here from
  ``runs``. NULL when the run is gone or belongs to another organisation than the row (a row's
  ``org_id`` is its run's: see m022), and ``run_team_id`` NULL for a team-less owner's run —
  so a member's read on these columns matches a row exactly when it may read its run
  (``Principal.scope``: own runs, and the team's where the team shares).
- Indexes for those reads (``runtime._feedback_scope``): a team's rows of an organisation by
  time, and a user's; each covers what the quality page and the online-eval summary read of a
  row (the same columns as m030's ``run_feedback_quality``, which an admin's reads use), so a
  member's counts come from one index range with no join to ``runs`` (and none to the table).
"""

_COVERED = "created_at, source, label, score, rule, scorer, run_id"
"""What the feedback counts and the online summary read of a row, after the owner columns."""

STATEMENTS = (
    "ALTER TABLE run_feedback ADD COLUMN run_user_id TEXT",
    "ALTER TABLE run_feedback ADD COLUMN run_team_id TEXT",
    "UPDATE run_feedback SET"
    " run_user_id = (SELECT r.user_id FROM runs r"
    " WHERE r.id = run_feedback.run_id AND r.org_id = run_feedback.org_id),"
    " run_team_id = (SELECT r.team_id FROM runs r"
    " WHERE r.id = run_feedback.run_id AND r.org_id = run_feedback.org_id)",
    f"CREATE INDEX run_feedback_team ON run_feedback (org_id, run_team_id, {_COVERED})",
    f"CREATE INDEX run_feedback_owner ON run_feedback (org_id, run_user_id, {_COVERED},"
    " run_team_id)",
)
