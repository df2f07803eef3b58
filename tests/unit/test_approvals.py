"""Approval gates and sub-runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from elevenfactor.errors import (
    ApprovalConflict,
    ApprovalNotFound,
    PermissionDenied,
    RequestError,
    StepFailed,
)
from elevenfactor.runtime import (
    Programs,
    RunContext,
    Worker,
    approval,
    decide_approval,
    get_approval,
    get_run,
    list_approvals,
    load_events,
    run_child,
    run_result,
    submit_run,
    verify_run,
    webhook_hook,
)
from elevenfactor.store import Store
from tests.conftest import free_port
from tests.support.principals import member, reviewer

sent: Counter[str] = Counter()


def gated_programs(**gate: Any) -> Programs:
    programs = Programs()

    @programs.workflow("transfer")
    async def transfer(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
        decision = await approval(ctx, "transfer", {"tool": "transfer", "arguments": args}, **gate)
        if not decision.approved:
            return {"done": False, "reason": decision.reason, "by": decision.decided_by}
        final = decision.arguments or args
        await ctx.step("send", lambda: sent.update([final["to"]]))
        return {"done": True, "to": final["to"], "by": decision.decided_by}

    return programs


@pytest.fixture(autouse=True)
def _clear() -> None:
    sent.clear()


async def test_a_waiting_run_holds_no_worker_and_resumes_with_edited_arguments(
    store: Store,
) -> None:
    programs = gated_programs(group="finance")
    rid = await submit_run(store, "transfer", {"to": "mallory", "amount": 5})
    worker = Worker(store, programs)
    await worker.run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "waiting" and run.lease_owner is None
    assert not await worker.run_once()  # nothing runnable: no worker is held
    [pending] = await list_approvals(store)
    assert pending.run_id == rid and pending.reviewer_group == "finance"
    assert pending.request == {"tool": "transfer", "arguments": {"to": "mallory", "amount": 5}}
    await decide_approval(
        store,
        pending.id,
        "edit",
        by=reviewer("alice", "finance"),
        reason="wrong payee",
        arguments={"to": "bob", "amount": 5},
    )
    with pytest.raises(ApprovalConflict):
        await decide_approval(store, pending.id, "approve", by=reviewer("eve", "finance"))
    await worker.run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "succeeded"
    assert await run_result(store, run) == {"done": True, "to": "bob", "by": "user:alice"}
    assert sent == Counter({"bob": 1})
    events = await load_events(store, rid)
    assert [e.kind for e in events] == ["approval", "step"]
    assert (await verify_run(store, rid)).ok
    assert await list_approvals(store) == []


async def test_reject_reason_reaches_the_program(store: Store) -> None:
    rid = await submit_run(store, "transfer", {"to": "x"})
    worker = Worker(store, gated_programs())
    await worker.run_until_idle()
    [pending] = await list_approvals(store)
    await decide_approval(store, pending.id, "reject", by=reviewer("bob"), reason="not today")
    await worker.run_until_idle()
    result = await run_result(store, await get_run(store, rid))
    assert result == {"done": False, "reason": "not today", "by": "user:bob"}
    assert not sent


async def test_bad_decisions_are_refused(store: Store) -> None:
    await submit_run(store, "transfer", {"to": "x"}, owner=member("m"))
    await Worker(store, gated_programs()).run_until_idle()
    [pending] = await list_approvals(store)
    with pytest.raises(RequestError, match="arguments"):
        await decide_approval(store, pending.id, "edit", by=reviewer("a"))
    with pytest.raises(RequestError, match="unknown action"):
        await decide_approval(store, pending.id, "maybe", by=reviewer("a"))
    with pytest.raises(PermissionDenied, match="reviewer"):  # its own run, but not a reviewer
        await decide_approval(store, pending.id, "approve", by=member("m"))
    with pytest.raises(ApprovalNotFound):  # another member does not even see it
        await decide_approval(store, pending.id, "approve", by=member("n"))
    # Values the journal cannot store are refused before anything is decided.
    for kwargs, param in (({"arguments": {"to": 2**64}}, "arguments"),
                          ({"arguments": {"to": "\ud800"}}, "arguments"),
                          ({"answer": [2**70]}, "answer")):  # fmt: skip
        action = "edit" if "arguments" in kwargs else "answer"
        with pytest.raises(RequestError, match="cannot be stored") as refused:
            await decide_approval(store, pending.id, action, by=reviewer("a"), **kwargs)
        assert refused.value.param == param
    assert (await get_approval(store, pending.id, reviewer("a"))).status == "pending"


async def test_timeout_rejects(store: Store) -> None:
    rid = await submit_run(store, "transfer", {"to": "x"})
    worker = Worker(store, gated_programs(expires_after=0.2))
    await worker.run_until_idle()
    deadline = time.monotonic() + 5
    while (await get_run(store, rid)).status != "succeeded":
        assert time.monotonic() < deadline
        if not await worker.run_once():
            await asyncio.sleep(0.05)
    result = await run_result(store, await get_run(store, rid))
    assert result["done"] is False and result["by"] == "system:timeout"
    assert (await list_approvals(store, status="expired"))[0].decision.timed_out  # type: ignore[union-attr]


async def test_timeout_escalates_to_another_group(store: Store) -> None:
    rid = await submit_run(store, "transfer", {"to": "x"})
    worker = Worker(store, gated_programs(group="l1", expires_after=0.2, on_timeout="escalate:l2"))
    await worker.run_until_idle()
    deadline = time.monotonic() + 5
    while not await list_approvals(store, group="l2"):
        assert time.monotonic() < deadline
        if not await worker.run_once():
            await asyncio.sleep(0.05)
    [pending] = await list_approvals(store, group="l2")
    await decide_approval(store, pending.id, "approve", by=reviewer("manager", "l2"))
    await worker.run_until_idle()
    result = await run_result(store, await get_run(store, rid))
    assert result == {"done": True, "to": "x", "by": "user:manager"}


async def test_answer_in_place_of_the_tool(store: Store) -> None:
    programs = Programs()

    @programs.workflow("ask")
    async def ask(ctx: RunContext, _: Any) -> Any:
        decision = await approval(ctx, "lookup", {"tool": "lookup"})
        return decision.answer if decision.action == "answer" else None

    rid = await submit_run(store, "ask", None)
    worker = Worker(store, programs)
    await worker.run_until_idle()
    [pending] = await list_approvals(store)
    await decide_approval(store, pending.id, "answer", by=reviewer("ops"), answer={"rows": 3})
    await worker.run_until_idle()
    assert await run_result(store, await get_run(store, rid)) == {"rows": 3}


async def test_pending_webhook_is_posted(store: Store) -> None:
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await got.put(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        rid = await submit_run(store, "transfer", {"to": "x"})
        hook = webhook_hook(f"http://127.0.0.1:{port}/hook")
        await Worker(
            store, gated_programs(group="g"), hooks={"approval_pending": hook}
        ).run_until_idle()
        payload = await asyncio.wait_for(got.get(), 5)
        assert payload["event"] == "approval.pending" and payload["run_id"] == rid
        assert payload["group"] == "g" and payload["request"]["tool"] == "transfer"
    finally:
        await runner.cleanup()


async def test_child_runs_deliver_results_and_failures(store: Store) -> None:
    programs = Programs()
    children = Counter[str]()

    @programs.workflow("child")
    async def child(ctx: RunContext, n: int) -> int:
        children[str(n)] += 1
        if n < 0:
            raise ValueError("negative")
        return await ctx.step("square", lambda: n * n)

    @programs.workflow("parent")
    async def parent(ctx: RunContext, ns: list[int]) -> dict[str, Any]:
        total = 0
        for n in ns:
            try:
                total += await run_child(ctx, "child", n)
            except StepFailed as exc:
                return {"total": total, "failed": exc.error_type}
        return {"total": total, "failed": None}

    rid = await submit_run(store, "parent", [2, 3, -1, 5])
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "succeeded"
    assert await run_result(store, run) == {"total": 13, "failed": "ChildRunFailed"}
    assert children == Counter({"2": 1, "3": 1, "-1": 1})
    kinds = [e.kind for e in await load_events(store, rid)]
    assert kinds == ["subrun", "subrun", "subrun"]
