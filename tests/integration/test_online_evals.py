"""Online evaluation end to end with a real worker, on SQLite and PostgreSQL: runs of an agent
(the ``test`` provider's echo model) end, the sampled ones get a durable scoring run that
writes one ``source='online'`` feedback row per scorer — once, even when the run's end or the
scoring run's write is re-done after a crash — unsampled, child, eval and scoring runs get
none; a judge's call is a metered model call of the scoring run; a scorer that fails is an
error row, never a failed run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from elevenfactor.config import Settings, load_project
from elevenfactor.evals import _online, _online_program
from elevenfactor.evals._online import ONLINE_EVAL, sampled, scoring_run_id
from elevenfactor.governance import SYSTEM
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelSettings,
    Response,
    Usage,
)
from elevenfactor.runtime import _execute, describe_steps, get_run, submit_run
from elevenfactor.runtime._feedback import list_feedback
from elevenfactor.runtime._service import build_worker, running
from elevenfactor.runtime._worker import Worker
from elevenfactor.store import Store

pytestmark = pytest.mark.integration

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}, jm: {provider: t, model: j}}
routes: {default: {chain: [echo]}, judge: {chain: [jm]}}
evals:
  online:
%s
"""
QUALITY = """
    - name: quality
      agent: support
      sample: 0.5
      expect:
        - {type: contains, value: "echo:"}
        - {type: contains, value: refund, name: mentions-refund}
"""
Judge = Callable[[Sequence[Message], ModelSettings], Response]


def _answer(text: str) -> Response:
    return Response(
        message=AssistantMessage(content=text), usage=Usage(input_tokens=7, output_tokens=3)
    )


async def _until(cond: Callable[[], Awaitable[bool]], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def online_worker(
    store: Store, home: Path, rules: str, judge: Judge | None = None
) -> AsyncIterator[Worker]:
    """A worker of the project (agent ``support``; ``rules`` under ``evals.online``), with the
    ``judge`` route answered by ``judge``; stopped on exit."""
    (home / "elevenfactor.yaml").write_text(PROJECT % rules)
    (home / "agents").mkdir(exist_ok=True)
    (home / "agents" / "support.yaml").write_text("instructions: Help.\nmodel: default\n")
    settings = Settings(
        database_url=store.url, data_dir=home, config_file=home / "elevenfactor.yaml",
        lease_seconds=1.0, worker_poll_interval=0.1,
    )  # fmt: skip
    project = load_project(home / "elevenfactor.yaml")
    async with running(settings, project, store) as runtime:
        if judge is not None:
            runtime.registry.entries["judge"] = FunctionModel(judge, name="judge")
        worker = build_worker(store, settings, project, runtime.programs)
        task = asyncio.create_task(worker.serve())
        try:
            yield worker
        finally:
            await worker.shutdown(5)
            await task


async def _count(store: Store, sql: str, *params: Any) -> int:
    row = await store.fetchone(sql, params)
    return int(row[0]) if row is not None else 0


async def _scoring_done(store: Store, n: int) -> bool:
    done = await _count(
        store,
        "SELECT COUNT(*) FROM runs WHERE program = ? AND status IN ('succeeded', 'failed')",
        ONLINE_EVAL,
    )
    return done >= n


def _ids(prefix: str, n: int, *, want: bool) -> list[str]:
    """``n`` run ids that the ``quality`` rule (0.5) samples (``want``) or does not."""
    out, i = [], 0
    while len(out) < n:
        rid = f"{prefix}-{i}"
        if sampled("quality", rid, 0.5) == want:
            out.append(rid)
        i += 1
    return out


@pytest.fixture(autouse=True)
def _fast_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_online, "START_DELAY", 0.05)


