"""The run page ``/ui/runs/{id}`` on both stores, through a real server: facts, the trace
waterfall, each step's input and output (masked when a guard policy applied, "erased" after a
retention purge), the context manifest, the chain's audit status, live updates over
server-sent events, and the cancel / retry / replay buttons. Another member's run is a 404
that shows none of it; malformed queries are 400 pages; forms need the CSRF token.

Runs with rich journals (model and tool calls with call records, guards, a context manifest, a
child run) are executed before the server starts by a worker of this module's own programs on
queue ``seed``; runs of the server's programs (``greet``, ``transfer``) go through its API and
its in-process worker."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from elevenfactor.config import RetentionConfig, Settings, parse_project
from elevenfactor.config._retention import RetentionRule
from elevenfactor.governance import (
    Principal,
    create_key,
    create_user,
    local_admin,
    principal_for_user,
)
from elevenfactor.governance._retention import apply_retention
from elevenfactor.observe import CallRecorder
from elevenfactor.observe._calls import CallRecord
from elevenfactor.runtime import Programs, RunContext, Worker, WorkerOptions, run_child, submit_run
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.serve import sse_events, wait_for
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = {
    "providers": {"t": {"type": "test"}},
    "models": {"echo": {"provider": "t", "model": "e"}},
    "routes": {"default": {"chain": ["echo"]}},
    "programs": ["tests.support.programs:programs"],
}
EMAIL = "ann.private@example.com"
BOB_SECRET = "bob-only-marker-7731"
MANIFEST = {
    "counter": "estimate:1",
    "window": 4096,
    "reserved_output": 512,
    "budget": 3584,
    "overhead": 12,
    "total": 240,
    "sections": [
        {"name": "instructions", "priority": None, "min_tokens": 0, "max_tokens": None,
         "wanted": 40, "tokens": 40, "included": ["instructions"]},
        {"name": "history", "priority": 2, "min_tokens": 0, "max_tokens": 2000, "wanted": 900,
         "tokens": 200, "included": ["history[3]"],
         "left_out": [{"id": "history[0]", "reason": "dropped_oldest", "tokens": 700}]},
    ],
}  # fmt: skip

seed_programs = Programs()


def _response(content: str | None, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {
        "message": {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {"id": f"c{i}", "name": n, "arguments": orjson.dumps(a).decode()}
                for i, (n, a) in enumerate(calls)
            ],
        },
        "usage": {"input_tokens": 30, "output_tokens": 12},
        "deployment": "echo",
    }


async def _model_step(ctx: RunContext, prompt: str, response: dict[str, Any]) -> Any:
    """A model step with its call record (request kept), as an agent's call writes both."""
    owner = ctx.lease.owner
    assert owner is not None
    org, team, user, _ = owner.owner()

    async def call() -> dict[str, Any]:
        recorder = CallRecorder(ctx.store, record_payloads=True)
        request = {"messages": [{"role": "user", "content": prompt}]}
        recorder.record(
            CallRecord(trace_id="0" * 32, route="default", stream=False, status="ok",
                       tokens_in=30, tokens_out=12, latency_ms=40.0, deployment="echo",
                       cost=0.0042, run_id=ctx.run_id, org_id=org, team_id=team, user_id=user,
                       request=orjson.dumps(request))
        )  # fmt: skip
        await recorder.flush()
        return response

    return await ctx.step("model", call, kind="model")


