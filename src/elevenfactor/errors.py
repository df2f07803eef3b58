"""The error hierarchy. Every error carries a stable ``code``, what went wrong and how to fix it.

```
ElevenFactorError                 code                 http
├── ConfigError                   config_invalid       500
├── StoreError                    store_error          500
│   └── MigrationRequired         store_unmigrated     503
├── RequestError                  invalid_request      400  (and subclasses for the API)
│   ├── ModelNotFound             model_not_found      404
│   ├── AuthenticationFailed      invalid_api_key      401
│   ├── PermissionDenied          permission_denied    403
│   ├── NotFound                  not_found            404  (users, keys, teams)
│   ├── ReleaseNotFound           release_not_found    404
│   ├── ReleaseMismatch           release_mismatch     409  (files on disk differ from the release)
│   ├── ClientDisconnected        client_disconnected  499  (the client went away)
│   └── GuardBlocked              guard_blocked        400  (a guard policy's rule blocked it)
│       └── GuardEscalated        guard_escalated      403  (a reviewer must decide: runs only)
├── RunError                      run_error            500
│   ├── JournalDivergence         journal_divergence   500
│   ├── LeaseLost                 lease_lost           409
│   ├── RunCancelled              run_cancelled        409
│   ├── DeadlineExceeded          deadline_exceeded    504
│   ├── StepFailed                step_failed          500
│   ├── RunNotFound               run_not_found        404
│   ├── ProgramNotFound           program_not_found    404
│   ├── ApprovalNotFound          approval_not_found   404
│   ├── ApprovalConflict          approval_decided     409
│   ├── AgentLimitExceeded        agent_limit          422
│   │   └── BreakerTripped        breaker_tripped      422  (a run's circuit breaker fired)
│   ├── AgentPaused               agent_paused         409  (the agent's breaker paused it)
│   └── ReplayUnpinnedTool        replay_unpinned_tool 409  (what-if: an unrecorded tool call)
├── ContextError                  context_error        400  (prompts, context, retrieval, memory)
│   ├── PromptError               prompt_invalid       400  (a prompt file: names file and line)
│   ├── PromptNotFound            prompt_not_found     404
│   ├── PromptInputError          prompt_input_invalid 400  (missing or invalid inputs)
│   ├── ContextOverflow           context_overflow     400  (section minimums over the window)
│   ├── DocumentError             document_unreadable  400  (unreadable, huge or unsupported)
│   ├── IndexNotFound             index_not_found      404
│   ├── EmbedderMismatch          embedder_mismatch    409  (an index queried with another embedder)
│   └── MemoryDenied              memory_denied        403  (no grant on a memory space)
├── ToolError                     tool_error           500
│   ├── ToolNameConflict          tool_name_conflict   500
│   └── ToolServerUnavailable     tool_server_unavailable 502
└── ModelError                    (by error class)     502
    ├── RateLimited               rate_limit           429
    │   └── ModelBusy             model_queue_full     429  (a local model's queue is full)
    │   └── LimitExceeded         rate_limit_exceeded  429  (one of our rpm/tpm limits; Retry-After)
    ├── BudgetExceeded            budget_exceeded      429  (a hard budget cannot cover the call)
    ├── CallKilled                killed               403  (a kill switch stops the caller)
    ├── BudgetUnavailable         budget_unavailable   503  (budget backend down: fail closed)
    ├── ModelOverloaded           model_overloaded     503  (not started within its deadline)
    ├── UpstreamServerError       server_error         502
    ├── ModelTimeout              timeout              504
    ├── UpstreamConnectionError   connection           502
    ├── ContextWindowExceeded     context_window       400
    ├── ContentFiltered           content_filter       400
    ├── UpstreamBadRequest        bad_request          400
    ├── UpstreamAuthError         auth                 502
    ├── MalformedResponse         malformed_response   502
    └── CircuitOpen               circuit_open         503
```

``ModelError.error_class`` is what failover, retry and the circuit breaker decide on.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AgentLimitExceeded",
    "AgentPaused",
    "ApprovalConflict",
    "ApprovalNotFound",
    "AuthenticationFailed",
    "BreakerTripped",
    "BudgetExceeded",
    "BudgetUnavailable",
    "CallKilled",
    "CircuitOpen",
    "ClientDisconnected",
    "ConfigError",
    "ContentFiltered",
    "ContextError",
    "ContextOverflow",
    "ContextWindowExceeded",
    "DeadlineExceeded",
    "DocumentError",
    "ElevenFactorError",
    "EmbedderMismatch",
    "GuardBlocked",
    "GuardEscalated",
    "IndexNotFound",
    "JournalDivergence",
    "LeaseLost",
    "LimitExceeded",
    "MalformedResponse",
    "MemoryDenied",
    "MigrationRequired",
    "ModelBusy",
    "ModelError",
    "ModelNotFound",
    "ModelOverloaded",
    "ModelTimeout",
    "NotFound",
    "PermissionDenied",
    "ProgramNotFound",
    "PromptError",
    "PromptInputError",
    "PromptNotFound",
    "RateLimited",
    "ReleaseMismatch",
    "ReleaseNotFound",
    "ReplayUnpinnedTool",
    "RequestError",
    "RunCancelled",
    "RunError",
    "RunNotFound",
    "StepFailed",
    "StoreError",
    "ToolError",
    "ToolNameConflict",
    "ToolServerUnavailable",
    "UpstreamAuthError",
    "UpstreamBadRequest",
    "UpstreamConnectionError",
    "UpstreamServerError",
]


class ElevenFactorError(Exception):
    """Base of every error the library raises on purpose."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A machine-readable form: code, message, hint and details."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = self.details
        return out


