"""``observe_run``: what scorers read of a finished run — its result, the tool calls its model
steps asked for, its tokens and cost (``model_calls`` of it and its children, else the
journal) and its latency — on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from elevenfactor.errors import RequestError, RunNotFound
from elevenfactor.evals._from_run import observe_run
from elevenfactor.models import AssistantMessage, Response, ToolCall, Usage
from elevenfactor.runtime import Programs, RunContext, Worker, submit_run
from elevenfactor.store import Store


def _asks_for_tools() -> Response:
    return Response(
        message=AssistantMessage(
            tool_calls=[
                ToolCall(id="c1", name="lookup_order", arguments='{"order_id": "A1"}'),
                ToolCall(id="c2", name="refund", arguments="not json"),
            ]
        ),
        usage=Usage(input_tokens=11, output_tokens=4),
        finish_reason="tool_calls",
    )


def _answers() -> Response:
    return Response(
        message=AssistantMessage(content="Refunds take 5 days."),
        usage=Usage(input_tokens=20, output_tokens=6),
    )


def programs() -> Programs:
    reg = Programs()

    @reg.workflow("agentish")
    async def agentish(ctx: RunContext, data: Any) -> dict[str, Any]:
        await ctx.step("model", _asks_for_tools, kind="model")
        await ctx.step("budget.commit", lambda: {"hold": "h1", "cost": 0.25}, kind="budget")
        await ctx.step("tool:lookup_order", lambda: {"content": "ok"}, kind="tool")
        await ctx.step("model", _answers, kind="model")
        await ctx.step("budget.commit", lambda: {"hold": "h2", "cost": 0.5}, kind="budget")
        return {"output": "Refunds take 5 days.", "tool_calls": 2}

    @reg.workflow("structured")
    async def structured(ctx: RunContext, data: Any) -> dict[str, Any]:
        return {"output": {"status": "shipped"}}

    @reg.workflow("fails")
    async def fails(ctx: RunContext, data: Any) -> None:
        raise RuntimeError("boom")

    return reg


async def _run(store: Store, program: str) -> str:
    rid = await submit_run(store, program, None)
    await Worker(store, programs()).run_until_idle()
    return rid


async def _call(store: Store, run_id: str, tokens: tuple[int, int], cost: float | None) -> None:
    await store.execute(
        "INSERT INTO model_calls (id, trace_id, created_at, route, stream, status, tokens_in,"
        " tokens_out, latency_ms, cost, cache_hit, failover_path, run_id)"
        " VALUES (?, ?, ?, 'default', 0, 'ok', ?, ?, 5, ?, 0, '[]', ?)",
        (uuid.uuid4().hex, run_id, time.time(), *tokens, cost, run_id),
    )


async def test_journal_gives_text_tool_calls_tokens_and_cost(store: Store) -> None:
    rid = await _run(store, "agentish")
    seen = await observe_run(store, rid)
    assert seen.text == "Refunds take 5 days."
    assert [(c.name, c.arguments) for c in seen.tool_calls] == [
        ("lookup_order", {"order_id": "A1"}),
        ("refund", {}),  # arguments that are not a JSON object read as {}
    ]
    assert (seen.input_tokens, seen.output_tokens) == (31, 10)
    assert seen.cost_usd == pytest.approx(0.75)
    assert seen.latency_ms is not None and seen.latency_ms >= 0


async def test_model_calls_of_the_run_and_its_children_win(store: Store) -> None:
    rid = await _run(store, "agentish")
    await _call(store, rid, (100, 10), 0.01)
    await _call(store, f"{rid}.7", (50, 5), 0.02)  # a child run (delegation, hand-off)
    await _call(store, f"{rid}x", (999, 999), 9.0)  # another run whose id starts alike
    seen = await observe_run(store, rid)
    assert (seen.input_tokens, seen.output_tokens) == (150, 15)
    assert seen.cost_usd == pytest.approx(0.03)
    assert len(seen.tool_calls) == 2  # still from the journal


async def test_unpriced_model_calls_fall_back_to_the_journals_cost(store: Store) -> None:
    rid = await _run(store, "agentish")
    await _call(store, rid, (7, 3), None)
    seen = await observe_run(store, rid)
    assert (seen.input_tokens, seen.output_tokens) == (7, 3)
    assert seen.cost_usd == pytest.approx(0.75)


async def test_structured_output_reads_as_json_and_a_failed_run_as_empty(store: Store) -> None:
    seen = await observe_run(store, await _run(store, "structured"))
    assert seen.text == '{"status": "shipped"}'
    failed = await observe_run(store, await _run(store, "fails"))
    assert failed.text == "" and failed.tool_calls == () and failed.cost_usd is None


async def test_unfinished_and_missing_runs_are_refused(store: Store) -> None:
    rid = await submit_run(store, "agentish", None)
    with pytest.raises(RequestError) as err:
        await observe_run(store, rid)
    assert err.value.code == "run_not_finished"
    with pytest.raises(RunNotFound):
        await observe_run(store, "no-such-run")
