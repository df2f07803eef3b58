"""The output side of a guarded chat completion: the answer through the ``output`` and
``tool_call`` rules, placeholders restored for the client, and guard refusals as errors.

``screen_answer`` screens a whole answer. ``GuardedStream`` sits between a stream's upstream
chunks and the client: the text goes through a ``StreamGuard`` (the ``output`` rules over each
chunk plus a bounded look-behind: the word in progress and at least 64 characters are held back
until they have been scanned with more text, so a value split across chunks is still seen
whole), then a ``StreamRestorer`` puts
back the placeholders the request's redactions issued. A tool call is held until it is complete
(the next call starts, or the answer finishes), checked at ``tool_call`` and sent whole in one
delta. Held-back text goes out with the finishing chunk.

When a rule blocks or escalates a stream, it raises ``GuardBlocked``: the caller sends one error
event and nothing after it (no ``[DONE]``), the way it ends a stream on an upstream error; the
text already sent stays sent, the blocked text never goes out. A block on the very first chunk
still lets an empty first chunk out (it carries the role), so the response has started and the
refusal is an event, like every other refusal of a stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from elevenfactor.errors import GuardBlocked
from elevenfactor.governance._guard_redact import StreamRestorer
from elevenfactor.governance._guard_stream import StreamGuard, StreamStep
from elevenfactor.governance._guard_types import Verdict
from elevenfactor.models import Response, StreamChunk, ToolCallDelta
from elevenfactor.models._assembler import StreamAssembler
from elevenfactor.models.openai_format import response_to_openai
from elevenfactor.server._chat_guard import STOP, CallGuard

__all__ = [
    "Answer",
    "GuardedStream",
    "answer_bytes",
    "screen_answer",
]


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-streamed answer after the output guards: what the ``client`` gets, what the
    session keeps (``sent``: as the model wrote it, output redactions applied, placeholders
    not restored), what the call record stores (None: nothing), and the refusal if a rule
    stopped it."""

    client: Response
    sent: Response
    stored: Response | None
    blocked: GuardBlocked | None = None


async def screen_answer(guard: CallGuard | None, response: Response) -> Answer:
    """``response`` through the ``output`` and ``tool_call`` rules, then the placeholders
    restored for the client."""
    if guard is None:
        return Answer(response, response, response)
    message = response.message
    text, calls = message.content, list(message.tool_calls)
    try:
        if text and guard.pipeline.has("output"):
            verdict = await guard.check("output", text)
            guard.note("output", verdict)
            if verdict.action in STOP:
                raise guard.refusal("output", verdict)
            if verdict.action == "redact" and verdict.content is not None:
                text = verdict.content
        if guard.pipeline.has("tool_call"):
            for j, tc in enumerate(calls):
                new = await guard.check_call(tc.name, tc.arguments, f"tool_calls[{j}]")
                calls[j] = tc.model_copy(update={"arguments": new})
    except GuardBlocked as exc:
        return Answer(response, response, None if guard.hides_originals else response, exc)
    sent = _with(response, text, [tc.arguments for tc in calls])
    client = _with(
        sent, guard.restore(text or ""), [guard.restore_args(a.arguments) for a in calls]
    )
    if guard.hides_originals:
        return Answer(client, sent, sent)
    original = _with(
        response,
        guard.restore(message.content or ""),
        [guard.restore_args(tc.arguments) for tc in message.tool_calls],
    )
    return Answer(client, sent, client if original == client else original)


def answer_bytes(
    answer: Answer, *, completion_id: str, created: int, model: str
) -> tuple[bytes, bytes | None]:
    """The chat-completion body the client gets, and the one the call record stores."""

    def encode(response: Response) -> bytes:
        body = response_to_openai(response, completion_id=completion_id, created=created,
                                  model=model)  # fmt: skip
        return orjson.dumps(body)

    out = encode(answer.client)
    if answer.stored is None:
        return out, None
    return out, out if answer.stored is answer.client else encode(answer.stored)


def _with(response: Response, text: str | None, arguments: list[str]) -> Response:
    message = response.message
    tool_calls = [
        tc.model_copy(update={"arguments": args})
        for tc, args in zip(message.tool_calls, arguments, strict=True)
    ]
    content = text if message.content else message.content  # None stays None
    new = message.model_copy(update={"content": content, "tool_calls": tool_calls})
    return response.model_copy(update={"message": new})


