"""Sessions on ``POST /v1/chat/completions``: the conversation lives in the store, keyed by the
session id, so any gateway process continues any session.

A request names its session with the ``x-elevenfactor-session`` header or the body's
``session_id`` (``extra_body={"session_id": ...}`` with the ``openai`` client; when both are
sent they must agree) and sends **only its new turn**. The model gets the request's system
messages first, then the session's stored messages (the newest ``HISTORY_LIMIT``), then the
request's other messages. When the model's context window is known, the oldest turns of the
history are dropped, whole (a tool call with its results; the kept history starts with a user
message), until the prompt fits the window minus the output it reserves; the answer's
``x-elevenfactor-session-dropped`` header says how many stored messages were left out.

When the answer is complete (finish reason ``stop``, ``length`` or ``tool_calls``; a stream once
its last chunk is in, before ``[DONE]``) the request's non-system messages and the answer are
appended in one transaction; a failed, cut or filtered call appends nothing. The session is
created on first use, owned by the caller; another user's is 404 ``session_not_found`` before
any model runs. The append expects the session as it was read: when another request appended to
it meanwhile, nothing is written and the answer is 409 ``session_conflict`` (in a stream: an
error event instead of ``[DONE]``); the call was made and is billed; send the turn again.
Sessions are shared with runs (``POST /v1/runs`` with ``session_id``): the messages have one
format, so a conversation started by either continues in the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from elevenfactor.config import ProjectConfig
from elevenfactor.context import budget_for, counter_for
from elevenfactor.context._ctx_history import count_units, units_of
from elevenfactor.errors import ConfigError, ModelNotFound, RequestError
from elevenfactor.governance import Principal, check_id
from elevenfactor.memory import append_messages, load_or_new
from elevenfactor.models import (
    Message,
    ModelSettings,
    Response,
    SystemMessage,
    UserMessage,
)
from elevenfactor.server._wire import ChatRequest
from elevenfactor.store import Store

__all__ = [
    "DROPPED_HEADER",
    "HISTORY_LIMIT",
    "SESSION_HEADER",
    "ChatSession",
    "fit_history",
    "open_session",
    "session_id_of",
]

SESSION_HEADER = "x-elevenfactor-session"
DROPPED_HEADER = "x-elevenfactor-session-dropped"
HISTORY_LIMIT = 2000
"""The most recent messages of a session a chat completion reads (as a run does)."""
_COMPLETE = frozenset({"stop", "length", "tool_calls"})


def session_id_of(header_value: str | None, parsed: ChatRequest) -> str | None:
    """The session a request continues: the header's (checked), else the body's; a 400
    ``session_mismatch`` when both are given and differ."""
    if header_value is None:
        return parsed.session_id
    check_id(header_value, SESSION_HEADER)
    if parsed.session_id is not None and parsed.session_id != header_value:
        raise RequestError(
            f"the {SESSION_HEADER} header ({header_value!r}) and the body's session_id"
            f" ({parsed.session_id!r}) name different sessions",
            code="session_mismatch",
            param="session_id",
            hint="send one of them",
        )
    return header_value


@dataclass(slots=True)
class ChatSession:
    """A session a chat completion continues: what it read, and the turn it will append."""

    id: str
    principal: Principal
    seq: int
    """The session's message count when it was read: the append expects it unchanged."""
    turn: list[Message]
    """The request's non-system messages, appended before the answer."""
    dropped: int = 0
    """Stored messages left out of the model's input (too old for the window)."""

    async def save(self, store: Store, response: Response) -> bool:
        """Append the turn and the answer in one transaction, if the answer is complete
        (whether it was). A 409 ``session_conflict`` when the session changed meanwhile."""
        if response.finish_reason not in _COMPLETE:
            return False
        messages = [*self.turn, response.message]
        await append_messages(store, self.principal, self.id, messages, expect_seq=self.seq)
        return True


async def open_session(
    store: Store,
    project: ProjectConfig,
    principal: Principal,
    session_id: str,
    parsed: ChatRequest,
) -> ChatSession:
    """Read the session (another user's: ``NotFound``) and put its history, fitted to the
    window of ``parsed.model``, between the request's system messages and its new ones
    (``parsed.messages`` is replaced)."""
    found = await load_or_new(store, principal, session_id, HISTORY_LIMIT)
    head = [m for m in parsed.messages if isinstance(m, SystemMessage)]
    turn: list[Message] = [m for m in parsed.messages if not isinstance(m, SystemMessage)]
    kept = fit_history(project, parsed.model, parsed.settings, head, found.messages, turn)
    parsed.messages = [*head, *kept, *turn]
    return ChatSession(session_id, principal, found.info.messages, turn,
                       found.info.messages - len(kept))  # fmt: skip


def fit_history(
    project: ProjectConfig,
    model: str,
    settings: ModelSettings,
    head: Sequence[Message],
    history: Sequence[Message],
    turn: Sequence[Message],
) -> list[Message]:
    """The newest part of ``history`` that fits between ``head`` and ``turn`` in the window of
    ``model`` (a route or deployment) minus the output it reserves (``max_tokens``, else the
    deployments' output cap), counted by the model's tokenizer or the calibrated estimate
    (``elevenfactor.context.counter_for``). Whole units go, oldest first: a tool call stays
    with its results, and a cut history starts with a user message. All of it when the window
    is unknown (or the model is: resolving it reports that)."""
    if not history:
        return []
    try:
        budget = budget_for(project, model, max_tokens=settings.max_tokens)
        counter = counter_for(project, model)
    except (ConfigError, ModelNotFound):
        return list(history)
    room = budget.budget - counter.count_messages([*head, *turn], settings.tools)
    units = count_units(counter, units_of(history))
    total = sum(u.tokens for u in units)
    if total <= room:
        return list(history)
    start = 0
    while start < len(units) and total > room:
        total -= units[start].tokens
        start += 1
    while start < len(units) and not isinstance(units[start].messages[0], UserMessage):
        start += 1  # a conversation resumes with what the user said
    return [m for u in units[start:] for m in u.messages]
