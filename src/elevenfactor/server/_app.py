"""The Starlette application: routes, the drain guard, lifespan."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import ElevenFactorError, RequestError
from elevenfactor.observe import _tracing
from elevenfactor.observe._metrics import http_request
from elevenfactor.observe._trace_http import traced_request
from elevenfactor.server._admin_api import ROUTES as ADMIN_ROUTES
from elevenfactor.server._agents_api import ROUTES as AGENT_ROUTES
from elevenfactor.server._auth import authenticate, check_cross_site
from elevenfactor.server._budgets_api import ROUTES as BUDGET_ROUTES
from elevenfactor.server._chat import chat_completions, trace_id_from
from elevenfactor.server._cost_api import ROUTES as COST_ROUTES
from elevenfactor.server._docs import docs_page
from elevenfactor.server._embeddings_api import ROUTES as EMBEDDING_ROUTES
from elevenfactor.server._errors import error_response
from elevenfactor.server._eval_results_api import ROUTES as EVAL_RESULT_ROUTES
from elevenfactor.server._evals_api import ROUTES as EVALS_ROUTES
from elevenfactor.server._feedback_api import ROUTES as FEEDBACK_ROUTES
from elevenfactor.server._mcp import PRINCIPAL_SCOPE_KEY
from elevenfactor.server._memory_api import ROUTES as MEMORY_ROUTES
from elevenfactor.server._metrics_api import ROUTES as METRICS_ROUTES
from elevenfactor.server._metrics_api import configure_for as configure_metrics
from elevenfactor.server._metrics_api import first_token_send, route_label
from elevenfactor.server._models_api import show_model
from elevenfactor.server._openapi import openapi_json
from elevenfactor.server._readiness import readiness
from elevenfactor.server._releases_api import ROUTES as RELEASE_ROUTES
from elevenfactor.server._replay_api import ROUTES as REPLAY_ROUTES
from elevenfactor.server._runs_api import ROUTES as RUN_ROUTES
from elevenfactor.server._state import Gateway
from elevenfactor.server.ui import ROUTES as UI_ROUTES
from elevenfactor.server.ui import error_page as ui_error_page
from elevenfactor.server.ui import is_ui_path
from elevenfactor.server.ui import not_found_page as ui_not_found

__all__ = ["create_app"]

logger = logging.getLogger("elevenfactor.server")

_DRAINING = orjson.dumps(
    {
        "error": {
            "message": "the server is shutting down; retry on another instance",
            "type": "server_error",
            "param": None,
            "code": "shutting_down",
        }
    }
)


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


async def models(request: Request) -> Response:
    """``GET /v1/models``: every route and deployment a client may name (needs a key outside
    dev mode)."""
    gw: Gateway = request.app.state.gateway
    assert gw.registry is not None
    try:
        await authenticate(request, gw)
    except ElevenFactorError as exc:
        return error_response(exc)
    created = int(gw.started_at)
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "elevenfactor"}
        for name in gw.registry.names()
    ]
    return _json({"object": "list", "data": data})


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: open, migrated, not draining, and the budget backend answering (budgets
    fail closed: with Redis down no call a budget covers can be admitted).

    While an agent's circuit breaker has paused it (in any organisation), ``details``
    names it: ``{"status": "ready", "details": {"agents_paused": ["support"]}}`` (names only:
    this endpoint is open; ``elevenfactor agents status`` tells why). A paused agent does not
    make the process unready — it serves everything else, and the agent's runs are refused
    with ``agent_paused`` until an admin resets it (``elevenfactor agents reset``); taking
    the instance out of rotation would not help. The checks are ``server._readiness``'s, which
    the health page shows too."""
    gw: Gateway = request.app.state.gateway
    state = await readiness(gw)
    return _json(state.body(), state.http_status)


