"""Factor 9: observability — JSON logs and per-call records."""

from elevenfactor.observe._calls import CallRecord, CallRecorder, call_cost
from elevenfactor.observe._ids import new_id
from elevenfactor.observe._logs import JsonFormatter, configure_logging, log_event

__all__ = [
    "CallRecord",
    "CallRecorder",
    "JsonFormatter",
    "call_cost",
    "configure_logging",
    "log_event",
    "new_id",
]
