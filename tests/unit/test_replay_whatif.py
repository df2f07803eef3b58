"""What-if replay on SQLite and PostgreSQL: recorded agent runs executed again with one thing
changed (prompt version, model, release), tools pinned to the recording (a counted tool is not
called) or live; an unrecorded tool call fails the run with ``replay_unpinned_tool``; the
divergence report (first differing step, output diff, cost and latency deltas) and the
aggregate over many runs; replays are read only by whoever may."""

from __future__ import annotations

from pathlib import Path

import pytest

from elevenfactor.errors import ModelNotFound, NotFound, PromptNotFound, RequestError
from elevenfactor.governance import DEFAULT_ORG, Principal
from elevenfactor.runtime import Worker, get_run, submit_run
from elevenfactor.runtime._release import create_release
from elevenfactor.runtime._replay import replay_run
from elevenfactor.runtime._replay_batch import what_if_many
from elevenfactor.runtime._replay_html import html_replay
from elevenfactor.runtime._replay_runs import get_replay, start_what_if
from elevenfactor.runtime._replay_whatif import WhatIf
from elevenfactor.store import Store
from tests.unit.test_replay_setup import V2, World, effects, question, world

ANN = Principal(org_id=DEFAULT_ORG, user_id="u_ann", user_name="ann", roles=frozenset({"admin"}))
BOB = Principal(org_id="org_two", user_id="u_bob", user_name="bob")


@pytest.fixture(autouse=True)
def _clear() -> None:
    effects.clear()


async def _record(store: Store, tmp_path: Path, n: int) -> list[str]:
    w = world(store, tmp_path / "prompts")
    ids = [await submit_run(store, "teller", question(i), owner=ANN) for i in range(n)]
    await Worker(store, w.programs).run_until_idle()
    await w.recorder.aclose()
    return ids


def _v2(w: World) -> str:
    assert w.deps.prompts is not None
    return f"teller@{w.deps.prompts.get('teller').version}"


async def _what_if(w: World, store: Store, ids: list[str], options: WhatIf) -> list[dict]:  # type: ignore[type-arg]
    out = await what_if_many(store, w.programs, ANN, ids, options, flush=w.recorder.flush)
    assert not out.skipped, out.skipped
    return [r.to_dict() for r in out.what_if]


async def test_a_new_prompt_version_diverges_at_the_prompt_with_tools_pinned(
    store: Store, tmp_path: Path
) -> None:
    [rid] = await _record(store, tmp_path, 1)  # alice and bob: two tool calls
    recorded = sum(effects.values())
    w = world(store, tmp_path / "prompts", style=V2)  # the prompt file changed since
    assert (await replay_run(store, w.programs, rid, ANN)).identical  # the recording holds
    [report] = await _what_if(w, store, [rid], WhatIf(prompt=_v2(w)))
    assert report["replay_status"] == "succeeded", report["error"]
    d = report["divergence"]
    assert (d["reason"], d["kind"], d["step_id"]) == ("output", "prompt", "1")  # after now
    assert "SHOUT" in str(d["got"]) and "SHOUT" not in str(d["expected"])
    assert report["output_changed"] is True
    assert '-  "output": "total 150"' in report["output_diff"]
    assert '+  "output": "TOTAL 150"' in report["output_diff"]
    assert report["cost"]["calls"] == 2 and report["replay_cost"]["calls"] == 2
    assert report["cost"]["cost"] > 0 and report["replay_cost"]["cost"] > 0
    assert isinstance(report["latency_delta_ms"], float)
    assert sum(effects.values()) == recorded  # pinned: no tool ran
    run = await get_run(store, report["replay_run_id"], ANN)
    assert run.program == "elevenfactor.replay" and (run.org_id, run.user_id) == (
        DEFAULT_ORG,
        "u_ann",
    )
    live = await _what_if(w, store, [rid], WhatIf(prompt=_v2(w), live_tools=True))
    assert live[0]["replay_status"] == "succeeded"
    assert sum(effects.values()) == recorded + 2  # live: both lookups ran for real
    page = html_replay(report)
    assert "TOTAL 150" in page and "<script" not in page
    await w.recorder.aclose()


