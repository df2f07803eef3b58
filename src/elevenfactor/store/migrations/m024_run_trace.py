"""m024_run_trace: each run's trace context (``observe._tracing``).

- ``runs.trace_id``: the W3C trace id (32 hex digits) every execution of the run continues —
  after a park, an approval, a retry, or a crash recovered on another worker.
- ``runs.traceparent``: the W3C ``traceparent`` of the span the run was submitted under (the
  ``POST /v1/runs`` request, the parent run's sub-run step); each execution span is its child.
  NULL when the run was submitted outside any span: its executions are roots of ``trace_id``.

Both NULL for runs created before this migration (a new trace per execution).
"""

STATEMENTS = (
    "ALTER TABLE runs ADD COLUMN trace_id TEXT",
    "ALTER TABLE runs ADD COLUMN traceparent TEXT",
)
