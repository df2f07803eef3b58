"""Guard policies on ``POST /v1/chat/completions`` (factor 10).

The policies of a call are its API key's, its team's and its route's (``guards:`` in the project
file; none attached: ``guards.default``). With none, nothing here runs. Otherwise:

- **Input**, before admission (a refused call holds no budget and costs nothing): the text of
  the request's user and assistant messages (assistant turns and tool-call arguments a client
  sends back as history) is checked at ``input``, tool results at ``tool_result``. With a
  session only the new turn is checked, and the session keeps the redacted turn: placeholders
  in its history are not restored in later answers (the map lives as long as the request).
  ``redact`` rewrites the messages sent upstream (and the session's stored history): one
  ``PlaceholderMap`` per call, so one value gets one placeholder in every message. ``block``
  is 400 ``guard_blocked``, ``escalate`` 403 ``guard_escalated`` (a plain chat completion
  cannot wait for a reviewer; a durable run would), ``monitor`` is recorded.
- **Output**: the answer's text at ``output``, its tool calls at ``tool_call``; then the
  placeholders the input issued are restored, so the user sees their own values. A blocked
  answer is 400 ``guard_blocked`` (403 ``guard_escalated``): the call was made and is billed.
  Streams go through ``GuardedStream`` (``_chat_guard_output``).

Every verdict goes into the call record's ``guard`` field; the answer carries the most severe
action in ``x-elevenfactor-guard`` and the policies in ``x-elevenfactor-policy``. When a rule
redacted or blocked content and its policy's ``keep_original`` is false, the record stores the
request as sent upstream (blocked spans masked) and the answer before placeholders were restored.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

from elevenfactor.errors import GuardBlocked, GuardEscalated
from elevenfactor.governance import Principal
from elevenfactor.governance._guard_pipeline import GuardPipeline, pipeline_for, rewrite
from elevenfactor.governance._guard_pipeline import verdict_record as _record
from elevenfactor.governance._guard_redact import PlaceholderMap
from elevenfactor.governance._guard_types import ACTIONS, Action, Finding, Stage, Verdict
from elevenfactor.models import (
    AssistantMessage,
    Call,
    Message,
    ToolMessage,
    UserMessage,
)
from elevenfactor.observe import CallRecord, _tracing
from elevenfactor.observe._trace_events import guard_event
from elevenfactor.server._auth import owner_fields
from elevenfactor.server._chat_session import SESSION_HEADER, ChatSession
from elevenfactor.server._state import Gateway
from elevenfactor.server._wire import ChatRequest

__all__ = [
    "GUARD_HEADER",
    "POLICY_HEADER",
    "STOP",
    "CallGuard",
    "guard_request",
]

GUARD_HEADER = "x-elevenfactor-guard"
"""The most severe guard action of the call (``allow`` … ``block``); absent with no policy."""
POLICY_HEADER = "x-elevenfactor-policy"
"""The guard policies the call was checked with, ``id@version``, comma-separated."""
STOP: tuple[Action, ...] = ("escalate", "block")
_THREAD_AT = 64 * 1024  # characters: longer input is checked off the event loop
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9]*_[1-9][0-9]*\]")  # as _guard_redact writes them
_WHAT = {
    "input": "the request",
    "tool_result": "a tool result in the request",
    "output": "the model's answer",
    "tool_call": "a tool call in the model's answer",
}
Where = tuple[int, int | None]
"""A checked text of the request: message ``i``'s content (None) or its tool call ``j``."""


