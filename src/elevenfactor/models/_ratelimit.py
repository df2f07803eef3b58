"""``DeploymentLimiter``: a deployment's own rate limits and its provider's rate-limit feedback.

It wraps a deployment's stack (outside ``Retry``, so retries never see our own refusals) and:

- takes the deployment's configured limits (``limits.deployments.NAME``) from the ``Limiter``
  before each call, waiting up to the call's deadline, and corrects the tokens after it;
- listens to the provider: ``x-ratelimit-remaining-requests: 0`` pauses the deployment until
  ``x-ratelimit-reset-requests``; ``x-ratelimit-remaining-tokens`` below what a request needs
  holds it until enough has refilled (from ``x-ratelimit-limit-tokens`` and
  ``x-ratelimit-reset-tokens``, else until the reset); a provider 429 pauses it for its
  ``Retry-After``. The feedback is kept per process, and a paused deployment's waiters all
  resume when the pause ends (the provider's next answers say whether to pause again).

A call that cannot start before its deadline is refused at once with ``LimitExceeded``, whose
error class (``rate_limit``) moves a failover chain on to the next deployment. The deadline is
``limit_wait`` if the caller set it, else ``client_timeout`` (``x-elevenfactor-timeout``), else
``limits.max_wait``, from now. A deployment with no limit and no feedback yet goes straight to
the inner model: one attribute test, no coroutine or generator of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any

import orjson

from elevenfactor.config import LimitsConfig
from elevenfactor.errors import LimitExceeded, ModelError
from elevenfactor.models._admission import client_timeout
from elevenfactor.models._limits import (
    Limiter,
    LimitKey,
    Permit,
    limit_exceeded,
    limit_wait,
    limits_for,
)
from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk
from elevenfactor.models._protocol import Attempt, Call, Model
from elevenfactor.models.providers._http import parse_retry_after

__all__ = ["DeploymentLimiter", "estimate_tokens", "limit_deployment", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DEFAULT_PAUSE = 1.0  # a 429 that says nothing about when to come back


def parse_duration(value: str | None) -> float | None:
    """Seconds from an OpenAI reset header (``1s``, ``6m0s``, ``20ms``, ``1h2m``) or a bare
    number of seconds; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


_ANTHROPIC = (
    ("requests-remaining", "x-ratelimit-remaining-requests"),
    ("tokens-remaining", "x-ratelimit-remaining-tokens"),
    ("tokens-limit", "x-ratelimit-limit-tokens"),
)


def from_anthropic(headers: Mapping[str, str], now: float) -> dict[str, str]:
    """Anthropic's rate-limit headers as OpenAI's: counts as they are, the RFC 3339 reset
    times (``anthropic-ratelimit-requests-reset``) as durations from ``now`` (wall clock)."""
    out = {k.lower(): v for k, v in headers.items()}
    for theirs, ours in _ANTHROPIC:
        value = out.get(f"anthropic-ratelimit-{theirs}")
        if value is not None:
            out[ours] = value
    for kind in ("requests", "tokens"):
        raw = out.get(f"anthropic-ratelimit-{kind}-reset")
        if raw is None:
            continue
        try:
            at = dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        out[f"x-ratelimit-reset-{kind}"] = f"{max(0.0, at - now):.3f}s"
    return out


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def estimate_tokens(messages: Sequence[Message], settings: ModelSettings) -> int:
    """The tokens a call may take: its prompt (UTF-8 bytes of the messages and tool definitions
    divided by 4, an estimate) plus ``max_tokens`` when set."""
    size = 0
    for message in messages:
        content = getattr(message, "content", None)
        if content:
            size += len(content.encode())
        for tool_call in getattr(message, "tool_calls", ()):
            size += len(tool_call.arguments.encode()) + len(tool_call.name)
    for tool in settings.tools:
        size += len(orjson.dumps(tool.parameters)) + len(tool.name) + len(tool.description)
    return size // 4 + (settings.max_tokens or 0)


