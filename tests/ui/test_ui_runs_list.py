"""The runs list ``/ui/runs`` over real HTTP on both stores: each principal sees exactly the
runs it may see (a member its own, a sharing team's member the team's, an admin its
organisation's), every filter selects the right runs, cost counts child runs, pages follow
each other without gaps or repeats, malformed queries are 400 pages with a code, and the page
carries the accessible names the browser tests use. ``_runs_query`` is also tested directly
for what needs many runs: the scan window, its continuation, and the team's two halves."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from elevenfactor.governance import Principal, create_team, create_user, local_admin
from elevenfactor.governance import principal_for_user as principal_of
from elevenfactor.observe import CallRecorder
from elevenfactor.observe._calls import CallRecord
from elevenfactor.runtime import submit_run
from elevenfactor.server.ui._runs_query import Cursor, RunFilter, RunPage, list_run_page
from elevenfactor.store import Store
from tests.ui.conftest import UiSite

pytestmark = pytest.mark.integration

T0 = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC
# id: (owner, program, status, seconds after T0, tags, own calls' cost, parent)
RUNS: dict[str, tuple[str, str, str, float, list[str], float, str | None]] = {
    "ann-1": ("ann", "support", "succeeded", 1, ["vip", "cust-1"], 0.01, None),
    "ann-1.kid": ("ann", "helper", "succeeded", 2, [], 0.02, "ann-1"),
    "ann-2": ("ann", "triage", "failed", 3, [], 0.0, None),
    "ann-3": ("ann", "support", "running", 4, ["cust-2"], 0.5, None),
    **{f"ann-{i}": ("ann", "bulk", "queued", i + 1.0, [], 0.0, None) for i in range(4, 8)},
    "bob-1": ("bob", "bobsecretprog", "succeeded", 9, ["bobsecrettag"], 0.2, None),
    "sue-1": ("sue", "crewprog", "succeeded", 10, [], 0.0, None),
    "sam-1": ("sam", "crewprog", "failed", 11, [], 0.0, None),
    "eve-1": ("eve", "evesecretprog", "succeeded", 12, ["evesecrettag"], 0.3, None),
}
ANN = [f"ann-{i}" for i in range(7, 1, -1)] + ["ann-1.kid", "ann-1"]  # newest first


async def _add_runs(db: Store, owners: dict[str, Principal]) -> None:
    recorder = CallRecorder(db, record_payloads=False)
    for rid, (who, program, status, at, tags, cost, parent) in RUNS.items():
        p = owners[who]
        await submit_run(db, program, {}, run_id=rid, owner=p, tags=tags, parent_id=parent)
        await db.execute(
            "UPDATE runs SET status = ?, created_at = ?, updated_at = ? WHERE id = ?",
            (status, T0 + at, T0 + at + 2.5, rid),
        )
        if cost:
            org, team, user, _ = p.owner()
            for part in (cost / 2, cost / 2):
                recorder.record(
                    CallRecord(trace_id="0" * 32, route="default", stream=False, status="ok",
                               tokens_in=1, tokens_out=1, latency_ms=1.0, cost=part,
                               run_id=rid, org_id=org, team_id=team, user_id=user)
                )  # fmt: skip
    await recorder.flush()


@pytest.fixture(scope="module")
def site(ui_site: UiSite) -> UiSite:
    ui_site.seed(lambda db: _add_runs(db, ui_site.principals))
    return ui_site


def ids(resp: httpx.Response) -> list[str]:
    """The run ids listed, in order (after checking the page answered 200)."""
    assert resp.status_code == 200, resp.text
    return re.findall(r'<td class="run-id"><a href="/ui/runs/([^"]+)">', resp.text)


def row(resp: httpx.Response, rid: str) -> str:
    """The HTML of ``rid``'s row."""
    cell = f'<td class="run-id"><a href="/ui/runs/{re.escape(rid)}">'
    found = re.search(rf"<tr[^>]*>\s*{cell}.*?</tr>", resp.text, re.S)
    assert found, resp.text
    return found.group(0)


def link(resp: httpx.Response, name: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)"[^>]*>{name}</a>', resp.text)
    return found.group(1).replace("&amp;", "&") if found else None


