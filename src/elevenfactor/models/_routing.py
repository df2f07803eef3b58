"""Cost-aware routing: rules on a request's size and tools, and escalation to a stronger route.

A route's ``rules`` send a request elsewhere by its tags, its estimated prompt size and whether
it offers tools (``rule_matches``). A route with ``escalate_to`` is wrapped in ``Escalate``: when
the route fails, or its ``validator`` rejects the answer, the stronger route answers instead and
the call's failover path shows it (``cheap:rejected``, ``strong:ok``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import jsonschema
import orjson

from elevenfactor.config import ProjectConfig, RouteRule
from elevenfactor.errors import ConfigError, ModelError
from elevenfactor.models._cache import CacheDefaults, StreamAssembler
from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk
from elevenfactor.models._protocol import Attempt, Call, Model
from elevenfactor.models._ratelimit import estimate_tokens
from elevenfactor.models.providers.testing import response_to_chunks

if TYPE_CHECKING:
    from elevenfactor.models._registry import ModelRegistry

__all__ = [
    "Deferred",
    "Escalate",
    "Validator",
    "cache_defaults",
    "load_validator",
    "model_version",
    "prompt_tokens",
    "rule_matches",
]

Validator = Callable[[Response, Sequence[Message], ModelSettings], bool | Awaitable[bool]]
"""Decides whether an answer stands: ``(response, messages, settings) -> bool`` (or awaitable)."""

logger = logging.getLogger("elevenfactor.routing")

#: Failures that a stronger route cannot fix, or that must stop the call: not escalated.
NOT_ESCALATED = frozenset({"budget", "killed"})


def prompt_tokens(messages: Sequence[Message], settings: ModelSettings) -> int:
    """An estimate of the prompt's size for routing: UTF-8 bytes of the messages' text, tool
    calls and tool definitions, divided by 4 (the rate limiter's estimate, without
    ``max_tokens``). Not a tokenizer; close enough to pick a model."""
    return estimate_tokens(messages, settings) - (settings.max_tokens or 0)


def rule_matches(
    rule: RouteRule,
    tags: Sequence[str],
    messages: Sequence[Message] | None,
    settings: ModelSettings | None,
) -> bool:
    """Whether every condition of ``rule`` holds. Content conditions need ``messages`` and
    ``settings``; without them (the caller cannot tell) they do not hold."""
    if rule.tags and not set(rule.tags) <= set(tags):
        return False
    if not rule.by_content:
        return True
    if messages is None or settings is None:
        return False
    if rule.tools is not None and rule.tools != bool(settings.tools):
        return False
    if rule.min_prompt_tokens is None and rule.max_prompt_tokens is None:
        return True
    size = prompt_tokens(messages, settings)
    if rule.min_prompt_tokens is not None and size < rule.min_prompt_tokens:
        return False
    return rule.max_prompt_tokens is None or size <= rule.max_prompt_tokens


# -- validators -------------------------------------------------------------------------------


def _nonempty(response: Response, messages: Sequence[Message], settings: ModelSettings) -> bool:
    message = response.message
    if response.finish_reason == "content_filter":
        return False
    return bool(message.tool_calls) or bool((message.content or "").strip())


def _json(response: Response, messages: Sequence[Message], settings: ModelSettings) -> bool:
    """Tool calls with JSON-object arguments, or content that parses as JSON (and matches the
    request's ``response_format`` JSON schema when it has one)."""
    message = response.message
    try:
        if message.tool_calls:
            return all(isinstance(json.loads(tc.arguments), dict) for tc in message.tool_calls)
        value = json.loads(message.content or "")
    except ValueError:
        return False
    fmt = settings.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema:
        try:
            jsonschema.validate(value, fmt.json_schema)
        except (jsonschema.ValidationError, jsonschema.SchemaError):
            return False
    return True


BUILTIN_VALIDATORS: dict[str, Validator] = {"json": _json, "nonempty": _nonempty}


def load_validator(ref: str, key: str, *, source: str | None = None) -> Validator:
    """A built-in validator (``json``, ``nonempty``) or a callable imported from
    ``package.module:attr``; a ``ConfigError`` naming ``key`` when it cannot be had."""
    if ref in BUILTIN_VALIDATORS:
        return BUILTIN_VALIDATORS[ref]
    module_name, _, attr = ref.partition(":")
    try:
        found: Any = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # the user's module may raise anything while it imports
        raise ConfigError(
            f"cannot load validator {ref!r}: {type(exc).__name__}: {exc}",
            source=source,
            key=key,
            expected="'json', 'nonempty' or 'package.module:attr' naming a callable "
            "(response, messages, settings) -> bool",
        ) from None
    if not callable(found):
        raise ConfigError(f"{ref!r} is not callable", source=source, key=key)
    validator: Validator = found
    return validator


# -- what a route's answers depend on (for the response cache) ---------------------------------


def _deployments(project: ProjectConfig, name: str, seen: set[str]) -> list[str]:
    if name in project.models or name in seen:
        return [name] if name in project.models else []
    seen.add(name)
    conf = project.routes[name]
    out = [*(conf.chain or []), *(t.model for t in conf.weights or [])]
    if conf.escalate_to:
        out.append(conf.escalate_to)
    return sorted({d for member in out for d in _deployments(project, member, seen)})


def model_version(project: ProjectConfig, name: str) -> str:
    """What answers for ``name`` (a route or a model): its deployments' provider, model id and
    params, and the route's validator. A change to any of them is a new cache key."""
    parts: list[Any] = [name, project.routes[name].validator if name in project.routes else None]
    for dep in _deployments(project, name, set()):
        conf = project.models[dep]
        parts.append([dep, conf.provider, conf.model, conf.params])
    return orjson.dumps(parts, option=orjson.OPT_SORT_KEYS).decode()


def cache_defaults(project: ProjectConfig, name: str) -> CacheDefaults:
    """Whether every deployment behind ``name`` samples at temperature 0, or with a seed, when
    a request leaves them unset. A provider's own default temperature is taken as nonzero."""
    params = [project.models[d].params for d in _deployments(project, name, set())]
    return CacheDefaults(
        temperature_zero=bool(params) and all(p.get("temperature") == 0 for p in params),
        seeded=bool(params) and all(p.get("seed") is not None for p in params),
    )


# -- wrappers ---------------------------------------------------------------------------------


class Deferred:
    """A route whose rules look at the request's content, resolved when the request comes
    (for callers that resolve by name and tags only). Sets ``call.route`` to the route that
    answers."""

    def __init__(self, registry: ModelRegistry, route: str, candidates: Sequence[Model]) -> None:
        self.registry = registry
        self.route = route
        self.candidates = list(candidates)  # the route and its rules' targets

    @property
    def name(self) -> str:
        """The route name."""
        return self.route

    @property
    def context_window(self) -> int | None:
        """The route's own context window (its rules may pick another)."""
        return self.candidates[0].context_window

    def _model(self, messages: Sequence[Message], settings: ModelSettings, call: Call) -> Model:
        resolved = self.registry.resolve(
            self.route, settings.tags, messages=messages, settings=settings
        )
        call.route = resolved.route
        return resolved.model

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Resolve by the rules, then answer."""
        return await self._model(messages, settings, call).request(messages, settings, call)

    def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Resolve by the rules, then stream."""
        return self._model(messages, settings, call).request_stream(messages, settings, call)


class Escalate:
    """``primary`` answers; on its failure, or when ``validator`` rejects its answer,
    ``fallback`` answers instead. A rejected answer's attempt is marked ``rejected``.

    With a validator a stream from ``primary`` is held back until it completes (the answer
    must be judged whole), then replayed or replaced. Without one it streams as it comes, and
    escalates only on a failure before the first chunk.
    """

    def __init__(
        self, name: str, primary: Model, fallback: Model, validator: Validator | None = None
    ) -> None:
        self._name = name
        self.inner = primary
        self.fallback = fallback
        self.candidates = [primary, fallback]
        self.validator = validator

    @property
    def name(self) -> str:
        """The route name."""
        return self._name

    @property
    def context_window(self) -> int | None:
        """The primary's context window."""
        return self.inner.context_window

    async def _accepts(
        self, response: Response, messages: Sequence[Message], settings: ModelSettings
    ) -> bool:
        if self.validator is None:
            return True
        try:
            verdict = self.validator(response, messages, settings)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:  # a broken validator escalates; it never fails the call
            logger.warning(
                "validator_failed",
                extra={
                    "event": "validator_failed",
                    "route": self._name,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            return False
        return bool(verdict)

    def _rejected(self, call: Call) -> None:
        final = call.final
        if final is not None and final.outcome in ("ok", "cache_hit"):
            final.outcome = "rejected"
        else:
            call.attempts.append(Attempt(self.inner.name, "", "", "rejected", 0.0))

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Answer from the primary if it succeeds and its answer passes, else the fallback."""
        try:
            response = await self.inner.request(messages, settings, call)
        except ModelError as exc:
            if exc.error_class in NOT_ESCALATED:
                raise
            return await self.fallback.request(messages, settings, call)
        if await self._accepts(response, messages, settings):
            return response
        self._rejected(call)
        return await self.fallback.request(messages, settings, call)

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream from the primary (judged whole with a validator), else from the fallback."""
        stream = aiter(self.inner.request_stream(messages, settings, call))
        try:
            assembler = StreamAssembler()
            first: StreamChunk | None = None
            escalate = False
            try:
                if self.validator is None:
                    first = await anext(stream)
                else:
                    async for chunk in stream:
                        assembler.add(chunk)
            except StopAsyncIteration:
                return
            except ModelError as exc:
                if exc.error_class in NOT_ESCALATED:
                    raise
                escalate = True
            if not escalate and self.validator is not None:
                answer = assembler.response()
                if await self._accepts(answer, messages, settings):
                    for chunk in response_to_chunks(answer):
                        yield chunk
                    return
                self._rejected(call)
                escalate = True
            if escalate:
                async for chunk in self.fallback.request_stream(messages, settings, call):
                    yield chunk
                return
            assert first is not None
            yield first
            async for chunk in stream:
                yield chunk
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
