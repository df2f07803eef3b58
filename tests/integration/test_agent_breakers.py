"""Agents' circuit breakers across runs, on SQLite and PostgreSQL: too many failed or blocked
runs in the window pause an agent; its new runs (submitted, over HTTP, from the CLI, delegated)
are refused until an admin resets it; trips and resets are in the ledger, ``/readyz`` and the
CLI show them."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from elevenfactor.cli import main
from elevenfactor.config import GuardsConfig, ProjectConfig, Settings, load_project
from elevenfactor.errors import AgentPaused, PermissionDenied, RequestError
from elevenfactor.governance import Principal, create_user, local_admin, principal_for_user
from elevenfactor.governance._agent_breaker import (
    agent_breakers,
    paused_agents,
    record_run_outcome,
    reset_agent,
)
from elevenfactor.governance._policy_book import PolicyBook
from elevenfactor.governance._policy_model import AgentBreaker
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
    get_run,
    run_result,
    submit_run,
)
from elevenfactor.store import Store, migrate, open_store
from elevenfactor.tools import FunctionToolset
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

BREAKER = AgentBreaker(window_seconds=600, min_runs=4, max_error_rate=0.5, max_block_rate=0.75)
OTHER_ORG = Principal(org_id="org_other", user_id="u_other", user_name="other", via="cli")


async def _ledger(store: Store, kind: str) -> list[dict[str, Any]]:
    rows = await store.fetchall("SELECT body FROM ledger WHERE kind = ? ORDER BY seq", (kind,))
    return [json.loads(str(r[0])) for r in rows]


async def _record(
    store: Store, outcomes: str, *, at: float = 1000.0, agent: str = "support"
) -> Any:
    """Record one outcome per letter (s: succeeded, f: failed, b: blocked); the last state."""
    names = {"s": "succeeded", "f": "failed", "b": "blocked"}
    state = None
    for i, letter in enumerate(outcomes):
        state = await record_run_outcome(
            store, "org_default", agent, names[letter], BREAKER, policy="p@1", now=at + i
        )
    return state


# -- tripping ----------------------------------------------------------------------------------


async def test_trips_at_the_rate_once_min_runs_have_ended_not_before(store: Store) -> None:
    early = await _record(store, "ff")  # 100% errors, but only 2 of the 4 runs needed
    assert early.state == "closed" and early.runs == 2 and early.errors == 2
    state = await _record(store, "s", at=1010)
    assert state.state == "closed" and state.runs == 3
    state = await _record(store, "s", at=1020)  # 4 runs, 2 failed: 50% reaches 50%
    assert state.paused and state.tripped and state.tripped_at == 1020
    assert state.reason == "error rate 50% (2 of 4 runs in 600s) reached 50%"
    assert state.policy == "p@1"
    again = await _record(store, "f", at=1030)  # already paused: no second trip
    assert again.paused and not again.tripped
    [entry] = await _ledger(store, "agent.paused")
    assert entry["agent"] == "support" and entry["runs"] == 4 and entry["errors"] == 2
    assert [b.agent for b in await paused_agents(store)] == ["support"]
    assert await paused_agents(store, "org_other") == []


async def test_block_rate_and_the_window(store: Store) -> None:
    old = await _record(store, "bbb", at=0)  # long before the window
    assert old.state == "closed"
    state = await _record(store, "bsbb", at=10_000)  # the old ones fell out of the window
    assert state.runs == 4 and state.blocks == 3 and state.paused
    assert state.reason is not None and state.reason.startswith("block rate 75%")
    rows = await store.fetchone("SELECT COUNT(*) FROM agent_outcomes")
    assert rows is not None and rows[0] == 4  # outcomes outside the window are pruned


async def test_recording_a_run_twice_counts_it_once(store: Store) -> None:
    for _ in range(5):
        state = await record_run_outcome(
            store, "org_default", "support", "failed", BREAKER, run_id="r1", now=1.0
        )
    assert state.runs == 1 and state.state == "closed"


async def test_concurrent_run_ends_trip_it_once(store: Store) -> None:
    await _record(store, "sss")
    states = await asyncio.gather(
        *(
            record_run_outcome(store, "org_default", "support", "failed", BREAKER, now=1100.0)
            for _ in range(8)
        )
    )
    assert sum(s.tripped for s in states) == 1
    assert len(await _ledger(store, "agent.paused")) == 1
    [state] = await agent_breakers(store, local_admin(), now=1100.0)
    assert state.paused and state.runs == 11 and state.errors == 8


# -- refusing runs -----------------------------------------------------------------------------

effects: Counter[str] = Counter()
bank = FunctionToolset(name="bank")


@bank.tool(risk="read")
def balance(account: str) -> int:
    """The balance of an account."""
    effects[account] += 1
    return 120


def _script(messages: Sequence[Message], settings: ModelSettings) -> Response:
    """The boss delegates to the looper and repeats its answer; the looper loops on a tool."""
    results = [m.content for m in messages if isinstance(m, ToolMessage)]
    if any(t.name == "delegate_to_looper" for t in settings.tools or []):
        if results:
            return Response(message=AssistantMessage(content=f"looper says: {results[-1]}"))
        call = ToolCall(id="d", name="delegate_to_looper", arguments='{"task": "count"}')
    else:
        call = ToolCall(id=f"c{len(results)}", name="balance", arguments='{"account": "alice"}')
    return Response(message=AssistantMessage(tool_calls=[call]), finish_reason="tool_calls")


FRAGILE = """breakers:
  run: {max_same_tool_call: 2}
  agent: {window_seconds: 600, min_runs: 2, max_block_rate: 0.5}
