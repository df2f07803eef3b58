"""Prometheus metrics: the cheap hooks the rest of the code calls.

Each hook (``record_call``, ``http_request``, ``breaker_state``, ``guard_verdict``...) costs a
few microseconds: the metric children of a label combination are looked up once and kept, so
a call is a dictionary lookup and a few increments. The metrics are created on first use (no
import-time side effect), in ``prometheus_client``'s default registry — multi-process files
when ``PROMETHEUS_MULTIPROC_DIR`` is set (``serve --workers N`` sets it for its children; it
must be set before ``prometheus_client`` is imported, which is why nothing here imports it at
module level).

``ELEVENFACTOR_METRICS=false`` (``configure(enabled=False)``) turns every hook into a no-op.

Label values are bounded: route, deployment and provider names are the configured ones
(``configure(names=...)``; anything else is ``other``), error codes and outcomes are the
library's stable codes (at most a few hundred distinct values, then ``other``), never user ids,
keys or free text.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from elevenfactor.observe._metrics_defs import PROCESS, MetricSpec

if TYPE_CHECKING:
    from elevenfactor.observe._calls import CallRecord

__all__ = [
    "admission_queue",
    "breaker_state",
    "configure",
    "enabled",
    "first_token",
    "guard_verdict",
    "http_request",
    "record_call",
    "spans_dropped",
]

_OFF = frozenset({"0", "false", "no", "off"})
_CIRCUIT = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_MAX_FREE = 256  # distinct values of a free label (error codes...) before ``other``
_MAX_CHILDREN = 4096  # cached label combinations per hook before the cache starts over


class _Bounded:
    """Maps a raw label value to itself if allowed, else ``other``: the configured names when
    known, else the first ``_MAX_FREE`` distinct values."""

    __slots__ = ("known", "seen")

    def __init__(self) -> None:
        self.known: frozenset[str] | None = None
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "none"
        if self.known is not None:
            return value if value in self.known else "other"
        if value in self.seen:
            return value
        if len(self.seen) < _MAX_FREE:
            self.seen.add(value)
            return value
        return "other"


class _Live:
    """The metric objects and the children already looked up per label combination."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

        # No ``*_created`` series: the multi-process files have none either, so one process
        # and several expose the same families (and half the series).
        disable_created_metrics()  # type: ignore[no-untyped-call]

        def build(s: MetricSpec) -> Any:
            if s.kind == "counter":
                return Counter(s.name, s.help, s.labels)
            if s.kind == "histogram":
                return Histogram(s.name, s.help, s.labels, buckets=s.buckets)
            return Gauge(s.name, s.help, s.labels, multiprocess_mode=s.mode)  # type: ignore[arg-type]

        m = {s.name.removeprefix("elevenfactor_"): build(s) for s in PROCESS}
        self.m = m
        self.names = _Bounded()  # routes, deployments, providers
        self.codes = _Bounded()  # error codes, outcomes, policies, stages
        self.http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.calls: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.other: dict[tuple[Any, ...], Any] = {}

    # -- children ---------------------------------------------------------------------------

    def child(self, metric: str, *labels: str) -> Any:
        """The child of ``metric`` for ``labels`` (already bounded), cached."""
        key = (metric, *labels)
        found = self.other.get(key)
        if found is None:
            if len(self.other) >= _MAX_CHILDREN:
                self.other.clear()
            found = self.other[key] = self.m[metric].labels(*labels)
        return found

    def call_children(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        route_raw, provider_raw, deployment_raw, kind, gateway, status, stream = key
        route, deployment = self.names(route_raw), self.names(deployment_raw)
        m = self.m
        tokens = m["model_tokens"]
        found = (
            m["model_calls"].labels(
                route,
                self.names(provider_raw),
                deployment,
                kind or "chat",
                "gateway" if gateway else "run",
                self.codes(status),
            ),
            m["model_call_duration_seconds"].labels(
                route, deployment, "true" if stream else "false"
            ),
            tokens.labels(route, deployment, "input"),
            tokens.labels(route, deployment, "output"),
            tokens.labels(route, deployment, "cached"),
            m["model_cost_usd"].labels(route, deployment),
            route,
            deployment,
        )
        if len(self.calls) >= _MAX_CHILDREN:
            self.calls.clear()
        self.calls[key] = found
        return found

    # -- per call ---------------------------------------------------------------------------

    def call(self, r: CallRecord) -> None:
        key = (r.route, r.provider, r.deployment, r.kind, r.run_id is None, r.status, r.stream)
        ch = self.calls.get(key) or self.call_children(key)
        ch[0].inc()
        ch[1].observe(r.latency_ms / 1000.0)
        if r.tokens_in > 0:
            ch[2].inc(r.tokens_in)
        if r.tokens_out > 0:
            ch[3].inc(r.tokens_out)
        if r.tokens_cached > 0:
            ch[4].inc(r.tokens_cached)
        if r.cost is not None and r.cost > 0:
            ch[5].inc(r.cost)
        if r.cache_hit:
            self.cache_hit(r, ch[6])
        if r.error_class is not None:
            self.child("model_call_errors", ch[6], ch[7], self.codes(r.error_class)).inc()
        if len(r.failover_path) > 1:
            self.path(r.failover_path, ch[6])

    def cache_hit(self, r: CallRecord, route: str) -> None:
        last = r.failover_path[-1] if r.failover_path else ""
        kind = "semantic" if ":semantic_hit" in last else "exact"
        self.child("cache_hits", route, kind).inc()
        if r.saved is not None and r.saved > 0:
            self.child("model_cache_saved_usd", route).inc(r.saved)

    def path(self, path: list[str], route: str) -> None:
        deployments = []
        last = len(path) - 1
        for i, step in enumerate(path):
            deployment, _, outcome = step.rpartition(":")
            deployments.append(deployment)
            outcome = outcome.partition("@")[0]
            if i < last and outcome != "ok":
                failed = self.names(deployment)
                self.child("model_attempt_failures", route, failed, self.codes(outcome)).inc()
        if deployments[0] != deployments[-1]:
            first, final = self.names(deployments[0]), self.names(deployments[-1])
            self.child("failovers", route, first, final).inc()

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        found = self.http.get(key)
        if found is None:
            verb = method if method in _METHODS else "other"
            found = (
                self.m["http_requests"].labels(route, verb, str(status)),
                self.m["http_request_duration_seconds"].labels(route, verb),
            )
            if len(self.http) >= _MAX_CHILDREN:
                self.http.clear()
            self.http[key] = found
        found[0].inc()
        found[1].observe(seconds)


_made: _Live | None = None  # the metrics, once created (they live as long as the process)
_live: _Live | None = None  # the same while metrics are on, else None: what the hooks read
_enabled: bool | None = None  # None: not configured, read ELEVENFACTOR_METRICS


def enabled() -> bool:
    """Whether metrics are collected (``ELEVENFACTOR_METRICS``, default on)."""
    global _enabled
    if _enabled is None:
        _enabled = os.environ.get("ELEVENFACTOR_METRICS", "true").strip().lower() not in _OFF
    return _enabled


def _load() -> _Live | None:
    global _live, _made
    if not enabled():
        return None
    if _made is None:
        _made = _Live()
    _live = _made
    return _live


def configure(*, enabled: bool | None = None, names: Iterable[str] | None = None) -> None:
    """Turn metrics on or off and set the configured route, deployment and provider ``names``
    (other values are labelled ``other``)."""
    global _enabled, _live
    if enabled is not None:
        _enabled = enabled
        _live = None  # the next hook looks again
    if names is not None:
        live = _load()
        if live is not None:
            live.names.known = frozenset(names)
            live.calls.clear()
            live.other.clear()


def record_call(record: CallRecord) -> None:
    """Count one model call: calls, latency, tokens, cost, cache hits, errors, failovers."""
    live = _live or _load()
    if live is not None:
        live.call(record)


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one HTTP request; ``route`` is the route's path template (or ``other``)."""
    live = _live or _load()
    if live is not None:
        live.http_request(route, method, status, seconds)


def first_token(route: str, seconds: float) -> None:
    """Observe a stream's time to first token on ``route``."""
    live = _live or _load()
    if live is not None:
        live.child("model_time_to_first_token_seconds", live.names(route)).observe(seconds)


def breaker_state(deployment: str, state: str) -> None:
    """A deployment's circuit breaker entered ``state`` (closed, half_open, open)."""
    live = _live or _load()
    if live is not None:
        name = live.names(deployment)
        live.child("circuit_state", name).set(_CIRCUIT.get(state, 0.0))
        live.child("circuit_transitions", name, state if state in _CIRCUIT else "other").inc()


def guard_verdict(stage: str, action: str, policy: str) -> None:
    """Count a guard verdict; ``policy`` is the deciding policy (``id@version``: the version
    is dropped, so an edited policy keeps its series), empty when no rule fired."""
    live = _live or _load()
    if live is not None:
        pid = policy.partition("@")[0] or "none"
        live.child("guard_verdicts", live.codes(stage), live.codes(action), live.codes(pid)).inc()


def admission_queue(deployment: str, depth: int) -> None:
    """Requests now waiting for a slot of the local model ``deployment``."""
    live = _live or _load()
    if live is not None:
        live.child("local_model_queue_depth", live.names(deployment)).set(depth)


def spans_dropped(n: int) -> None:
    """Count ``n`` trace spans the exporter had to drop."""
    live = _live or _load()
    if live is not None and n > 0:
        live.m["trace_spans_dropped"].inc(n)
