"""The run's journal steps as the page shows them: when each ran, what it cost, what went in
and what came out.

The journal records when a step *ended* (its event's time) and what it returned, not when it
began or what it was called with (a durable program recomputes a step's arguments from the
steps before it). So:

- **start**: a model step's call record says when the call began (its end minus its latency);
  an approval's row says when the wait began; any other step began when the step before it
  ended (or when the run was created, for the first) — steps of parallel branches overlap in
  truth, one after the other here;
- **input**: what the store holds for it — a model step's request (the call record's payload,
  when ``record_payloads`` is on), a tool step's arguments (from the model's tool call it
  answers), an approval's request, a child run's input; other steps have none of their own;
- **cost**: a model step's committed cost (its ``budget.commit`` step), else its call record's;
  tokens from its response.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.context import Manifest
from elevenfactor.runtime import Event
from elevenfactor.server.ui._run_data import ApprovalRow, CallRow, RunData, decoded
from elevenfactor.server.ui._run_redact import Shown, shown, shown_state, shown_value

__all__ = ["StepView", "bar_class", "build_steps", "waiting_steps"]

_BAR = {
    "model": "model",
    "tool": "tool",
    "tools": "tool",
    "guard": "guard",
    "grounding": "guard",
    "approval": "approval",
    "subrun": "child",
    "sleep": "timer",
    "budget": "budget",
    "limits": "budget",
}
_SLACK = 1e-6  # seconds: float noise (a call record is written before its step's event)


def bar_class(kind: str) -> str:
    """The waterfall bar's classes for a step kind (``bar`` plus the kind's colour)."""
    return f"bar {_BAR.get(kind, 'other')}"


@dataclass
class StepView:
    """One journal step on the page."""

    n: int
    step_id: str
    kind: str
    name: str
    status: str
    start: float
    end: float
    cost: float | None
    tokens: int | None
    model: str | None
    input: Shown
    input_label: str
    output: Shown
    error: Shown
    manifest: Manifest | None = None
    link: str | None = None
    """A page this step leads to (a child run, an approval)."""
    link_label: str = ""

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return max(0.0, self.end - self.start)

    @property
    def bar(self) -> str:
        """The waterfall bar's classes."""
        return bar_class(self.kind) + (
            f" {self.status}" if self.status in ("failed", "waiting") else ""
        )


def _match_calls(events: list[Event], calls: list[CallRow], t0: float) -> dict[int, CallRow]:
    """Each model step's call record: the last one written between the end of the step before
    it and its own event (``n`` -> call)."""
    out: dict[int, CallRow] = {}
    j, prev = 0, t0
    for ev in events:
        if ev.kind == "model":
            found = None
            while j < len(calls) and calls[j].created_at <= ev.created_at + _SLACK:
                if calls[j].created_at >= prev - _SLACK:
                    found = calls[j]
                j += 1
            if found is not None:
                out[ev.n] = found
        prev = ev.created_at
    return out


def _tool_args(output: Any) -> list[tuple[str, Any]]:
    """The tool calls a model step's response asks for: ``(name, arguments)``."""
    if not isinstance(output, dict):
        return []
    message = output.get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    out: list[tuple[str, Any]] = []
    for c in calls or []:
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            raw = c.get("arguments")
            try:
                args = orjson.loads(raw) if isinstance(raw, str) else raw
            except orjson.JSONDecodeError:
                args = raw
            out.append((c["name"], args))
    return out


def _tokens(output: Any, call: CallRow | None) -> int | None:
    usage = output.get("usage") if isinstance(output, dict) else None
    if isinstance(usage, dict):
        tin, tout = usage.get("input_tokens"), usage.get("output_tokens")
        if isinstance(tin, int) and isinstance(tout, int):
            return tin + tout
    return None if call is None else call.tokens_in + call.tokens_out


def _committed(events: list[Event], i: int, data: RunData) -> float | None:
    """The cost the ``budget.commit`` right after model step ``events[i]`` charged."""
    for ev in events[i + 1 : i + 3]:
        if ev.kind == "budget" and ev.name == "budget.commit":
            out = decoded(data, ev.output_hash)
            cost = out.get("cost") if isinstance(out, dict) else None
            return float(cost) if isinstance(cost, int | float) else None
        if ev.kind == "model":
            break
    return None


def _payload(data: RunData, subject: str, location: str, digest: str | None) -> Shown:
    marker = data.erased.get((subject, location))
    erased = marker is not None and marker[0] == digest
    return shown(digest, data.contents.get(digest or ""), data.has_guards, erased)