class ConfigError(ElevenFactorError):
    """The configuration is invalid: names the source, the key and what was expected."""

    code = "config_invalid"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if source:
            where = source
        if key:
            where = f"{where}: {key}" if where else key
        full = f"{where}: {message}" if where else message
        if expected:
            full = f"{full}; expected {expected}"
        super().__init__(full, hint=hint)
        self.source = source
        self.key = key
        self.expected = expected


class StoreError(ElevenFactorError):
    """The store (or a backing service beside it, like Redis) could not be opened or used:
    503, the request can be retried once it is back."""

    code = "store_error"
    http_status = 503


class MigrationRequired(StoreError):
    """The database has migrations that are not applied yet."""

    code = "store_unmigrated"
    http_status = 503


class RequestError(ElevenFactorError):
    """A caller sent something we cannot accept."""

    code = "invalid_request"
    http_status = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        if code:
            self.code = code  # type: ignore[misc]  # instance override of a class default
        if status:
            self.http_status = status  # type: ignore[misc]
        self.param = param


class ModelNotFound(RequestError):
    """The requested model or route is not configured."""

    code = "model_not_found"
    http_status = 404


class AuthenticationFailed(RequestError):
    """No API key, or one that is unknown or revoked."""

    code = "invalid_api_key"
    http_status = 401


class PermissionDenied(RequestError):
    """The caller is authenticated but its roles do not allow the action."""

    code = "permission_denied"
    http_status = 403


class NotFound(RequestError):
    """An administrative object (user, key, team) does not exist in the caller's organisation."""

    code = "not_found"
    http_status = 404


class ReleaseNotFound(RequestError):
    """No release with that id, id prefix or name."""

    code = "release_not_found"
    http_status = 404


class ReleaseMismatch(RequestError):
    """The files on disk (project file, prompts, policies, agents, code) are not those of the
    release that applies; the message names what differs."""

    code = "release_mismatch"
    http_status = 409


class ClientDisconnected(RequestError):
    """The client closed the connection before the answer was ready; the work was stopped."""

    code = "client_disconnected"
    http_status = 499


class GuardBlocked(RequestError):
    """A guard policy blocked the content; ``details`` names the stage, the policy (``id@version``)
    and the rule — never the content that matched."""

    code = "guard_blocked"
    http_status = 400


class GuardEscalated(GuardBlocked):
    """A guard policy's rule escalated the content to a reviewer group; a plain gateway call
    cannot wait for a decision (a durable run can), so it is refused."""

    code = "guard_escalated"
    http_status = 403