def test_a_member_sees_its_runs_with_every_column(site: UiSite) -> None:
    page = site.get("ann", "/ui/runs")
    assert ids(page) == ANN
    html = page.text
    assert "<caption>Runs</caption>" in html and '<th scope="col">Status</th>' in html
    one = row(page, "ann-1")
    assert 'class="badge s-succeeded">succeeded<' in one and "<td>support</td>" in one
    assert "<td>ann</td>" in one and "2025-11-24 16:00:01" in one and "2.5 s" in one
    assert "$0.03" in one  # its own calls (0.01) and its child run's (0.02)
    assert 'href="/ui/runs?tag=vip"' in one and 'href="/ui/runs?tag=cust-1"' in one
    kid = row(page, "ann-1.kid")
    assert 'class="child-run"' in kid and "child</span> of" in kid and "$0.02" in kid
    assert 'href="/ui/runs/ann-1"' in kid
    assert "so far" in row(page, "ann-3") and "$0.5" in row(page, "ann-3")
    assert 'class="badge s-failed">failed<' in row(page, "ann-2")


def test_nobody_sees_runs_they_may_not(site: UiSite) -> None:
    bob = site.get("bob", "/ui/runs")
    assert ids(bob) == ["bob-1"]
    assert "ann-" not in bob.text and "support" not in bob.text and "vip" not in bob.text
    ann = site.get("ann", "/ui/runs")
    assert (
        "bobsecret" not in ann.text and "evesecret" not in ann.text and "crewprog" not in ann.text
    )
    eve = site.get("eve", "/ui/runs")
    assert ids(eve) == ["eve-1"] and "ann-" not in eve.text and "bobsecret" not in eve.text
    ada = site.get("ada", "/ui/runs")
    assert set(ids(ada)) == set(RUNS) - {"eve-1"} and "evesecret" not in ada.text
    assert site.get("ada", "/ui/runs", owner="eve").text.count("No runs owned by") == 1


def test_a_sharing_team_sees_its_members_runs_and_may_filter_by_owner(site: UiSite) -> None:
    sue = site.get("sue", "/ui/runs")
    assert ids(sue) == ["sam-1", "sue-1"] and 'for="f-owner">Owner<' in sue.text
    assert ids(site.get("sue", "/ui/runs", owner="sam")) == ["sam-1"]
    assert ids(site.get("sue", "/ui/runs", owner="ann")) == []
    assert ids(site.get("ada", "/ui/runs", owner="bob")) == ["bob-1"]
    assert ids(site.get("ada", "/ui/runs", owner="ann", status="failed")) == ["ann-2"]


def test_a_plain_member_may_not_filter_by_another_owner(site: UiSite) -> None:
    page = site.get("ann", "/ui/runs")
    assert 'id="f-owner"' not in page.text
    refused = site.get("ann", "/ui/runs", owner="bob")
    assert refused.status_code == 403 and "<code>permission_denied</code>" in refused.text
    assert "bob-1" not in refused.text
    assert ids(site.get("ann", "/ui/runs", owner="ann")) == ANN


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "failed"}, ["ann-2"]),
        ({"program": "support"}, ["ann-3", "ann-1"]),
        ({"program": "support", "status": "running"}, ["ann-3"]),
        ({"tag": "vip"}, ["ann-1"]),
        ({"tag": "cust"}, []),  # a tag, not a substring of one
        ({"min_cost": "0.025"}, ["ann-3", "ann-1"]),
        ({"min_cost": "0.01", "max_cost": "0.1"}, ["ann-1.kid", "ann-1"]),
        ({"max_cost": "0"}, [*ANN[:4], "ann-2"]),
        ({"since": "2025-11-24T16:00:03", "until": "2025-11-24T16:00:05"}, ["ann-3", "ann-2"]),
        ({"since": "2025-11-24", "until": "2025-11-24"}, ANN),  # a date: that whole day
        ({"until": "2025-11-24T16:00:02"}, ["ann-1"]),
        ({"since": "2025-11-25"}, []),
        ({"status": "", "program": "", "tag": ""}, ANN),  # an empty form field is no filter
    ],
)
def test_filters_select_the_right_runs(
    site: UiSite, query: dict[str, str], expected: list[str]
) -> None:
    assert ids(site.get("ann", "/ui/runs", **query)) == expected


def test_the_form_keeps_the_filters(site: UiSite) -> None:
    page = site.get("ann", "/ui/runs", status="failed", program="triage", tag="vip")
    assert '<option value="failed" selected>' in page.text
    assert 'name="program" value="triage"' in page.text and 'name="tag" value="vip"' in page.text


