"""Agents' own model calls are recorded like the gateway's: a log line and a ``model_calls``
row with the run, its owner, tokens and cost; a resumed run records only the calls it makes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
from elevenfactor.errors import RateLimited
from elevenfactor.governance import DEFAULT_ORG, Principal
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ToolCall,
    ToolMessage,
    Usage,
    wrap_deployment,
)
from elevenfactor.observe import CallRecorder
from elevenfactor.runtime import (
    Agent,
    AgentDeps,
    AgentSpec,
    Programs,
    Worker,
    audit,
    claim_run,
    get_run,
    submit_run,
)
from elevenfactor.store import Store
from elevenfactor.tools import FunctionToolset

OWNER = Principal(
    org_id=DEFAULT_ORG, team_id="team_ops", user_id="user_dana", user_name="dana", key_id="key_1"
)
PRICED = DeploymentConfig(
    provider="test",
    model="scripted-1",
    price={"input_per_mtok": 2.0, "output_per_mtok": 10.0},
    retry={"attempts": 1},
    breaker=None,
)
COST = round((100 * 2.0 + 20 * 10.0) / 1_000_000, 10)

lookups = FunctionToolset(name="lookups")


@lookups.tool(risk="read")
def balance(account: str) -> int:
    """The balance of an account."""
    return {"alice": 120}.get(account, 0)


Handler = Callable[[Sequence[Message], ModelSettings], Response | Awaitable[Response]]


def look_up_then_answer(messages: Sequence[Message], _: ModelSettings) -> Response:
    usage = Usage(input_tokens=100, output_tokens=20)
    done = [m.content for m in messages if isinstance(m, ToolMessage)]
    if not done:
        call = ToolCall(id="c0", name="balance", arguments=json.dumps({"account": "alice"}))
        message = AssistantMessage(tool_calls=[call])
        return Response(message=message, finish_reason="tool_calls", usage=usage)
    return Response(message=AssistantMessage(content=f"alice has {done[0]}"), usage=usage)


def agent_with(handler: Handler, store: Store) -> tuple[Programs, FunctionModel, CallRecorder]:
    model = FunctionModel(handler, name="m")  # a deployment is named as in the project
    project = ProjectConfig(providers={"test": ProviderConfig(type="test")}, models={"m": PRICED})
    registry = ModelRegistry(project, deployments={"m": wrap_deployment(model, "test", PRICED)})
    spec = AgentSpec(name="clerk", model="m", tools=[{"toolset": "lookups"}])
    recorder = CallRecorder(store)
    programs = Programs()
    programs.register("clerk", Agent(spec, AgentDeps(registry, {"lookups": lookups}, {}, recorder)))
    return programs, model, recorder


async def call_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    cols = (
        "run_id, trace_id, route, provider, deployment, model, status, error_class,"
        " tokens_in, tokens_out, cost, org_id, team_id, user_id, api_key_id, request_hash"
    )
    rows = await store.fetchall(
        f"SELECT {cols} FROM model_calls WHERE run_id = ? ORDER BY created_at", (run_id,)
    )
    names = [c.strip() for c in cols.split(",")]
    return [dict(zip(names, r, strict=True)) for r in rows]


async def test_each_model_turn_is_recorded_with_run_owner_tokens_and_cost(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    programs, model, recorder = agent_with(look_up_then_answer, store)
    rid = await submit_run(store, "clerk", "how much has alice?", owner=OWNER)
    with caplog.at_level(logging.INFO, logger="elevenfactor.calls"):
        await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    assert await recorder.flush() == 2
    rows = await call_rows(store, rid)
    assert len(rows) == len(model.calls) == 2
    for row in rows:
        assert row["run_id"] == row["trace_id"] == rid
        assert (row["route"], row["provider"], row["deployment"]) == ("m", "test", "m")
        assert row["model"] == "scripted-1" and row["status"] == "ok"
        assert (row["tokens_in"], row["tokens_out"]) == (100, 20)
        assert row["cost"] == pytest.approx(COST)
        assert (row["org_id"], row["team_id"], row["user_id"], row["api_key_id"]) == (
            DEFAULT_ORG,
            "team_ops",
            "user_dana",
            "key_1",
        )
        assert row["request_hash"] is not None
    lines = [r for r in caplog.records if getattr(r, "event", None) == "model_call"]
    assert [(r.agent, r.run_id) for r in lines] == [("clerk", rid)] * 2  # type: ignore[attr-defined]
    assert len({r.step for r in lines}) == 2  # type: ignore[attr-defined]
    report = await audit(store)
    assert report.ok and report.calls == 2, report.findings


async def test_a_resumed_run_records_no_row_for_replayed_turns(store: Store) -> None:
    gate, reached = asyncio.Event(), asyncio.Event()

    async def slow_second_turn(messages: Sequence[Message], s: ModelSettings) -> Response:
        if any(isinstance(m, ToolMessage) for m in messages):
            reached.set()
            await gate.wait()
        return look_up_then_answer(messages, s)

    programs, model, recorder = agent_with(slow_second_turn, store)
    rid = await submit_run(store, "clerk", "how much has alice?", owner=OWNER)
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(Worker(store, programs).execute(lease))
    await reached.wait()
    task.cancel()  # the worker dies during the second model request
    with pytest.raises(asyncio.CancelledError):
        await task
    await recorder.flush()
    assert len(await call_rows(store, rid)) == 1  # the first turn, made once
    await store.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (rid,))
    gate.set()
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    await recorder.flush()
    rows = await call_rows(store, rid)
    assert len(model.calls) == 3  # first turn; the interrupted second turn, then again
    assert len(rows) == 2  # the replayed first turn added nothing
    assert all(r["status"] == "ok" and r["cost"] == pytest.approx(COST) for r in rows)
    assert (await audit(store)).ok


async def test_a_failed_model_call_gets_an_error_record(store: Store) -> None:
    def overloaded(messages: Sequence[Message], _: ModelSettings) -> Response:
        raise RateLimited("slow down")

    programs, _, recorder = agent_with(overloaded, store)
    rid = await submit_run(store, "clerk", "how much has alice?", owner=OWNER)
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "failed"
    await recorder.flush()
    [row] = await call_rows(store, rid)
    assert (row["status"], row["error_class"]) == ("error", "rate_limit")
    assert (row["tokens_in"], row["tokens_out"], row["cost"]) == (0, 0, None)
    assert row["user_id"] == "user_dana"
    assert (await audit(store)).ok
