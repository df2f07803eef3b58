"""m030_ui_indexes: indexes the dashboard's pages need to render fast with many runs.

(Filled in by the dashboard work; see ``bench/ui``.)
"""

_TRIPS = (
    "(replace(guard, '\"action\":\"block\"', '') <> guard"
    " OR replace(guard, '\"action\":\"escalate\"', '') <> guard"
    " OR replace(guard, '\"action\":\"redact\"', '') <> guard"
    " OR replace(guard, '\"action\":\"monitor\"', '') <> guard)"
)
"""Guard records that name an action other than ``allow`` (server.ui._quality_guards.TRIP_SQL,
word for word). ``replace`` rather than ``LIKE``: PostgreSQL spends ~10 ms planning each
``LIKE '%...%'`` against the column's statistics, and nothing on this."""

STATEMENTS: tuple[str, ...] = (
    # Runs list (/ui/runs, server.ui._runs_query): pages are (created_at, id) keyset ranges of
    # one index each, newest first — an admin's organisation, all of it or by program or
    # status; a member's runs; a sharing team's. m003's runs_owner and runs_team gain ``id`` as
    # a last column (a tie-break without a sort; without it SQLite walks the whole organisation
    # in runs_org_created order instead, filtering by owner). Same names, same uses otherwise.
    "CREATE INDEX runs_org_created ON runs (org_id, created_at, id)",
    "CREATE INDEX runs_org_program ON runs (org_id, program, created_at, id)",
    "CREATE INDEX runs_org_status ON runs (org_id, status, created_at, id)",
    "DROP INDEX runs_owner",
    "CREATE INDEX runs_owner ON runs (org_id, user_id, created_at, id)",
    "DROP INDEX runs_team",
    "CREATE INDEX runs_team ON runs (org_id, team_id, created_at, id)",
    # Approvals (/ui/approvals?decided=1, server.ui._approvals_query): the recent decisions of
    # an organisation, newest first as (decided_at, id) keyset pages; pending ones use m002's
    # approvals_status (status, created_at).
    "CREATE INDEX approvals_decided ON approvals (org_id, decided_at, id)"
    " WHERE decided_at IS NOT NULL",
    # Quality (/ui/quality, server.ui._quality_guards): guard trip rates over a time range.
    # Gateway calls checked by a guard policy, and those whose guard record holds a verdict
    # other than ``allow`` (_TRIPS), each by time (an organisation's, a sharing team's) and by
    # user (a member's own: ``user_id IS NOT NULL`` keeps an organisation-wide count off it);
    # the guard steps of runs in the journal, and the few whose output may hold a trip
    # (_quality_guards.MAY_TRIP, word for word: not an ``allow`` record, or not inline), both
    # by run (the page reads the newest runs' steps).
    "CREATE INDEX model_calls_guarded ON model_calls (org_id, created_at, user_id, team_id)"
    " WHERE guard IS NOT NULL",
    "CREATE INDEX model_calls_guarded_user ON model_calls (org_id, user_id, created_at)"
    " WHERE guard IS NOT NULL AND user_id IS NOT NULL",
    "CREATE INDEX model_calls_guard_trips ON model_calls (org_id, created_at, user_id, team_id)"
    f" WHERE guard IS NOT NULL AND {_TRIPS}",
    "CREATE INDEX model_calls_guard_trips_user ON model_calls (org_id, user_id, created_at)"
    f" WHERE guard IS NOT NULL AND user_id IS NOT NULL AND {_TRIPS}",
    "CREATE INDEX journal_guard_runs ON journal (run_id, created_at) WHERE kind = 'guard'",
    "CREATE INDEX journal_guard_trips ON journal (run_id, created_at) WHERE kind = 'guard'"
    ' AND (output IS NULL OR substr(output, 1, 17) <> CAST(\'{{"action":"allow"\' AS {blob}))',
    # Feedback (/ui/quality, server.ui._quality_data; evals._online_summary, which
    # GET /v1/evals/online and `eval online` share): an organisation's feedback in a time range,
    # counted and averaged by source and label, and its online scores by rule and scorer, from
    # the index alone (m022's run_feedback_org reads every row). One index for both: SQLite,
    # without statistics, cannot tell a partial one from run_feedback_org.
    "CREATE INDEX run_feedback_quality ON run_feedback"
    " (org_id, created_at, source, label, score, rule, scorer, run_id)",
)