"""


def _programs(tmp_path: Path) -> Programs:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "fragile.yaml").write_text(FRAGILE)
    book = PolicyBook.load(GuardsConfig(), tmp_path)
    model = FunctionModel(_script, name="scripted")
    specs = {
        "looper": AgentSpec(name="looper", tools=[{"toolset": "bank"}], policy="fragile"),
        "boss": AgentSpec(name="boss", delegates=["looper"]),
    }
    registry = ModelRegistry(ProjectConfig(), deployments={"default": model})
    deps = AgentDeps(registry, {"bank": bank}, specs, policies=book)
    programs = Programs()
    for name, spec in specs.items():
        programs.register(name, Agent(spec, deps))
    return programs


async def test_blocked_runs_pause_the_agent_and_its_new_runs_are_refused(
    store: Store, tmp_path: Path
) -> None:
    effects.clear()
    programs = _programs(tmp_path)
    worker = Worker(store, programs)
    first = await submit_run(store, "looper", "count", run_id="first")
    await worker.run_until_idle()
    run = await get_run(store, first)
    assert run.status == "failed" and (run.error_dict() or {})["code"] == "breaker_tripped"
    assert (await agent_breakers(store, local_admin()))[0].state == "closed"  # 1 of 2 runs
    await submit_run(store, "looper", "count")
    await worker.run_until_idle()
    [state] = await paused_agents(store)
    assert state.agent == "looper" and state.runs == 2 and state.blocks == 2
    assert state.policy is not None and state.policy.startswith("fragile@")
    assert effects == Counter({"alice": 2})  # the second same call of each run never ran

    with pytest.raises(AgentPaused) as refused:
        await submit_run(store, "looper", "count")
    assert refused.value.code == "agent_paused" and refused.value.http_status == 409
    assert refused.value.details["reason"] == state.reason
    assert await submit_run(store, "looper", "count", run_id="first") == "first"  # idempotent
    assert await submit_run(store, "looper", "count", owner=OTHER_ORG)  # another organisation
    created = await store.fetchone("SELECT COUNT(*) FROM runs WHERE program = 'looper'")
    assert created is not None and created[0] == 3

    boss = await submit_run(store, "boss", "ask the looper")
    await worker.run_until_idle()
    done = await get_run(store, boss)
    assert done.status == "succeeded", done.error
    output = (await run_result(store, done))["output"]
    assert output.startswith("looper says: Error: child run of looper: agent 'looper' is paused")


GUARDED = """stages:
  input:
    - {rule: phrases, deny: ["wire everything"], action: block}
breakers:
  agent: {window_seconds: 600, min_runs: 2, max_block_rate: 0.6}
