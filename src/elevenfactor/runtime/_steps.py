"""The primitives of a step: ``Park`` (free the worker until a time or an event), ``StepRetry``
(retry a failing step before its failure is journaled), ``step_key`` (a key unique to a step,
for idempotent effects) and how a step's error is journaled."""

from __future__ import annotations

import contextvars
import random as _random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import ElevenFactorError

__all__ = ["STEP_KEY", "Park", "StepRetry", "error_json", "step_key"]

STEP_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("step_key", default=None)
"""Set while a step's function runs (see ``step_key``)."""


def step_key() -> str | None:
    """Inside a step: a key unique to this step of this run (``<run id>:<step id>``), the same
    on every re-execution. Side-effecting tools use it to make their effect idempotent."""
    return STEP_KEY.get()


class Park(BaseException):
    """Stop executing and free the worker until ``wake_at``, or until an outside event when
    ``waiting``. ``wake_when`` holds SQL conditions (with parameters); if any holds as the run
    parks, it is queued at once, so an event that arrived meanwhile is not missed. A
    BaseException so ``except Exception`` in a program cannot swallow it."""

    def __init__(
        self,
        *,
        wake_at: float | None,
        waiting: bool,
        reason: str,
        wake_when: Sequence[tuple[str, tuple[Any, ...]]] = (),
    ) -> None:
        super().__init__(reason)
        self.wake_at = wake_at
        self.waiting = waiting
        self.reason = reason
        self.wake_when = list(wake_when)


@dataclass(frozen=True, slots=True)
class StepRetry:
    """Retry a failing step before its failure is journaled."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    on: tuple[type[BaseException], ...] = (Exception,)

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry ``attempt`` (1-based)."""
        return _random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


def error_json(exc: BaseException) -> str:
    """A step's failure as journaled: its exception type, message and error code."""
    code = exc.code if isinstance(exc, ElevenFactorError) else None
    return orjson.dumps({"type": type(exc).__name__, "message": str(exc), "code": code}).decode()
