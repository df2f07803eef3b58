"""``CircuitBreaker``: stop calling a deployment that keeps failing, for a cooldown."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence

from elevenfactor.config import BreakerConfig
from elevenfactor.errors import CircuitOpen, ModelError
from elevenfactor.models._messages import Message, ModelSettings, Response, StreamChunk
from elevenfactor.models._protocol import Attempt, Call, Model

__all__ = ["CircuitBreaker"]


def breaker_state(deployment: str, state: str) -> None:
    """Report a state change to the metrics (imported here: ``observe`` imports ``models``)."""
    from elevenfactor.observe._metrics import breaker_state as report

    report(deployment, state)


#: Failures that say the deployment is unhealthy (not that the request was bad).
TRIPPING = frozenset(
    {"rate_limit", "server_error", "timeout", "connection", "malformed_response", "auth"}
)


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive tripping failures -> half-open after
    ``cooldown`` seconds, when a single trial call decides between closed and open again."""

    def __init__(
        self, inner: Model, config: BreakerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.config = config
        self._clock = clock
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def name(self) -> str:
        """The inner model's name."""
        return self.inner.name

    @property
    def context_window(self) -> int | None:
        """The inner model's context window."""
        return self.inner.context_window

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at >= self.config.cooldown:
            return "half_open"
        return "open"

    def _admit(self, call: Call) -> bool:
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            breaker_state(self.name, "half_open")
            return True
        assert self.opened_at is not None
        remaining = self.config.cooldown - (self._clock() - self.opened_at)
        call.attempts.append(Attempt(self.name, "", "", "circuit_open", 0.0))
        raise CircuitOpen(
            f"{self.name}: circuit open after {self.consecutive_failures} failures; "
            f"retrying in {max(remaining, 0):.1f}s",
            deployment=self.name,
            retry_after=max(remaining, 0.0),
        )

    def _success(self, trial: bool) -> None:
        self.consecutive_failures = 0
        if self.opened_at is not None:
            breaker_state(self.name, "closed")
        self.opened_at = None
        if trial:
            self._trial_running = False

    def _failure(self, exc: ModelError, trial: bool) -> None:
        if exc.error_class not in TRIPPING:
            # The deployment answered (a bad request, a filtered prompt...): it is healthy, so
            # the run of consecutive failures ends, and a half-open trial closes the circuit.
            self._success(trial)
            return
        if trial:
            self._trial_running = False
        self.consecutive_failures += 1
        if trial or self.consecutive_failures >= self.config.failures:
            self.opened_at = self._clock()
            breaker_state(self.name, "open")

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Call unless open."""
        trial = self._admit(call)
        try:
            response = await self.inner.request(messages, settings, call)
        except ModelError as exc:
            self._failure(exc, trial)
            raise
        except BaseException:
            if trial:
                self._trial_running = False
            raise
        self._success(trial)
        return response

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream unless open; a stream that fails at any point counts as a failure."""
        trial = self._admit(call)
        stream = aiter(self.inner.request_stream(messages, settings, call))
        try:
            async for chunk in stream:
                yield chunk
        except ModelError as exc:
            self._failure(exc, trial)
            raise
        except BaseException:
            if trial:
                self._trial_running = False
            raise
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        self._success(trial)
