"""One schema per endpoint, for its JSON body and its query string.

The same pydantic models validate requests and (through ``model_json_schema``) describe them, so
the documentation cannot drift from what is enforced. Integers are strict (no booleans, no
strings) and bounded; strings have a documented character set or refuse control characters
(PostgreSQL cannot store NUL); unknown fields are refused by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
)
from pydantic import StringConstraints as SC

from elevenfactor.errors import RequestError
from elevenfactor.governance import ID_PATTERN, NAME_PATTERN

__all__ = [
    "AdminKeyCreate",
    "AdminKeyUpdate",
    "AdminTeamCreate",
    "AdminUserCreate",
    "AdminUserUpdate",
    "ApprovalDecision",
    "ApprovalQuery",
    "ChatCompletionRequest",
    "CostQuery",
    "RunCreate",
    "RunDeleteQuery",
    "RunQuery",
    "parse_body",
    "parse_query",
]

Id = Annotated[str, SC(pattern=ID_PATTERN, max_length=200)]
Name = Annotated[str, SC(pattern=NAME_PATTERN, max_length=64)]
Text = Annotated[str, SC(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$", max_length=4000)]
Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
RunStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
ApprovalStatus = Literal[
    "pending", "approved", "rejected", "edited", "answered", "expired", "cancelled", "all"
]
Role = Literal["member", "reviewer", "admin"]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunCreate(_Schema):
    """``POST /v1/runs``: queue a run of an agent or workflow (``program`` or ``agent``)."""

    program: Id | None = Field(default=None, description="The program or agent to run.")
    agent: Id | None = Field(default=None, description="Alias of `program`.")
    input: Any = Field(default=None, description="The run's input: any JSON value.")
    queue: Name = Field(default="default", description="The queue the run waits in.")
    priority: Int32 = Field(default=0, description="Higher runs first.")
    id: Id | None = Field(
        default=None, description="Your id for the run: submitting it again is idempotent."
    )
    max_attempts: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    # One strict number type (ints accepted, bools and strings not), so that the bounds reach
    # the JSON schema as exclusiveMinimum/maximum: on a union pydantic cannot place them.
    deadline_seconds: Annotated[float, Field(gt=0, le=10 * 365 * 86400, strict=True)] | None = None
    session_id: Id | None = None
    tags: list[Id] = Field(
        default_factory=list,
        max_length=32,
        description="Free tags: every model call of the run carries them (cost reports group "
        "by them).",
    )


class RunQuery(_Schema):
    """``GET /v1/runs`` query string."""

    status: RunStatus | None = None
    program: Id | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 50


class RunDeleteQuery(_Schema):
    """``DELETE /v1/runs/{id}`` query string: why (recorded in the ledger)."""

    reason: Annotated[Text, SC(min_length=1)]


class ApprovalQuery(_Schema):
    """``GET /v1/approvals`` query string (``status=all`` for every status)."""

    status: ApprovalStatus = "pending"
    group: Name | None = None
    run_id: Id | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class ApprovalDecision(_Schema):
    """``POST /v1/approvals/{id}``. The decider is the authenticated user, never a field."""

    action: Literal["approve", "reject", "edit", "answer"]
    reason: Text | None = Field(default=None, description="Free text; the agent's model sees it.")
    arguments: dict[str, Any] | None = Field(
        default=None, description="For `edit`: the arguments the tool runs with instead."
    )
    answer: Any = Field(default=None, description="For `answer`: the tool's result instead.")


When = Annotated[str, SC(pattern=r"^[0-9A-Za-z.:+-]{1,40}$")]


class CostQuery(_Schema):
    """``GET /v1/cost`` query string."""

    by: Annotated[str, SC(pattern=r"^[a-z]+(,[a-z]+)*$", max_length=200)] | None = Field(
        default=None,
        description="Comma-separated dimensions to group by: org, team, user, key, agent, run,"
        " session, route, model, provider, tag, status, kind (`chat` or `embedding`). Unset:"
        " one row of totals.",
    )
    per: Literal["hour", "day", "week", "month"] | None = Field(
        default=None, description="Time bucket (UTC; weeks start on Monday)."
    )
    since: When | None = Field(
        default=None,
        description="From (inclusive): a duration back from now (`7d`, `12h`, `30m`, `2w`), an"
        " ISO date or date-time (UTC unless it names a zone), or epoch seconds.",
    )
    until: When | None = Field(default=None, description="To (exclusive), as `since`.")
    where: Annotated[Text, SC(max_length=2000)] | None = Field(
        default=None,
        description="Comma-separated filters `DIMENSION:VALUE` (e.g. `model:gpt-4o,user:ann`);"
        " org, team, user and key match an id or a name.",
    )
    format: Literal["json", "csv"] = Field(default="json", description="`csv` for a CSV file.")


def _member() -> list[Role]:
    return ["member"]


class AdminUserCreate(_Schema):
    """``POST /v1/admin/users``: a user (or, with ``kind: service``, a service account)."""

    name: Name
    team: Name | None = Field(default=None, description="The user's team.")
    roles: list[Role] = Field(default_factory=_member, max_length=3)
    groups: list[Name] = Field(default_factory=list, max_length=100, description="Reviewer groups.")
    kind: Literal["user", "service"] = "user"


class AdminUserUpdate(_Schema):
    """``PATCH /v1/admin/users/{name}``: only the fields given change (``team: null`` removes
    the user from its team)."""

    team: Name | None = None
    roles: list[Role] | None = Field(default=None, max_length=3)
    groups: list[Name] | None = Field(default=None, max_length=100)
    enabled: StrictBool | None = None


class AdminTeamCreate(_Schema):
    """``POST /v1/admin/teams``."""

    name: Name
    shares: StrictBool = Field(default=False, description="Members see each other's runs.")


class AdminKeyCreate(_Schema):
    """``POST /v1/admin/keys``: a key for ``user``, or for a service account called ``name``."""

    name: Name
    user: Name | None = None


class AdminKeyUpdate(_Schema):
    """``PATCH /v1/admin/keys/{id}``."""

    name: Name


# -- POST /v1/chat/completions (documentation only) -----------------------------------------
# ``elevenfactor.server._wire.parse_chat_request`` validates this body by hand (to answer with
# OpenAI's own error parameters); these models describe what it accepts, and a test checks that
# they name the same parameters.


class _Doc(BaseModel):
    # Like ``_wire``, unknown keys inside messages, tools and formats are ignored.
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class ChatTextPart(_Doc):
    """A text content part (the only kind served)."""

    type: Literal["text"]
    text: str


ChatContent = str | list[ChatTextPart]


class ChatSystemMessage(_Doc):
    """Instructions (``developer`` is accepted as a synonym of ``system``)."""

    role: Literal["system", "developer"]
    content: ChatContent
    name: str | None = None


class ChatUserMessage(_Doc):
    """What the user said."""

    role: Literal["user"]
    content: ChatContent
    name: str | None = None


class ChatFunctionCall(_Doc):
    """The function a tool call names, with its arguments as a JSON string."""

    name: str
    arguments: str = Field(default="{}", description="The arguments, as a JSON-encoded object.")


class ChatToolCall(_Doc):
    """A tool call the assistant made earlier in the conversation."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: ChatFunctionCall


