"""The agent loop over the journal, with deterministic models, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from elevenfactor.config import ProjectConfig
from elevenfactor.errors import ConfigError
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ToolCall,
    ToolMessage,
)
from elevenfactor.runtime import (
    Agent,
    AgentDeps,
    AgentSpec,
    Programs,
    Worker,
    claim_run,
    decide_approval,
    get_run,
    list_approvals,
    load_agents,
    load_events,
    run_result,
    submit_run,
    verify_run,
)
from elevenfactor.store import Store
from elevenfactor.tools import FunctionToolset
from tests.support.principals import reviewer

effects: Counter[str] = Counter()
bank = FunctionToolset(name="bank")


@bank.tool(risk="read")
def balance(account: str) -> int:
    """The balance of an account."""
    effects[f"balance:{account}"] += 1
    return {"alice": 120, "bob": 30}.get(account, 0)


@bank.tool(risk="write")
def transfer(to: str, amount: int) -> str:
    """Move money."""
    effects[f"transfer:{to}:{amount}"] += 1
    return f"sent {amount} to {to}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    effects.clear()


def tool_call(name: str, args: dict[str, Any], i: int = 0) -> ToolCall:
    return ToolCall(id=f"call_{name}_{i}", name=name, arguments=json.dumps(args))


def reply(*calls: ToolCall, text: str | None = None) -> Response:
    return Response(
        message=AssistantMessage(content=text, tool_calls=list(calls)),
        finish_reason="tool_calls" if calls else "stop",
    )


Script = Callable[[Sequence[Message], ModelSettings], Response]


def registry(script: Script) -> tuple[ModelRegistry, FunctionModel]:
    model = FunctionModel(script, name="scripted")
    return ModelRegistry(ProjectConfig(), deployments={"default": model}), model


def programs_for(script: Script, **spec: Any) -> tuple[Programs, FunctionModel]:
    reg, model = registry(script)
    specs = {
        "banker": AgentSpec(
            name="banker", instructions="You move money.", tools=[{"toolset": "bank"}], **spec
        )
    }
    deps = AgentDeps(reg, {"bank": bank}, specs)
    programs = Programs()
    programs.register("banker", Agent(specs["banker"], deps))
    return programs, model


def tool_results(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if isinstance(m, ToolMessage)]


def two_balances_then_answer(messages: Sequence[Message], _: ModelSettings) -> Response:
    done = tool_results(messages)
    if not done:
        return reply(
            tool_call("balance", {"account": "alice"}, 0),
            tool_call("balance", {"account": "bob"}, 1),
        )
    return reply(text=f"total {sum(int(x) for x in done)}")


async def test_parallel_tool_calls_then_an_answer(store: Store) -> None:
    programs, model = programs_for(two_balances_then_answer)
    rid = await submit_run(store, "banker", "how much do alice and bob have?")
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "succeeded", run.error
    result = await run_result(store, run)
    assert result["output"] == "total 150" and result["tool_calls"] == 2
    assert effects == Counter({"balance:alice": 1, "balance:bob": 1})
    kinds = [(e.step_id, e.kind, e.name) for e in await load_events(store, rid)]
    assert kinds[:3] == [("0", "clock", "now"), ("1", "tools", "list"), ("2", "clock", "now")]
    assert ("3", "model", "model") in kinds
    assert {("4.0.0", "tool", "tool:balance"), ("4.1.0", "tool", "tool:balance")} <= set(kinds)
    first_call = model.calls[0][1]
    assert [t.name for t in first_call.tools] == ["balance", "transfer"]
    assert (await verify_run(store, rid)).ok


async def test_a_crashed_agent_repeats_no_model_or_tool_call(store: Store) -> None:
    gate = asyncio.Event()
    reached = asyncio.Event()

    async def slow_second_turn(messages: Sequence[Message], s: ModelSettings) -> Response:
        if tool_results(messages):
            reached.set()
            await gate.wait()
        return two_balances_then_answer(messages, s)

    programs, model = programs_for(slow_second_turn)  # type: ignore[arg-type]
    rid = await submit_run(store, "banker", "totals?")
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(Worker(store, programs).execute(lease))
    await reached.wait()
    task.cancel()  # dies during the second model request
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (rid,))
    gate.set()
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    assert effects == Counter({"balance:alice": 1, "balance:bob": 1})
    assert len(model.calls) == 3  # first turn once; the interrupted second turn, then again


def pay(amount: int) -> Script:
    def script(messages: Sequence[Message], _: ModelSettings) -> Response:
        done = tool_results(messages)
        if not done:
            return reply(tool_call("transfer", {"to": "mallory", "amount": amount}))
        return reply(text=done[-1])

    return script


APPROVE_BIG = [
    {
        "tools": ["transfer"],
        "when": [{"arg": "amount", "op": ">", "value": 100}],
        "group": "finance",
    }
]


async def test_small_transfers_need_no_approval(store: Store) -> None:
    programs, _ = programs_for(pay(50), approval=APPROVE_BIG)
    rid = await submit_run(store, "banker", "pay")
    await Worker(store, programs).run_until_idle()
    assert (await run_result(store, await get_run(store, rid)))["output"] == "sent 50 to mallory"


async def test_big_transfer_parks_and_runs_with_edited_arguments(store: Store) -> None:
    programs, _ = programs_for(pay(500), approval=APPROVE_BIG)
    rid = await submit_run(store, "banker", "pay")
    worker = Worker(store, programs)
    await worker.run_until_idle()
    assert (await get_run(store, rid)).status == "waiting"
    assert not effects
    [pending] = await list_approvals(store, group="finance")
    assert pending.request["arguments"] == {"to": "mallory", "amount": 500}
    assert pending.request["risk"] == "write"
    await decide_approval(
        store,
        pending.id,
        "edit",
        by=reviewer("carol", "finance"),
        arguments={"to": "bob", "amount": 400},
    )
    await worker.run_until_idle()
    result = await run_result(store, await get_run(store, rid))
    assert result["output"] == "sent 400 to bob"
    assert effects == Counter({"transfer:bob:400": 1})


async def test_rejection_reason_goes_to_the_model(store: Store) -> None:
    programs, _ = programs_for(pay(500), approval=APPROVE_BIG)
    rid = await submit_run(store, "banker", "pay")
    worker = Worker(store, programs)
    await worker.run_until_idle()
    [pending] = await list_approvals(store)
    await decide_approval(
        store, pending.id, "reject", by=reviewer("carol", "finance"), reason="fraud risk"
    )
    await worker.run_until_idle()
    result = await run_result(store, await get_run(store, rid))
    assert result["output"] == "The reviewer rejected this call: fraud risk"
    assert not effects


async def test_limits_stop_a_looping_agent(store: Store) -> None:
    def forever(messages: Sequence[Message], _: ModelSettings) -> Response:
        return reply(tool_call("balance", {"account": "alice"}, len(messages)))

    programs, _ = programs_for(forever, limits={"max_steps": 3})
    rid = await submit_run(store, "banker", "loop")
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed"
    assert run.error_dict()["code"] == "agent_limit"  # type: ignore[index]
    assert effects["balance:alice"] == 3


async def test_bad_arguments_and_unknown_tools_go_back_to_the_model(store: Store) -> None:
    def script(messages: Sequence[Message], _: ModelSettings) -> Response:
        done = tool_results(messages)
        if not done:
            return reply(
                ToolCall(id="a", name="balance", arguments="{not json"),
                tool_call("teleport", {}, 1),
                tool_call("balance", {"acct": 1}, 2),
            )
        return reply(text=" | ".join(done))

    programs, _ = programs_for(script)
    rid = await submit_run(store, "banker", "?")
    await Worker(store, programs).run_until_idle()
    output = (await run_result(store, await get_run(store, rid)))["output"]
    first, second, third = output.split(" | ")
    assert "not valid JSON" in first
    assert "no tool named 'teleport'" in second
    assert third.startswith("Error:") and "account" in third


async def test_structured_output_is_validated_and_retried(store: Store) -> None:
    answers = iter(['{"total": "lots"}', '{"total": 150}'])

    def script(messages: Sequence[Message], s: ModelSettings) -> Response:
        assert s.response_format is not None and s.response_format.type == "json_schema"
        return reply(text=next(answers))

    schema = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]}
    programs, model = programs_for(script, output_schema=schema)
    rid = await submit_run(store, "banker", "total?")
    await Worker(store, programs).run_until_idle()
    result = await run_result(store, await get_run(store, rid))
    assert result["output"] == {"total": 150} and result["turns"] == 2
    assert "output schema" in model.calls[1][0][-1].content  # type: ignore[union-attr]


async def test_delegation_and_handoff(store: Store) -> None:
    def lead(messages: Sequence[Message], s: ModelSettings) -> Response:
        names = [t.name for t in s.tools]
        if "delegate_to_helper" in names:
            done = tool_results(messages)
            if not done:
                return reply(tool_call("delegate_to_helper", {"task": "add 2 and 3"}))
            return reply(tool_call("handoff_to_closer", {"reason": "wrap up"}))
        return reply(text="unreachable: lead always delegates, then hands off")

    def helper(messages: Sequence[Message], s: ModelSettings) -> Response:
        return reply(text="5")

    def closer(messages: Sequence[Message], s: ModelSettings) -> Response:
        seen = [m.content for m in messages if isinstance(m, ToolMessage)]
        return reply(text=f"closing after {seen}")

    models = {
        "lead": FunctionModel(lead),
        "helper": FunctionModel(helper),
        "closer": FunctionModel(closer),
    }
    reg = ModelRegistry(ProjectConfig(), deployments=models)  # type: ignore[arg-type]
    specs = {
        "lead": AgentSpec(name="lead", model="lead", delegates=["helper"], handoffs=["closer"]),
        "helper": AgentSpec(name="helper", model="helper", description="an adder"),
        "closer": AgentSpec(name="closer", model="closer"),
    }
    deps = AgentDeps(reg, {}, specs)
    programs = Programs()
    for name, spec in specs.items():
        programs.register(name, Agent(spec, deps))
    rid = await submit_run(store, "lead", "sum please")
    await Worker(store, programs).run_until_idle()
    result = await run_result(store, await get_run(store, rid))
    assert result["handed_off_to"] == "closer"
    assert result["output"] == "closing after ['5']"
    kinds = [e.kind for e in await load_events(store, rid)]
    assert kinds.count("subrun") == 2


def test_agent_files_are_validated(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "support.yaml").write_text(
        "instructions: hi\ntools: [{toolset: billing}]\nlimits: {max_steps: 3}\n"
    )
    assert load_agents(agents, {"billing": object()}, {"default"})["support"].limits.max_steps == 3
    with pytest.raises(ConfigError, match=r"support.yaml: tools\[0\].toolset"):
        load_agents(agents, {}, {"default"})
    (agents / "support.yaml").write_text("instructions: hi\nlimits: {max_stepz: 3}\n")
    with pytest.raises(ConfigError, match=r"limits.max_stepz: unknown key"):
        load_agents(agents)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "support.md").write_text("Answer billing questions.\n")
    (agents / "support.yaml").write_text("instructions_file: prompts/support.md\n")
    assert load_agents(agents)["support"].instructions == "Answer billing questions.\n"
    (agents / "support.yaml").write_text("instructions_file: prompts/missing.md\n")
    with pytest.raises(ConfigError, match="instructions_file: cannot read"):
        load_agents(agents)
    (agents / "support.yaml").write_text("delegates: [ghost]\n")
    with pytest.raises(ConfigError, match="unknown agent 'ghost'"):
        load_agents(agents)
