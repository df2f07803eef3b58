"""What the endpoints answer, as pydantic models for the OpenAPI document (documentation only:
the handlers build these objects as dictionaries), and ``JSONBytes``, the lean response the chat
endpoint sends."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

__all__ = [
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyList",
    "Approval",
    "ApprovalList",
    "ChatCompletion",
    "ErrorResponse",
    "FeedbackList",
    "FeedbackObject",
    "Health",
    "JSONBytes",
    "ModelList",
    "ModelObject",
    "Readiness",
    "Run",
    "RunDeleted",
    "RunDetail",
    "RunList",
    "Team",
    "TeamList",
    "User",
    "UserList",
]


class ErrorObject(BaseModel):
    """An OpenAI-style error; ``code`` is stable and machine-readable."""

    message: str
    type: str = Field(
        description="`invalid_request_error`, `authentication_error`, `rate_limit_error` or"
        " `server_error`."
    )
    param: str | None = Field(description="The request parameter at fault, if any.")
    code: str | None = Field(description="A stable code, such as `model_not_found`.")
    error_class: str | None = Field(
        default=None, description="For model errors: the class of upstream failure."
    )
    details: dict[str, Any] | None = Field(
        default=None,
        description="Which budget, limit or kill switch refused the call; for `guard_blocked` "
        "and `guard_escalated` the stage, the policy (`id@version`), the rule and the "
        "reviewer group — never the content that matched.",
    )


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorObject


class ModelObject(BaseModel):
    """A route or deployment a client may name as ``model``."""

    id: str
    object: Literal["model"]
    created: int = Field(description="When the server started (Unix seconds).")
    owned_by: str


class ModelList(BaseModel):
    """Routes first, then deployments."""

    object: Literal["list"]
    data: list[ModelObject]


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class ReadinessDetails(BaseModel):
    """What a ready process reports besides its status."""

    agents_paused: list[str] | None = Field(
        default=None,
        description="Agents whose circuit breaker paused them (names only; "
        "`elevenfactor agents status` says why). Their runs are refused until an admin "
        "resets them; the process itself stays ready.",
    )


class Readiness(BaseModel):
    """``ready`` (200), or ``starting``/``draining``/``unavailable`` (503)."""

    status: Literal["ready", "starting", "draining", "unavailable"]
    details: ReadinessDetails | None = None
    checks: dict[str, str] | None = Field(
        default=None, description="With `unavailable`: each failing dependency and why."
    )


class Owner(BaseModel):
    """Who owns a run."""

    user_id: str | None
    team_id: str | None


class Run(BaseModel):
    """A durable run of an agent or workflow."""

    id: str
    object: Literal["run"]
    program: str
    status: Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
    queue: str
    priority: int
    attempt: int
    parent_id: str | None
    owner: Owner
    created_at: float
    updated_at: float
    error: dict[str, Any] | None
    cancel_requested: bool = Field(
        default=False, description="Cancelled while running: the worker stops it at its next step."
    )
    release_id: str | None = Field(
        default=None,
        description="The release the run was submitted under (`GET /v1/releases/{id}`); null"
        " when no release applied.",
    )


class RunDetail(Run):
    """A run with its result and journal steps."""

    result: Any = Field(description="The program's result once it succeeded.")
    steps: list[dict[str, Any]]


class RunList(BaseModel):
    """Newest first."""

    object: Literal["list"]
    data: list[Run]


class RunDeleted(BaseModel):
    """The run is gone (the ledger keeps the record of its deletion)."""

    id: str
    object: Literal["run"]
    deleted: Literal[True]


class Approval(BaseModel):
    """A tool call waiting for (or given) a human decision."""

    id: str
    object: Literal["approval"]
    run_id: str
    step_id: str
    name: str
    status: str
    request: Any
    group: str | None
    created_at: float
    timeout_at: float | None
    on_timeout: str
    decision: dict[str, Any] | None


class ApprovalList(BaseModel):
    """Approvals the caller may see."""

    object: Literal["list"]
    data: list[Approval]


class FeedbackBy(BaseModel):
    """Who gave the feedback."""

    user_id: str
    key_id: str | None


class FeedbackObject(BaseModel):
    """A judgement of a run."""

    id: str
    object: Literal["run.feedback"]
    run_id: str
    score: float | None
    label: str | None
    comment: str | None
    metadata: dict[str, Any] | None
    source: Literal["human", "online", "offline"] = Field(
        description="`human` (this API, the CLI); `online` and `offline` for scorers."
    )
    by: FeedbackBy
    created_at: float


class FeedbackList(BaseModel):
    """A run's feedback, newest first."""

    object: Literal["list"]
    data: list[FeedbackObject]
    has_more: bool = Field(description="Older feedback follows: ask with `before` = last id.")


class User(BaseModel):
    """A user or service account."""

    id: str
    object: Literal["user"]
    name: str
    kind: Literal["user", "service"]
    team: str | None
    roles: list[str]
    groups: list[str]
    created_at: float
    disabled_at: float | None


class UserList(BaseModel):
    """The organisation's users."""

    object: Literal["list"]
    data: list[User]


class Team(BaseModel):
    """A team."""

    id: str
    object: Literal["team"]
    name: str
    shares: bool
    created_at: float


class TeamList(BaseModel):
    """The organisation's teams."""

    object: Literal["list"]
    data: list[Team]


class ApiKey(BaseModel):
    """An API key, without its secret."""

    id: str
    object: Literal["api_key"]
    name: str
    prefix: str
    user: str | None
    created_at: float
    revoked_at: float | None


class ApiKeyCreated(ApiKey):
    """A new key: ``key`` is the secret, shown this once."""

    key: str


class ApiKeyList(BaseModel):
    """The organisation's keys."""

    object: Literal["list"]
    data: list[ApiKey]


class ChatChoice(BaseModel):
    """One answer."""

    index: int
    message: dict[str, Any] = Field(description="`{role: assistant, content, tool_calls}`.")
    finish_reason: str | None


class ChatCompletion(BaseModel):
    """OpenAI's chat-completion object (with ``stream: true``, ``chat.completion.chunk``
    server-sent events ending with ``data: [DONE]``)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: dict[str, Any] | None = None


class JSONBytes:
    """The hot path's answer: a JSON body already serialized, sent with two ASGI messages
    (Starlette's ``Response`` builds and checks its header list on every request)."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, body: bytes, headers: dict[str, str], status_code: int = 200) -> None:
        self.body = body
        self.status_code = status_code
        self.headers = [
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the answer."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.headers}
        )
        await send({"type": "http.response.body", "body": self.body})