async def not_found(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods get an error object, not HTML."""
    status = getattr(exc, "status_code", 404)
    code = "method_not_allowed" if status == 405 else "not_found"
    if is_ui_path(request.url.path):
        return ui_not_found(request, status, code)
    return error_response(
        RequestError(f"{request.method} {request.url.path} is not served", code=code, status=status)
    )


async def server_error(request: Request, exc: Exception) -> Response:
    """Last resort: log and answer a JSON 500 without details."""
    logger.exception("unhandled error on %s", request.url.path)
    return error_response(ElevenFactorError("internal server error; see the server log"))


class GatewayApp:
    """The outermost ASGI layer: a trace id for every request (echoed in ``x-trace-id``),
    in-flight counting, 503 while draining, and a direct path to the chat endpoint that skips
    routing and per-message middleware (the hot path); everything else goes to Starlette."""

    def __init__(self, app: Starlette, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.state = app.state
        # Set by the runner: handles the lifespan (see _runner._StartupGuard), so that HTTP
        # requests do not pass through one more ASGI layer.
        self.lifespan: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.lifespan is not None:
                await self.lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if _tracing.TRACER is not None and "otel_span" not in scope:  # off: this test only
            await traced_request(self, scope, receive, send)
            return
        trace_id = trace_id_from(scope)
        scope["trace_id"] = trace_id
        scope["gateway"] = gw = self.gateway
        trace_header = (b"x-trace-id", trace_id.encode())
        if gw.draining and scope["path"] not in ("/healthz", "/readyz"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"connection", b"close"),
                        trace_header,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _DRAINING})
            return
        try:
            check_cross_site(scope, gw.settings)
        except RequestError as exc:
            refusal = (
                ui_error_page(exc.http_status, exc.code, exc.message, exc.hint)
                if is_ui_path(scope["path"])  # the dashboard answers with its own page
                else error_response(exc)
            )
            refusal.headers["x-trace-id"] = trace_id
            await refusal(scope, receive, send)
            return
        gw.inflight += 1
        started, status = time.perf_counter(), 500  # metrics: until a response starts
        try:
            if scope["path"] == "/v1/chat/completions" and scope["method"] == "POST":
                status = await self._chat(scope, receive, send)
                return
            if scope["path"] in ("/mcp", "/mcp/"):
                status = await self._mcp(scope, receive, send)
                return

            async def send_with_trace(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), trace_header]
                await send(message)

            await self.app(scope, receive, send_with_trace)
        finally:
            gw.inflight -= 1
            http_request(route_label(scope), scope["method"], status, time.perf_counter() - started)

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> int:
        try:
            principal = await authenticate(Request(scope, receive), self.gateway)
        except ElevenFactorError as exc:
            await error_response(exc, {"x-trace-id": scope["trace_id"]})(scope, receive, send)
            return exc.http_status
        # The MCP handlers run in the session manager's tasks; they read the caller from the
        # request scope the SDK hands them (see elevenfactor.server._mcp).
        scope[PRINCIPAL_SCOPE_KEY] = principal
        # Host names and origins are case-insensitive (RFC 3986) and the guard above already
        # accepted these; the MCP transport compares exactly, so hand it the lower-case forms.
        scope["headers"] = [
            (k, v.lower()) if k in (b"host", b"origin") else (k, v) for k, v in scope["headers"]
        ]
        trace_header = (b"x-trace-id", scope["trace_id"].encode())
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), trace_header]
            await send(message)

        assert self.gateway.mcp is not None
        await self.gateway.mcp.handle_request(scope, receive, send_with_trace)
        return status

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> int:
        started = time.perf_counter()
        try:
            response = await chat_completions(Request(scope, receive))
        except Exception:
            logger.exception("unhandled error in chat completions")
            response = error_response(
                ElevenFactorError("internal server error; see the server log"),
                {"x-trace-id": scope["trace_id"]},
            )
        await response(scope, receive, first_token_send(response, send, started))
        return getattr(response, "status_code", 200)


def create_app(settings: Settings, project: ProjectConfig) -> GatewayApp:
    """The HTTP application. The store and models open in its lifespan, inside the server loop."""
    gateway = Gateway(settings, project)
    configure_metrics(settings, project)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.started_at = time.time()
        await gateway.open()
        try:
            yield
        finally:
            await gateway.aclose()

    app = Starlette(
        routes=[
            # POST is served by GatewayApp directly; the route answers 405 to other methods.
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", show_model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            *(Route(path, fn, methods=methods) for path, fn, methods in RUN_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in ADMIN_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in COST_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in BUDGET_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in EMBEDDING_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in MEMORY_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in FEEDBACK_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in REPLAY_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in EVALS_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in EVAL_RESULT_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in AGENT_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in METRICS_ROUTES),
            *(Route(path, fn, methods=methods) for path, fn, methods in RELEASE_ROUTES),
            # The dashboard: HTML pages and forms (``server.ui``).
            *(Route(path, fn, methods=methods) for path, fn, methods in UI_ROUTES),
            Route("/readyz", readyz, methods=["GET"]),
            # Documentation: open, like the health checks.
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/docs", docs_page, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found, 500: server_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return GatewayApp(app, gateway)
