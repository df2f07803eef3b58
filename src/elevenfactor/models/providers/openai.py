"""OpenAI-compatible chat completions: OpenAI, vLLM, llama.cpp server, Ollama, any base URL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.errors import ContentFiltered, MalformedResponse
from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk, Usage
from elevenfactor.models._protocol import Call
from elevenfactor.models.openai_format import (
    chunk_from_openai,
    message_to_openai,
    response_from_openai,
    settings_to_openai,
)
from elevenfactor.models.providers._http import HeadersHook, HttpClient, loads_or_malformed
from elevenfactor.observe import _tracing as tracing
from elevenfactor.observe._trace_genai import model_done, model_span

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["OpenAIModel", "OpenAIProvider"]


class OpenAIProvider:
    """A provider speaking ``POST {base_url}/chat/completions``."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        headers = dict(config.headers)
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.http = HttpClient(config.base_url or "https://api.openai.com/v1", headers)

    def deployment(self, name: str, config: DeploymentConfig) -> OpenAIModel:
        """A raw model for one deployment."""
        return OpenAIModel(name, self.name, config, self.http)

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self.http.aclose()


class OpenAIModel:
    """One deployment on an OpenAI-compatible endpoint."""

    def __init__(
        self, name: str, provider: str, config: DeploymentConfig, http: HttpClient
    ) -> None:
        self._name = name
        self.provider = provider
        self.model_id = config.model
        self.params = config.params
        self._context_window = config.context_window
        self.http = http
        #: Called with each answer's headers; the deployment's rate limiter sets it.
        self.on_headers: HeadersHook | None = None

    @property
    def name(self) -> str:
        """The deployment name."""
        return self._name

    @property
    def context_window(self) -> int | None:
        """Configured context window."""
        return self._context_window

    def _payload(
        self, messages: Sequence[Message], settings: ModelSettings, stream: bool
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_id,
            "messages": [message_to_openai(m) for m in messages],
            **settings_to_openai(settings.merged_over(self.params)),
        }
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """One chat completion (with tracing on: a GenAI client span for this attempt)."""
        if tracing.TRACER is None:
            return await self._request(messages, settings, None)
        sp = model_span("openai", self.provider, self._name, self.model_id, settings)
        try:
            response = await self._request(messages, settings, tracing.traceparent(sp))
        except BaseException as exc:
            model_done(sp, error=exc)
            raise
        model_done(
            sp, model=response.model, usage=response.usage, finish_reason=response.finish_reason
        )
        return response

    async def _request(
        self, messages: Sequence[Message], settings: ModelSettings, traceparent: str | None
    ) -> Response:
        obj = await self.http.post_json(
            "/chat/completions",
            self._payload(messages, settings, False),
            self._name,
            self.on_headers,
            traceparent,
        )
        try:
            response = response_from_openai(obj)
        except (KeyError, TypeError, ValueError, IndexError):
            raise MalformedResponse(
                f"{self._name}: not a chat completion: {str(obj)[:200]}", deployment=self._name
            ) from None
        if response.finish_reason == "content_filter":
            raise ContentFiltered(
                f"{self._name}: the provider filtered the content", deployment=self._name
            )
        return response

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """A streamed chat completion (with tracing on: a GenAI client span, ended with the
        stream)."""
        sp = None
        if tracing.TRACER is not None:
            sp = model_span(
                "openai", self.provider, self._name, self.model_id, settings, stream=True
            )
        lines = self.http.stream_lines(
            "/chat/completions",
            self._payload(messages, settings, True),
            self._name,
            self.on_headers,
            tracing.traceparent(sp) if sp is not None else None,
        )
        trace = None if sp is None else _StreamTrace()
        error: BaseException | None = None
        try:
            async for data in lines:
                if data == b"[DONE]":
                    return
                try:
                    obj = orjson.loads(data)
                except orjson.JSONDecodeError:
                    obj = None
                if type(obj) is not dict:  # the checks and messages of loads_or_malformed
                    obj = loads_or_malformed(data, self._name, _is_dict)
                if "error" in obj:
                    raise MalformedResponse(
                        f"{self._name}: error in stream: {obj['error']}", deployment=self._name
                    )
                try:
                    chunk = chunk_from_openai(obj)
                except (KeyError, TypeError, ValueError):
                    raise MalformedResponse(
                        f"{self._name}: bad chunk {data[:200]!r}", deployment=self._name
                    ) from None
                if chunk.finish_reason == "content_filter":
                    raise ContentFiltered(
                        f"{self._name}: the provider filtered the content", deployment=self._name
                    )
                if trace is not None:
                    trace.add(chunk)
                yield chunk
        except BaseException as exc:
            error = exc
            raise
        finally:
            # Now, not when the generator is collected: the connection goes back to the pool.
            await lines.aclose()  # type: ignore[attr-defined]
            if trace is not None:
                trace.end(sp, error)


class _StreamTrace:
    """What a stream's span reports when it ends: the model, usage and finish reason seen."""

    __slots__ = ("finish", "model", "usage")

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Usage | None = None
        self.finish: str | None = None

    def add(self, chunk: StreamChunk) -> None:
        self.model = chunk.model or self.model
        self.usage = chunk.usage or self.usage
        self.finish = chunk.finish_reason or self.finish

    def end(self, sp: Span | None, error: BaseException | None) -> None:
        if isinstance(error, GeneratorExit):
            error = None  # the consumer stopped reading: not a failure of the call
        model_done(sp, model=self.model, usage=self.usage, finish_reason=self.finish, error=error)


def _is_dict(obj: object) -> bool:
    return isinstance(obj, dict)