class ChatAssistantMessage(_Doc):
    """An earlier answer of the model, possibly with tool calls."""

    role: Literal["assistant"]
    content: ChatContent | None = None
    name: str | None = None
    tool_calls: list[ChatToolCall] | None = None
    refusal: str | None = None


class ChatToolMessage(_Doc):
    """The result of a tool call."""

    role: Literal["tool"]
    content: ChatContent
    tool_call_id: str = Field(description="The `id` of the tool call this answers.")


ChatMessage = Annotated[
    ChatSystemMessage | ChatUserMessage | ChatAssistantMessage | ChatToolMessage,
    Field(discriminator="role"),
]


class ChatFunctionDefinition(_Doc):
    """A function the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="A JSON schema of the arguments (default: no arguments)."
    )
    strict: bool | None = None


class ChatTool(_Doc):
    """A tool the model may call."""

    type: Literal["function"]
    function: ChatFunctionDefinition


class ChatNamedFunction(_Doc):
    """Names the function."""

    name: str


class ChatNamedToolChoice(_Doc):
    """Forces a call of the named function."""

    type: Literal["function"] = "function"
    function: ChatNamedFunction


class ChatJsonSchema(_Doc):
    """A JSON schema the answer must match."""

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ChatResponseFormat(_Doc):
    """Free text, any JSON object, or JSON matching ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: ChatJsonSchema | None = Field(
        default=None, description="Required with `type: json_schema`."
    )


class ChatStreamOptions(_Doc):
    """Options of a streamed answer."""

    include_usage: bool | None = Field(
        default=None, description="Send a last chunk with the token usage."
    )


