"""``/ui/quality`` and ``/ui/quality/evals/{id}`` on both stores, in process: eval pass rates
over time and regressions against the baseline, feedback, guard trip rates (gateway calls and
runs' guard steps, inline and blob outputs) and online scores — each scoped to who is looking,
escaped, with 400 pages for malformed filters and 404 for another's eval result."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest

from tests.conftest import _pg_schema_url
from tests.ui.costq_world import World, error_code, make_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"ui-quality-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    yield make_world(url, tmp)


def _row(html: str, caption: str, first_cell: str) -> str:
    """The ``<tr>`` of the table captioned ``caption`` that holds ``first_cell``."""
    table = html.split(f"<caption>{caption}</caption>", 1)[1].split("</table>", 1)[0]
    rows = [r for r in table.split("<tr>") if first_cell in r]
    assert rows, table
    return rows[0]


def test_an_admin_sees_evals_feedback_guards_and_online_scores(world: World) -> None:
    with world.client() as c:
        page = c.get("/ui/quality", headers=world.auth("root"))
    assert page.status_code == 200, page.text
    html = page.text
    assert '<svg class="chart" role="img" aria-label="Eval pass rate over time"' in html
    for caption in ("Eval results", "Feedback", "Guard trip rates"):
        assert f"<caption>{caption}</caption>" in html
    qa = _row(html, "Eval results", ">qa<")
    assert 'href="/ui/quality/evals/ev_ann_2"' in qa and ">50%<" in qa and ">100%<" in qa
    assert "1 regressed" in qa and "<code>c2</code> (now failing)" in qa
    assert "bob-secret-suite" in html and "eve-secret-suite" not in html
    assert "ann-comment &lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert "bob-secret-comment" in html
    # Gateway: 3 calls of the organisation were checked; ann's blocked, bob's redacted.
    ann_rule = _row(html, "Guard trip rates", "ann-rule<")
    assert "gateway calls" in ann_rule and ">block<" in ann_rule and "33.33%" in ann_rule
    assert ">redact<" in _row(html, "Guard trip rates", "bob-rule<")
    # Runs: 4 guard steps (ann's allow and large block, in the blob table; bob's escalate;
    # tom's block).
    run_rule = _row(html, "Guard trip rates", "ann-run-rule<")
    assert ">runs<" in run_rule and ">1<" in run_rule and ">4<" in run_rule
    assert "25.00%" in run_rule and re.search(r"Run guard checks: 4 checked,\s+3 tripped", html)
    assert "bob-run-rule" in html
    assert 'aria-label="Guard trips over time"' in html
    assert "ann-online" in html and "bob-online-secret" in html
    assert ' style="' not in html


def test_a_member_sees_only_its_own(world: World) -> None:
    with world.client() as c:
        page = c.get("/ui/quality?range=7d", headers=world.auth("ann"))
    assert page.status_code == 200, page.text
    html = page.text
    assert ">qa<" in html and "ann-comment" in html and "ann-run-rule" in html
    assert "ann-online" in html
    for secret in ("bob", "eve-secret"):
        assert secret not in html, secret
    # ann's gateway calls: 2 checked, 1 blocked; ann's run: 2 guard steps, 1 blocked.
    assert "50.00%" in _row(html, "Guard trip rates", "ann-rule<")
    assert "50.00%" in _row(html, "Guard trip rates", "ann-run-rule<")


def test_a_sharing_teams_member_sees_its_teams_runs(world: World) -> None:
    with world.client() as c:
        sam = c.get("/ui/quality", headers=world.auth("sam"))
        ann = c.get("/ui/quality", headers=world.auth("ann"))
    assert sam.status_code == 200, sam.text
    assert "tom-team-note" in sam.text and "tom-team-rule" in sam.text
    for other in ("ann-", "bob", "eve-secret"):
        assert other not in sam.text, other
    assert "tom-team" not in ann.text


def test_one_suite_and_an_old_range(world: World) -> None:
    with world.client() as c:
        bob = c.get("/ui/quality?suite=bob-secret-suite", headers=world.auth("root"))
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=300)).date().isoformat()
        old = c.get(f"/ui/quality?range=custom&since={since}", headers=world.auth("root"))
        old_until = c.get(
            "/ui/quality?range=custom&since=2020-01-01&until=2020-02-01", headers=world.auth("root")
        )
    assert bob.status_code == 200 and ">qa<" not in bob.text and "bob-secret-suite" in bob.text
    assert old.status_code == 200 and ">qa<" in old.text
    assert old_until.status_code == 200
    assert "No eval results in this range." in old_until.text
    assert "No feedback in this range." in old_until.text
    assert "No guard tripped in this range." in old_until.text


def test_the_eval_summary_page(world: World) -> None:
    with world.client() as c:
        page = c.get("/ui/quality/evals/ev_ann_2", headers=world.auth("ann"))
        first = c.get("/ui/quality/evals/ev_ann_1", headers=world.auth("root"))
    assert page.status_code == 200, page.text
    html = page.text
    assert "<caption>Cases</caption>" in html and "<caption>Regressions</caption>" in html
    assert 'href="/ui/quality/evals/ev_ann_1"' in html  # the baseline
    regressions = html.split("<caption>Regressions</caption>", 1)[1].split("</table>", 1)[0]
    assert "<code>c2</code>" in regressions and "now failing" in regressions
    assert "exact: c2 reason" in html
    assert first.status_code == 200 and "No earlier result of this suite" in first.text


def test_anothers_eval_result_is_404_like_a_missing_one(world: World) -> None:
    with world.client() as c:
        bob = c.get("/ui/quality/evals/ev_bob_1", headers=world.auth("ann"))
        eve = c.get("/ui/quality/evals/ev_eve_1", headers=world.auth("root"))
        missing = c.get("/ui/quality/evals/ev_nope", headers=world.auth("ann"))
        bad = c.get("/ui/quality/evals/bad%20id", headers=world.auth("ann"))
    for page in (bob, eve, missing):
        assert page.status_code == 404 and error_code(page.text) == "eval_not_found"
        assert "secret" not in page.text
    assert bad.status_code == 400 and error_code(bad.text) == "invalid_id"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("range=forever", "invalid_value"),
        ("suite=%20spaced", "invalid_value"),
        ("suite=" + "s" * 201, "invalid_value"),
        ("range=custom", "ui_bad_range"),
        ("range=custom&since=2026-13-45", "ui_bad_range"),
        ("range=custom&since=2026-02-01&until=2026-01-01", "ui_bad_range"),
        ("limit=5", "unknown_parameter"),
        ("suite=qa&suite=qa", "invalid_value"),
    ],
)
def test_malformed_filters_are_a_400_page_with_a_code(world: World, query: str, code: str) -> None:
    with world.client() as c:
        page = c.get(f"/ui/quality?{query}", headers=world.auth("ann"))
    assert page.status_code == 400, page.text[:500]
    assert error_code(page.text) == code


def test_not_signed_in_goes_to_the_login_form(world: World) -> None:
    with world.client() as c:
        page = c.get("/ui/quality")
        one = c.get("/ui/quality/evals/ev_ann_2")
    assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=%2Fui%2Fquality"
    assert one.status_code == 303 and one.headers["location"].startswith("/ui/login?next=")