@seed_programs.workflow("traced")
async def traced(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """A model asks for a tool, gets its result and answers; a context step on the way."""
    await ctx.step("context", lambda: MANIFEST, kind="context")
    await _model_step(ctx, "add 1 and 2", _response(None, [("add", {"a": 1, "b": 2})]))
    await ctx.step("budget.commit", lambda: {"hold": "h1", "cost": 0.0042}, kind="budget")
    await ctx.step("tool:add", lambda: {"content": "3", "is_error": False}, kind="tool")
    answer = f"1 + 2 = 3 (mail {data.get('mail', EMAIL)}) {data.get('marker', '')}"
    await _model_step(ctx, "say it", _response(answer, []))
    return {"answer": answer}


@seed_programs.workflow("guarded")
async def guarded(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """A guard policy checked the input (a guard step), then the output names an address."""
    await ctx.step("guard.input", lambda: {"action": "allow", "policy": "p@1"}, kind="guard")
    return await ctx.step("reply", lambda: {"text": f"write to {EMAIL}"})


@seed_programs.workflow("erasable")
async def erasable(ctx: RunContext, data: dict[str, Any]) -> str:
    """Content a retention period erases."""
    return str(await ctx.step("note", lambda: "the old note text"))


@seed_programs.workflow("parent")
async def parent(ctx: RunContext, data: dict[str, Any]) -> Any:
    """A run with a child run."""
    return await run_child(ctx, "child", {"x": 1}, queue="seed")


@seed_programs.workflow("child")
async def child(ctx: RunContext, data: dict[str, Any]) -> Any:
    """A child run."""
    return await ctx.step("work", lambda: {"done": data["x"]})


@dataclass
class Site:
    base: str
    url: str
    keys: dict[str, str]
    runs: dict[str, str]

    def client(self, who: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.base, timeout=30, headers=headers)


async def _seed(url: str) -> tuple[dict[str, str], dict[str, str]]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        keys: dict[str, str] = {}
        for name, roles in (("ann", ("member",)), ("bob", ("member",)), ("root", ("admin",))):
            await create_user(db, admin, name, roles=roles)
            _, keys[name] = await create_key(db, admin, f"key-{name}", user=name)
        ann, bob = await principal_for_user(db, "ann"), await principal_for_user(db, "bob")
        runs = {
            "traced": await _submit(db, "traced", {}, ann),
            "guarded": await _submit(db, "guarded", {}, ann),
            "erasable": await _submit(db, "erasable", {}, ann),
            "parent": await _submit(db, "parent", {}, ann),
            "tampered": await _submit(db, "guarded", {"n": 2}, ann),
            "bob": await _submit(db, "traced", {"mail": "bob@example.org", "marker": BOB_SECRET},
                                 bob),
        }  # fmt: skip
        worker = Worker(db, seed_programs, WorkerOptions(queues=("seed",)))
        await worker.run_until_idle()
        await db.execute(  # an edit behind the runtime's back: the audit must find it
            "UPDATE journal SET name = 'edited' WHERE run_id = ? AND n = 0", (runs["tampered"],)
        )
        rule = RetentionRule(runs="1s")
        await apply_retention(
            db, RetentionConfig(programs={"erasable": rule}), now=time.time() + 60
        )
        return keys, runs
    finally:
        await db.close()


async def _submit(db: Store, program: str, data: Any, owner: Principal) -> str:
    return await submit_run(db, program, data, queue="seed", owner=owner)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp(f"ui-run-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    keys, runs = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=True)
    with running_gateway(settings, parse_project(PROJECT)) as (base, _):
        yield Site(base, url, keys, runs)


def _api_run(site: Site, who: str, program: str, data: Any) -> str:
    with site.client(who) as c:
        made = c.post("/v1/runs", json={"program": program, "input": data})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


def _status(site: Site, who: str, run_id: str) -> str:
    with site.client(who) as c:
        return str(c.get(f"/v1/runs/{run_id}").json()["status"])


@contextmanager
def _signed_in(site: Site, who: str) -> Iterator[tuple[httpx.Client, str]]:
    """A browser-like client signed in with a session cookie, and its CSRF token."""
    with httpx.Client(base_url=site.base, timeout=30) as c:
        form = c.get("/ui/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        done = c.post("/ui/login", data={"csrf": token.group(1), "api_key": site.keys[who]})
        assert done.status_code == 303, done.text
        yield c, c.cookies["ef_csrf"]


def _no_inline_code(html: str) -> None:
    assert 'style="' not in html and " onclick=" not in html
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None


def test_the_page_shows_facts_waterfall_steps_manifest_and_audit(site: Site) -> None:
    rid = site.runs["traced"]
    with site.client("ann") as c:
        page = c.get(f"/ui/runs/{rid}")
    assert page.status_code == 200, page.text
    html = page.text
    _no_inline_code(html)
    assert re.search(r"<h1>[^<]*<code[^>]*>" + re.escape(rid) + "</code>", html)
    assert 'id="run-status"' in html and 'data-status="succeeded"' in html
    assert '<svg class="chart waterfall" role="img" aria-label="Trace waterfall"' in html
    for css in ("bar model", "bar tool", "bar budget", "bar other"):
        assert f'class="{css}"' in html, css
    assert "<caption>Trace waterfall data</caption>" in html
    assert '<h2 id="steps-h">Steps</h2>' in html and '<h2 id="audit-h">Audit</h2>' in html
    assert "Chain verified" in html
    # The tool step's input is the model's tool call; the model step's is its call record.
    assert "Arguments (as the model asked)" in html and "&#34;a&#34;: 1" in html
    assert "add 1 and 2" in html and "Request (default)" in html
    assert "$0.004200" in html and "42 tokens" in html
    assert "Context manifest of step 0: 240 of 3584 tokens" in html
    assert "1 dropped oldest (700 tokens)" in html
    # No guard policy applied: payloads are shown as recorded.
    assert EMAIL in html and "[REDACTED" not in html
    assert "Cancel run" not in html and ">Retry<" not in html  # finished; not deployed here
    assert "<dt>Owner</dt><dd>ann" in html


def test_a_guard_policy_masks_personal_data_on_the_page(site: Site) -> None:
    with site.client("ann") as c:
        page = c.get(f"/ui/runs/{site.runs['guarded']}")
        live = c.get(f"/ui/runs/{site.runs['guarded']}?part=live")
    for html in (page.text, live.text):
        assert "[REDACTED:email]" in html and EMAIL not in html
        assert "Redacted by policy." in html


def test_erased_payloads_are_shown_as_erased_and_the_chain_still_verifies(site: Site) -> None:
    with site.client("ann") as c:
        html = c.get(f"/ui/runs/{site.runs['erasable']}").text
    assert "the old note text" not in html
    assert html.count('class="badge s-erased">erased</span>') >= 2  # input and the step output
    assert "Chain verified" in html and "erased by retention" in html


def test_child_runs_link_both_ways(site: Site) -> None:
    rid = site.runs["parent"]
    with site.client("ann") as c:
        html = c.get(f"/ui/runs/{rid}").text
        assert f'href="/ui/runs/{rid}.0"' in html and "Child run input" in html
        child_html = c.get(f"/ui/runs/{rid}.0").text
    assert "<dt>Parent run</dt>" in child_html and f'href="/ui/runs/{rid}"' in child_html
    assert 'class="bar child"' in html


def test_another_members_run_is_a_404_showing_none_of_it(site: Site) -> None:
    bob_run, ann_run = site.runs["bob"], site.runs["traced"]
    with site.client("ann") as c:
        for path in (f"/ui/runs/{bob_run}", f"/ui/runs/{bob_run}?part=live",
                     f"/ui/runs/{bob_run}/events"):  # fmt: skip
            resp = c.get(path)
            assert resp.status_code == 404, path
            assert resp.headers["content-type"].startswith("text/html")
            assert BOB_SECRET not in resp.text and "bob@example.org" not in resp.text
            assert "run_not_found" in resp.text
        unknown = c.get("/ui/runs/no-such-run")
        assert unknown.status_code == 404 and "run_not_found" in unknown.text
    with site.client("bob") as c:
        own = c.get(f"/ui/runs/{bob_run}")
        assert own.status_code == 200 and BOB_SECRET in own.text
        theirs = c.get(f"/ui/runs/{ann_run}")
        assert theirs.status_code == 404 and EMAIL not in theirs.text
    with site.client("root") as c:  # an admin sees the organisation's runs
        assert c.get(f"/ui/runs/{ann_run}").status_code == 200
    with _signed_in(site, "bob") as (bob, token):
        for action in ("cancel", "retry", "replay"):
            resp = bob.post(f"/ui/runs/{ann_run}/{action}", data={"csrf": token})
            assert resp.status_code == 404 and EMAIL not in resp.text, action


@pytest.mark.parametrize(
    "query",
    ["from=-1", "from=abc", "from=99999999999", "notice=bogus", "part=full", "colour=red",
     "step=" + "x" * 300, "reason=cosmic", "from=1&from=2"],
)  # fmt: skip
def test_malformed_queries_are_400_pages(site: Site, query: str) -> None:
    with site.client("ann") as c:
        resp = c.get(f"/ui/runs/{site.runs['traced']}?{query}")
        assert resp.status_code == 400, query
        assert resp.headers["content-type"].startswith("text/html")
        assert "Error code" in resp.text


def test_bad_ids_and_event_queries_are_400_pages(site: Site) -> None:
    with site.client("ann") as c:
        bad = c.get("/ui/runs/bad%20id")
        assert bad.status_code == 400 and "invalid_id" in bad.text
        ev = c.get(f"/ui/runs/{site.runs['traced']}/events?after=-3")
        assert ev.status_code == 400 and ev.headers["content-type"].startswith("text/html")


def test_not_signed_in_goes_to_the_login_form(site: Site) -> None:
    rid = site.runs["traced"]
    with httpx.Client(base_url=site.base, timeout=30) as c:
        page = c.get(f"/ui/runs/{rid}")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/ui/login?next=%2Fui%2Fruns%2F")
        assert c.get(f"/ui/runs/{rid}/events").status_code == 303
        post = c.post(f"/ui/runs/{rid}/cancel", data={"csrf": "x" * 30})
        assert post.status_code == 303 and post.headers["location"] == "/ui/login"


def test_forms_without_the_csrf_token_are_refused(site: Site) -> None:
    rid = _api_run(site, "ann", "transfer", {"to": "x", "amount": 1})
    wait_for(lambda: _status(site, "ann", rid) == "waiting", "the run to park")
    with _signed_in(site, "ann") as (c, token):
        for data in ({"reason": "x"}, {"csrf": "y" * 32}):
            resp = c.post(f"/ui/runs/{rid}/cancel", data=data)
            assert resp.status_code == 403 and "ui_csrf_failed" in resp.text
        with site.client("ann") as bearer:  # a key alone has no CSRF cookie: no form passes
            assert bearer.post(f"/ui/runs/{rid}/cancel", data={"csrf": token}).status_code == 403
        assert _status(site, "ann", rid) == "waiting"
        assert c.post(f"/ui/runs/{rid}/cancel", data={"csrf": token}).status_code == 303


def test_a_waiting_run_updates_live_and_cancels(site: Site) -> None:
    rid = _api_run(site, "ann", "transfer", {"to": "mallory", "amount": 5})
    wait_for(lambda: _status(site, "ann", rid) == "waiting", "the run to park")
    with _signed_in(site, "ann") as (c, token):
        page = c.get(f"/ui/runs/{rid}")
        assert 'data-status="waiting"' in page.text and ">Cancel run</button>" in page.text
        assert 'data-events="/ui/runs/' + rid + '/events?after=0"' in page.text
        assert "Waiting for approval" in page.text and ">Review</a>" in page.text
        assert "/ui/static/run.js" in page.text and ">Replay<" not in page.text
        events: list[tuple[str, dict[str, Any]]] = []
        with c.stream("GET", f"/ui/runs/{rid}/events?after=0") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(stream):
                events.append(event)
                if event == ("status", {"id": rid, "status": "waiting",
                                        "cancel_requested": False}):  # fmt: skip
                    with httpx.Client(base_url=site.base, cookies=c.cookies, timeout=30) as other:
                        done = other.post(f"/ui/runs/{rid}/cancel", data={"csrf": token})
                    assert done.status_code == 303
                    assert done.headers["location"] == f"/ui/runs/{rid}?notice=cancelled"
                if event[0] == "end":
                    break
        assert events[-1] == ("end", {"id": rid, "status": "cancelled", "cancel_requested": True})
        assert ("status", {"id": rid, "status": "cancelled", "cancel_requested": True}) in events
        for _kind, data in events:  # no payloads on the page's stream
            assert "output" not in data and "result" not in data and "mallory" not in str(data)
        after = c.get(f"/ui/runs/{rid}?notice=cancelled")
        assert "Run cancelled." in after.text and 'data-status="cancelled"' in after.text
        assert ">Cancel run</button>" not in after.text and ">Retry</button>" in after.text
        live = c.get(f"/ui/runs/{rid}?part=live")
        assert live.status_code == 200 and "<html" not in live.text
        assert 'class="run-live-part" data-status="cancelled" data-finished="true"' in live.text
        again = c.post(f"/ui/runs/{rid}/cancel", data={"csrf": token})
        assert again.status_code == 409 and "run_finished" in again.text


def _retry_form(html: str) -> dict[str, str]:
    found = re.search(r'name="retry" value="(\d+)"', html)
    assert found is not None and ">Retry</button>" in html
    return {"retry": found.group(1)}


def test_retry_submits_a_linked_new_run(site: Site) -> None:
    rid = _api_run(site, "ann", "greet", {"wrong": "input"})
    wait_for(lambda: _status(site, "ann", rid) == "failed", "the run to fail")
    with _signed_in(site, "ann") as (c, token):
        page = c.get(f"/ui/runs/{rid}")
        assert 'data-status="failed"' in page.text and f"{rid}:retry-1</code>" in page.text
        form = {"csrf": token, **_retry_form(page.text)}
        done = c.post(f"/ui/runs/{rid}/retry", data=form)
        assert done.status_code == 303
        new = f"{rid}:retry-1"
        assert done.headers["location"] == f"/ui/runs/{rid}?notice=retried&run={new}"
        twice = c.post(f"/ui/runs/{rid}/retry", data=form)  # the same form again: the same run
        assert twice.headers["location"] == done.headers["location"]
        shown = c.get(done.headers["location"]).text
        assert "Retry submitted as a new run" in shown and f'href="/ui/runs/{new}"' in shown
        assert "<dt>Retries</dt>" in shown and shown.count(f'href="/ui/runs/{rid}:retry-') == 2
        wait_for(lambda: _status(site, "ann", new) == "failed", "the retry to fail too")
        retry_page = c.get(f"/ui/runs/{new}").text
        assert "<dt>Retry of</dt>" in retry_page and f'href="/ui/runs/{rid}"' in retry_page
        with site.client("ann") as api:
            assert api.get(f"/v1/runs/{new}").json()["program"] == "greet"
        second = c.post(f"/ui/runs/{new}/retry", data={"csrf": token, **_retry_form(retry_page)})
        assert second.headers["location"].endswith(f"run={rid}:retry-2")
        for bad in ("", "0", "21", "1x", "\u00b2"):
            resp = c.post(f"/ui/runs/{rid}/retry", data={"csrf": token, "retry": bad})
            assert resp.status_code == 400 and "ui_bad_form" in resp.text, bad
        ok = _api_run(site, "ann", "greet", {"name": "ada"})
        wait_for(lambda: _status(site, "ann", ok) == "succeeded", "the run to succeed")
        refused = c.post(f"/ui/runs/{ok}/retry", data={"csrf": token, "retry": "1"})
        assert refused.status_code == 409 and "ui_retry_not_allowed" in refused.text


def test_replay_reports_its_verdict(site: Site) -> None:
    rid = _api_run(site, "ann", "greet", {"name": "ada"})
    wait_for(lambda: _status(site, "ann", rid) == "succeeded", "the run to succeed")
    with _signed_in(site, "ann") as (c, token):
        assert ">Replay</button>" in c.get(f"/ui/runs/{rid}").text
        done = c.post(f"/ui/runs/{rid}/replay", data={"csrf": token})
        assert done.status_code == 303
        assert done.headers["location"] == f"/ui/runs/{rid}?notice=replay_identical"
        assert "Deterministic replay: identical." in c.get(done.headers["location"]).text
        diverged = c.get(f"/ui/runs/{rid}?notice=replay_diverged&step=0&reason=output").text
        assert (
            "Deterministic replay diverged at step 0 (step upper): a recomputed output" in diverged
        )
        waiting = _api_run(site, "ann", "transfer", {"to": "x", "amount": 1})
        wait_for(lambda: _status(site, "ann", waiting) == "waiting", "the run to park")
        refused = c.post(f"/ui/runs/{waiting}/replay", data={"csrf": token})
        assert refused.status_code == 409 and "run_not_finished" in refused.text


def test_long_journals_are_shown_a_page_at_a_time(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elevenfactor.server.ui import _run_data

    monkeypatch.setattr(_run_data, "STEP_PAGE", 2)
    rid = site.runs["traced"]
    with site.client("ann") as c:
        first = c.get(f"/ui/runs/{rid}").text
        assert (
            "Steps 1\u20132 of 5." in first and f'href="/ui/runs/{rid}?from=2">Later steps' in first
        )
        assert 'id="step-1"' in first and 'id="step-2"' not in first
        middle = c.get(f"/ui/runs/{rid}?from=2").text
        assert "Steps 3\u20134 of 5." in middle and 'id="step-2"' in middle
        assert f'href="/ui/runs/{rid}">Earlier steps' in middle
        assert f'href="/ui/runs/{rid}?from=4">Later steps' in middle
        past = c.get(f"/ui/runs/{rid}?from=50").text
        assert "No steps from 51 on (5 in all)." in past
        # The guard step is on the first page only: the second is still masked.
        guarded = c.get(f"/ui/runs/{site.runs['guarded']}?from=1").text
        assert 'id="step-0"' not in guarded
        assert "[REDACTED:email]" in guarded and EMAIL not in guarded


def test_a_tampered_chain_is_reported_in_the_audit_section(site: Site) -> None:
    with site.client("ann") as c:
        html = c.get(f"/ui/runs/{site.runs['tampered']}").text
    assert "Chain verified" not in html
    assert "<strong>Chain does not verify</strong>" in html
    assert "<strong>journal</strong> at event 0:" in html
