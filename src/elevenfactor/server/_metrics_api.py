"""``GET /metrics``: Prometheus metrics of every server process plus the store's gauges.

Who may scrape (secure by default):

- ``Authorization: Bearer <ELEVENFACTOR_METRICS_TOKEN>`` (compared in constant time): a
  scraper; sees everything, every organisation's store gauges included;
- an **admin** API key: the process metrics and the store gauges of its own organisation only
  (the organisation filter is in the queries);
- a member key: 403 ``permission_denied``; no key or a malformed ``Authorization``: 401;
- dev mode without a key, from loopback: the local admin (the default organisation), as on the
  other endpoints.

With ``ELEVENFACTOR_METRICS=false`` the endpoint is 404.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Scope, Send

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import ElevenFactorError, RequestError
from elevenfactor.observe import _metrics
from elevenfactor.observe._metrics_export import render
from elevenfactor.observe._metrics_store import StoreGauges
from elevenfactor.server._auth import authenticate, header
from elevenfactor.server._errors import error_response
from elevenfactor.server._op_types import Operation
from elevenfactor.server._sse import SSEResponse
from elevenfactor.server._state import Gateway

__all__ = [
    "OPERATIONS",
    "ROUTES",
    "configure_for",
    "first_token_send",
    "metrics_endpoint",
    "route_label",
]

logger = logging.getLogger("elevenfactor.metrics")


def _is_token(value: str | None, token: str | None) -> bool:
    """Whether ``Authorization`` carries the scraper token (constant-time compare)."""
    if not token or not value:
        return False
    scheme, _, given = value.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


async def _org_filter(request: Request, gw: Gateway) -> str | None:
    """None for the scraper token (everything); else the admin caller's organisation."""
    if _is_token(header(request.scope, b"authorization"), gw.settings.metrics_token):
        return None
    principal = await authenticate(request, gw)
    principal.require_admin("reading /metrics")
    return None if principal.unscoped else principal.org_id


def _gauges(request: Request, gw: Gateway) -> StoreGauges:
    """This app's store collector (made on first scrape)."""
    state = request.app.state
    found: StoreGauges | None = getattr(state, "metrics_store_gauges", None)
    if found is None:
        assert gw.store is not None
        queues = {q.strip() for q in gw.settings.worker_queues.split(",") if q.strip()}
        found = StoreGauges(
            gw.store,
            queues=frozenset({"default", *gw.project.queues, *queues}),
            ttl=gw.settings.metrics_cache_seconds,
            usage=gw.meter.gate.usage if gw.meter is not None else None,
            lease_seconds=gw.settings.lease_seconds,
        )
        state.metrics_store_gauges = found
    return found


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the Prometheus exposition (see the module docstring)."""
    gw: Gateway = request.app.state.gateway
    if not _metrics.enabled():
        return error_response(
            RequestError(
                "metrics are turned off (ELEVENFACTOR_METRICS=false)", code="not_found", status=404
            )
        )
    try:
        org = await _org_filter(request, gw)
    except ElevenFactorError as exc:
        return error_response(exc)
    try:
        families = await _gauges(request, gw).families(org)
    except Exception:  # the process metrics still go out; the store gauges are missing
        logger.exception("computing the store gauges for /metrics failed")
        families = []
    body, content_type = render(families, header(request.scope, b"accept"))
    return Response(body, headers={"content-type": content_type})


def configure_for(settings: Settings, project: ProjectConfig) -> None:
    """Turn metrics on or off (``ELEVENFACTOR_METRICS``) and bound the route, deployment and
    provider labels to the project's names."""
    _metrics.configure(enabled=settings.metrics)
    if settings.metrics:
        emb = project.embeddings.models
        _metrics.configure(
            names={
                *project.routes,
                *project.models,
                *project.providers,
                *emb,
                *(m.provider for m in emb.values()),
            }
        )


def route_label(scope: Scope) -> str:
    """The ``route`` label of a request: its route's path template (``/v1/runs/{run_id}``),
    never the raw path (ids would make a series per object); ``other`` when none matched."""
    path: str = scope["path"]
    if path == "/v1/chat/completions":
        return path
    if path in ("/mcp", "/mcp/"):
        return "/mcp"
    route = scope.get("route")
    found = getattr(route, "path", None)
    return found if isinstance(found, str) else "other"


def first_token_send(response: object, send: Send, started: float) -> Send:
    """``send``, observing the time to first token of a streamed chat completion (the first
    body message of an ``SSEResponse``) on its route; other responses go straight through."""
    if not isinstance(response, SSEResponse) or not _metrics.enabled():
        return send
    route = next((v for k, v in response.headers if k == b"x-elevenfactor-route"), b"")
    pending = True

    async def timed(message: Message) -> None:
        nonlocal pending
        if pending and message["type"] == "http.response.body" and message.get("body"):
            pending = False
            _metrics.first_token(route.decode("latin-1"), time.perf_counter() - started)
        await send(message)

    return timed


ROUTES: list[tuple[str, Any, list[str]]] = [("/metrics", metrics_endpoint, ["GET"])]

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/metrics", "get", "Prometheus metrics", "observability", None,
        "The Prometheus text format (`text/plain; version=0.0.4`; OpenMetrics when `Accept`"
        " asks for `application/openmetrics-text`): requests, model calls, latency, time to"
        " first token, tokens, cost, cache hits, failovers, circuit breakers, guard verdicts"
        " and local-model queues of every server process, plus gauges read from the store at"
        " scrape time (runs by status, leases, queue lag, pending approvals, budgets, paused"
        " agents; reused for `ELEVENFACTOR_METRICS_CACHE_SECONDS`). Authenticate with the"
        " scraper token `ELEVENFACTOR_METRICS_TOKEN` (everything) or an admin API key (the"
        " store gauges of its own organisation only); a member key is 403"
        " `permission_denied`. 404 when `ELEVENFACTOR_METRICS=false`.",
        media_type="text/plain",
    ),
)  # fmt: skip