class DeploymentLimiter:
    """Rate limits and provider feedback for one deployment (see the module documentation)."""

    def __init__(
        self,
        inner: Model,
        *,
        keys: Sequence[LimitKey] = (),
        limiter: Limiter | None = None,
        max_wait: float = 10.0,
        provider: str = "",
        model_id: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.keys = tuple(keys)
        self.limiter = limiter if limiter is not None or not self.keys else Limiter()
        self.max_wait = max_wait
        self.provider = provider
        self.model_id = model_id
        self._clock = clock
        self._tpm = any(k.kind == "tpm" for k in self.keys)
        self._gated = bool(self.keys)  # False: straight to the inner model
        self.paused_until = 0.0
        self.tokens_left: int | None = None
        self._tokens_seen = 0.0
        self._tokens_reset = 0.0
        self._tokens_limit: int | None = None

    @property
    def name(self) -> str:
        """The inner model's name."""
        return self.inner.name

    @property
    def context_window(self) -> int | None:
        """The inner model's context window."""
        return self.inner.context_window

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Take one answer of the provider into account: a 429 (its ``Retry-After``) and the
        ``x-ratelimit-*`` headers of any answer (Anthropic's ``anthropic-ratelimit-*`` are read
        as their OpenAI equivalents)."""
        if "anthropic-ratelimit-requests-remaining" in headers:
            headers = from_anthropic(headers, time.time())
        requests = headers.get("x-ratelimit-remaining-requests")
        tokens = headers.get("x-ratelimit-remaining-tokens")
        if requests is None and tokens is None and status != 429:
            return
        now = self._clock()
        if status == 429:
            retry_after = parse_retry_after(headers)
            if retry_after is not None:
                self.pause(now + retry_after)
        if (requests is not None and _int(requests) == 0) or (
            status == 429 and self.paused_until < now
        ):
            reset = parse_duration(headers.get("x-ratelimit-reset-requests"))
            self.pause(now + (reset if reset is not None else _DEFAULT_PAUSE))
        left = _int(tokens)
        if left is not None:
            reset = parse_duration(headers.get("x-ratelimit-reset-tokens"))
            self.tokens_left = left
            self._tokens_seen = now
            self._tokens_reset = reset if reset is not None else _DEFAULT_PAUSE
            self._tokens_limit = _int(headers.get("x-ratelimit-limit-tokens"))
            self._gated = True

    def pause(self, until: float) -> None:
        """Start no call before ``until`` (this limiter's clock)."""
        self.paused_until = max(self.paused_until, until)
        self._gated = True

    def feedback_wait(self, now: float, tokens: int) -> float:
        """Seconds the provider's feedback says to wait before sending ``tokens``."""
        wait = self.paused_until - now
        left = self.tokens_left
        if left is not None:
            since = now - self._tokens_seen
            if since >= self._tokens_reset:
                self.tokens_left = left = None  # fully refilled by now: forget it
            elif tokens > left:
                limit = self._tokens_limit
                if limit is not None and limit > left:
                    refill = (limit - left) / self._tokens_reset  # tokens per second
                    wait = max(wait, (tokens - left) / refill - since)
                else:
                    wait = max(wait, self._tokens_reset - since)
        if wait <= 0 and left is None:
            self.paused_until = 0.0
            self._gated = bool(self.keys)
        return max(wait, 0.0)

    def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Coroutine[Any, Any, Response]:
        """Answer within the limits; straight through when nothing limits the deployment."""
        if self._gated:
            return self._request(messages, settings, call)
        return self.inner.request(messages, settings, call)

    def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream within the limits; the inner stream itself when nothing limits it."""
        if self._gated:
            return self._stream(messages, settings, call)
        return self.inner.request_stream(messages, settings, call)

    async def _request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        permit = await self._admit(messages, settings, call)
        try:
            response = await self.inner.request(messages, settings, call)
        except ModelError as exc:
            await self._failed(exc, permit)
            raise
        await self._settle(permit, response.usage.total_tokens)
        return response

    async def _stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        permit = await self._admit(messages, settings, call)
        used = 0
        stream = aiter(self.inner.request_stream(messages, settings, call))
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    used = chunk.usage.total_tokens
                yield chunk
        except ModelError as exc:
            await self._failed(exc, permit)
            raise
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        await self._settle(permit, used)

    def _policy(self, now: float) -> tuple[float, int]:
        policy = limit_wait.get()
        if policy is not None:
            return policy.deadline, policy.priority
        budget = client_timeout.get()
        return now + (budget if budget is not None else self.max_wait), 0

    async def _admit(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Permit | None:
        now = self._clock()
        deadline, priority = self._policy(now)
        tokens = 0
        if self._tpm or self.tokens_left is not None:
            tokens = estimate_tokens(messages, settings)
        while (wait := self.feedback_wait(now, tokens)) > 0:
            if now + wait > deadline:
                call.attempts.append(
                    Attempt(self.name, self.provider, self.model_id, "rate_limit", 0.0)
                )
                raise limit_exceeded(
                    f"{self.name}: the provider's rate limit is exhausted for the next "
                    f"{wait:.3g} s (its 429 or x-ratelimit headers), past this call's deadline",
                    round(wait, 3),
                    "retry after Retry-After seconds or fail over to another deployment",
                    limit=f"deployment:{self.name}",
                    kind="provider",
                )
            await asyncio.sleep(wait)
            now = self._clock()
        if self.tokens_left is not None:
            self.tokens_left -= tokens  # until the next response says how many are left
        if not self.keys:
            return None
        assert self.limiter is not None
        try:
            return await self.limiter.acquire(
                self.keys, tokens, deadline=deadline, priority=priority
            )
        except LimitExceeded:
            call.attempts.append(Attempt(self.name, self.provider, self.model_id, "rate_limit", 0))
            raise

    async def _failed(self, exc: ModelError, permit: Permit | None) -> None:
        if exc.status != 429:
            return
        retry_after = exc.retry_after
        self.pause(self._clock() + (retry_after if retry_after is not None else _DEFAULT_PAUSE))
        if permit is not None and self.limiter is not None:
            await self.limiter.reconcile(permit, 0)  # the provider took none of the tokens

    async def _settle(self, permit: Permit | None, used: int) -> None:
        if permit is not None and used > 0 and self.limiter is not None:
            await self.limiter.reconcile(permit, used)


def limit_deployment(
    model: Model,
    raw: object,
    *,
    limits: LimitsConfig | None,
    limiter: Limiter | None,
    provider: str = "",
    model_id: str = "",
) -> Model:
    """``model`` (the deployment's stack) wrapped in a ``DeploymentLimiter`` when the deployment
    has limits or its raw provider model reports rate-limit headers (an ``on_headers`` hook),
    else ``model`` itself."""
    name = model.name
    keys = limits_for(limits, deployments=[name]) if limits is not None else []
    feeds = hasattr(raw, "on_headers")
    if not keys and not feeds:
        return model
    wrapper = DeploymentLimiter(
        model,
        keys=keys,
        limiter=limiter,
        max_wait=limits.max_wait if limits is not None else 10.0,
        provider=provider,
        model_id=model_id,
    )
    if feeds:
        raw.on_headers = wrapper.observe  # type: ignore[attr-defined]  # checked just above
    return wrapper
