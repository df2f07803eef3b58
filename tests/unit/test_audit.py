"""``audit``: the ledger, deletions recorded vs. runs deleted behind its back, decisions, heads."""

from __future__ import annotations

from typing import Any

import pytest

from elevenfactor.errors import PermissionDenied, RequestError
from elevenfactor.governance import (
    export_head,
    generate_keypair,
    ledger_head,
    local_admin,
    seal,
    verify_head,
)
from elevenfactor.runtime import (
    Programs,
    RunContext,
    Worker,
    approval,
    audit,
    decide_approval,
    delete_run,
    list_approvals,
    submit_run,
)
from elevenfactor.store import Store
from tests.support.principals import member, reviewer


def programs() -> Programs:
    p = Programs()

    @p.workflow("steps")
    async def steps(ctx: RunContext, n: int) -> int:
        total = 0
        for i in range(n):
            total += await ctx.step(f"s{i}", lambda i=i: i)
        return total

    @p.workflow("pay")
    async def pay(ctx: RunContext, args: dict[str, Any]) -> Any:
        decision = await approval(ctx, "pay", args, group="finance")
        return (decision.arguments or args)["amount"] if decision.approved else None

    return p


async def _populate(store: Store) -> tuple[str, str]:
    rid = await submit_run(store, "steps", 4)
    pay = await submit_run(store, "pay", {"amount": 10})
    worker = Worker(store, programs())
    await worker.run_until_idle()
    [pending] = await list_approvals(store)
    await decide_approval(
        store, pending.id, "edit", by=reviewer("rita", "finance"), arguments={"amount": 9}
    )
    await worker.run_until_idle()
    return rid, pay


async def test_a_clean_store_verifies_and_is_sealed(store: Store) -> None:
    await _populate(store)
    report = await audit(store)
    assert report.ok, report.findings
    assert report.runs == 2 and report.approvals == 1 and report.blocks >= 1
    assert report.unsealed == 0 and report.payloads >= 10


async def test_a_recorded_deletion_passes_and_a_silent_one_is_named(store: Store) -> None:
    rid, pay = await _populate(store)
    with pytest.raises(PermissionDenied):
        await delete_run(store, rid, member("m"), "not mine")
    await delete_run(store, rid, local_admin("cli"), "data subject request")
    assert (await audit(store)).ok
    await store.execute("DELETE FROM journal WHERE run_id = ?", (pay,))
    await store.execute("DELETE FROM approvals WHERE run_id = ?", (pay,))
    await store.execute("DELETE FROM runs WHERE id = ?", (pay,))
    found = {(f.kind, f.subject) for f in (await audit(store)).findings}
    assert ("run", pay) in found and any(kind == "approval" for kind, _ in found)


async def test_only_finished_runs_are_deleted(store: Store) -> None:
    pay = await submit_run(store, "pay", {"amount": 1})
    await Worker(store, programs()).run_until_idle()
    with pytest.raises(RequestError, match="only finished runs"):
        await delete_run(store, pay, local_admin("cli"), "x")


async def test_an_edited_decision_is_named(store: Store) -> None:
    await _populate(store)
    await store.execute(
        "UPDATE approvals SET decision = replace(decision, '\"amount\":9', '\"amount\":99999')"
    )
    [finding] = [f for f in (await audit(store)).findings if f.kind == "approval"]
    assert "decision was changed" in finding.message


async def test_a_forged_event_is_an_insertion_at_its_position(store: Store) -> None:
    from elevenfactor.runtime import load_events
    from elevenfactor.runtime._journal import event_hash

    rid, _ = await _populate(store)
    events = await load_events(store, rid)
    k = 2
    before = events[k - 1]
    await store.execute("UPDATE journal SET n = n + 100 WHERE run_id = ? AND n >= ?", (rid, k))
    await store.execute(
        "UPDATE journal SET n = n - 99 WHERE run_id = ? AND n >= 100", (rid,)
    )  # shifted up by one
    forged = event_hash(before.hash, rid, k, "9", "step", "forged", "done", None, None, 1, 1.0)
    await store.execute(
        "INSERT INTO journal (run_id, n, step_id, kind, name, status, output_hash, error, fence,"
        " created_at, prev_hash, hash) VALUES (?, ?, '9', 'step', 'forged', 'done', NULL, NULL,"
        " 1, 1.0, ?, ?)",
        (rid, k, before.hash, forged),
    )
    [finding] = [f for f in (await audit(store)).findings if f.kind == "journal"]
    assert finding.subject == rid and finding.where == f"event {k}"
    assert "inserted" in finding.message


async def test_a_signed_head_catches_a_rewritten_block(store: Store) -> None:
    await _populate(store)
    private, public = generate_keypair()
    head = await export_head(store, private)
    assert head is not None
    checked = verify_head(__import__("orjson").dumps(head.to_dict()), public)
    assert (await audit(store, against=checked)).ok
    # An attacker rewrites the newest block's header consistently (root and hash recomputed).
    block = await ledger_head(store)
    assert block is not None
    from elevenfactor.governance._ledger import block_hash

    await store.execute(
        "UPDATE ledger_blocks SET sealed_at = 1.0, hash = ? WHERE n = ?",
        (block_hash(block.n, block.prev_hash, block.root, block.entries, 1.0), block.n),
    )
    assert (await audit(store)).ok  # consistent on its own...
    report = await audit(store, against=checked)  # ...but not with what was signed
    assert [f.subject for f in report.findings] == [f"block {block.n}"]
    other, _ = generate_keypair()
    forged = await export_head(store, other)
    assert forged is not None
    with pytest.raises(RequestError, match="signature"):
        verify_head(__import__("orjson").dumps(forged.to_dict()), public)


async def test_sealing_is_idempotent(store: Store) -> None:
    await _populate(store)
    assert await seal(store) is not None
    assert await seal(store) is None
