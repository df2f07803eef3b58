"""An ``Observed`` from a finished run: what scorers read of an agent's or a workflow's run,
taken from the records production writes (factor 9: evals read the same records).

- **text**: the run's result (``output``/``text``/``answer``/``content`` of a dict result, a
  string result as it is, anything else as JSON); empty for a run that did not succeed.
- **tool calls**: the calls the model asked for, in journal order, with their arguments, as
  the run's journaled ``model`` steps recorded them (a call a guard blocked or a reviewer
  rejected is still listed: it is what the agent tried).
- **tokens and cost**: the ``model_calls`` rows of the run and of its child runs (ids
  ``RUN.STEP``: delegations, hand-offs); when the run has none (its calls were not recorded
  yet, or no recorder ran) the journal's model steps give the tokens and its
  ``budget.commit`` steps the cost.
- **latency**: from the run's first journal event to its end (time queued for a worker is not
  the target's latency); a run without events counts from its creation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from elevenfactor.errors import RequestError
from elevenfactor.evals._observed import Observed, ObservedCall, observe
from elevenfactor.runtime._journal import describe_steps
from elevenfactor.runtime._runs import get_run, run_result
from elevenfactor.store import Store

__all__ = ["observe_run", "observe_steps"]

_CALLS_SQL = (
    "SELECT COUNT(*), COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), SUM(cost)"
    " FROM model_calls WHERE run_id = ? OR (run_id > ? AND run_id < ?)"
)
"""The model calls of a run and its children: child ids are ``PARENT.STEP``, i.e. between
``PARENT.`` and ``PARENT/`` (``/`` follows ``.``) — a range an index on ``run_id`` serves."""


def _tool_calls(message: Any) -> list[ObservedCall]:
    if not isinstance(message, Mapping):
        return []
    out: list[ObservedCall] = []
    for call in message.get("tool_calls") or []:
        if not isinstance(call, Mapping):
            continue
        raw = call.get("arguments")
        try:
            args = json.loads(raw) if isinstance(raw, str) and raw.strip() else raw
        except ValueError:
            args = None
        out.append(
            ObservedCall(str(call.get("name", "")), dict(args) if isinstance(args, Mapping) else {})
        )
    return out


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def observe_steps(
    steps: Sequence[Mapping[str, Any]], result: Any
) -> tuple[Observed, dict[str, Any]]:
    """The ``Observed`` of a run from its journal (``describe_steps``) and its result, without
    latency or ``model_calls``; and the journal's totals: ``{"input_tokens",
    "output_tokens", "cost_usd"}`` (cost None when no ``budget.commit`` step recorded one)."""
    calls: list[ObservedCall] = []
    tokens_in = tokens_out = 0
    cost: float | None = None
    for step in steps:
        output = step.get("output")
        if step.get("status") != "done" or not isinstance(output, Mapping):
            continue
        if step.get("kind") == "model":
            calls.extend(_tool_calls(output.get("message")))
            usage = output.get("usage")
            if isinstance(usage, Mapping):
                tokens_in += _int(usage.get("input_tokens"))
                tokens_out += _int(usage.get("output_tokens"))
        elif step.get("kind") == "budget" and step.get("name") == "budget.commit":
            spent = output.get("cost")
            if isinstance(spent, int | float) and not isinstance(spent, bool):
                cost = (cost or 0.0) + float(spent)
    base = observe(result) if isinstance(result, Mapping | str) else Observed()
    text = base.text
    if not text and result is not None:
        given = result.get("output") if isinstance(result, Mapping) else result
        if given is not None and not isinstance(given, str):  # structured output: as JSON
            text = json.dumps(given, ensure_ascii=False, sort_keys=True, default=str)
    observed = Observed(
        text=text,
        tool_calls=tuple(calls) if calls else base.tool_calls,
        input_tokens=tokens_in or base.input_tokens,
        output_tokens=tokens_out or base.output_tokens,
        cost_usd=cost if cost is not None else base.cost_usd,
        latency_ms=base.latency_ms,
    )
    totals = {"input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": cost}
    return observed, totals


async def observe_run(store: Store, run_id: str) -> Observed:
    """What scorers read of the finished run ``run_id`` (see the module docstring). A run
    that has not finished is a ``RequestError`` (``run_not_finished``); a missing one is
    ``RunNotFound``. Reads the run as the system: check the caller's access first."""
    info = await get_run(store, run_id)
    if not info.finished:
        raise RequestError(
            f"run {run_id} is {info.status}; only a finished run can be observed",
            code="run_not_finished",
            status=409,
        )
    result = await run_result(store, info) if info.status == "succeeded" else None
    steps = await describe_steps(store, run_id)
    observed, _ = observe_steps(steps, result)
    row = await store.fetchone(_CALLS_SQL, (run_id, f"{run_id}.", f"{run_id}/"))
    count, tokens_in, tokens_out, cost = row if row is not None else (0, 0, 0, None)
    started = float(steps[0]["created_at"]) if steps else info.created_at
    latency = max(0.0, (info.updated_at - started) * 1000.0)
    if int(count or 0) > 0:
        return Observed(
            text=observed.text,
            tool_calls=observed.tool_calls,
            input_tokens=int(tokens_in or 0),
            output_tokens=int(tokens_out or 0),
            cost_usd=float(cost) if cost is not None else observed.cost_usd,
            latency_ms=latency,
        )
    return Observed(
        text=observed.text,
        tool_calls=observed.tool_calls,
        input_tokens=observed.input_tokens,
        output_tokens=observed.output_tokens,
        cost_usd=observed.cost_usd,
        latency_ms=latency,
    )