class ContextError(RequestError):
    """Something about prompts, the context window, retrieval or memory cannot be done as
    asked; subclasses name what."""

    code = "context_error"


class PromptError(ContextError):
    """A prompt file is invalid (front matter, template syntax, an undeclared variable); the
    message names the file and the line."""

    code = "prompt_invalid"


class PromptNotFound(ContextError):
    """No prompt (or no version or label of it) by that name."""

    code = "prompt_not_found"
    http_status = 404


class PromptInputError(ContextError):
    """A prompt was rendered with missing or invalid inputs."""

    code = "prompt_input_invalid"


class ContextOverflow(ContextError):
    """The context sections' minimums do not fit the model's window minus the reserved output."""

    code = "context_overflow"


class DocumentError(ContextError):
    """A document cannot be ingested: unreadable, too large, or of an unsupported format."""

    code = "document_unreadable"


class IndexNotFound(ContextError):
    """No retrieval index by that name (or not visible to the caller)."""

    code = "index_not_found"
    http_status = 404


class EmbedderMismatch(ContextError):
    """An index (or a cache, or memory) is queried with an embedder other than the one that
    built it."""

    code = "embedder_mismatch"
    http_status = 409


class MemoryDenied(ContextError):
    """The caller (an agent or a user) has no grant for that memory space or scope."""

    code = "memory_denied"
    http_status = 403


class ModelError(ElevenFactorError):
    """A model call failed. ``error_class`` drives retry, failover and the circuit breaker."""

    code = "model_error"
    http_status = 502
    error_class: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        deployment: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.deployment = deployment
        self.status = status
        self.retry_after = retry_after


class RateLimited(ModelError):
    """The provider said 429; ``retry_after`` holds its Retry-After, in seconds, if given."""

    code = "rate_limit_exceeded"
    http_status = 429
    error_class = "rate_limit"
    retryable = True


class ModelBusy(RateLimited):
    """A local model's admission queue is full; ``retry_after`` estimates when a place frees."""

    code = "model_queue_full"


class LimitExceeded(RateLimited):
    """One of our own rate limits (requests or tokens per minute) cannot admit the call before
    its deadline; ``retry_after`` says when it could. ``details`` name the limit."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after)
        self.details = details


class BudgetExceeded(ModelError):
    """A hard budget cannot cover the call's worst-case cost: never retried, never failed over.

    ``details`` hold ``budget`` (its scope, e.g. ``user:alice``), ``budget_id``, ``limit``,
    ``spent``, ``reserved``, ``requested`` (the reservation asked for), ``window`` and
    ``resets_at`` (epoch seconds, None for ``total``/``run``).
    """

    code = "budget_exceeded"
    http_status = 429
    error_class = "budget"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint=hint)
        self.details = details


class CallKilled(ModelError):
    """A kill switch covers the caller (key, user, team, agent or run): no new calls."""

    code = "killed"
    http_status = 403
    error_class = "killed"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint=hint)
        self.details = details


class BudgetUnavailable(ModelError):
    """The budget backend (Redis or the store) cannot be reached: the call is refused rather
    than let through unaccounted (fail closed)."""

    code = "budget_unavailable"
    http_status = 503
    error_class = "budget"


class ModelOverloaded(ModelError):
    """A local model could not start the request within its admission deadline.

    Its error class is ``rate_limit``: the model is busy, not broken, so failover moves on to
    the next deployment and ``retry_after`` (from the observed service times) says when to retry.
    """

    code = "model_overloaded"
    http_status = 503
    error_class = "rate_limit"
    retryable = True


class UpstreamServerError(ModelError):
    """The provider answered 5xx."""

    code = "upstream_error"
    error_class = "server_error"
    retryable = True


class ModelTimeout(ModelError):
    """The provider did not answer within the deadline."""

    code = "upstream_timeout"
    http_status = 504
    error_class = "timeout"
    retryable = True


class UpstreamConnectionError(ModelError):
    """The connection failed or was reset."""

    code = "upstream_connection_error"
    error_class = "connection"
    retryable = True


class ContextWindowExceeded(ModelError):
    """The input does not fit the model's context window."""

    code = "context_length_exceeded"
    http_status = 400
    error_class = "context_window"


