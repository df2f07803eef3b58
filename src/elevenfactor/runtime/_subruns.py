"""Sub-runs: a durable program starts another as a child run and waits for its result.

The child's id is derived from the parent's id and the step position, so re-executing the
parent never submits a second child. The parent parks (holding no worker) until the child
finishes; the worker that settles the child wakes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elevenfactor.errors import AgentPaused, StepFailed
from elevenfactor.observe import _tracing
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._context import Park, RunContext
from elevenfactor.runtime._runs import get_run, run_result, submit_run
from elevenfactor.runtime._steps import error_json

__all__ = ["run_child", "run_child_with_id"]


async def run_child(
    ctx: RunContext,
    program: str,
    input: Any,
    *,
    queue: str | None = None,
    priority: int = 0,
    max_attempts: int = 1,
    tags: Sequence[str] = (),
) -> Any:
    """Run ``program`` as a child of this run and return its result (``StepFailed`` if it
    failed or was cancelled, or its agent is paused — error code ``agent_paused``; identically
    on replay). ``tags`` go to the child (its model calls carry them)."""
    _, result = await run_child_with_id(
        ctx, program, input, queue=queue, priority=priority, max_attempts=max_attempts, tags=tags
    )
    return result


async def run_child_with_id(
    ctx: RunContext,
    program: str,
    input: Any,
    *,
    queue: str | None = None,
    priority: int = 0,
    max_attempts: int = 1,
    tags: Sequence[str] = (),
) -> tuple[str, Any]:
    """``run_child`` that also returns the child's run id (derived from this run's id and the
    step's position, so it is the same on every execution)."""
    step_id, ev = ctx.reserve("subrun", program)
    child_id = f"{ctx.run_id}.{step_id}"
    if ev is not None:
        return child_id, ctx.replayed(ev)
    ctx.check_live()
    attrs = {"elevenfactor.step.id": step_id, "elevenfactor.run.child_id": child_id}
    try:
        # The child's executions continue this trace, under this step's span.
        with _tracing.span(f"step subrun {program}", "internal", attrs):
            await submit_run(
                ctx.store,
                program,
                input,
                run_id=child_id,
                parent_id=ctx.run_id,
                queue=queue or ctx.lease.queue,
                priority=priority,
                max_attempts=max_attempts,
                owner=ctx.lease.owner,
                tags=tags,
            )
    except AgentPaused as exc:
        # Journaled, so a re-execution sees the same refusal even once the agent is reset.
        await ctx.record(step_id, "subrun", program, "failed", None, error_json(exc))
        raise StepFailed(
            f"child run of {program}: {exc.message}",
            step=program,
            error_type="AgentPaused",
            error_code=exc.code,
        ) from exc
    # A fresh run (its first execution) has just created the child: park without reading it
    # (if it has ended already, the park's condition queues this run again at once).
    child = await get_run(ctx.store, child_id) if ctx.lease.has_journal else None
    if child is None or not child.finished:
        raise Park(
            wake_at=None,
            waiting=True,
            reason=f"waiting for child run {child_id}",
            wake_when=[
                (
                    "EXISTS (SELECT 1 FROM runs WHERE id = ? AND status IN"
                    " ('succeeded', 'failed', 'cancelled'))",
                    (child_id,),
                )
            ],
        )
    if child.status == "succeeded":
        result = await run_result(ctx.store, child)
        await ctx.record(step_id, "subrun", program, "done", encode(result))
        return child_id, result
    err = child.error_dict() or {}
    error = encode(
        {
            "type": "ChildRunFailed",
            "message": err.get("message", child.status),
            "code": err.get("code"),
        }
    ).decode()
    await ctx.record(step_id, "subrun", program, "failed", None, error)
    raise StepFailed(
        f"child run {child_id} {child.status}: {err.get('message')}",
        step=program,
        error_type="ChildRunFailed",
        error_code=err.get("code"),
    )
