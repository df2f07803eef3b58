"""Deterministic replay on SQLite and PostgreSQL: 50 recorded runs (an agent with parallel tool
calls and a prompt file, a workflow with the clock, random numbers, parallel steps and a
durable timer) re-execute from their journals byte for byte with no model or tool call; an
output edited in the database, or an agent changed since, is reported at the right step;
nothing is written."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from elevenfactor.errors import RequestError, RunNotFound
from elevenfactor.governance import DEFAULT_ORG, Principal
from elevenfactor.runtime import Worker, get_run, load_events, submit_run
from elevenfactor.runtime._replay import replay_run
from elevenfactor.runtime._replay_batch import replay_many
from elevenfactor.runtime._replay_html import html_replay
from elevenfactor.runtime._replay_runs import parse_query, select_runs
from elevenfactor.store import Store
from tests.unit.test_replay_setup import effects, question, world

ANN = Principal(org_id=DEFAULT_ORG, user_id="u_ann", user_name="ann")
BOB = Principal(org_id=DEFAULT_ORG, user_id="u_bob", user_name="bob")


@pytest.fixture(autouse=True)
def _clear() -> None:
    effects.clear()


async def _record(store: Store, tmp_path: Path, n_agent: int, n_flow: int) -> list[str]:
    w = world(store, tmp_path / "prompts")
    ids = [await submit_run(store, "teller", question(i), owner=ANN) for i in range(n_agent)]
    ids += [
        await submit_run(store, "chores", {"xs": list(range(i + 2))}, owner=ANN)
        for i in range(n_flow)
    ]
    await Worker(store, w.programs).run_until_idle()
    await w.recorder.aclose()
    for rid in ids:
        info = await get_run(store, rid)
        assert info.status == "succeeded", info.error
    return ids


async def test_fifty_recorded_runs_replay_byte_for_byte(store: Store, tmp_path: Path) -> None:
    ids = await _record(store, tmp_path, 40, 10)
    calls = sum(effects.values())
    assert calls > 20  # the agent really called its tools while recording
    journal = await store.fetchone("SELECT COUNT(*), MAX(created_at) FROM journal")
    w = world(store, tmp_path / "prompts")
    out = await replay_many(store, w.programs, ANN, ids)
    assert not out.skipped
    reports = out.deterministic
    assert len(reports) == 50
    bad = [r.to_dict() for r in reports if not r.identical]
    assert bad == []
    assert all(r.result_identical and r.replayed == r.steps for r in reports)
    agent = [r for r in reports if r.program == "teller"]
    # every model request was rebuilt from the recorded outputs and matched the recorded one
    assert all(r.requests_verified >= 1 and r.requests_unverified == 0 for r in agent)
    # each context assembly's manifest was recomputed and came out the same
    assert all(r.recomputed >= 1 and r.recomputed == r.recomputed_identical for r in agent)
    flows = [r for r in reports if r.program == "chores"]
    assert all(r.steps >= 7 for r in flows)  # clock, random, uuid, squares, clock, sleep
    assert sum(effects.values()) == calls  # no tool ran again
    assert await store.fetchone("SELECT COUNT(*), MAX(created_at) FROM journal") == journal
    assert out.summary()["identical"] == 50
    await w.recorder.aclose()


async def test_an_output_edited_in_the_journal_is_the_divergence(
    store: Store, tmp_path: Path
) -> None:
    [rid] = await _record(store, tmp_path, 1, 0)
    events = await load_events(store, rid)
    tool = next(e for e in events if e.kind == "tool")
    forged = orjson.dumps(
        {"content": "999", "error_code": None, "is_error": False, "structured": 999},
        option=orjson.OPT_SORT_KEYS,
    )
    await store.execute(
        "UPDATE journal SET output = ? WHERE run_id = ? AND step_id = ?",
        (forged, rid, tool.step_id),
    )
    w = world(store, tmp_path / "prompts")
    report = await replay_run(store, w.programs, rid, ANN)
    assert not report.identical
    d = report.divergence
    assert d is not None and (d.reason, d.kind) == ("request", "model")
    model_steps = [e for e in events if e.kind == "model"]
    assert d.step_id == model_steps[1].step_id  # the turn that read the forged result
    assert "999" in orjson.dumps(d.got).decode()
    await w.recorder.aclose()


async def test_a_changed_agent_diverges_at_its_first_model_request(
    store: Store, tmp_path: Path
) -> None:
    w = world(store, tmp_path / "prompts", instructions="You are a teller.")
    rid = await submit_run(store, "teller", question(0), owner=ANN)
    await Worker(store, w.programs).run_until_idle()
    await w.recorder.aclose()
    same = world(store, tmp_path / "prompts", instructions="You are a teller.")
    assert (await replay_run(store, same.programs, rid, ANN)).identical
    edited = world(store, tmp_path / "prompts", instructions="You are a careful teller.")
    report = await replay_run(store, edited.programs, rid, ANN)
    first_model = next(e for e in await load_events(store, rid) if e.kind == "model")
    d = report.divergence
    # the context assembled for the first request (recomputed) counts the longer instructions
    assert d is not None and (d.reason, d.kind) == ("output", "context")
    assert d.n is not None and d.n == first_model.n - 1
    assert report.diff.startswith("--- recorded") and "tokens" in report.diff
    # a spec that issues other steps: an output schema makes the answer invalid, so the agent
    # asks again — a step the journal does not have
    schema = {"type": "object", "required": ["total"]}
    strict = world(store, tmp_path / "prompts", instructions="You are a teller.",
                   output_schema=schema)  # fmt: skip
    report = await replay_run(store, strict.programs, rid, ANN)
    assert report.divergence is not None and report.divergence.reason in ("missing", "request")
    assert report.result_identical is False
    for x in (same, edited, strict):
        await x.recorder.aclose()


async def test_who_may_replay_what(store: Store, tmp_path: Path) -> None:
    [rid] = await _record(store, tmp_path, 1, 0)
    w = world(store, tmp_path / "prompts")
    with pytest.raises(RunNotFound):
        await replay_run(store, w.programs, rid, BOB)
    running = await submit_run(store, "chores", {"xs": [1]}, owner=ANN)
    with pytest.raises(RequestError) as err:
        await replay_run(store, w.programs, running, ANN)
    assert err.value.code == "run_not_finished"
    assert await select_runs(store, BOB, "program=teller") == []
    assert await select_runs(store, ANN, "program=teller status=succeeded since=1d") == [rid]
    await w.recorder.aclose()


@pytest.mark.parametrize("bad", ["program", "colour=red", "status=odd", "limit=0", "since=soon"])
def test_a_bad_query_names_itself(bad: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_query(bad)
    assert err.value.param == "runs"


async def test_the_html_report_escapes_what_runs_say(store: Store, tmp_path: Path) -> None:
    [rid] = await _record(store, tmp_path, 1, 0)
    events = await load_events(store, rid)
    last = [e for e in events if e.kind == "model"][-1]
    evil = b'{"cache_hit":false,"deployment":null,"finish_reason":"stop","message":{"content":' \
        b'"<script>alert(1)</script>","role":"assistant","tool_calls":[]},"model":"",' \
        b'"usage":{"cached_input_tokens":0,"input_tokens":1,"output_tokens":1}}'  # fmt: skip
    await store.execute(
        "UPDATE journal SET output = ? WHERE run_id = ? AND step_id = ?",
        (evil, rid, last.step_id),
    )
    w = world(store, tmp_path / "prompts")
    report = await replay_run(store, w.programs, rid, ANN)
    assert report.divergence is not None and report.divergence.reason == "result"
    page = html_replay(report.to_dict())
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "src=" not in page and "href=" not in page
    await w.recorder.aclose()
