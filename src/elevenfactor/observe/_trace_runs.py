"""Trace context of durable runs: what a run stores at submission, and the spans of its
executions and steps.

A run stores a trace id and, when submitted inside a span, that span's ``traceparent``
(``runs.trace_id``, ``runs.traceparent``; migration m024). Every execution of the run — the
first, one after a park or an approval, a retry, a takeover by another worker after a crash —
is a span ``invoke_agent {agent}`` (or ``run {program}``) in that trace, a child of the stored
context (a root with the stored trace id when there is none): one trace holds the whole run.
Steps executed live are child spans (``step {kind} {name}``; a tool call ``execute_tool
{tool}``); replayed steps get none (their span went out with the execution that ran them).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from elevenfactor.observe import _tracing as tracing
from elevenfactor.observe._ids import new_id

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["execution_span", "run_trace", "step_span"]

_VALID = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def run_trace(traceparent: str | None = None) -> tuple[str, str | None]:
    """``(trace_id, traceparent)`` to store with a new run: the current span's when tracing is
    on and there is one, else a valid ``traceparent`` given (an incoming request's header),
    else a new trace id and no parent."""
    current = tracing.traceparent()
    if current is not None:
        return current[3:35], current
    if traceparent is not None:
        found = _VALID.match(traceparent.strip().lower())
        if found is not None and found.group(1) != "0" * 32 and found.group(2) != "0" * 16:
            return found.group(1), found.group(0)
    return new_id(), None


def execution_span(
    run_id: str,
    program: str,
    attempt: int,
    trace_id: str | None,
    traceparent: str | None,
    *,
    agent: bool,
) -> Span | None:
    """Start the span of one execution of a run (not current): a child of the run's stored
    context, or a root in its trace; None when tracing is off."""
    if tracing.TRACER is None:
        return None
    attrs: dict[str, Any] = {
        "elevenfactor.run.id": run_id,
        "elevenfactor.run.program": program,
        "elevenfactor.run.attempt": attempt,
    }
    if agent:
        attrs["gen_ai.operation.name"] = "invoke_agent"
        attrs["gen_ai.agent.name"] = program
    name = f"invoke_agent {program}" if agent else f"run {program}"
    parent = tracing.extract(traceparent)
    return tracing.start_span(
        name, "internal", attrs, parent=parent, trace_id=None if parent else trace_id
    )


def step_span(kind: str, name: str, step_id: str) -> Span | None:
    """Start the span of a step executed live (not current); None when tracing is off."""
    if tracing.TRACER is None:
        return None
    attrs: dict[str, Any] = {
        "elevenfactor.step.id": step_id,
        "elevenfactor.step.kind": kind,
        "elevenfactor.step.name": name,
    }
    if kind == "tool":
        tool = name.removeprefix("tool:")
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = tool
        return tracing.start_span(f"execute_tool {tool}", "internal", attrs)
    return tracing.start_span(f"step {kind} {name}", "internal", attrs)
