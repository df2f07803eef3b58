"""JSON logs to stdout, one object per line (twelve-factor XI).

Events on the request path (``log_event``, the call records) take a fast path when the only
handler they would reach is the one ``configure_logging`` installed: the line is built with one
``orjson.dumps`` and written straight to the stream, skipping ``LogRecord`` and the formatter; it
is the same line the formatter would write. Inside an event loop the stream is flushed once per
loop iteration (lines written in the same iteration go out in one write), elsewhere at once.
With any other handler present (a test's log capture, a user's own handler) events go through
``logging`` as usual.

While tracing is on (``elevenfactor.observe._tracing``) every line logged inside a span carries
its ``trace_id`` and ``span_id``; a line that names its own ``trace_id`` (a call record) keeps it.

With ``scrub`` on (``ELEVENFACTOR_LOG_SCRUB``, the default) every string value of a line — the
message, the fields, an exception's text — goes through the guard redactors first
(``elevenfactor.governance._scrub``): secrets and personal data are masked on both paths.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from elevenfactor.observe import _tracing

__all__ = ["JsonFormatter", "JsonHandler", "configure_logging", "emit", "log_event"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


_Scrub = Callable[[Any], Any]
_scrub: _Scrub | None = None  # set by configure_logging(scrub=True)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg and any ``extra`` fields
    (scrubbed when ``configure_logging`` turned scrubbing on)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if _tracing.TRACER is not None:
            _with_ids(out)
        if _scrub is not None:
            out = _scrub(out)
        return orjson.dumps(out, default=str).decode()


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stream handler ``configure_logging`` installs; ``emit`` may write to it directly."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._flush_scheduled = False

    def write_line(self, line: str) -> None:
        """Write one formatted line; flush now, or once at the end of this loop iteration."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()


def _with_ids(out: dict[str, Any]) -> None:
    """Add the current span's ``trace_id`` (unless the line names one) and ``span_id``."""
    ids = _tracing.current_ids()
    if ids is not None:
        out.setdefault("trace_id", ids[0])
        out["span_id"] = ids[1]


def _fast_handler(logger: logging.Logger, level: int) -> JsonHandler | None:
    """The ``JsonHandler`` that is the only handler ``logger`` reaches, with no filters on the
    way, or None."""
    found: JsonHandler | None = None
    lg: logging.Logger | None = logger
    while lg is not None:
        if lg.filters:
            return None
        for h in lg.handlers:
            if found is not None or not isinstance(h, JsonHandler) or h.filters or level < h.level:
                return None
            found = h
        if not lg.propagate:
            break
        lg = lg.parent
    return found


_PID = os.getpid()  # os.getpid() is a system call: kept, and refreshed in forked children
_LEVELS: dict[int, str] = {}  # level number -> its name as written ("info")


def _refresh_pid() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def emit(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """Log ``msg`` with ``fields`` (as ``extra``) at ``level``: the fast path when it applies,
    ``logging`` otherwise. A field named like a standard ``LogRecord`` attribute (``message``,
    ``name``, ...) is written with a trailing ``_`` instead of failing."""
    if not logger.isEnabledFor(level):
        return
    if not _STANDARD.isdisjoint(fields):  # e.g. ``message``: logging would refuse the record
        fields = {(f"{k}_" if k in _STANDARD else k): v for k, v in fields.items()}
    handler = _fast_handler(logger, level)
    if handler is None:
        logger.log(level, msg, extra=fields)
        return
    name = _LEVELS.get(level)
    if name is None:
        name = _LEVELS[level] = logging.getLevelName(level).lower()
    out: dict[str, Any] = {
        "ts": round(time.time(), 6),
        "level": name,
        "logger": logger.name,
        "pid": _PID,
        "msg": msg,
    }
    out.update(fields)
    for key in fields:
        if key[:1] == "_":  # private fields are not written
            for private in [k for k in fields if k[:1] == "_"]:
                del out[private]
            break
    if _tracing.TRACER is not None:
        _with_ids(out)
    if _scrub is not None:
        out = _scrub(out)
    try:
        line = orjson.dumps(out, default=str).decode()
    except TypeError:  # what the formatter would do on a value orjson refuses
        logger.log(level, msg, extra=fields)
        return
    handler.write_line(line + handler.terminator)


def configure_logging(
    level: str = "info", stream: TextIO | None = None, *, scrub: bool = True
) -> None:
    """Send every log record (ours, uvicorn's) to ``stream`` (stdout) as JSON lines, with
    secrets and personal data masked unless ``scrub`` is off."""
    global _scrub
    if scrub:  # imported here: governance sits above observe
        from elevenfactor.governance._scrub import scrub_fields

        _scrub = scrub_fields
    else:
        _scrub = None
    handler = JsonHandler(stream or sys.stdout)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def log_event(logger: logging.Logger, event: str, **fields: Any) -> None:
    """Log a structured event at INFO: ``{"msg": event, ...fields}``."""
    if logger.isEnabledFor(logging.INFO):
        emit(logger, logging.INFO, event, {"event": event, **fields})
