"""The run page's content: facts, steps, waterfall, audit status, buttons and the notice, as
the context ``run.html`` (and its live part, ``run_live.html``) renders."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from elevenfactor.context import SectionReport
from elevenfactor.runtime import Agent, verify_one_run
from elevenfactor.server.ui._page import Page
from elevenfactor.server.ui._run_actions import DIVERGENCE_REASONS, NOTICES
from elevenfactor.server.ui._run_data import RunData, load_run, next_retry, retry_root
from elevenfactor.server.ui._run_redact import Shown, shown, shown_value
from elevenfactor.server.ui._run_steps import StepView, build_steps, waiting_steps
from elevenfactor.server.ui._run_waterfall import waterfall

__all__ = ["AuditView", "NoticeView", "left_out", "run_context"]


@dataclass(frozen=True, slots=True)
class AuditView:
    """What verifying the run's chain found."""

    ok: bool
    events: int
    payloads: int
    erased: int
    findings: list[tuple[str, str | None, str]]
    """``(kind, where, message)`` of each finding."""


@dataclass(frozen=True, slots=True)
class NoticeView:
    """The notice after a button: its text and the run it links to, if any."""

    text: str
    link: str | None = None
    link_text: str = ""
    detail: str = ""


async def _audit(page: Page, run_id: str) -> AuditView:
    report = await verify_one_run(page.store, run_id)
    return AuditView(
        report.ok,
        report.events,
        report.payloads,
        report.erased,
        [(f.kind, f.where, f.message) for f in report.findings],
    )


def _notice(q: Any, run_id: str, steps: list[StepView]) -> NoticeView | None:
    if q.notice is None:
        return None
    text = NOTICES[q.notice]
    if q.notice == "retried" and q.run:
        return NoticeView(text, f"/ui/runs/{q.run}", q.run, "(same program, input and tags).")
    if q.notice == "replay_diverged":
        where = ""
        if q.step:
            step = next((s for s in steps if s.step_id == q.step), None)
            where = f" at step {q.step}" + (f" ({step.kind} {step.name})" if step else "")
        why = f": {DIVERGENCE_REASONS[q.reason]}" if q.reason else ""
        return NoticeView(f"{text}{where}{why}.", detail=f"The diff: elevenfactor replay {run_id}")
    return NoticeView(text)


def _program_kind(page: Page, program: str) -> str:
    programs = page.gw.programs
    if programs is None or program not in programs:
        return "Program"
    return "Agent" if isinstance(programs.get(program), Agent) else "Program"


def _facts(page: Page, data: RunData, steps: list[StepView]) -> dict[str, Any]:
    info = data.info
    now = time.time()
    ended = info.updated_at if info.finished else None
    started = steps[0].start if steps and data.first == 0 else None
    cost = sum(c.cost for c in data.calls if c.cost is not None)
    priced = any(c.cost is not None for c in data.calls)
    redacting = data.has_guards
    error = info.error_dict()
    return {
        "program_kind": _program_kind(page, info.program),
        "owner": data.owner or info.user_id or "—",
        "team": data.team,
        "created": info.created_at,
        "started": started,
        "ended": ended,
        "duration": (ended or now) - info.created_at,
        "running_for": ended is None,
        "cost": cost if priced else None,
        "calls": len(data.calls),
        "tokens_in": sum(c.tokens_in for c in data.calls),
        "tokens_out": sum(c.tokens_out for c in data.calls),
        "error": shown_value(error, redacting) if error else None,
        "error_code": (error or {}).get("code"),
        "input": _stored(data, "input", info.input_hash),
        "result": _stored(data, "result", info.result_hash),
    }


def _stored(data: RunData, location: str, digest: str | None) -> Shown:
    marker = data.erased.get((data.info.id, location))
    erased = marker is not None and marker[0] == digest
    return shown(digest, data.contents.get(digest or ""), data.has_guards, erased)


async def _actions(page: Page, data: RunData) -> dict[str, Any]:
    """Which buttons the run gets; ``retry`` is the number of the retry its form submits."""
    info = data.info
    programs = page.gw.programs
    deployed = programs is not None and info.program in programs
    retry, root = None, retry_root(info.id)[0]
    if info.status in ("failed", "cancelled") and deployed:
        retry = await next_retry(page.store, root)
    return {
        "cancel": not info.finished,
        "retry": retry,
        "retry_id": f"{root}:retry-{retry}",
        "replay": info.finished and deployed,
    }


def left_out(report: SectionReport) -> str:
    """What a context section left out or changed, in a few words (the manifest table's last
    column, as ``runs show --context`` prints it)."""
    parts: list[str] = []
    by_reason: dict[str, list[int]] = {}
    for item in report.left_out:
        by_reason.setdefault(item.reason, []).append(item.tokens)
    for reason, tokens in by_reason.items():
        parts.append(f"{len(tokens)} {reason.replace('_', ' ')} ({sum(tokens)} tokens)")
    for t in report.truncated:
        parts.append(f"{t.id} truncated {t.from_tokens}→{t.to_tokens}")
    if report.summary is not None:
        s = report.summary
        parts.append(
            f"summary of [{s.first}:{s.end}] ({s.tokens} tokens, {'reused' if s.reused else 'new'})"
        )
    return "; ".join(parts) or "—"


async def run_context(page: Page, run_id: str, q: Any) -> dict[str, Any]:
    """The template context of run ``run_id`` for the signed-in viewer (``RunNotFound`` if it
    may not read it); ``q`` is the page's validated query (``from``, the notice)."""
    data = await load_run(page.store, run_id, page.user.principal, q.from_)
    steps = build_steps(data)
    info = data.info
    pending = [a for a in data.approvals if a.status == "pending"]
    waits = [] if info.finished else waiting_steps(pending, time.time())
    charted = [*steps, *waits]
    return {
        "run": info,
        "data": data,
        "steps": steps,
        "chart": waterfall(charted, info.created_at),
        "charted": charted,
        "facts": _facts(page, data, steps),
        "audit": await _audit(page, info.id),
        "actions": await _actions(page, data),
        "notice": _notice(q, info.id, steps),
        "pending": pending,
        "redacting": data.has_guards,
        "left_out": left_out,
        "older": max(0, data.first - data.size) if data.first else None,
        "newer": data.first + len(data.events) if data.more else None,
        "live_url": f"/ui/runs/{info.id}?part=live" + (f"&from={data.first}" if data.first else ""),
        "events_url": f"/ui/runs/{info.id}/events?after={data.first + len(data.events)}",
    }
