"""``POST /v1/chat/completions``: the OpenAI-compatible gateway endpoint.

With a session (the ``x-elevenfactor-session`` header or the body's ``session_id``) clients send
only the new turn: the gateway reads the stored conversation before the call and appends the
turn and the answer after it (``elevenfactor.server._chat_session`` says how). The call's guard
policies check the request before admission and the answer before the client sees it
(``elevenfactor.server._chat_guard`` says how).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from elevenfactor.errors import (
    ElevenFactorError,
    GuardBlocked,
    ModelError,
    RequestError,
)
from elevenfactor.governance import Principal, check_id, check_tags, price_book
from elevenfactor.models import Call, Model, StreamChunk, Usage, limit_wait
from elevenfactor.models._admission import client_timeout
from elevenfactor.models._cache import StreamAssembler
from elevenfactor.models.openai_format import ChunkEncoder, usage_to_openai
from elevenfactor.observe import CallRecord, _tracing, call_cost, new_id
from elevenfactor.observe._trace_genai import content_events
from elevenfactor.server._admit import Admission, admit_call, wait_of
from elevenfactor.server._auth import authenticate, header, owner_fields, read_body
from elevenfactor.server._cache_headers import cache_headers
from elevenfactor.server._chat_guard import CallGuard, guard_request
from elevenfactor.server._chat_guard_output import (
    GuardedStream,
    answer_bytes,
    screen_answer,
)
from elevenfactor.server._chat_session import (
    DROPPED_HEADER,
    ChatSession,
    open_session,
    session_id_of,
)
from elevenfactor.server._disconnect import client_timeout_from, runs_locally, unless_disconnected
from elevenfactor.server._errors import error_body, error_response
from elevenfactor.server._responses import JSONBytes
from elevenfactor.server._sse import SSEResponse
from elevenfactor.server._state import Gateway
from elevenfactor.server._wire import ChatRequest, parse_chat_request

__all__ = ["chat_completions", "trace_id_from"]

logger = logging.getLogger("elevenfactor.server")
_TAGS = "x-elevenfactor-tags"  # free tags: routing rules, cost reports, budgets
_SESSION = "x-elevenfactor-session"  # the session a call belongs to (echoed in the answer)


def trace_id_from(scope: Scope) -> str:
    """The W3C trace id from a valid ``traceparent`` header, else a new random one (with
    tracing on: the trace id of the request's server span, which continues that header)."""
    sp = scope.get("otel_span")
    if sp is not None:
        return f"{sp.get_span_context().trace_id:032x}"
    for name, value in scope["headers"]:
        if name == b"traceparent":
            parts = value.decode("latin-1").split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
                try:
                    int(parts[1], 16)
                except ValueError:
                    break
                return str(parts[1])
            break
    return new_id()


def _sse(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def chat_completions(request: Request) -> Response | JSONBytes | SSEResponse:
    """Parse, authenticate, route, call, log and record one chat completion."""
    gw: Gateway = request.scope["gateway"]
    trace_id: str = request.scope.get("trace_id") or trace_id_from(request.scope)
    headers: dict[str, str] = {"x-trace-id": trace_id}
    call = Call(trace_id=trace_id)
    principal: Principal | None = None
    raw = b""
    parsed: ChatRequest | None = None
    guard: CallGuard | None = None
    try:
        principal = await authenticate(request, gw)
        call.org_id, call.user_id = principal.org_id, principal.user_id  # the cache's scope
        raw = await read_body(request, gw.settings.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(
                f"the body is not valid JSON: {exc}", code="invalid_json", param="body"
            ) from None
        tags_header = header(request.scope, b"x-elevenfactor-tags") or ""  # a,b
        tags = list(check_tags([t.strip() for t in tags_header.split(",") if t.strip()], _TAGS))
        session = header(request.scope, b"x-elevenfactor-session")
        if session is not None:
            headers[_SESSION] = check_id(session, _SESSION)
        parsed = parse_chat_request(body, tags)
        sent = parsed.messages  # the request's own messages (a session adds its history)
        chat_session = await _open_session(gw, principal, parsed, headers)
        assert gw.registry is not None
        resolved = gw.registry.resolve(
            parsed.model, tags, messages=parsed.messages, settings=parsed.settings
        )
        call.route = resolved.route
        headers["x-elevenfactor-route"] = resolved.route
        guard, raw = await guard_request(
            gw, call, principal, parsed, sent, body, raw, chat_session, headers
        )
        wait = wait_of(gw, request.scope)
        resolved, adm = await admit_call(gw, call, principal, resolved, parsed, tags, wait, headers)
        waiting = limit_wait.set(wait)
        try:
            if runs_locally(resolved.model):  # a scarce local instance: stop if the client leaves
                budget = client_timeout.set(client_timeout_from(request.scope))
                try:
                    if parsed.stream:
                        return await _stream(
                            gw, parsed, resolved.model, call, headers, principal, raw, adm,
                            request.receive, chat_session, guard,
                        )  # fmt: skip
                    response = await unless_disconnected(
                        request.receive,
                        resolved.model.request(parsed.messages, parsed.settings, call),
                    )
                finally:
                    client_timeout.reset(budget)
            elif parsed.stream:
                return await _stream(
                    gw, parsed, resolved.model, call, headers, principal, raw, adm, None,
                    chat_session, guard,
                )  # fmt: skip
            else:
                response = await resolved.model.request(parsed.messages, parsed.settings, call)
        except asyncio.CancelledError:
            killed = adm.killed()
            await adm.settle(None)
            if killed is None:
                raise
            raise killed from None
        except BaseException:
            await adm.settle(None)
            raise
        finally:
            limit_wait.reset(waiting)
    except ElevenFactorError as exc:
        if parsed is not None and principal is not None and isinstance(exc, ModelError):
            _record_error(gw, call, parsed, exc, principal, raw, headers.get(_SESSION), guard)
        return error_response(exc, headers)
    final, prices = call.final, price_book(gw.project)
    deployment = final.deployment if final else None
    cost = call_cost(prices, deployment, response.usage, cache_hit=call.cache_hit)
    await adm.settle(cost, response.usage.total_tokens)
    answer = await screen_answer(guard, response)  # the provider was paid whatever it says
    out, stored = answer_bytes(
        answer,
        completion_id=f"chatcmpl-{trace_id[:24]}",
        created=int(time.time()),
        model=response.model or parsed.model,
    )
    assert gw.recorder is not None
    gw.recorder.record(
        CallRecord.from_call(
            call,
            response.usage,
            prices,
            stream=False,
            status="ok" if answer.blocked is None else "blocked",
            error_class=None if answer.blocked is None else answer.blocked.code,
            **owner_fields(principal),
            session_id=headers.get(_SESSION),
            tags=parsed.settings.tags,
            request=raw,
            response=stored,
            guard=None if guard is None else guard.record(),
        )
    )
    if _tracing.CONTENT:  # the prompt and completion as stored, on the request's span
        content_events(raw, stored)
    headers.update(cache_headers(call))
    if guard is not None:
        headers.update(guard.headers())
    if answer.blocked is not None:
        return error_response(answer.blocked, headers)
    if chat_session is not None:
        assert gw.store is not None
        try:
            await chat_session.save(gw.store, answer.sent)
        except ElevenFactorError as exc:  # session_conflict: another request appended first
            return error_response(exc, headers)
    return JSONBytes(out, headers)


async def _open_session(
    gw: Gateway, principal: Principal, parsed: ChatRequest, headers: dict[str, str]
) -> ChatSession | None:
    """The session the request continues, its history put into ``parsed.messages``; None
    without one."""
    session_id = session_id_of(headers.get(_SESSION), parsed)
    if session_id is None:
        return None
    headers[_SESSION] = session_id
    assert gw.store is not None
    found = await open_session(gw.store, gw.project, principal, session_id, parsed)
    headers[DROPPED_HEADER] = str(found.dropped)
    return found


def _record_error(
    gw: Gateway,
    call: Call,
    parsed: ChatRequest,
    exc: ModelError,
    principal: Principal,
    raw: bytes,
    session: str | None = None,
    guard: CallGuard | None = None,
) -> None:
    assert gw.recorder is not None
    gw.recorder.record(
        CallRecord.from_call(
            call,
            stream=parsed.stream,
            status="error",
            error_class=exc.error_class,
            tokens_in=0,
            tokens_out=0,
            **owner_fields(principal),
            session_id=session,
            tags=parsed.settings.tags,
            request=raw,
            guard=None if guard is None else guard.record(),
        )
    )


async def _stream(
    gw: Gateway,
    parsed: ChatRequest,
    model: Model,
    call: Call,
    headers: dict[str, str],
    principal: Principal,
    raw: bytes,
    adm: Admission,
    receive: Receive | None = None,
    session: ChatSession | None = None,
    guard: CallGuard | None = None,
) -> SSEResponse:
    """Fetch the first chunk before answering, so an early failure gets a real status code.

    With ``receive`` (local models) a client that leaves before the first chunk stops the work.
    With a ``session`` the complete answer is appended to it before ``[DONE]`` (a conflict is
    an error event instead). With a ``guard``, the answer goes through its output rules
    (``GuardedStream``); a refusal is an error event and ends the stream.
    """
    stream = aiter(model.request_stream(parsed.messages, parsed.settings, call))
    shield = GuardedStream(guard) if guard is not None and GuardedStream.needed(guard) else None
    if shield is not None:
        stream = aiter(shield.chunks(stream))
    try:
        if receive is None:
            first: StreamChunk | None = await anext(stream)
        else:
            first = await unless_disconnected(receive, anext(stream))
    except StopAsyncIteration:
        first = None
    headers.update(cache_headers(call))
    completion_id = f"chatcmpl-{call.trace_id[:24]}"
    created = int(time.time())
    name = parsed.model
    encode = ChunkEncoder(completion_id=completion_id, created=created, model=name).sse

    async def write(send: Send) -> None:
        usage = Usage()
        text: list[str] = []
        assembled = StreamAssembler()
        status, error_class = "ok", None
        try:
            chunk = first
            if chunk is not None:  # the first one always goes out: it carries the role
                assembled.add(chunk)
                if chunk.usage is not None:
                    usage = chunk.usage
                text.append(chunk.text)
                await send(
                    {"type": "http.response.body", "body": encode(chunk, True), "more_body": True}
                )
                async for chunk in stream:
                    assembled.add(chunk)
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.text or chunk.tool_calls or chunk.finish_reason:
                        text.append(chunk.text)
                        await send(
                            {
                                "type": "http.response.body",
                                "body": encode(chunk, False),
                                "more_body": True,
                            }
                        )
            tail = b"data: [DONE]\n\n"
            if parsed.include_usage:
                tail = (
                    _sse(
                        {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": name,
                            "choices": [],
                            "usage": usage_to_openai(usage),
                        }
                    )
                    + tail
                )
            if session is not None:
                assert gw.store is not None
                await session.save(gw.store, (shield.sent if shield else assembled).response())
            await send({"type": "http.response.body", "body": tail, "more_body": True})
        except ModelError as exc:
            status, error_class = "error", exc.error_class
            await send(
                {"type": "http.response.body", "body": _sse(error_body(exc)), "more_body": True}
            )
        except GuardBlocked as exc:  # an output rule stopped the answer
            status, error_class = "blocked", exc.code
            await send(
                {"type": "http.response.body", "body": _sse(error_body(exc)),
                 "more_body": True}
            )  # fmt: skip
        except ElevenFactorError as exc:  # the session's append: the answer itself was complete
            await send(
                {"type": "http.response.body", "body": _sse(error_body(exc)), "more_body": True}
            )
        except asyncio.CancelledError:
            killed = adm.killed()
            if killed is None:
                status, error_class = "error", "cancelled"
                raise
            status, error_class = "error", killed.error_class
            await send(
                {"type": "http.response.body", "body": _sse(error_body(killed)), "more_body": True}
            )
        except BaseException:
            status, error_class = "error", "cancelled"
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            final, prices = call.final, price_book(gw.project)
            deployment = final.deployment if final else None
            cost = call_cost(prices, deployment, usage, cache_hit=call.cache_hit)
            await adm.settle(cost, usage.total_tokens)
            assert gw.recorder is not None
            gw.recorder.record(
                CallRecord.from_call(
                    call,
                    usage,
                    prices,
                    stream=True,
                    status=status,
                    error_class=error_class,
                    **owner_fields(principal),
                    session_id=headers.get(_SESSION),
                    tags=parsed.settings.tags,
                    request=raw,
                    response=shield.stored_text() if shield else "".join(text).encode(),
                    guard=None if guard is None else guard.record(),
                )
            )
            if _tracing.CONTENT:
                content_events(raw, shield.stored_text() if shield else "".join(text).encode())

    async def abandon() -> None:  # the response never started: nothing was streamed
        await stream.aclose()  # type: ignore[attr-defined]
        await adm.settle(None)

    return SSEResponse(write, headers, abandon)
