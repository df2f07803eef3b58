"""m019_agent_breakers: each agent's circuit breaker across runs, and the outcomes it counts.

- ``agent_breakers``: one row per organisation and agent, made when a run of an agent whose
  policies set ``breakers.agent`` first ends: ``state`` (``closed`` or ``paused``), why and when
  it tripped, who reset it and when (outcomes before the reset no longer count), and the
  breaker's settings as last applied (``config`` is their canonical JSON, compared to notice a
  change).
- ``agent_outcomes``: how each run of such an agent ended (``succeeded``, ``failed`` or
  ``blocked``), keyed by run so recording twice counts once. Rows older than the window are
  pruned as new ones arrive, so the table holds about one window of runs per agent; the index
  serves both the window count and the pruning.
"""

STATEMENTS = (
    """CREATE TABLE agent_breakers (
        org_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'closed',
        reason TEXT,
        tripped_at {real},
        reset_at {real},
        reset_by TEXT,
        reset_reason TEXT,
        window_seconds {real} NOT NULL,
        min_runs INTEGER NOT NULL,
        max_error_rate {real},
        max_block_rate {real},
        policy TEXT,
        config TEXT NOT NULL,
        updated_at {real} NOT NULL,
        PRIMARY KEY (org_id, agent)
    )""",
    """CREATE TABLE agent_outcomes (
        run_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        outcome TEXT NOT NULL,
        ended_at {real} NOT NULL
    )""",
    "CREATE INDEX agent_outcomes_window ON agent_outcomes (org_id, agent, ended_at)",
)