def test_pages_follow_each_other_without_gaps_or_repeats(site: UiSite) -> None:
    seen: list[str] = []
    page = site.get("ann", "/ui/runs", limit="3")
    assert link(page, "Newer") is None
    pages = [page]
    while True:
        seen += ids(page)
        older = link(page, "Older")
        if older is None:
            break
        assert "limit=3" in older
        page = site.get("ann", older)
        pages.append(page)
    assert seen == ANN and len(pages) == 3
    newer = link(pages[-1], "Newer")
    assert newer is not None and ids(site.get("ann", newer)) == ANN[3:6]
    back = link(pages[1], "Newer")
    assert back is not None and ids(site.get("ann", back)) == ANN[:3]
    filtered = site.get("ann", "/ui/runs", program="bulk", limit="2")
    older = link(filtered, "Older")
    assert older is not None and "program=bulk" in older
    assert ids(site.get("ann", older)) == ["ann-5", "ann-4"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("status=lost", "invalid_value"),
        ("limit=0", "invalid_value"),
        ("limit=201", "invalid_value"),
        ("limit=ten", "invalid_type"),
        ("since=yesterday", "invalid_value"),
        ("until=2025-13-40", "invalid_value"),
        ("until=9999-12-31", "invalid_value"),  # its end is past the last representable day
        ("min_cost=-1", "invalid_value"),
        ("max_cost=nan", "invalid_value"),
        ("max_cost=1e400", "invalid_value"),
        ("min_cost=2&max_cost=1", "invalid_value"),
        ("since=2025-11-25&until=2025-11-24", "invalid_value"),
        ("program=two%20words", "invalid_value"),
        ("program=" + "p" * 201, "invalid_value"),
        ("tag=%00", "invalid_value"),
        ("owner=" + "o" * 65, "invalid_value"),
        ("before=yesterday", "invalid_value"),
        ("before=1.5:bad%20id", "invalid_value"),
        ("before=1.5:a&after=1.5:a", "invalid_value"),
        ("status=failed&status=queued", "invalid_value"),
        ("colour=red", "unknown_parameter"),
    ],
)
def test_malformed_queries_are_400_pages_with_a_code(site: UiSite, query: str, code: str) -> None:
    with site.client("ann") as c:
        resp = c.get(f"/ui/runs?{query}")
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert f"<code>{code}</code>" in resp.text and 'role="alert"' in resp.text
    assert 'for="f-status">Status<' in resp.text and "ann-1" not in resp.text


def test_not_signed_in_goes_to_the_login_form(site: UiSite) -> None:
    with site.client() as c:
        resp = c.get("/ui/runs?status=failed")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dfailed"


def test_a_session_cookie_works_and_the_page_takes_no_posts(site: UiSite) -> None:
    with site.signed_in("ann") as (c, csrf):
        assert ids(c.get("/ui/runs", params={"status": "failed"})) == ["ann-2"]
        posted = c.post("/ui/runs", data={"csrf": csrf})
        assert posted.status_code == 405 and posted.headers["content-type"].startswith("text/html")


def test_accessible_names_and_no_inline_code(site: UiSite) -> None:
    html = site.get("sue", "/ui/runs").text
    for ident, label in [
        ("f-status", "Status"), ("f-program", "Program"), ("f-owner", "Owner"),
        ("f-since", "Since"), ("f-until", "Until"), ("f-min-cost", "Min cost"),
        ("f-max-cost", "Max cost"), ("f-tag", "Tag"),
    ]:  # fmt: skip
        assert f'<label for="{ident}">{label}</label>' in html and f'id="{ident}"' in html
    assert '<button type="submit">Filter</button>' in html and 'method="get"' in html
    assert "style=" not in html and "<script>" not in html and " onclick" not in html
    assert '<link rel="stylesheet" href="/ui/static/runs_list.css">' in html
    assert site.get("sue", "/ui/static/runs_list.css").status_code == 200


# -- the query module, with many runs -----------------------------------------------------------


async def _world(store: Store, runs: int) -> dict[str, Principal]:
    """``ann`` (alone), ``sue`` and ``sam`` (a sharing team), each with ``runs`` runs, one
    second apart, interleaved; every fourth of ann's is tagged ``rare`` only if it is among
    her four oldest."""
    admin = local_admin("cli")
    await create_team(store, admin, "crew", shares=True)
    who: dict[str, Principal] = {}
    for name, team in (("ann", None), ("sue", "crew"), ("sam", "crew")):
        await create_user(store, admin, name, team=team, roles=("member",))
        who[name] = await principal_of(store, name)
    for i in range(runs):
        for k, name in enumerate(who):
            rid = f"{name}-{i:03d}"
            tags = ["rare"] if name == "ann" and i < 4 and i % 2 == 0 else []
            await submit_run(store, "p", {}, run_id=rid, owner=who[name], tags=tags)
            await store.execute(
                "UPDATE runs SET created_at = ? WHERE id = ?", (T0 + i * 3 + k, rid)
            )
    return who


