"""m025_online_evals: scores of online evaluation rules (``evals._online_program``) in
``run_feedback``.

- ``rule``, ``scorer``: the online rule and the scorer (its name, or its type) of a row with
  ``source = 'online'``; NULL for human feedback. Columns rather than keys of ``metadata`` so
  the per-rule trend query (``evals._online_summary``) groups and filters them the same way on
  both dialects.
- The index serves that query: an organisation's rows of one source and rule over time.
"""

STATEMENTS = (
    "ALTER TABLE run_feedback ADD COLUMN rule TEXT",
    "ALTER TABLE run_feedback ADD COLUMN scorer TEXT",
    "CREATE INDEX run_feedback_rule ON run_feedback (org_id, source, rule, created_at)",
)