"""


async def test_runs_a_guard_blocked_count_as_blocked(store: Store, tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "guarded.yaml").write_text(GUARDED)
    book = PolicyBook.load(GuardsConfig(), tmp_path)
    model = FunctionModel(lambda m, s: Response(message=AssistantMessage(content="ok")), name="f")
    spec = AgentSpec(name="teller", policy="guarded")
    registry = ModelRegistry(ProjectConfig(), deployments={"default": model})
    programs = Programs()
    programs.register(
        "teller", Agent(spec, AgentDeps(registry, {}, {"teller": spec}, policies=book))
    )
    worker = Worker(store, programs)
    fine = await submit_run(store, "teller", "what is my balance?")
    await worker.run_until_idle()
    assert (await run_result(store, await get_run(store, fine)))["output"] == "ok"
    for _ in range(2):
        run_id = await submit_run(store, "teller", "please wire everything to Bob")
        await worker.run_until_idle()
        run = await get_run(store, run_id)
        result = await run_result(store, run)
        assert run.status == "succeeded" and result["stopped"] == "blocked"  # a safe end
    [state] = await paused_agents(store)
    assert state.agent == "teller" and state.runs == 3 and state.blocks == 2
    with pytest.raises(AgentPaused):
        await submit_run(store, "teller", "what is my balance?")


async def test_an_admin_resets_a_paused_agent(store: Store) -> None:
    await _record(store, "ffff")
    await create_user(store, local_admin("cli"), "bob")
    with pytest.raises(PermissionDenied):
        await reset_agent(store, await principal_for_user(store, "bob"), "support", "looks fine")
    with pytest.raises(RequestError) as blank:
        await reset_agent(store, local_admin("cli"), "support", " ")
    assert blank.value.code == "missing_required_parameter"
    state = await reset_agent(store, local_admin("cli"), "support", "upstream fixed")
    assert state.state == "closed" and state.reset_by == "local" and state.runs == 0
    assert await submit_run(store, "support", "hello")  # accepted again
    with pytest.raises(RequestError) as twice:
        await reset_agent(store, local_admin("cli"), "support", "again")
    assert twice.value.code == "agent_not_paused"
    # Only outcomes after the reset count: three more failures trip it again at min_runs.
    again = await _record(store, "fff", at=state.reset_at or 0)
    assert again.state == "closed" and again.runs == 3
    assert (await _record(store, "f", at=(state.reset_at or 0) + 5)).tripped
    [reset] = await _ledger(store, "admin.agent_reset")
    assert reset == {
        "org_id": "org_default",
        "agent": "support",
        "reason": "upstream fixed",
        "was": "error rate 100% (4 of 4 runs in 600s) reached 50%",
    }
    assert len(await _ledger(store, "agent.paused")) == 2


# -- HTTP and the CLI --------------------------------------------------------------------------

PROJECT = """providers: {t: {type: test}}
models: {echo: {provider: t, model: echo-1}}
routes: {default: {chain: [echo]}}
"""


@pytest.fixture
def project_dir(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with the agent ``support`` (policy ``fragile``), a member ``bob``, and
    ``support`` paused by its breaker."""
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "support.yaml").write_text("instructions: Help.\npolicy: fragile\n")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fragile.yaml").write_text(FRAGILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", store_url)

    async def setup() -> None:
        db = await open_store(store_url)
        try:
            await migrate(db)
            await create_user(db, local_admin("cli"), "bob")
            await _record(db, "ffff", at=time.time() - 10)
        finally:
            await db.close()

    asyncio.run(setup())
    return tmp_path


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_cli_status_reset_and_run(project_dir: Path) -> None:
    listed = _cli("agents", "status")
    assert listed.exit_code == 0, listed.output
    header, row = (line.split("\t") for line in listed.stdout.splitlines())
    assert header == [
        "agent", "state", "reason", "tripped at", "runs", "error rate", "block rate", "window"
    ]  # fmt: skip
    assert row[:2] == ["support", "paused"] and row[2].startswith("error rate 100%")
    assert row[4:] == ["4 (min 4)", "100% (4) / 50%", "0% (0) / 75%", "600s"]
    [shown] = json.loads(_cli("agents", "status", "--json").stdout)
    assert shown["state"] == "paused" and shown["window"]["error_rate"] == 1.0

    refused = _cli("run", "support", "--input", '"hi"')
    assert refused.exit_code == 2 and "error[agent_paused]" in refused.stderr

    denied = _cli("agents", "reset", "support", "--reason", "fixed", "--as", "bob")
    assert denied.exit_code == 2 and "error[permission_denied]" in denied.stderr
    reset = _cli("agents", "reset", "support", "--reason", "fixed", "--json")
    assert reset.exit_code == 0, reset.output
    assert json.loads(reset.stdout)["state"] == "closed"
    queued = _cli("run", "support", "--input", '"hi"')
    assert queued.exit_code == 0, queued.output
    verified = _cli("audit", "verify", "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["ok"] is True


def test_readyz_lists_paused_agents_and_the_api_refuses_their_runs(
    project_dir: Path, store_url: str
) -> None:
    settings = Settings(
        database_url=store_url, dev=True, config_file=project_dir / "elevenfactor.yaml"
    )
    project = load_project(project_dir / "elevenfactor.yaml")
    with running_gateway(settings, project) as (base, _):
        ready = httpx.get(base + "/readyz")
        assert ready.status_code == 200  # a paused agent is not a process failure
        assert ready.json() == {"status": "ready", "details": {"agents_paused": ["support"]}}
        refused = httpx.post(base + "/v1/runs", json={"agent": "support", "input": "hi"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "agent_paused"
        assert _cli("agents", "reset", "support", "--reason", "fixed").exit_code == 0
        assert httpx.get(base + "/readyz").json() == {"status": "ready"}
        created = httpx.post(base + "/v1/runs", json={"agent": "support", "input": "hi"})
        assert created.status_code == 201, created.text
