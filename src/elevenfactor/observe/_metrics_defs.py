"""Every metric elevenfactor exports: name, type, labels and meaning, in one table.

The process metrics are built from ``PROCESS`` (``_metrics``); the store-derived gauges of
``/metrics`` from ``STORE`` (``_metrics_store``); ``metrics_table`` renders both as the README's
reference table (``elevenfactor metrics list`` prints it), so the documentation cannot drift from
what is exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HTTP_BUCKETS",
    "LLM_BUCKETS",
    "PROCESS",
    "STORE",
    "MetricSpec",
    "metrics_table",
    "spec",
]

Kind = Literal["counter", "gauge", "histogram"]

#: Seconds: a gateway answers a cached call in well under a millisecond and a stream may run
#: for minutes.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Seconds: model calls, from a cache hit (milliseconds) to a long generation (minutes).
LLM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
#: Seconds to the first token of a stream.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric. ``name`` is the exported family name (counters are exported with
    ``_total``); ``mode`` is how a gauge combines over the processes of ``serve --workers N``."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    mode: str = "livesum"

    @property
    def exported(self) -> str:
        """The sample name a scraper sees (``_total`` for counters; histograms add
        ``_bucket``, ``_sum`` and ``_count``)."""
        return self.name + "_total" if self.kind == "counter" else self.name


_M = "elevenfactor_"

PROCESS: tuple[MetricSpec, ...] = (
    MetricSpec(
        _M + "http_requests",
        "counter",
        "HTTP requests answered, by route template, method and status code.",
        ("route", "method", "status"),
    ),
    MetricSpec(
        _M + "http_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response (a stream: its end).",
        ("route", "method"),
        HTTP_BUCKETS,
    ),
    MetricSpec(
        _M + "model_calls",
        "counter",
        "Model calls (gateway and runs), by route, provider, deployment that answered,"
        " kind (chat, embedding), origin (gateway, run) and status (ok, error, blocked).",
        ("route", "provider", "deployment", "kind", "origin", "status"),
    ),
    MetricSpec(
        _M + "model_call_errors",
        "counter",
        "Failed or refused model calls by stable error code (rate_limit, timeout,"
        " guard_blocked, ...).",
        ("route", "deployment", "error"),
    ),
    MetricSpec(
        _M + "model_call_duration_seconds",
        "histogram",
        "Latency of model calls, including retries, failover and cache lookups.",
        ("route", "deployment", "stream"),
        LLM_BUCKETS,
    ),
    MetricSpec(
        _M + "model_time_to_first_token_seconds",
        "histogram",
        "Time from a streamed chat completion's arrival to its first token being sent.",
        ("route",),
        TTFT_BUCKETS,
    ),
    MetricSpec(
        _M + "model_tokens",
        "counter",
        "Tokens of model calls: input, output, and cached input (a part of input).",
        ("route", "deployment", "type"),
    ),
    MetricSpec(
        _M + "model_cost_usd",
        "counter",
        "Cost of model calls in US dollars, as billed in the call records.",
        ("route", "deployment"),
    ),
    MetricSpec(
        _M + "model_cache_saved_usd",
        "counter",
        "What the response caches saved, in US dollars.",
        ("route",),
    ),
    MetricSpec(
        _M + "cache_hits",
        "counter",
        "Calls answered from a route's cache: type exact or semantic.",
        ("route", "type"),
    ),
    MetricSpec(
        _M + "failovers",
        "counter",
        "Calls answered by another deployment than the first one tried.",
        ("route", "from_deployment", "to_deployment"),
    ),
    MetricSpec(
        _M + "model_attempt_failures",
        "counter",
        "Failed attempts inside calls (retried or failed over), by the attempt's outcome.",
        ("route", "deployment", "outcome"),
    ),
    MetricSpec(
        _M + "circuit_state",
        "gauge",
        "A deployment's circuit breaker: 0 closed, 1 half-open, 2 open (the worst of the"
        " server processes; open until a call makes the half-open trial).",
        ("deployment",),
        mode="livemax",
    ),
    MetricSpec(
        _M + "circuit_transitions",
        "counter",
        "Circuit breaker state changes, by the state entered.",
        ("deployment", "state"),
    ),
    MetricSpec(
        _M + "guard_verdicts",
        "counter",
        "Guard verdicts (gateway calls and runs), by stage, action and deciding policy"
        " (none: no rule fired).",
        ("stage", "action", "policy"),
    ),
    MetricSpec(
        _M + "local_model_queue_depth",
        "gauge",
        "Requests waiting for a local model slot (summed over the processes).",
        ("deployment",),
    ),
    MetricSpec(
        _M + "trace_spans_dropped",
        "counter",
        "Trace spans the exporter dropped (its queue was full or the collector failed).",
    ),
)

STORE: tuple[MetricSpec, ...] = (
    MetricSpec(_M + "runs", "gauge", "Runs in the store by organisation, queue and status.",
               ("org", "queue", "status")),
    MetricSpec(_M + "runs_leased", "gauge",
               "Running runs whose worker lease is valid.", ("org", "queue")),
    MetricSpec(_M + "runs_lease_expired", "gauge",
               "Running runs whose lease expired (their worker died; another takes them over).",
               ("org", "queue")),
    MetricSpec(_M + "runs_lease_expiring", "gauge",
               "Running runs whose lease has less than a third of the lease period left (a"
               " heartbeat is late: the worker may be stuck or dying).", ("org", "queue")),
    MetricSpec(_M + "queue_lag_seconds", "gauge",
               "Age of the oldest runnable queued run (0: none waiting): how far workers lag.",
               ("org", "queue")),
    MetricSpec(_M + "approvals_pending", "gauge",
               "Approvals waiting for a decision, by reviewer group (none: any reviewer).",
               ("org", "group")),
    MetricSpec(_M + "approvals_oldest_pending_age_seconds", "gauge",
               "Age of the oldest pending approval of the group.", ("org", "group")),
    MetricSpec(_M + "budget_spent_usd", "gauge",
               "A budget's spend in its current window.",
               ("org", "budget", "scope", "window")),
    MetricSpec(_M + "budget_reserved_usd", "gauge",
               "A budget's reservations (calls in flight) in its current window.",
               ("org", "budget", "scope", "window")),
    MetricSpec(_M + "budget_limit_usd", "gauge", "A budget's limit.",
               ("org", "budget", "scope", "window")),
    MetricSpec(_M + "agents_paused", "gauge",
               "Agents their circuit breaker paused (1 per paused agent).", ("org", "agent")),
)  # fmt: skip

_BY_NAME = {s.name: s for s in (*PROCESS, *STORE)}


def spec(name: str) -> MetricSpec:
    """The spec called ``name``."""
    return _BY_NAME[name]


def metrics_table() -> str:
    """Every metric as a Markdown table (name, type, labels, meaning)."""
    lines = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for s in (*PROCESS, *STORE):
        labels = ", ".join(f"`{label}`" for label in s.labels) or "—"
        where = " *(from the store, at scrape time)*" if s in STORE else ""
        lines.append(f"| `{s.exported}` | {s.kind} | {labels} | {s.help}{where} |")
    return "\n".join(lines) + "\n"
