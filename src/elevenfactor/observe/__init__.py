"""Factor 9: observability — JSON logs and per-call records."""

from elevenfactor.observe._bill import Bill, Pricer, call_cost
from elevenfactor.observe._calls import CallRecord, CallRecorder
from elevenfactor.observe._ids import new_id
from elevenfactor.observe._logs import JsonFormatter, configure_logging, log_event

__all__ = [
    "Bill",
    "CallRecord",
    "CallRecorder",
    "JsonFormatter",
    "Pricer",
    "call_cost",
    "configure_logging",
    "log_event",
    "new_id",
]
