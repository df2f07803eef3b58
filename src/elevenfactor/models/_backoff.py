"""``Backoff``: how an optional layer (the response caches) survives its backend failing — it
is left alone for ``BACKOFF`` seconds after a failure, and failures are logged at most once
every ``LOG_EVERY`` seconds, so a dead backend neither slows nor floods anything."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["BACKOFF", "COMPLETE", "LOG_EVERY", "Backoff"]

LOG_EVERY = 60.0
"""Seconds between two logs of failures."""
BACKOFF = 1.0
"""Seconds the backend is left alone after a failure."""
COMPLETE = frozenset({"stop", "length", "tool_calls"})
"""Finish reasons of answers complete enough to cache."""


class Backoff:
    """Failures of one backend: ``down`` while backing off; ``failed`` records one and logs
    ``event`` (with ``fields`` and ``hint``) unless it logged within ``LOG_EVERY``."""

    def __init__(self, logger: logging.Logger, event: str, hint: str, **fields: Any) -> None:
        self.logger = logger
        self.event = event
        self.hint = hint
        self.fields = fields
        self._down_until = 0.0
        self._logged_at = -LOG_EVERY

    @property
    def down(self) -> bool:
        """Whether the backend is being left alone."""
        return time.monotonic() < self._down_until

    def failed(self, op: str, exc: Exception) -> None:
        """Back off, and log the failure if none was logged lately."""
        now = time.monotonic()
        self._down_until = now + BACKOFF
        if now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        error = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        self.logger.warning(
            self.event,
            extra={
                "event": self.event,
                **self.fields,
                "op": op,
                "error": error,
                "hint": self.hint,
            },
        )
