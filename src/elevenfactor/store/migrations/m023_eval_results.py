"""m023_eval_results: the results of eval runs (``elevenfactor.evals``), kept for trends.

- ``eval_results``: one row per eval run, written when the run ends. ``id`` is the eval run's
  id (``run_id`` too: a result is its run's). The owner columns are the run's owner (read with
  ``Principal.scope``: the same rules as runs). ``suite`` and ``suite_version`` (12 hex
  digits of the suite's content hash) name what ran; ``target`` is ``kind:name``; ``model``,
  ``prompt`` and ``release_label`` are the run's overrides (NULL: none; a release is a label
  until releases exist). ``passed`` is the gate (thresholds, 1/0); ``cases``,
  ``cases_passed``, ``cases_failed`` and ``pass_rate`` (the share of cases that passed) make
  the trend; ``cost_usd``, ``tokens`` and ``duration_ms`` the spend; ``result`` is the whole
  ``SuiteResult`` as JSON text. ``status`` is ``passed``, ``failed`` (thresholds not met) or
  ``error`` (the run itself failed: a budget refused, a target missing); ``error`` its message.
- ``eval_case_results``: one row per case of a result (runs, passes, pass rate, threshold,
  cost, mean latency), for a case's history across results.
- ``model_calls_run_id``: the model calls of a run (and of its children, ``RUN.STEP``), which
  an eval reads to observe a child run's tokens and cost.
"""

STATEMENTS = (
    """CREATE TABLE eval_results (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        org_id TEXT NOT NULL,
        team_id TEXT,
        user_id TEXT,
        key_id TEXT,
        suite TEXT NOT NULL,
        suite_version TEXT NOT NULL,
        target TEXT NOT NULL,
        model TEXT,
        prompt TEXT,
        release_label TEXT,
        status TEXT NOT NULL,
        error TEXT,
        passed INTEGER NOT NULL,
        cases INTEGER NOT NULL,
        cases_passed INTEGER NOT NULL,
        cases_failed INTEGER NOT NULL,
        pass_rate {real} NOT NULL,
        cost_usd {real},
        tokens {bigint} NOT NULL,
        duration_ms {real},
        started_at {real} NOT NULL,
        finished_at {real} NOT NULL,
        result TEXT NOT NULL
    )""",
    "CREATE INDEX eval_results_suite ON eval_results (org_id, suite, finished_at)",
    "CREATE INDEX eval_results_finished ON eval_results (org_id, finished_at)",
    """CREATE TABLE eval_case_results (
        result_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        org_id TEXT NOT NULL,
        suite TEXT NOT NULL,
        runs INTEGER NOT NULL,
        passes INTEGER NOT NULL,
        pass_rate {real} NOT NULL,
        threshold {real} NOT NULL,
        passed INTEGER NOT NULL,
        cost_usd {real},
        latency_ms {real},
        finished_at {real} NOT NULL,
        PRIMARY KEY (result_id, case_id)
    )""",
    "CREATE INDEX eval_case_results_case"
    " ON eval_case_results (org_id, suite, case_id, finished_at)",
    "CREATE INDEX model_calls_run_id ON model_calls (run_id)",
)
