"""m007_budgets: budgets, their usage per window, the holds reserved against them, the alerts
they fired, and kill switches.

- ``budgets``: one per ``(org_id, scope, time_window)``; ``kind`` and ``target`` are the scope
  resolved (a team, user or key id; an agent or model name; empty for ``org`` and ``run``).
- ``budget_usage``: what was spent and what is held in one window of a budget (``window_key``
  names the window: a day, week, month, ``total`` or a run).
- ``budget_holds``: one reservation, held against every window in ``windows`` (JSON) until it is
  committed, released or expires.
- ``budget_alerts``: the primary key makes each threshold fire once per window.
- ``kill_switches``: who stopped what, when and why; lifted (not deleted) when undone.
"""

STATEMENTS = (
    """CREATE TABLE budgets (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        time_window TEXT NOT NULL,
        limit_usd {real} NOT NULL,
        soft INTEGER NOT NULL,
        alerts TEXT NOT NULL,
        on_exceed TEXT NOT NULL,
        webhook TEXT,
        created_by TEXT NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        UNIQUE (org_id, scope, time_window)
    )""",
    """CREATE TABLE budget_usage (
        budget_id TEXT NOT NULL,
        window_key TEXT NOT NULL,
        spent {real} NOT NULL,
        reserved {real} NOT NULL,
        PRIMARY KEY (budget_id, window_key)
    )""",
    """CREATE TABLE budget_holds (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        amount {real} NOT NULL,
        windows TEXT NOT NULL,
        soft TEXT NOT NULL,
        status TEXT NOT NULL,
        cost {real},
        created_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        settled_at {real},
        run_id TEXT
    )""",
    "CREATE INDEX budget_holds_expiry ON budget_holds (status, expires_at)",
    """CREATE TABLE budget_alerts (
        budget_id TEXT NOT NULL,
        window_key TEXT NOT NULL,
        threshold {real} NOT NULL,
        fired_at {real} NOT NULL,
        PRIMARY KEY (budget_id, window_key, threshold)
    )""",
    """CREATE TABLE kill_switches (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at {real} NOT NULL,
        lifted_by TEXT,
        lifted_at {real},
        lift_reason TEXT
    )""",
    "CREATE INDEX kill_switches_active ON kill_switches (org_id, lifted_at)",
)
