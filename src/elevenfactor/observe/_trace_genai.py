"""GenAI client spans for model calls (the OpenTelemetry GenAI semantic conventions).

One span per attempt at one deployment — a provider's HTTP request, or a local model's
generation — so retries and failovers show as sibling spans under the request or step that made
them: ``chat {model}``, kind client, with ``gen_ai.operation.name``, ``gen_ai.system`` and
``gen_ai.provider.name``, ``gen_ai.request.model`` and the request's sampling parameters; on
the way out ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` /
``gen_ai.usage.output_tokens`` and ``gen_ai.response.finish_reasons``. Prompts and completions
never go on these spans: ``content_events`` adds them where the stored, guard-checked form is
known (the gateway's call record, an agent's model step), and only when allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elevenfactor.observe import _tracing as tracing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from opentelemetry.trace import Span

    from elevenfactor.models import ModelSettings, StreamChunk, Usage

__all__ = ["content_events", "model_done", "model_span", "traced_stream"]


def model_span(
    system: str,
    provider: str,
    deployment: str,
    model_id: str,
    settings: ModelSettings,
    *,
    stream: bool = False,
) -> Span | None:
    """Start the client span of one attempt (not current); None when tracing is off."""
    if tracing.TRACER is None:
        return None
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.request.model": model_id,
        "elevenfactor.provider": provider,
        "elevenfactor.deployment": deployment,
        "elevenfactor.stream": stream,
    }
    if settings.temperature is not None:
        attrs["gen_ai.request.temperature"] = settings.temperature
    if settings.max_tokens is not None:
        attrs["gen_ai.request.max_tokens"] = settings.max_tokens
    if settings.top_p is not None:
        attrs["gen_ai.request.top_p"] = settings.top_p
    if settings.seed is not None:
        attrs["gen_ai.request.seed"] = settings.seed
    return tracing.start_span(f"chat {model_id}", "client", attrs)


def model_done(
    sp: Span | None,
    *,
    model: str | None = None,
    usage: Usage | None = None,
    finish_reason: str | None = None,
    error: BaseException | None = None,
) -> None:
    """Put the answer's model, token usage and finish reason on ``sp`` and end it."""
    if sp is None:
        return
    attrs: dict[str, Any] = {}
    if model:
        attrs["gen_ai.response.model"] = model
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cached_input_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    if finish_reason:
        attrs["gen_ai.response.finish_reasons"] = (finish_reason,)  # a tuple: no GC tracking
    if attrs:
        sp.set_attributes(attrs)
    tracing.end_span(sp, error)


def content_events(request: bytes | None, response: bytes | None, sp: Span | None = None) -> None:
    """The prompt and completion as span events (default: on the current span), in the form
    the call record stores (the guard-redacted one), only when ``tracing.CONTENT`` allows."""
    if tracing.TRACER is None or not tracing.CONTENT:
        return
    if request is not None:
        tracing.event(
            "gen_ai.content.prompt", {"gen_ai.prompt": request.decode("utf-8", "replace")}, sp
        )
    if response is not None:
        tracing.event(
            "gen_ai.content.completion",
            {"gen_ai.completion": response.decode("utf-8", "replace")},
            sp,
        )


async def traced_stream(
    sp: Span | None, chunks: AsyncIterator[StreamChunk]
) -> AsyncIterator[StreamChunk]:
    """``chunks`` passed through, ``sp`` ended with the model, usage and finish reason seen (a
    consumer that stops early is not an error)."""
    model: str | None = None
    usage: Usage | None = None
    finish: str | None = None
    error: BaseException | None = None
    try:
        async for chunk in chunks:
            model = chunk.model or model
            usage = chunk.usage or usage
            finish = chunk.finish_reason or finish
            yield chunk
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
        model_done(sp, model=model, usage=usage, finish_reason=finish, error=error)