def _manifest(output: Shown, value: Any) -> Manifest | None:
    if output.state != "present" or not isinstance(value, dict):
        return None
    try:
        return Manifest.model_validate(value)
    except ValueError:
        return None


_AS_ASKED = "Arguments (as the model asked)"
_AS_EDITED = "Arguments (as the reviewer edited them)"


@dataclass(frozen=True, slots=True)
class _Asked:
    """Arguments a tool step ran with, and where they came from."""

    value: Any
    label: str


def _apply_edit(asked: dict[str, deque[_Asked]], step: str, decision: Any) -> None:
    """An approval that edited a tool call's arguments: the tool step that follows ran with
    the reviewer's arguments, not the model's."""
    if not (step.startswith("tool:") and isinstance(decision, dict)):
        return
    if decision.get("action") != "edit" or not isinstance(decision.get("arguments"), dict):
        return
    queue = asked.get(step[len("tool:") :])
    if queue:
        queue[0] = _Asked(decision["arguments"], _AS_EDITED)


def build_steps(data: RunData) -> list[StepView]:
    """The shown journal steps, in the order they were written."""
    info = data.info
    calls = _match_calls(data.events, data.calls, info.created_at)
    approvals = {a.step_id: a for a in data.approvals}
    children = {c.id: c for c in data.children}
    asked: dict[str, deque[_Asked]] = {}
    redacting = data.has_guards
    views: list[StepView] = []
    prev = info.created_at if data.first == 0 else None
    for i, ev in enumerate(data.events):
        start = ev.created_at if prev is None else prev
        value = decoded(data, ev.output_hash)
        output = _payload(data, info.id, f"event:{ev.n}", ev.output_hash)
        error = shown_state("none")
        if ev.error:
            try:
                error = shown_value(orjson.loads(ev.error), redacting)
            except orjson.JSONDecodeError:
                error = shown_value(ev.error, redacting)
        view = StepView(
            ev.n, ev.step_id, ev.kind, ev.name, ev.status, start, ev.created_at, None, None,
            None, shown_state("none"), "", output, error,
        )  # fmt: skip
        if ev.kind == "model":
            call = calls.get(ev.n)
            if call is not None:
                view.start = max(
                    min(call.created_at - call.latency_ms / 1000, ev.created_at), start
                )
                view.input = _payload(data, call.id, "request", call.request_hash)
                view.input_label = f"Request ({call.route})"
                view.model = call.deployment
            view.cost = _committed(data.events, i, data)
            if view.cost is None and call is not None:
                view.cost = call.cost
            view.tokens = _tokens(value, call)
            for name, args in _tool_args(value):
                asked.setdefault(name, deque()).append(_Asked(args, _AS_ASKED))
        elif ev.kind == "tool" and ev.name.startswith("tool:"):
            queue = asked.get(ev.name[len("tool:") :])
            if queue:
                args = queue.popleft()
                view.input = shown_value(args.value, redacting)
                view.input_label = args.label
        elif ev.kind == "approval" and ev.step_id in approvals:
            a = approvals[ev.step_id]
            view.start = min(max(a.created_at, start), ev.created_at)
            view.input = _payload(data, a.id, "request", a.request_hash)
            view.input_label = "Approval request"
            view.link, view.link_label = f"/ui/approvals/{a.id}", f"approval {a.status}"
            _apply_edit(asked, ev.name, value)
        elif ev.kind == "subrun":
            child = children.get(f"{info.id}.{ev.step_id}")
            if child is not None:
                view.input = _payload(data, child.id, "input", child.input_hash)
                view.input_label = "Child run input"
                view.link, view.link_label = f"/ui/runs/{child.id}", f"child run {child.status}"
        elif ev.kind == "context":
            view.manifest = _manifest(output, value)
        views.append(view)
        prev = ev.created_at
    return views


def waiting_steps(pending: list[ApprovalRow], now: float) -> list[StepView]:
    """The approvals a run waits on as the waterfall's last rows (not steps yet: the journal
    records an approval when it is decided), each leading to its review page."""
    none = shown_state("none")
    return [
        StepView(
            -1 - i,
            a.step_id,
            "approval",
            a.name,
            "waiting",
            a.created_at,
            max(now, a.created_at),
            None,
            None,
            None,
            none,
            "",
            none,
            none,
            link=f"/ui/approvals/{a.id}",
            link_label="review",
        )
        for i, a in enumerate(pending)
    ]