async def test_a_dearer_model_costs_more_and_an_unrecorded_call_is_refused(
    store: Store, tmp_path: Path
) -> None:
    [rid] = await _record(store, tmp_path, 1)
    recorded = sum(effects.values())
    w = world(store, tmp_path / "prompts")
    [dear] = await _what_if(w, store, [rid], WhatIf(model="m2"))
    assert dear["replay_status"] == "succeeded" and dear["output_changed"] is False
    assert dear["cost_delta"] == pytest.approx(3 * dear["cost"]["cost"])  # 4x the price
    # a what-if run is a run: it replays deterministically too, with no call
    again = await replay_run(store, w.programs, dear["replay_run_id"], ANN)
    assert again.identical and again.requests_verified == 2
    assert sum(effects.values()) == recorded
    [nosy] = await _what_if(w, store, [rid], WhatIf(model="nosy"))
    assert nosy["replay_status"] == "failed"
    assert nosy["error"]["code"] == "replay_unpinned_tool"
    assert "'balance'" in nosy["error"]["message"] and "carol" in nosy["error"]["message"]
    assert sum(effects.values()) == recorded
    [live] = await _what_if(w, store, [rid], WhatIf(model="nosy", live_tools=True))
    assert live["replay_status"] == "succeeded", live["error"]
    assert effects["balance:carol"] == 1 and sum(effects.values()) == recorded + 3
    await w.recorder.aclose()


async def test_many_runs_give_an_aggregate(store: Store, tmp_path: Path) -> None:
    ids = await _record(store, tmp_path, 6)
    w = world(store, tmp_path / "prompts", style=V2)
    out = await what_if_many(
        store, w.programs, ANN, ids, WhatIf(prompt=_v2(w)), concurrency=3, flush=w.recorder.flush
    )
    summary = out.summary()
    assert (summary["runs"], summary["finished"], summary["failed"]) == (6, 6, 0)
    assert summary["diverged"] == 6 and summary["output_changed"] == 6
    assert summary["identical"] == 0 and len(summary["worst"]) == 6
    assert summary["cost"] > 0 and isinstance(summary["latency_delta_ms_p50"], float)
    rows = await store.fetchall("SELECT batch_id FROM replays")
    assert {r[0] for r in rows} == {out.batch_id}
    page = html_replay(summary, [r.to_dict() for r in out.what_if])
    assert page.count("diverged") >= 6
    await w.recorder.aclose()


async def test_a_what_if_by_release_runs_the_release_agent(store: Store, tmp_path: Path) -> None:
    [rid] = await _record(store, tmp_path, 1)
    w = world(store, tmp_path / "prompts", style=V2)
    spec = w.deps.specs["teller"]
    assert w.deps.prompts is not None
    manifest = {
        "agents": {
            "teller": {
                "spec": spec.model_dump(mode="json"),
                "prompt_version": w.deps.prompts.get("teller").full_hash,
                "policies": [],
            }
        }
    }
    release, _ = await create_release(store, ANN, manifest, name="shouting")
    [report] = await _what_if(w, store, [rid], WhatIf(release="shouting"))
    assert report["replay_status"] == "succeeded", report["error"]
    assert report["divergence"]["kind"] == "prompt" and report["output_changed"] is True
    with pytest.raises(RequestError):
        await start_what_if(store, w.programs, ANN, rid, WhatIf(release="nope"))
    assert release.id
    await w.recorder.aclose()


async def test_bad_what_ifs_are_refused_before_anything_runs(store: Store, tmp_path: Path) -> None:
    [rid] = await _record(store, tmp_path, 1)
    w = world(store, tmp_path / "prompts")
    flow = await submit_run(store, "chores", {"xs": [1]}, owner=ANN)
    await Worker(store, w.programs).run_until_idle()
    for options, error in (
        (WhatIf(model="m2", prompt="teller@x"), RequestError),
        (WhatIf(), RequestError),
        (WhatIf(model="gpt-nope"), ModelNotFound),
        (WhatIf(prompt="other@abc"), PromptNotFound),
    ):
        with pytest.raises(error):
            await start_what_if(store, w.programs, ANN, rid, options)
    with pytest.raises(RequestError) as err:
        await start_what_if(store, w.programs, ANN, flow, WhatIf(model="m2"))
    assert err.value.param == "run"
    assert (await store.fetchone("SELECT COUNT(*) FROM replays")) == (0,)
    row = await start_what_if(store, w.programs, ANN, rid, WhatIf(model="m2"))
    assert (await get_replay(store, ANN, row.id)).run_id == rid
    with pytest.raises(NotFound):
        await get_replay(store, BOB, row.id)
    await w.recorder.aclose()