class ChatCache(_Doc):
    """Ask for the response cache, for ``ttl`` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl: Annotated[StrictInt, Field(gt=0, le=30 * 86400)] | None = Field(
        default=None, description="Seconds the answer is kept; unset: the route's, else 300."
    )


_IGNORED = "Accepted and ignored."
Penalty = Annotated[float, Field(ge=-2, le=2)]
LogitBias = Annotated[
    dict[Annotated[str, SC(pattern=r"^[0-9]+$")], Annotated[float, Field(ge=-100, le=100)]],
    Field(max_length=0),
]


class ChatCompletionRequest(_Doc):
    """``POST /v1/chat/completions``: OpenAI's chat-completion request, as far as it is served.

    Unknown parameters are refused by name, and so are values that are not served (`n` > 1,
    `logprobs`, a non-empty `logit_bias`); those listed as ignored are accepted, because clients
    send them routinely, and change nothing. JSON schemas (`response_format`, tool parameters) are
    checked, and their `$ref`s resolved, before any model runs. With a session (`session_id`, or
    the `x-elevenfactor-session` header) send only the new turn: the gateway keeps the
    conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    model: Annotated[str, SC(min_length=1)] = Field(
        description="A route or deployment name (`GET /v1/models` lists them)."
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = Field(default=False, description="Answer with server-sent events.")
    stream_options: ChatStreamOptions | None = None
    tools: list[ChatTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ChatNamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ChatResponseFormat | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Deprecated by OpenAI: `max_completion_tokens` wins."
    )
    max_completion_tokens: Annotated[int, Field(gt=0)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = None
    functions: list[ChatFunctionDefinition] | None = Field(
        default=None, description="Deprecated: translated to `tools` (send one, not both)."
    )
    function_call: Literal["auto", "none"] | ChatNamedFunction | None = Field(
        default=None, description="Deprecated: translated to `tool_choice`."
    )
    n: Literal[1] | None = Field(
        default=None, description="Only 1 is served (one choice per request)."
    )
    logprobs: Literal[False] | None = Field(
        default=None, description="Not served: `true` is refused."
    )
    top_logprobs: None = Field(default=None, description="Not served (needs `logprobs`).")
    logit_bias: LogitBias | None = Field(
        default=None,
        description="Token id -> bias from -100 to 100. Not served: only `{}` is accepted.",
    )
    cache: StrictBool | ChatCache | None = Field(
        default=None,
        description="The exact response cache: an object `{ttl: seconds}` (or `true`) "
        "serves an identical earlier answer and stores this one, even for a sampling "
        "request; `false` bypasses the cache. Unset: the route's `cache` setting decides.",
    )
    session_id: Id | None = Field(
        default=None,
        description="An elevenfactor extension (`extra_body` in the `openai` client), like the"
        " `x-elevenfactor-session` header (send both only if they agree): the session this"
        " request continues. Send only the new turn: the model gets the request's system"
        " messages, the session's stored history (oldest turns dropped to fit the window;"
        " `x-elevenfactor-session-dropped` says how many messages), then the new messages."
        " A complete answer is appended with the new messages; another user's session is 404"
        " `session_not_found`; a session changed by a concurrent request is 409"
        " `session_conflict`.",
    )
    service_tier: Any = Field(default=None, description=_IGNORED)
    store: Any = Field(default=None, description=_IGNORED)
    metadata: Any = Field(default=None, description=_IGNORED)
    modalities: Any = Field(default=None, description=_IGNORED)
    prediction: Any = Field(default=None, description=_IGNORED)
    reasoning_effort: Any = Field(default=None, description=_IGNORED)
    audio: Any = Field(default=None, description=_IGNORED)
    web_search_options: Any = Field(default=None, description=_IGNORED)
    safety_identifier: Any = Field(default=None, description=_IGNORED)
    prompt_cache_key: Any = Field(default=None, description=_IGNORED)
    verbosity: Any = Field(default=None, description=_IGNORED)


M = TypeVar("M", bound=BaseModel)


def _error(exc: ValidationError) -> RequestError:
    err = exc.errors(include_url=False)[0]
    param = ".".join(str(p) for p in err["loc"]) or "body"
    kind = err["type"]
    if kind == "extra_forbidden":
        message = f"unknown parameter {param!r}"
        if param == "by":
            message = "'by' is not accepted: the decider is the authenticated user"
        return RequestError(message, code="unknown_parameter", param=param)
    if kind == "missing":
        return RequestError(
            f"{param!r} is required", code="missing_required_parameter", param=param
        )
    code = "invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"
    return RequestError(f"{param!r}: {err['msg']}", code=code, param=param)


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate a JSON body against ``model``; a clear 400 naming the parameter otherwise."""
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            f"the body is not valid JSON: {exc}", code="invalid_json", param="body"
        ) from None
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object", code="invalid_type", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _error(exc) from None


def parse_query(model: type[M], items: list[tuple[str, str]]) -> M:
    """Validate a query string against ``model`` (each parameter at most once)."""
    data: dict[str, str] = {}
    for key, value in items:
        if key in data:
            raise RequestError(f"{key!r} is given twice", code="invalid_value", param=key)
        data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _error(exc) from None