async def test_sampled_runs_get_one_score_per_scorer_and_others_none(
    store: Store, tmp_path: Path
) -> None:
    ids = [f"run-{i}" for i in range(24)]
    chosen = [r for r in ids if sampled("quality", r, 0.5)]
    assert 0 < len(chosen) < len(ids)
    child = _ids("child", 1, want=True)[0]
    evaluated = _ids("evalrun", 1, want=True)[0]
    async with online_worker(store, tmp_path, QUALITY) as worker:
        for i, rid in enumerate(ids):
            text = "I want a refund" if i % 2 else "hello"
            await submit_run(store, "support", text, run_id=rid)
        await submit_run(store, "support", "refund", run_id=child, parent_id=ids[0])
        await submit_run(store, "support", "refund", run_id=evaluated, tags=["eval:support"])
        worker.notify()
        await _until(lambda: _scoring_done(store, len(chosen)), "the scoring runs")
        await _until(lambda: _all_ended(store), "every run to end")
        await asyncio.sleep(0.3)  # nothing more is coming: no scoring run of a scoring run
    scoring = await store.fetchall(
        "SELECT id, status, user_id, tags FROM runs WHERE program = ?", (ONLINE_EVAL,)
    )
    assert sorted(r[0] for r in scoring) == sorted(scoring_run_id("quality", r) for r in chosen)
    assert {(r[1], r[2]) for r in scoring} == {("succeeded", "scorer:quality")}
    assert all(json.loads(r[3]) == ["online-eval", "online-eval:quality"] for r in scoring)
    rows = await store.fetchall(
        "SELECT run_id, user_id, org_id, score, label, comment, metadata, rule, scorer"
        " FROM run_feedback WHERE source = 'online'"
    )
    assert sorted({r[0] for r in rows}) == sorted(chosen)  # not the child, not the eval run
    assert len(rows) == 2 * len(chosen)
    for run_id, user, org, score, label, comment, meta, rule, scorer in rows:
        assert (user, org, rule) == ("scorer:quality", "org_default", "quality")
        refund = ids.index(run_id) % 2 == 1
        expected = True if scorer == "contains" else refund
        assert scorer in ("contains", "mentions-refund")
        assert (label, score) == (("pass", 1.0) if expected else ("fail", 0.0))
        assert comment == ("found" if expected else "missing 'refund'")
        data = json.loads(meta)
        assert data["rule"] == "quality" and data["scorer"] == scorer
        assert data["scoring_run"] == scoring_run_id("quality", run_id)
    # they are listed with the run's feedback, with their source, and filtered by it
    page = await list_feedback(store, SYSTEM, chosen[0], source="online")
    assert {f.source for f in page.data} == {"online"} and len(page.data) == 2
    assert (await list_feedback(store, SYSTEM, chosen[0], source="human")).data == []
    ledger = await _count(store, "SELECT COUNT(*) FROM ledger WHERE kind = 'run.feedback'")
    assert ledger == len(rows)


async def _all_ended(store: Store) -> bool:
    left = await _count(
        store, "SELECT COUNT(*) FROM runs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"
    )
    return left == 0


