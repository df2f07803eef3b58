"""m030_ui_indexes: indexes the dashboard's pages need to render fast with many runs.

(Filled in by the dashboard work; see ``bench/ui``.)
"""

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
    # Calls checked by a guard policy (counted from the index), the calls whose guard record
    # holds a verdict other than ``allow`` (the predicate is _quality_guards.TRIP_SQL, word for
    # word, so both planners match it), and the guard steps of runs in the journal, by time (an
    # organisation's) and by run (a member's own runs first: server.ui._owned).
    "CREATE INDEX model_calls_guarded ON model_calls (org_id, created_at, user_id, team_id)"
    " WHERE guard IS NOT NULL",
    "CREATE INDEX model_calls_guard_trips ON model_calls (org_id, created_at)"
    ' WHERE guard IS NOT NULL AND (guard LIKE \'%"action":"block"%\''
    ' OR guard LIKE \'%"action":"escalate"%\' OR guard LIKE \'%"action":"redact"%\''
    ' OR guard LIKE \'%"action":"monitor"%\')',
    "CREATE INDEX journal_guard_steps ON journal (created_at) WHERE kind = 'guard'",
    "CREATE INDEX journal_guard_runs ON journal (run_id, created_at) WHERE kind = 'guard'",
)
