"""m031_cost_rollup: hourly and daily sums of ``model_calls``, so long cost reports stay fast.

- ``cost_hourly``: one row per hour (``hour`` = epoch seconds // 3600, UTC) and distinct
  combination of the dimensions the cost report groups and filters by (org_id, team_id,
  user_id, api_key_id, agent, route, deployment, provider, tags, status, kind: the values as
  ``model_calls`` holds them, NULLs included), with the figures the report sums (calls,
  errors, tokens in/out/cached, cost, saved, unpriced). Written once per hour by
  ``governance._cost_rollup.roll_up`` with ``INSERT ... SELECT ... GROUP BY``; the combination is
  its key, but it has no PRIMARY KEY because most of its columns may be NULL.
- ``cost_daily``: the same, one row per UTC day (``day`` = epoch seconds // 86400) and
  combination, summed from ``cost_hourly`` when the day's last hour is rolled up. A report over
  weeks reads tens of thousands of these instead of hundreds of thousands of calls.
- Indexes for each scope of the report (``Principal.scope``): an organisation's rows by time
  (an admin), a user's (a member) and a team's (a member of a sharing team); and by time alone
  for the rollup job's own checks.
- ``cost_rollup_mark``: one row (``id`` = 1); ``hour`` is the hour through which every call is
  rolled up (NULL: none yet). The job locks it (``FOR UPDATE`` on PostgreSQL; SQLite's
  transactions are exclusive) and moves it in the transaction that writes the rows, so two
  processes never roll the same hour twice.
"""

_KEYS = """
        org_id TEXT,
        team_id TEXT,
        user_id TEXT,
        api_key_id TEXT,
        agent TEXT,
        route TEXT,
        deployment TEXT,
        provider TEXT,
        tags TEXT,
        status TEXT,
        kind TEXT,
        calls {bigint} NOT NULL,
        errors {bigint} NOT NULL,
        tokens_in {bigint} NOT NULL,
        tokens_out {bigint} NOT NULL,
        tokens_cached {bigint} NOT NULL,
        cost {real} NOT NULL,
        saved {real} NOT NULL,
        unpriced {bigint} NOT NULL
    )"""

STATEMENTS = (
    "CREATE TABLE cost_hourly (\n        hour {bigint} NOT NULL," + _KEYS,
    "CREATE INDEX cost_hourly_org ON cost_hourly (org_id, hour)",
    "CREATE INDEX cost_hourly_user ON cost_hourly (org_id, user_id, hour)",
    "CREATE INDEX cost_hourly_team ON cost_hourly (org_id, team_id, hour)",
    "CREATE INDEX cost_hourly_hour ON cost_hourly (hour)",
    "CREATE TABLE cost_daily (\n        day {bigint} NOT NULL," + _KEYS,
    "CREATE INDEX cost_daily_org ON cost_daily (org_id, day)",
    "CREATE INDEX cost_daily_user ON cost_daily (org_id, user_id, day)",
    "CREATE INDEX cost_daily_team ON cost_daily (org_id, team_id, day)",
    "CREATE INDEX cost_daily_day ON cost_daily (day)",
    """CREATE TABLE cost_rollup_mark (
        id INTEGER PRIMARY KEY,
        hour {bigint},
        updated_at {real}
    )""",
    "INSERT INTO cost_rollup_mark (id, hour, updated_at) VALUES (1, NULL, NULL)",
)