async def test_an_end_and_a_write_redone_after_crashes_score_once(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _ids("crash", 1, want=True)[0]
    real_settle = _execute.settle_run
    real_record = _online_program.record_scores
    crashes: list[str] = []

    async def settle_crashing_once(s: Store, run_id: str, *a: Any, **kw: Any) -> Any:
        if run_id == target and "settle" not in crashes:
            crashes.append("settle")  # the scoring run was submitted; the end is not written
            raise RuntimeError("worker died before writing the end")
        return await real_settle(s, run_id, *a, **kw)

    async def record_then_crash(*args: Any, **kwargs: Any) -> int:
        written = await real_record(*args, **kwargs)
        if "write" not in crashes:
            crashes.append("write")  # rows written, the step's journal entry is not
            raise asyncio.CancelledError
        return written

    monkeypatch.setattr(_execute, "settle_run", settle_crashing_once)
    monkeypatch.setattr(_online_program, "record_scores", record_then_crash)
    async with online_worker(store, tmp_path, QUALITY) as worker:
        sampler = worker.hooks["run_ending"]
        calls: list[str] = []

        async def counting(s: Store, lease: Any, status: str) -> list[str]:
            calls.append(lease.run_id)
            out: list[str] = await sampler(s, lease, status)
            return out

        worker.hooks["run_ending"] = counting
        await submit_run(store, "support", "refund please", run_id=target)
        worker.notify()
        sid = scoring_run_id("quality", target)
        await _until(lambda: _scoring_done(store, 1), "the scoring run", within=90)
    assert crashes == ["settle", "write"]
    assert calls.count(target) == 2  # the end was reached twice: submitted twice, one run
    assert (await get_run(store, target)).status == "succeeded"
    assert (await get_run(store, sid)).status == "succeeded"
    assert await _count(store, "SELECT COUNT(*) FROM runs WHERE program = ?", ONLINE_EVAL) == 1
    rows = await _count(store, "SELECT COUNT(*) FROM run_feedback WHERE run_id = ?", target)
    assert rows == 2
    ledger = await _count(store, "SELECT COUNT(*) FROM ledger WHERE kind = 'run.feedback'")
    assert ledger == 2
    steps = [s["name"] for s in await describe_steps(store, sid)]
    assert steps.count("feedback") == 1


async def test_a_judges_call_is_metered_as_the_scoring_runs(store: Store, tmp_path: Path) -> None:
    seen: list[str] = []

    def judge(messages: Sequence[Message], settings: ModelSettings) -> Response:
        seen.append(str(messages[-1].content))
        return _answer('{"score": 0.9, "reason": "polite and on topic"}')

    rules = """
    - name: judged
      agent: support
      sample: 1
      judge_route: judge
      expect: [{type: judge, rubric: "Is it polite?", threshold: 0.8}]
"""
    async with online_worker(store, tmp_path, rules, judge) as worker:
        rid = await submit_run(store, "support", "Where is my parcel?")
        worker.notify()
        sid = scoring_run_id("judged", rid)
        await _until(lambda: _scoring_done(store, 1), "the scoring run")

        async def recorded() -> bool:
            return await _count(store, "SELECT COUNT(*) FROM model_calls WHERE run_id = ?", sid) > 0

        await _until(recorded, "the judge's model call to be recorded")
    call = await store.fetchone(
        "SELECT agent, route, tokens_in, tokens_out, user_id, org_id FROM model_calls"
        " WHERE run_id = ?",
        (sid,),
    )
    assert call is not None and tuple(call) == (
        ONLINE_EVAL, "judge", 7, 3, "scorer:judged", "org_default",
    )  # fmt: skip
    kinds = [(s["kind"], s["name"]) for s in await describe_steps(store, sid)]
    assert ("budget", "budget.reserve") in kinds and ("budget", "budget.commit") in kinds
    assert ("model", "model") in kinds
    [prompt] = seen
    assert "echo: Where is my parcel?" in prompt and "Is it polite?" in prompt
    [row] = await store.fetchall(
        "SELECT score, label, comment, scorer FROM run_feedback WHERE run_id = ?", (rid,)
    )
    assert tuple(row) == (0.9, "pass", "polite and on topic", "judge")


async def test_failing_scorers_are_error_rows_and_the_run_still_succeeds(
    store: Store, tmp_path: Path
) -> None:
    def judge(messages: Sequence[Message], settings: ModelSettings) -> Response:
        raise RuntimeError("judge is down")

    rules = """
    - name: flaky
      agent: support
      sample: 1
      expect:
        - {type: custom, ref: "tests.support.eval_scorers:raises"}
        - {type: judge, rubric: "polite", route: judge}
        - {type: contains, value: echo}
"""
    async with online_worker(store, tmp_path, rules, judge) as worker:
        rid = await submit_run(store, "support", "hi")
        worker.notify()
        await _until(lambda: _scoring_done(store, 1), "the scoring run")
    assert (await get_run(store, rid)).status == "succeeded"
    assert (await get_run(store, scoring_run_id("flaky", rid))).status == "succeeded"
    rows = await store.fetchall(
        "SELECT scorer, label, score, comment, metadata FROM run_feedback WHERE run_id = ?"
        " ORDER BY scorer",
        (rid,),
    )
    by = {r[0]: r for r in rows}
    assert set(by) == {"tests.support.eval_scorers:raises", "judge", "contains"}
    custom = by["tests.support.eval_scorers:raises"]
    assert (custom[1], custom[2]) == ("error", 0.0)
    assert custom[3] == "the scorer raised RuntimeError: scorer bug"
    assert json.loads(custom[4])["error"] == custom[3]
    assert by["judge"][1] == "error" and "judge is down" in by["judge"][3]
    assert by["contains"][1:3] == ("pass", 1.0)


async def test_a_scoring_run_waits_for_the_end_to_be_written(store: Store, tmp_path: Path) -> None:
    """The scoring run is submitted just before its run's end is written: if it starts first,
    it waits on a durable timer rather than read an unfinished run."""
    rid = _ids("early", 1, want=True)[0]
    async with online_worker(store, tmp_path, QUALITY) as worker:
        # As if the end's write were still to come: the run is running when scoring starts.
        await submit_run(store, "support", "refund", run_id=rid, start_at=time.time() + 3600)
        await _online.OnlineSampler(worker_rules(worker))(store, _lease(rid), "succeeded")
        sid = scoring_run_id("quality", rid)
        worker.notify()

        async def parked() -> bool:
            steps = await describe_steps(store, sid)
            return any(s["name"] == "run.wait" for s in steps)

        await _until(parked, "the scoring run to wait")
        assert await _count(store, "SELECT COUNT(*) FROM run_feedback") == 0
        await store.execute("UPDATE runs SET wake_at = NULL WHERE id = ?", (rid,))
        worker.notify()
        await _until(lambda: _scoring_done(store, 1), "the scoring run", within=90)
    assert await _count(store, "SELECT COUNT(*) FROM run_feedback WHERE run_id = ?", rid) == 2


def worker_rules(worker: Worker) -> Any:
    sampler = worker.hooks["run_ending"]
    assert isinstance(sampler, _online.OnlineSampler)
    return sampler.rules


def _lease(run_id: str) -> Any:
    from elevenfactor.runtime._runs import Lease

    return Lease(run_id, "support", "default", 1, 1, "h", "g", None, 0.0)