class CallGuard:
    """The guard state of one gateway call: its pipeline, the placeholders its redactions
    issued, and every verdict (for the call record and the response headers)."""

    __slots__ = ("_issued", "_verdicts", "ctx", "pipeline", "placeholders", "rewritten", "worst")

    def __init__(self, pipeline: GuardPipeline, ctx: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.placeholders = PlaceholderMap()
        self.worst: Action = "allow"
        self.rewritten: dict[Where, str] = {}
        """The request's texts as sent upstream (redacted) or stored (a blocked one masked)."""
        self._verdicts: dict[Stage, list[tuple[str | None, Verdict]]] = {}
        self._issued: frozenset[str] = frozenset()

    @property
    def refs(self) -> list[str]:
        """The policies' ``id@version``."""
        return [p.ref for p in self.pipeline.policies]

    def headers(self) -> dict[str, str]:
        """``x-elevenfactor-guard`` and ``x-elevenfactor-policy``."""
        return {GUARD_HEADER: self.worst, POLICY_HEADER: ",".join(self.refs)}

    def note(self, stage: Stage, verdict: Verdict, at: str | None = None) -> None:
        """Keep ``verdict`` for the record (``at``: which text of the stage it is about)."""
        self._verdicts.setdefault(stage, []).append((at, verdict))
        if _tracing.TRACER is not None:
            fired = verdict.extra.get("fired", ())
            guard_event(stage, verdict.action, verdict.policy, verdict.rule, fired)
        if verdict.severity > ACTIONS.index(self.worst):
            self.worst = verdict.action

    def ran(self, stage: Stage) -> bool:
        """Whether a verdict was kept at ``stage``."""
        return stage in self._verdicts

    @property
    def hides_originals(self) -> bool:
        """Whether a rule redacted, blocked or escalated content under a policy whose
        ``keep_original`` is false: then no stored payload may hold the original."""
        keep = {p.ref: p.spec.keep_original for p in self.pipeline.policies}
        return any(
            fired.get("action") in ("redact", *STOP) and not keep.get(fired.get("policy"), False)
            for items in self._verdicts.values()
            for _, verdict in items
            for fired in verdict.extra.get("fired", ())
        )

    def record(self) -> dict[str, Any]:
        """The call record's ``guard``: the policies and one verdict record per stage."""
        return {
            "policies": self.refs,
            "verdicts": [_merged(stage, items) for stage, items in self._verdicts.items()],
        }

    def refusal(self, stage: Stage, verdict: Verdict) -> GuardBlocked:
        """The error for a ``block`` or ``escalate`` verdict: names the stage, policy and rule,
        never the content."""
        what, rule, policy = _WHAT[stage], verdict.rule, verdict.policy
        details: dict[str, Any] = {"stage": stage, "policy": policy, "rule": rule}
        if verdict.action == "escalate":
            group = verdict.extra.get("group")
            who = f"reviewer group {group!r}" if group else "a reviewer"
            exc: GuardBlocked = GuardEscalated(
                f"rule {rule!r} of guard policy {policy} sends {what} to {who} (stage {stage}):"
                " a plain chat completion cannot wait for a reviewer",
                hint=f"the same call made inside a durable run (POST /v1/runs) would wait for"
                f" {who}",
            )
            details["group"] = group
        else:
            exc = GuardBlocked(
                f"rule {rule!r} of guard policy {policy} blocked {what} (stage {stage})",
                hint="the matched content is not echoed; remove it or ask an admin about the"
                " policy attached to your key, team or route",
            )
        exc.details = details
        return exc

    async def check(self, stage: Stage, text: str) -> Verdict:
        """The pipeline's verdict on ``text`` (long input off the event loop)."""
        check = self.pipeline.check(stage, text, self.ctx, self.placeholders)
        if len(text) < _THREAD_AT or stage not in ("input", "tool_result"):
            return await check
        return await asyncio.to_thread(asyncio.run, check)  # input rules are all synchronous

    async def check_request(self, messages: Sequence[Message]) -> None:
        """Check the request's messages (see the module docstring); ``rewritten`` gets the
        redacted texts. ``GuardBlocked`` on ``block`` or ``escalate`` (the blocked text is in
        ``rewritten``, its findings masked)."""
        has_input, has_tools = self.pipeline.has("input"), self.pipeline.has("tool_result")
        for i, m in enumerate(messages):
            if isinstance(m, ToolMessage) and has_tools:
                await self._text("tool_result", m.content, (i, None))
            elif isinstance(m, UserMessage) and has_input:
                await self._text("input", m.content, (i, None))
            elif isinstance(m, AssistantMessage) and has_input:
                if m.content:
                    await self._text("input", m.content, (i, None))
                for j, tc in enumerate(m.tool_calls):
                    await self._text("input", tc.arguments, (i, j))
        self._issued = frozenset(self.placeholders.placeholders)

    async def _text(self, stage: Stage, text: str, where: Where) -> None:
        if not text:
            return
        verdict = await self.check(stage, text)
        i, j = where
        self.note(stage, verdict, f"messages[{i}]" + ("" if j is None else f".tool_calls[{j}]"))
        if verdict.action in STOP:
            self.rewritten[where] = _mask(text, verdict.findings)
            raise self.refusal(stage, verdict)
        if verdict.action == "redact" and verdict.content is not None:
            new = verdict.content
            if j is not None:  # arguments: keep them JSON if the rules allow
                new = await self._arguments(stage, text, new)
            self.rewritten[where] = new

    async def _arguments(self, stage: Stage, text: str, fallback: str) -> str:
        """Tool-call arguments redacted string by string, so they stay JSON; ``fallback``
        (the text rewritten as a whole) when that changes nothing or they are not JSON."""
        try:
            data = json.loads(text)
        except ValueError:
            return fallback
        new = await self._strings(stage, data, 0)
        return fallback if new == data else json.dumps(new, ensure_ascii=False)

    async def _strings(self, stage: Stage, node: Any, depth: int) -> Any:
        if isinstance(node, str):
            verdict = await self.pipeline.check(stage, node, self.ctx, self.placeholders)
            redacted = verdict.action == "redact" and verdict.content is not None
            return verdict.content if redacted else node
        if depth > 64:
            return node
        if isinstance(node, dict):
            return {k: await self._strings(stage, v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [await self._strings(stage, v, depth + 1) for v in node]
        return node

    def restore(self, text: str) -> str:
        """``text`` with the placeholders the request's redactions issued put back (not those a
        rule issued in the answer: they hide what the model wrote)."""
        if not self._issued or "[" not in text:
            return text

        def value(m: re.Match[str]) -> str:
            found = self.placeholders.value_of(m.group()) if m.group() in self._issued else None
            return m.group() if found is None else found

        return _PLACEHOLDER.sub(value, text)

    def restore_args(self, arguments: str) -> str:
        """Tool-call arguments with the request's placeholders restored, kept valid JSON."""
        restored = self.restore(arguments)
        if restored == arguments:
            return arguments
        try:
            data = json.loads(arguments)
        except ValueError:
            return restored
        return json.dumps(self._restored(data), ensure_ascii=False)

    def _restored(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.restore(node)
        if isinstance(node, dict):
            return {self.restore(k): self._restored(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self._restored(v) for v in node]
        return node

    @property
    def restores(self) -> bool:
        """Whether the request's redactions issued placeholders to restore in the answer."""
        return bool(self._issued)

    async def check_call(self, name: str, arguments: str, at: str) -> str:
        """Check a tool call of the answer at ``tool_call``; its arguments as the rules leave
        them (before placeholders are restored). ``GuardBlocked`` on ``block``/``escalate``."""
        args = _json_object(arguments)
        if args is None:
            verdict = await self.check("tool_call", arguments)
        else:
            verdict = await self.pipeline.check_tool_call(name, args, self.ctx, self.placeholders)
        self.note("tool_call", verdict, at)
        if verdict.action in STOP:
            raise self.refusal("tool_call", verdict)
        if verdict.action == "redact" and verdict.content is not None:
            return verdict.content
        return arguments


def _mask(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with every positioned finding masked (``[REDACTED:kind]``)."""
    spans: list[tuple[Finding, Literal["mask"]]] = [
        (f, "mask") for f in findings if 0 <= f.start < f.end <= len(text)
    ]
    return rewrite(text, spans, PlaceholderMap()) if spans else text


async def guard_request(
    gw: Gateway,
    call: Call,
    principal: Principal,
    parsed: ChatRequest,
    sent: Sequence[Message],
    body: Mapping[str, Any],
    raw: bytes,
    session: ChatSession | None,
    headers: dict[str, str],
) -> tuple[CallGuard | None, bytes]:
    """Check the request's messages ``sent`` (as parsed from ``body``; with a session, the new
    turn) with the call's policies, rewrite the messages sent upstream (and the session's
    turn) and return the guard (None: no policy applies, nothing was done) and the request
    bytes the call record stores. A refused call is recorded (status ``blocked``, cost 0) and
    its ``GuardBlocked`` raised."""
    book = gw.policies
    if book is None:
        return None, raw
    route = parsed.model if parsed.model in book.config.routes else call.route
    policies = book.for_call(principal.key_name, principal.team_name, route)
    if not policies:
        return None, raw
    await gw.record_policies(policies)
    ctx: dict[str, Any] = {"route": call.route, "key": principal.key_name}
    guard = CallGuard(pipeline_for(policies, judge=gw.guard_judge), ctx)
    try:
        await guard.check_request(sent)
    except GuardBlocked as exc:
        headers.update(guard.headers())
        assert gw.recorder is not None
        gw.recorder.record(
            CallRecord.from_call(
                call,
                stream=parsed.stream,
                status="blocked",
                error_class=exc.code,
                tokens_in=0,
                tokens_out=0,
                cost=0.0,
                **owner_fields(principal),
                session_id=headers.get(SESSION_HEADER),
                tags=parsed.settings.tags,
                request=_stored_request(guard, body, raw),
                guard=guard.record(),
            )
        )
        raise
    headers.update(guard.headers())
    if guard.rewritten:
        new = {id(m): _rewritten(m, i, guard.rewritten) for i, m in enumerate(sent)}
        parsed.messages = [new.get(id(m), m) for m in parsed.messages]
        if session is not None:
            session.turn = [new.get(id(m), m) for m in session.turn]
    questions = [m.content for m in parsed.messages if isinstance(m, UserMessage)]
    ctx["question"] = questions[-1] if questions else ""
    return guard, _stored_request(guard, body, raw)


def _merged(stage: Stage, items: list[tuple[str | None, Verdict]]) -> dict[str, Any]:
    """One verdict record for a stage checked in several parts (messages, tool calls, stream
    windows): the most severe verdict's action, policy and rule (the earliest on a tie), every
    finding and fired rule marked with ``at`` (which part), the time taken summed."""
    if len(items) == 1 and items[0][0] is None:
        return _record(stage, items[0][1])
    worst = max((v for _, v in items), key=lambda v: v.severity)
    out = _record(stage, worst)
    out["findings"], out["fired"], out["elapsed_us"] = [], [], 0
    for at, verdict in items:
        part = _record(stage, verdict)
        mark = {} if at is None else {"at": at}
        out["findings"] += [{**f, **mark} for f in part["findings"]]
        out["fired"] += [{**f, **mark} for f in part["fired"]]
        out["elapsed_us"] += part["elapsed_us"]
    return out


def _rewritten(message: Message, i: int, texts: Mapping[Where, str]) -> Message:
    update: dict[str, Any] = {}
    if (i, None) in texts:
        update["content"] = texts[(i, None)]
    if isinstance(message, AssistantMessage) and any(k == i and j is not None for k, j in texts):
        update["tool_calls"] = [
            tc.model_copy(update={"arguments": texts.get((i, j), tc.arguments)})
            for j, tc in enumerate(message.tool_calls)
        ]
    return message.model_copy(update=update) if update else message


def _stored_request(guard: CallGuard, body: Mapping[str, Any], raw: bytes) -> bytes:
    """The request the call record stores: as the client sent it, or with the rewritten
    texts when originals may not be kept."""
    if not guard.rewritten or not guard.hides_originals:
        return raw
    messages = [dict(m) if isinstance(m, dict) else m for m in body.get("messages") or []]
    for (i, j), text in guard.rewritten.items():
        if i >= len(messages) or not isinstance(messages[i], dict):
            continue
        if j is None:
            messages[i]["content"] = text
            continue
        calls = [dict(tc) for tc in messages[i].get("tool_calls") or []]
        if j < len(calls) and isinstance(calls[j].get("function"), dict):
            calls[j]["function"] = {**calls[j]["function"], "arguments": text}
            messages[i]["tool_calls"] = calls
    return orjson.dumps({**body, "messages": messages})


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
