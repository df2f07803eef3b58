"""Deterministic in-library models for unit tests. They never touch the network.

- ``ScriptedModel``: answers from a queue of responses (or raises queued errors).
- ``FunctionModel``: answers with a function of the messages and settings.
- ``TestProvider`` (type ``test`` in the project file): deployments that echo the last user
  message, call the first offered tool, or emit schema-shaped JSON, deterministically.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    UserMessage,
)
from elevenfactor.models._protocol import Call

__all__ = ["FunctionModel", "ScriptedModel", "TestProvider", "echo", "response_to_chunks"]

Handler = Callable[[Sequence[Message], ModelSettings], Response | Awaitable[Response]]


def _count(text: str) -> int:
    return max(1, len(text.split())) if text else 0


def response_to_chunks(response: Response, *, pieces: int = 4) -> list[StreamChunk]:
    """Split a response into stream chunks (text in ``pieces`` parts, tool calls whole)."""
    chunks: list[StreamChunk] = []
    text = response.message.content or ""
    if text:
        size = max(1, -(-len(text) // pieces))
        chunks.extend(StreamChunk(text=text[i : i + size]) for i in range(0, len(text), size))
    for i, tc in enumerate(response.message.tool_calls):
        chunks.append(
            StreamChunk(
                tool_calls=[ToolCallDelta(index=i, id=tc.id, name=tc.name, arguments=tc.arguments)]
            )
        )
    chunks.append(
        StreamChunk(
            finish_reason=response.finish_reason, usage=response.usage, model=response.model or None
        )
    )
    return chunks


class FunctionModel:
    """A model whose answer is ``handler(messages, settings)``.

    ``chunk_delay`` paces streamed chunks (seconds between them), to test slow streams.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "function",
        context_window: int | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        self.handler = handler
        self.chunk_delay = chunk_delay
        self._name = name
        self._context_window = context_window
        self.calls: list[tuple[list[Message], ModelSettings]] = []

    @property
    def name(self) -> str:
        """The name given at construction."""
        return self._name

    @property
    def context_window(self) -> int | None:
        """The context window given at construction."""
        return self._context_window

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Run the handler (with tracing on: in a GenAI client span, as a provider would)."""
        from elevenfactor.observe import _tracing  # here: observe imports models

        if _tracing.TRACER is not None:
            return await self._traced(messages, settings)
        self.calls.append((list(messages), settings))
        result = self.handler(messages, settings)
        if isinstance(result, Response):
            return result
        return await result

    async def _traced(self, messages: Sequence[Message], settings: ModelSettings) -> Response:
        from elevenfactor.observe._trace_genai import model_done, model_span

        sp = model_span("elevenfactor.test", "test", self._name, self._name, settings)
        try:
            self.calls.append((list(messages), settings))
            result = self.handler(messages, settings)
            response = result if isinstance(result, Response) else await result
        except BaseException as exc:
            model_done(sp, error=exc)
            raise
        model_done(
            sp, model=response.model, usage=response.usage, finish_reason=response.finish_reason
        )
        return response

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Run the handler and stream its answer in pieces."""
        for chunk in response_to_chunks(await self.request(messages, settings, call)):
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield chunk


class ScriptedModel(FunctionModel):
    """Answers from a queue; a queued exception is raised instead. Fails loudly when empty."""

    def __init__(
        self,
        script: Iterable[Response | str | BaseException],
        *,
        name: str = "scripted",
        context_window: int | None = None,
    ) -> None:
        self.script: deque[Response | str | BaseException] = deque(script)
        super().__init__(self._next, name=name, context_window=context_window)

    def _next(self, messages: Sequence[Message], settings: ModelSettings) -> Response:
        if not self.script:
            raise AssertionError(f"{self.name}: the script is exhausted")
        item = self.script.popleft()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, str):
            return Response(
                message=AssistantMessage(content=item),
                model=self.name,
                usage=Usage(input_tokens=1, output_tokens=_count(item)),
            )
        return item


def _example(schema: Any) -> Any:
    """A minimal value that satisfies a simple JSON schema (anything else gets ``"x"``: the
    deterministic test model never fails on a schema it does not understand)."""
    if not isinstance(schema, dict):
        return "x"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _example(options[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    props = schema.get("properties")
    if kind == "object" or isinstance(props, dict):
        props = props if isinstance(props, dict) else {}
        required = schema.get("required", list(props))
        if not isinstance(required, list):
            required = list(props)
        return {k: _example(props[k]) for k in required if isinstance(k, str) and k in props}
    return {
        "string": "x",
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
        "null": None,
    }.get(str(kind), "x")


def echo(messages: Sequence[Message], settings: ModelSettings) -> Response:
    """The ``test`` provider's behaviour: tool call, schema-shaped JSON, or an echo."""
    last = next((m for m in reversed(messages) if isinstance(m, UserMessage)), None)
    text = last.content if last else ""
    usage = Usage(
        input_tokens=sum(_count(getattr(m, "content", "") or "") for m in messages), output_tokens=0
    )
    already_called = any(m.role == "tool" for m in messages)
    if settings.tools and settings.tool_choice != "none" and not already_called:
        tool = settings.tools[0]
        if settings.tool_choice not in (None, "auto", "required"):
            tool = next((t for t in settings.tools if t.name == settings.tool_choice), tool)
        args = json.dumps(_example(tool.parameters))
        usage.output_tokens = _count(args)
        return Response(
            message=AssistantMessage(
                tool_calls=[ToolCall(id="call_test_0", name=tool.name, arguments=args)]
            ),
            usage=usage,
            finish_reason="tool_calls",
        )
    rf = settings.response_format
    if rf is not None and rf.type == "json_schema":
        content = json.dumps(_example(rf.json_schema or {}))
    elif rf is not None and rf.type == "json_object":
        content = json.dumps({"echo": text})
    else:
        content = f"echo: {text}"
    finish: Literal["stop", "length"] = "stop"
    words = content.split()
    if settings.max_tokens is not None and len(words) > settings.max_tokens:
        # As a real model: no more output tokens (one per word here) than max_tokens.
        content, finish = " ".join(words[: settings.max_tokens]), "length"
    usage.output_tokens = _count(content)
    return Response(message=AssistantMessage(content=content), usage=usage, finish_reason=finish)


class TestProvider:
    """Provider type ``test``: deterministic echo deployments for tests and demos."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config

    def deployment(self, name: str, config: DeploymentConfig) -> FunctionModel:
        """An echo deployment; provider option ``chunk_delay`` paces streams."""
        delay = float(self.config.options.get("chunk_delay", 0.0))
        return FunctionModel(
            echo, name=name, context_window=config.context_window, chunk_delay=delay
        )

    async def aclose(self) -> None:
        """Nothing to release."""
