"""``/ui/cost`` on both stores, in process: spend over time by a dimension, budgets with their
burn and reservations, kill switches — each scoped to who is looking (an admin its
organisation, a member its own), escaped, with clear 400 pages for malformed filters, and the
kill-switch forms doing what ``POST``/``DELETE /v1/admin/kills`` do, for admins only."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import _pg_schema_url
from tests.ui.costq_world import MARKUP, World, csrf_of, error_code, make_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"ui-cost-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    yield make_world(url, tmp)


def test_an_admin_sees_its_organisations_spend_budgets_and_switches(world: World) -> None:
    with world.client() as c:
        page = c.get("/ui/cost", headers=world.auth("root"))
    assert page.status_code == 200, page.text
    html = page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<svg class="chart" role="img" aria-label="Spend over time"' in html
    assert "<caption>Budgets</caption>" in html and "<caption>Kill switches</caption>" in html
    for name in ("org", "user:ann", "user:bob"):
        assert f'role="img" aria-label="Budget {name} burn"' in html
    assert "bob-secret-model" in html and "ann-model" in html
    assert "eve-secret-model" not in html  # another organisation's
    assert MARKUP not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "bob-secret-kill-reason" in html and "ann stopped for review" in html
    assert ">Engage kill switch</button>" in html and "Release<span" in html
    assert ' style="' not in html
    # $0.25 + $0.50 + $1.00 of the default organisation's calls in the last 7 days.
    assert re.search(r'<th scope="row">Total</th>\s*<td class="num">3</td>', html)
    assert "$1.75" in html


def test_a_member_sees_only_its_own_spend_budgets_and_switches(world: World) -> None:
    with world.client() as c:
        page = c.get("/ui/cost?by=user", headers=world.auth("ann"))
    assert page.status_code == 200, page.text
    html = page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" not in html  # split by user now
    assert re.search(r'<th scope="row">ann</th>\s*<td class="num">2</td>', html)
    for secret in ("bob", "eve-secret", "bob-secret-kill-reason"):
        assert secret not in html, secret
    assert 'aria-label="Budget org burn"' in html
    assert 'aria-label="Budget user:ann burn"' in html
    assert "user:bob" not in html
    # ann's day window: $0.75 spent and $0.50 held for calls in flight, of $1.
    assert "$0.75" in html and "$0.50<" in html and "125%" in html and "over the limit" in html
    assert "ann stopped for review" in html
    assert "Engage kill switch" not in html and "Release" not in html


def test_spend_by_day_hour_and_measure(world: World) -> None:
    with world.client() as c:
        days = c.get("/ui/cost?range=30d&per=day&by=model", headers=world.auth("root"))
        hours = c.get("/ui/cost?range=24h&metric=calls&top=1", headers=world.auth("root"))
    assert days.status_code == 200 and hours.status_code == 200
    assert "by day" in days.text and days.text.count('<tr><th scope="row">20') >= 30
    assert 'aria-label="Calls over time"' in hours.text and "by hour" in hours.text
    assert "other (1)" in hours.text  # top=1: one series, the other model summed


def test_a_custom_range_is_honoured(world: World) -> None:
    with world.client() as c:
        old = c.get(
            "/ui/cost?range=custom&since=2020-01-01&until=2020-01-02T00:00",
            headers=world.auth("root"),
        )
    assert old.status_code == 200, old.text
    assert "No model calls in this range." in old.text and "2020-01-01 00:00:00" in old.text


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("by=run", "invalid_value"),
        ("range=1y", "invalid_value"),
        ("top=0", "invalid_value"),
        ("top=many", "invalid_type"),
        ("metric=joy", "invalid_value"),
        ("color=red", "unknown_parameter"),
        ("by=model&by=user", "invalid_value"),
        ("range=custom", "ui_bad_range"),
        ("range=custom&since=yesterday-ish", "ui_bad_range"),
        ("range=custom&since=2026-01-02&until=2026-01-01", "ui_bad_range"),
        ("range=custom&since=2020-01-01&until=2022-01-01", "ui_bad_range"),
        ("range=custom&since=2026-01-01&until=2026-03-01&per=hour", "ui_too_many_buckets"),
        ("since=" + "9" * 60, "invalid_value"),
    ],
)
def test_malformed_filters_are_a_400_page_with_a_code(world: World, query: str, code: str) -> None:
    with world.client() as c:
        page = c.get(f"/ui/cost?{query}", headers=world.auth("ann"))
    assert page.status_code == 400, page.text[:500]
    assert page.headers["content-type"].startswith("text/html")
    got = error_code(page.text)
    assert got == code, got


def test_not_signed_in_goes_to_the_login_form(world: World) -> None:
    with world.client() as c:
        page = c.get("/ui/cost?range=7d")
        form = c.post("/ui/cost/kills", data={"kind": "user", "target": "kim", "reason": "x"})
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%2Fcost%3Frange%3D7d"
    assert form.status_code == 303 and form.headers["location"] == "/ui/login"


def test_an_admin_engages_and_releases_a_kill_switch(world: World) -> None:
    queued = world.sql("SELECT id FROM users WHERE name = 'kim'")
    assert queued
    with world.client() as c:
        csrf = csrf_of(c.get("/ui/cost", headers=world.auth("root")).text)
        form = {"csrf": csrf, "kind": "user", "target": "kim", "reason": "kim's key leaked"}
        done = c.post("/ui/cost/kills", data=form, headers=world.auth("root"))
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/ui/cost?notice=engaged#kill-switches"
        again = c.post("/ui/cost/kills", data=form, headers=world.auth("root"))
        assert again.headers["location"] == "/ui/cost?notice=unchanged#kill-switches"
        rows = world.sql(
            "SELECT id, created_by, reason FROM kill_switches WHERE scope = 'user:kim'"
            " AND lifted_at IS NULL"
        )
        assert len(rows) == 1 and rows[0][1:] == ("root", "kim's key leaked")
        page = c.get("/ui/cost?notice=engaged", headers=world.auth("root"))
        assert "Kill switch engaged" in page.text and "kim&#39;s key leaked" in page.text
        release = c.post(
            f"/ui/cost/kills/{rows[0][0]}/release",
            data={"csrf": csrf, "reason": "rotated"},
            headers=world.auth("root"),
        )
        assert release.status_code == 303
        assert release.headers["location"] == "/ui/cost?notice=released#kill-switches"
    lifted = world.sql(
        "SELECT lifted_by, lift_reason FROM kill_switches WHERE id = ?", (rows[0][0],)
    )
    assert lifted == [("root", "rotated")]
    ledger = world.sql(
        "SELECT kind FROM ledger WHERE subject = ? ORDER BY created_at", (rows[0][0],)
    )
    assert [r[0] for r in ledger] == ["admin.kill", "admin.unkill"]


def test_kill_switch_forms_refuse_members_stale_tokens_and_bad_input(world: World) -> None:
    with world.client() as c:
        assert c.get("/ui/cost", headers=world.auth("ann")).status_code == 200
        csrf = c.cookies["ef_csrf"]  # a member's page has no form, but the cookie is set
        member = c.post(
            "/ui/cost/kills",
            data={"csrf": csrf, "kind": "user", "target": "bob", "reason": "revenge"},
            headers=world.auth("ann"),
        )
        assert member.status_code == 403 and error_code(member.text) == "permission_denied"
        lift = c.post(
            f"/ui/cost/kills/{world.ids['kill_ann']}/release",
            data={"csrf": csrf, "reason": "let me out"},
            headers=world.auth("ann"),
        )
        assert lift.status_code == 403
        root_csrf = csrf_of(c.get("/ui/cost", headers=world.auth("root")).text)
        stale = c.post(
            "/ui/cost/kills",
            data={"kind": "user", "target": "kim", "reason": "no token"},
            headers=world.auth("root"),
        )
        assert stale.status_code == 403 and error_code(stale.text) == "ui_csrf_failed"
        cases = [
            ("/ui/cost/kills", {"kind": "org", "target": "x", "reason": "r"}, 400),
            ("/ui/cost/kills", {"kind": "user", "target": "kim", "reason": "  "}, 400),
            ("/ui/cost/kills", {"kind": "user", "target": "kim"}, 400),
            ("/ui/cost/kills", {"kind": "user", "target": "nobody", "reason": "r"}, 404),
            ("/ui/cost/kills", {"kind": "run", "target": "run_nope", "reason": "r"}, 404),
            ("/ui/cost/kills/kill_missing/release", {"reason": "r"}, 404),
            ("/ui/cost/kills/bad%20id/release", {"reason": "r"}, 400),
        ]
        for path, data, status in cases:
            got = c.post(path, data={"csrf": root_csrf, **data}, headers=world.auth("root"))
            assert got.status_code == status, (path, data, got.text[:800])
            assert got.headers["content-type"].startswith("text/html")
    assert world.sql("SELECT COUNT(*) FROM kill_switches WHERE scope = 'user:bob'") == [(1,)]
    assert world.sql(
        "SELECT lifted_at FROM kill_switches WHERE id = ?", (world.ids["kill_ann"],)
    ) == [(None,)]