class GuardedStream:
    """One streamed answer through a call's output guards (see the module docstring).

    ``chunks(upstream)`` yields what the client gets. ``sent`` assembles the answer as the
    model wrote it with the output redactions applied and placeholders not restored (what a
    session keeps); ``stored_text()`` is the text the call record stores."""

    def __init__(self, guard: CallGuard) -> None:
        self._guard = guard
        pipeline = guard.pipeline
        self._text = (
            StreamGuard(pipeline, stage="output", ctx=guard.ctx, placeholders=guard.placeholders)
            if pipeline.has("output")
            else None
        )
        self._restorer = StreamRestorer(guard.placeholders) if guard.restores else None
        self._hold_calls = pipeline.has("tool_call") or guard.restores
        self._pending: dict[int, tuple[str | None, str | None, list[str]]] = {}
        self._finished = False
        self.sent = StreamAssembler()
        self._raw: list[str] = []

    @staticmethod
    def needed(guard: CallGuard) -> bool:
        """Whether a stream under ``guard`` needs one: output or tool-call rules, or
        placeholders to restore."""
        pipeline = guard.pipeline
        return pipeline.has("output") or pipeline.has("tool_call") or guard.restores

    async def chunks(self, upstream: AsyncIterator[StreamChunk]) -> AsyncIterator[StreamChunk]:
        """The client's chunks; ``GuardBlocked`` when a rule stops the answer."""
        first = True
        try:
            async for chunk in upstream:
                try:
                    out = await self._chunk(chunk, chunk.finish_reason is not None)
                except GuardBlocked:
                    if first:  # the response starts first: the refusal follows as an event
                        yield StreamChunk()
                    raise
                first = False
                yield out
            if not self._finished or self._pending:  # ended without a finish reason
                yield await self._chunk(StreamChunk(), True)
        finally:
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()

    def stored_text(self) -> bytes:
        """The answer's text for the call record: the model's text with the output redactions
        applied and placeholders not restored when originals may not be kept, else the model's
        text with the user's values restored."""
        if self._guard.hides_originals:
            return "".join(self.sent.text).encode()
        return self._guard.restore("".join(self._raw)).encode()

    async def _chunk(self, chunk: StreamChunk, final: bool) -> StreamChunk:
        self._raw.append(chunk.text)
        emit = chunk.text
        if self._text is not None and chunk.text:
            emit = self._step(self._text.feed(chunk.text))
        calls = await self._calls(chunk.tool_calls, final)
        if final and not self._finished:
            self._finished = True
            if self._text is not None:
                emit += self._step(await self._text.finish())
            if not self._guard.ran("output") and self._text is not None:
                self._guard.note("output", Verdict("allow", extra={"fired": [], "elapsed_us": 0}))
        sent = chunk.model_copy(update={"text": emit, "tool_calls": calls})
        self.sent.add(sent)
        text = emit
        if self._restorer is not None:
            text = self._restorer.feed(emit) + (self._restorer.flush() if final else "")
        restored = [
            d.model_copy(update={"arguments": self._guard.restore_args(d.arguments)}) for d in calls
        ]
        return sent.model_copy(update={"text": text, "tool_calls": restored})

    def _step(self, step: StreamStep) -> str:
        if step.verdict is not None:
            self._guard.note("output", step.verdict)
            if step.verdict.action in STOP:
                raise self._guard.refusal("output", step.verdict)
        return step.emit

    async def _calls(self, deltas: list[ToolCallDelta], final: bool) -> list[ToolCallDelta]:
        """The tool calls complete after these deltas, checked and whole (the deltas as they
        are when calls need neither checks nor restoring)."""
        if not self._hold_calls:
            return deltas
        done: list[ToolCallDelta] = []
        for delta in deltas:
            if delta.index not in self._pending:  # a new call: the ones before it are complete
                for index in sorted(i for i in self._pending if i < delta.index):
                    done.append(await self._complete(index))
                self._pending[delta.index] = (None, None, [])
            call_id, name, parts = self._pending[delta.index]
            parts.append(delta.arguments)
            self._pending[delta.index] = (call_id or delta.id, name or delta.name, parts)
        if final:
            for index in sorted(self._pending):
                done.append(await self._complete(index))
        return done

    async def _complete(self, index: int) -> ToolCallDelta:
        call_id, name, parts = self._pending.pop(index)
        arguments = "".join(parts)
        if self._guard.pipeline.has("tool_call"):
            arguments = await self._guard.check_call(name or "", arguments, f"tool_calls[{index}]")
        return ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments)
