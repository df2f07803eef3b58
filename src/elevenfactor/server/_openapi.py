"""The OpenAPI 3.1 document, built from a declarative list of operations.

Each operation points at the same pydantic model its endpoint validates the body or query string
with (``elevenfactor.server._schemas``), so the document cannot drift from what is enforced; a
test checks that every route the app serves is described here. ``GET /openapi.json`` serves it
without a key: it is documentation and names no secret.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from elevenfactor._version import __version__
from elevenfactor.governance import ID_PATTERN, NAME_PATTERN
from elevenfactor.server import _budget_schemas as bs
from elevenfactor.server import _responses as r
from elevenfactor.server import _schemas as s
from elevenfactor.server._agents_api import OPERATIONS as AGENT_OPERATIONS
from elevenfactor.server._cost_api import CostReportDoc
from elevenfactor.server._embeddings_api import OPERATIONS as EMBEDDING_OPERATIONS
from elevenfactor.server._eval_results_api import OPERATIONS as EVAL_RESULT_OPERATIONS
from elevenfactor.server._evals_api import OPERATIONS as EVALS_OPERATIONS
from elevenfactor.server._feedback_api import OPERATIONS as FEEDBACK_OPERATIONS
from elevenfactor.server._memory_api import OPERATIONS as MEMORY_OPERATIONS
from elevenfactor.server._metrics_api import OPERATIONS as METRICS_OPERATIONS
from elevenfactor.server._op_types import HeaderParam, Operation, PathParam
from elevenfactor.server._releases_api import OPERATIONS as RELEASE_OPERATIONS
from elevenfactor.server._replay_api import OPERATIONS as REPLAY_OPERATIONS

__all__ = [
    "OPERATIONS",
    "HeaderParam",
    "Operation",
    "PathParam",
    "build_document",
    "document",
    "openapi_json",
]

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "apiKey"


RUN_ID = PathParam("run_id", "The run's id.", ID_PATTERN)
APPROVAL_ID = PathParam("approval_id", "The approval's id.", ID_PATTERN)
USER_NAME = PathParam("name", "The user's name.", NAME_PATTERN)
KEY_ID = PathParam("key_id", "The key's id or its prefix.", ID_PATTERN)
MODEL_ID = PathParam("model_id", "A route or deployment name.")
BUDGET_ID = PathParam("id", "The budget's id, or its scope if it has one window.", ID_PATTERN)
KILL_ID = PathParam("id", "The switch's id, or its scope.", ID_PATTERN)
_ADMIN = "Admins only (others get 403 `permission_denied`)."
TRACEPARENT = HeaderParam(
    "traceparent",
    "W3C trace context; its trace id becomes the request's `x-trace-id` (every response carries"
    " one).",
)
CHAT_HEADERS = (
    HeaderParam(
        "x-elevenfactor-tags",
        "Comma-separated tags (ids, at most 32): they select tag-routed deployments, match"
        " budgets and are recorded with the call for the cost report.",
    ),
    HeaderParam(
        "x-elevenfactor-priority",
        "Rank among requests waiting for rate-limit capacity: `high`, `normal` (default),"
        " `low` or an integer (higher first).",
    ),
    HeaderParam(
        "x-elevenfactor-session",
        "The session the call continues (an id: 1-200 characters of A-Z a-z 0-9 . _ : -; or"
        " the body's `session_id`): send only the new turn. The model gets the request's system"
        " messages, the session's stored conversation (oldest turns dropped to fit the model's"
        " window: `x-elevenfactor-session-dropped` in the answer counts the messages left out),"
        " then the new messages; a complete answer is appended with them. Created on first use,"
        " owned by the caller; shared with runs. Recorded with the call for the cost report and"
        " echoed in the answer.",
        (("type", "string"), ("pattern", ID_PATTERN)),
    ),
    HeaderParam(
        "x-elevenfactor-timeout",
        "Seconds (> 0) this request may wait: for rate-limit capacity (default `limits.max_wait`)"
        " and for and on a local model instance (it can only shorten the configured"
        " `admission_timeout` and `generation_timeout`).",
        (("type", "number"), ("exclusiveMinimum", 0)),
    ),
    TRACEPARENT,
)

CHAT_RESPONSE_HEADERS = {
    "x-elevenfactor-session": {
        "description": "The session the call continued (with a session).",
        "schema": {"type": "string"},
    },
    "x-elevenfactor-session-dropped": {
        "description": "With a session: how many of its stored messages were left out of the"
        " model's input (the oldest, to fit the window).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "x-elevenfactor-cache": {
        "description": "Served from the route's cache: `hit` (the exact cache) or `semantic`"
        " (the answer to a paraphrase); absent when the model answered.",
        "schema": {"type": "string", "enum": ["hit", "semantic"]},
    },
    "x-elevenfactor-cache-similarity": {
        "description": "With `x-elevenfactor-cache: semantic`: the cosine similarity between"
        " this question and the cached one.",
        "schema": {"type": "number", "minimum": -1, "maximum": 1},
    },
    "x-elevenfactor-guard": {
        "description": "The most severe action of the guard policies the call was checked with"
        " (`allow`, `monitor`, `redact`, `escalate`, `block`); absent when no policy applies."
        " On a stream it covers the request only: the answer's verdicts are in the call record,"
        " and a refusal ends the stream with an error event.",
        "schema": {"type": "string", "enum": ["allow", "monitor", "redact", "escalate", "block"]},
    },
    "x-elevenfactor-policy": {
        "description": "The guard policies the call was checked with, `id@version`,"
        " comma-separated (its key's, team's and route's; else `guards.default`).",
        "schema": {"type": "string"},
    },
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/chat/completions", "post", "Create a chat completion", "models", r.ChatCompletion,
        "OpenAI-compatible. With `stream: true` the answer is `text/event-stream`. A local"
        " model that cannot take the request in time answers 429 `model_queue_full` or 503"
        " `model_overloaded` with `Retry-After`. A rate limit that cannot admit the request"
        " before its deadline answers 429 `rate_limit_exceeded` with `Retry-After`; a budget"
        " that cannot cover its worst-case cost 429 `budget_exceeded` (`x-should-retry: false`,"
        " the budget in `error.details`), unless the budget downgrades it to a cheaper route"
        " (`x-elevenfactor-route`, `x-elevenfactor-downgraded`); a kill switch 403 `killed`;"
        " budgets unreachable (Redis down) 503 `budget_unavailable`. With a session: another"
        " user's is 404 `session_not_found`, header and body naming different ones 400"
        " `session_mismatch`, and a session another request appended to while this one ran 409"
        " `session_conflict` (nothing appended; send the turn again). Guard policies: a rule"
        " that blocks the request or the answer is 400 `guard_blocked`, one that escalates it"
        " 403 `guard_escalated` (a chat completion cannot wait for a reviewer; a run can), each"
        " naming the stage, policy and rule in `error.details`; in a stream that already"
        " started, the same error arrives as the last event. A refused request is not sent"
        " upstream and costs nothing; a refused answer was made and is billed.",
        body=s.ChatCompletionRequest, headers=CHAT_HEADERS,
    ),
    Operation("/v1/models", "get", "List models", "models", r.ModelList,
              "Every route and deployment a client may name."),
    Operation("/v1/models/{model_id}", "get", "Retrieve a model", "models", r.ModelObject,
              "404 `model_not_found` for a name that is not configured.", params=(MODEL_ID,)),
    Operation("/v1/runs", "post", "Queue a run", "runs", r.Run,
              "Queue a run of an agent or workflow, owned by the caller.", body=s.RunCreate,
              status=201),
    Operation("/v1/runs", "get", "List runs", "runs", r.RunList, "Newest first.",
              query=s.RunQuery),
    Operation("/v1/runs/{run_id}", "get", "Retrieve a run", "runs", r.RunDetail,
              "Status, steps and result.", params=(RUN_ID,)),
    Operation("/v1/runs/{run_id}", "delete", "Delete a finished run", "runs", r.RunDeleted,
              "Admins only; the deletion and its reason are recorded in the ledger.",
              query=s.RunDeleteQuery, params=(RUN_ID,)),
    Operation("/v1/runs/{run_id}/events", "get", "Stream a run's events", "runs", None,
              "Server-sent events: `step` for each journal step, `status` for each status"
              " change, and `end` with the result.", params=(RUN_ID,),
              media_type="text/event-stream"),
    Operation("/v1/runs/{run_id}/cancel", "post", "Cancel a run", "runs", r.Run,
              params=(RUN_ID,)),
    Operation("/v1/approvals", "get", "List approvals", "approvals", r.ApprovalList,
              "Those the caller may see, pending by default.", query=s.ApprovalQuery),
    Operation("/v1/approvals/{approval_id}", "post", "Decide an approval", "approvals",
              r.Approval, "Decided by the authenticated user.", body=s.ApprovalDecision,
              params=(APPROVAL_ID,)),
    Operation("/v1/admin/users", "get", "List users", "admin", r.UserList, _ADMIN),
    Operation("/v1/admin/users", "post", "Create a user", "admin", r.User, _ADMIN,
              body=s.AdminUserCreate, status=201),
    Operation("/v1/admin/users/{name}", "get", "Retrieve a user", "admin", r.User, _ADMIN,
              params=(USER_NAME,)),
    Operation("/v1/admin/users/{name}", "patch", "Update a user", "admin", r.User,
              _ADMIN + " Only the fields given change.", body=s.AdminUserUpdate,
              params=(USER_NAME,)),
    Operation("/v1/admin/users/{name}", "delete", "Disable a user", "admin", r.User,
              _ADMIN + " The user's keys stop working.", params=(USER_NAME,)),
    Operation("/v1/admin/teams", "get", "List teams", "admin", r.TeamList, _ADMIN),
    Operation("/v1/admin/teams", "post", "Create a team", "admin", r.Team, _ADMIN,
              body=s.AdminTeamCreate, status=201),
    Operation("/v1/admin/keys", "get", "List API keys", "admin", r.ApiKeyList,
              _ADMIN + " Never the secrets."),
    Operation("/v1/admin/keys", "post", "Create an API key", "admin", r.ApiKeyCreated,
              _ADMIN + " The answer holds the secret (`key`), shown this once.",
              body=s.AdminKeyCreate, status=201),
    Operation("/v1/admin/keys/{key_id}", "get", "Retrieve an API key", "admin", r.ApiKey,
              _ADMIN, params=(KEY_ID,)),
    Operation("/v1/admin/keys/{key_id}", "patch", "Rename an API key", "admin", r.ApiKey,
              _ADMIN, body=s.AdminKeyUpdate, params=(KEY_ID,)),
    Operation("/v1/admin/keys/{key_id}", "delete", "Revoke an API key", "admin", r.ApiKey,
              _ADMIN + " Idempotent.", params=(KEY_ID,)),
    Operation("/v1/cost", "get", "Cost report", "cost", CostReportDoc,
              "Spend grouped by org, team, user, key, agent, run, session, route, model,"
              " provider, tag or status, and by hour, day, week or month (UTC), with cache"
              " savings. A member sees its own calls, an admin its organisation's. `format=csv`"
              " answers `text/csv`.", query=s.CostQuery),
    Operation("/v1/admin/budgets", "get", "List budgets", "budgets", bs.BudgetList,
              _ADMIN + " Each with its current window's spend and reservations."),
    Operation("/v1/admin/budgets", "post", "Set a budget", "budgets", bs.BudgetObject,
              _ADMIN + " One per scope and window: 201 when created, 200 when updated.",
              body=bs.BudgetCreate, status=201),
    Operation("/v1/admin/budgets/{id}", "get", "Retrieve a budget", "budgets",
              bs.BudgetObject, _ADMIN, params=(BUDGET_ID,)),
    Operation("/v1/admin/budgets/{id}", "patch", "Update a budget", "budgets",
              bs.BudgetObject, _ADMIN + " Only the fields given change.", body=bs.BudgetUpdate,
              params=(BUDGET_ID,)),
    Operation("/v1/admin/budgets/{id}", "delete", "Delete a budget", "budgets",
              bs.BudgetObject, _ADMIN, params=(BUDGET_ID,)),
    Operation("/v1/budgets", "get", "Budgets covering the caller", "budgets", bs.BudgetList,
              "The organisation's, the caller's team's, its own and its key's; read-only."),
    Operation("/v1/admin/kills", "get", "List kill switches", "budgets", bs.KillList,
              _ADMIN + " Active ones unless `all=true`.", query=bs.KillQuery),
    Operation("/v1/admin/kills", "post", "Pull a kill switch", "budgets", bs.KillCreated,
              _ADMIN + " New calls of the scope are refused at once (403 `killed`); its queued"
              " and running runs are cancelled. 200 if the scope was already stopped.",
              body=bs.KillCreate, status=201),
    Operation("/v1/admin/kills/{id}", "delete", "Lift a kill switch", "budgets",
              bs.KillSwitchObject, _ADMIN, query=bs.KillLiftQuery, params=(KILL_ID,)),
    Operation("/mcp", "post", "MCP (streamable HTTP)", "mcp", None,
              "The Model Context Protocol: JSON-RPC messages in, JSON or server-sent events"
              " out; the project's agents and selected tools, acting for the key's user.",
              media_type="application/json"),
    Operation("/healthz", "get", "Liveness", "health", r.Health, secured=False),
    Operation("/readyz", "get", "Readiness", "health", r.Readiness,
              "503 while starting or draining.", secured=False),
    Operation("/openapi.json", "get", "This OpenAPI document", "docs", None, secured=False),
    Operation("/docs", "get", "The API reference page", "docs", None,
              "This document rendered as HTML.", media_type="text/html", secured=False),
)  # fmt: skip
OPERATIONS += EMBEDDING_OPERATIONS + MEMORY_OPERATIONS + FEEDBACK_OPERATIONS
OPERATIONS += EVALS_OPERATIONS
OPERATIONS += EVAL_RESULT_OPERATIONS
OPERATIONS += AGENT_OPERATIONS
OPERATIONS += METRICS_OPERATIONS
OPERATIONS += REPLAY_OPERATIONS
OPERATIONS += RELEASE_OPERATIONS


class _Components:
    """Collects schemas under ``components/schemas``; one name means one schema."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def add(self, name: str, schema: dict[str, Any]) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are called {name!r}")

    def inline(self, model: type[BaseModel]) -> dict[str, Any]:
        """The model's own schema, its definitions moved into the components."""
        schema = model.model_json_schema(ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            self.add(name, sub)
        return schema

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        """A reference to the model's schema in the components."""
        self.add(model.__name__, self.inline(model))
        return {"$ref": REF.format(model=model.__name__)}


def _query_params(model: type[BaseModel], comps: _Components) -> list[dict[str, Any]]:
    schema = comps.inline(model)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        prop.pop("title", None)
        # A query parameter is absent or a string, never null: drop the null alternative.
        alternatives = [a for a in prop.pop("anyOf", ()) if a != {"type": "null"}]
        if len(alternatives) == 1:
            prop.update(alternatives[0])
        elif alternatives:
            prop["anyOf"] = alternatives
        if prop.get("default", 0) is None:
            del prop["default"]
        param["schema"] = prop
        out.append(param)
    return out


def _path_param(p: PathParam) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if p.pattern:
        schema["pattern"] = p.pattern
    return {"name": p.name, "in": "path", "required": True, "description": p.description,
            "schema": schema}  # fmt: skip


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }


def _operation(op: Operation, comps: _Components) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.method + "_" + re.sub(r"[^A-Za-z0-9]+", "_", op.path).strip("_"),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    params = [_path_param(p) for p in op.params]
    if op.query is not None:
        params += _query_params(op.query, comps)
    params += [
        {"name": h.name, "in": "header", "required": False, "description": h.description,
         "schema": dict(h.schema)}
        for h in op.headers
    ]  # fmt: skip
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": comps.ref(op.body)}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    if op.response is not None:
        ok["description"] = (op.response.__doc__ or "OK").split("\n")[0]
        ok["content"] = {op.media_type: {"schema": comps.ref(op.response)}}
    elif op.media_type == "application/json":
        ok["content"] = {op.media_type: {"schema": {"type": "object"}}}
    else:
        ok["content"] = {op.media_type: {"schema": {"type": "string"}}}
    if op.body is s.ChatCompletionRequest:
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
        ok["headers"] = CHAT_RESPONSE_HEADERS
    responses: dict[str, Any] = {str(op.status): ok}
    if op.body is not None or op.query is not None or op.params:
        responses["400"] = _error("The request is invalid; `param` names what is wrong.")
    if op.secured:
        responses["401"] = _error("No API key, or an unknown or revoked one.")
    if op.params:
        responses["404"] = _error("No such object (or one the caller may not see).")
    if op.headers == CHAT_HEADERS:
        retry = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                 "schema": {"type": "integer"}}}  # fmt: skip
        responses["403"] = _error(
            "A kill switch (`killed`), or a guard rule escalated the call (`guard_escalated`)."
        )
        responses["404"] = _error("No such model or route, or another user's session.")
        responses["409"] = _error("The session changed while the request ran.")
        responses["429"] = {**_error("A local model's queue is full."), "headers": retry}
        responses["503"] = {**_error("A local model could not start in time."), "headers": retry}
    if (op.path, op.method) == ("/v1/runs", "post"):
        responses["409"] = _error(
            "The agent's circuit breaker paused it (`agent_paused`): too many failed or blocked"
            " runs in its window; an admin resets it (`elevenfactor agents reset`)."
        )
    if (op.path, op.method) == ("/metrics", "get"):
        responses["403"] = _error("A member key: scraping needs an admin key or the metrics token.")
        responses["404"] = _error("Metrics are turned off (`ELEVENFACTOR_METRICS=false`).")
    responses["default"] = _error("An error.")
    out["responses"] = responses
    out["security"] = [{SECURITY_SCHEME: []}] if op.secured else []
    return out


def build_document(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations``."""
    comps = _Components()
    comps.add("ErrorResponse", comps.inline(r.ErrorResponse))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, comps)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "elevenfactor",
            "version": __version__,
            "description": "OpenAI-compatible model gateway, durable runs and approvals, and"
            ' administration. Errors are `{"error": {"message", "type", "param",'
            ' "code"}}`. Outside dev mode every operation but the health checks and this'
            " documentation needs an API key.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(comps.schemas.items())),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An elevenfactor API key: `Authorization: Bearer ef_...`"
                    " (create one with `elevenfactor keys create`).",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


@functools.cache
def document() -> dict[str, Any]:
    """The document, built on first use."""
    return build_document()


@functools.cache
def _document_bytes() -> bytes:
    return orjson.dumps(document())


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: open, like the health checks (it is documentation)."""
    return Response(_document_bytes(), media_type="application/json")