async def _walk(store: Store, p: Principal, f: RunFilter, **kw: Any) -> tuple[list[str], int]:
    """Every run ``f`` selects, following ``older`` cursors; and how many pages that took."""
    got: list[str] = []
    page: RunPage = await list_run_page(store, p, f, **kw)
    pages = 1
    while True:
        got += [r.id for r in page.rows]
        if page.older is None:
            return got, pages
        page = await list_run_page(store, p, f, before=page.older, **kw)
        pages += 1


async def test_a_window_stops_a_rare_filter_and_older_goes_on(store: Store) -> None:
    who = await _world(store, 12)
    first = await list_run_page(store, who["ann"], RunFilter(tag="rare"), limit=2, window=5)
    assert first.rows == [] and first.scanned == 5 and first.older is not None
    assert first.older == Cursor(T0 + 7 * 3, "ann-007")  # the fifth newest of her runs
    found, pages = await _walk(store, who["ann"], RunFilter(tag="rare"), limit=2, window=5)
    assert found == ["ann-002", "ann-000"] and pages == 3
    everything, _ = await _walk(store, who["ann"], RunFilter(), limit=5)
    assert everything == [f"ann-{i:03d}" for i in range(11, -1, -1)]


async def test_a_sharing_team_pages_through_both_halves(store: Store) -> None:
    who = await _world(store, 6)
    team = [f"{n}-{i:03d}" for i in range(5, -1, -1) for n in ("sam", "sue")]
    for kw in ({"limit": 4}, {"limit": 3, "window": 4}):
        found, _ = await _walk(store, who["sue"], RunFilter(), **kw)
        assert found == team, kw
    none = await list_run_page(store, who["sue"], RunFilter(tag="none"), limit=1, window=4)
    assert none.rows == [] and none.scanned == 2  # two halves: two runs of each read
    assert none.older == Cursor(T0 + 5 * 3 + 1, "sue-005")
    found, pages = await _walk(store, who["sue"], RunFilter(tag="none"), limit=1, window=4)
    assert found == [] and pages == 7  # the last window held exactly two
    mine = await list_run_page(store, who["ann"], RunFilter(), limit=50)
    assert all(r.id.startswith("ann-") for r in mine.rows) and len(mine.rows) == 6


async def test_newer_pages_mirror_older_ones(store: Store) -> None:
    who = await _world(store, 5)
    ann = who["ann"]
    first = await list_run_page(store, ann, RunFilter(), limit=2)
    second = await list_run_page(store, ann, RunFilter(), limit=2, before=first.older)
    third = await list_run_page(store, ann, RunFilter(), limit=2, before=second.older)
    assert [r.id for r in third.rows] == ["ann-000"] and third.older is None
    back = await list_run_page(store, ann, RunFilter(), limit=2, after=third.newer)
    assert back.rows == second.rows and back.older == second.older
    top = await list_run_page(store, ann, RunFilter(), limit=2, after=second.newer)
    assert top.rows == first.rows and top.newer is None  # the first page, not a short one


async def test_cost_counts_every_level_of_child_runs(store: Store) -> None:
    admin = local_admin("cli")
    await create_user(store, admin, "ann", roles=("member",))
    ann = await principal_of(store, "ann")
    recorder = CallRecorder(store, record_payloads=False)
    org, team, user, _ = ann.owner()
    for rid, parent, cost in (("r", None, 1.0), ("r.a", "r", 0.25), ("r.a.b", "r.a", 0.125)):
        await submit_run(store, "p", {}, run_id=rid, owner=ann, parent_id=parent)
        recorder.record(
            CallRecord(trace_id="0" * 32, route="default", stream=False, status="ok",
                       tokens_in=1, tokens_out=1, latency_ms=1.0, cost=cost, run_id=rid,
                       org_id=org, team_id=team, user_id=user)
        )  # fmt: skip
    await recorder.flush()
    page = await list_run_page(store, ann, RunFilter())
    assert {r.id: r.cost for r in page.rows} == {"r": 1.375, "r.a": 0.375, "r.a.b": 0.125}
    rich = await list_run_page(store, ann, RunFilter(min_cost=0.3))
    assert sorted(r.id for r in rich.rows) == ["r", "r.a"]
    assert {r.id: r.cost for r in rich.rows} == {"r": 1.375, "r.a": 0.375}