class ContentFiltered(ModelError):
    """The provider refused the content."""

    code = "content_filter"
    http_status = 400
    error_class = "content_filter"


class UpstreamBadRequest(ModelError):
    """The provider rejected the request as malformed; retrying elsewhere will not help."""

    code = "upstream_bad_request"
    http_status = 400
    error_class = "bad_request"


class UpstreamAuthError(ModelError):
    """The provider rejected our credentials: a deployment misconfiguration."""

    code = "upstream_auth_error"
    error_class = "auth"


class MalformedResponse(ModelError):
    """The provider answered something we could not parse."""

    code = "upstream_malformed_response"
    error_class = "malformed_response"
    retryable = True


class CircuitOpen(ModelError):
    """The deployment's circuit breaker is open; calls are refused until the cooldown ends."""

    code = "circuit_open"
    http_status = 503
    error_class = "circuit_open"


class RunError(ElevenFactorError):
    """A durable run could not proceed."""

    code = "run_error"


class JournalDivergence(RunError):
    """The program asked for a different step than its journal recorded at that position."""

    code = "journal_divergence"


class LeaseLost(RunError):
    """Another worker took this run over (its lease expired); this worker must stop."""

    code = "lease_lost"
    http_status = 409


class RunCancelled(RunError):
    """The run was cancelled."""

    code = "run_cancelled"
    http_status = 409


class DeadlineExceeded(RunError):
    """The run or step passed its deadline."""

    code = "deadline_exceeded"
    http_status = 504


class StepFailed(RunError):
    """A journaled step failed; raised identically when the step is replayed.

    ``error_type`` and ``error_code`` name the original exception, so a program can branch on
    them and behave the same on replay.
    """

    code = "step_failed"

    def __init__(self, message: str, *, step: str, error_type: str, error_code: str | None = None):
        super().__init__(message)
        self.step = step
        self.error_type = error_type
        self.error_code = error_code


class RunNotFound(RunError):
    """No run with that id."""

    code = "run_not_found"
    http_status = 404


class ProgramNotFound(RunError):
    """No agent or workflow registered under that name."""

    code = "program_not_found"
    http_status = 404


class ApprovalNotFound(RunError):
    """No approval with that id."""

    code = "approval_not_found"
    http_status = 404


class ApprovalConflict(RunError):
    """The approval was already decided (or expired)."""

    code = "approval_decided"
    http_status = 409


class AgentLimitExceeded(RunError):
    """An agent run hit one of its limits (steps, tool calls, wall time)."""

    code = "agent_limit"
    http_status = 422


class BreakerTripped(AgentLimitExceeded):
    """A run's circuit breaker fired (steps, tool calls, cost, wall time, the same tool call or
    the same error repeated); ``details`` names the breaker and the policy."""

    code = "breaker_tripped"


class AgentPaused(RunError):
    """The agent's circuit breaker tripped (too many failed or blocked runs in its window):
    new runs are refused until an admin resets it (``elevenfactor agents reset NAME``)."""

    code = "agent_paused"
    http_status = 409


class ReplayUnpinnedTool(RunError):
    """A what-if replay called a tool with arguments its recording never used (tools are pinned
    to the recording unless the replay runs them live: ``--live-tools``)."""

    code = "replay_unpinned_tool"
    http_status = 409


class ToolError(ElevenFactorError):
    """A toolset cannot work. (A tool's own failure is not an exception: it is a ``ToolResult``
    with ``is_error=True`` that goes back to the model.)"""

    code = "tool_error"


class ToolNameConflict(ToolError):
    """Two toolsets combined into one offer a tool under the same name."""

    code = "tool_name_conflict"


class ToolServerUnavailable(ToolError):
    """A tool server (e.g. an MCP server) could not be started or reached, or its connection
    broke again right after a reconnect."""

    code = "tool_server_unavailable"
    http_status = 502
