"""The dashboard in a real browser (headless Debian Chromium through Playwright) against a real
``elevenfactor serve`` with API keys and its worker, on SQLite and PostgreSQL: signing in and
out through the form, a running run's page updating live until it succeeds, an approval decided
with edited arguments that the resumed run then uses, filtering the runs list, the cost page's
charts, another member's run answered 404 without its content, and the login form and approval
buttons reached with the keyboard. Elements are found by their accessible roles, names and
labels, so every locator is also an accessibility check."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Site, release_file, sign_in

pytestmark = pytest.mark.integration


def _status(page: Page) -> Locator:
    return page.locator("#run-status")


def _steps(page: Page) -> Locator:
    """The run page's section headed "Steps"."""
    return page.locator("section", has=page.get_by_role("heading", name="Steps", exact=True))


def _step(page: Page, name: str, kind: str) -> Locator:
    """The one step of the run page's "Steps" called ``name`` of ``kind`` (its heading reads
    "<id> <name> <kind> <status>")."""
    heading = page.get_by_role("heading", name=re.compile(rf"\s{re.escape(name)} {kind}\s"))
    return _steps(page).get_by_role("listitem").filter(has=heading)


def _tab_to(page: Page, target: Locator, limit: int = 60) -> None:
    """Press Tab until ``target`` has the focus (fails after ``limit`` presses)."""
    handle = target.element_handle()
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("el => el === document.activeElement", handle):
            return
    raise AssertionError(f"{target} is not reachable with Tab")


def test_sign_in_with_a_key_through_the_form_and_sign_out(site: Site, page: Page) -> None:
    page.goto("/ui/runs")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("API key").fill("ef_00000000_not-a-real-key-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    assert not [c for c in page.context.cookies() if c["name"] == "ef_session"]

    page.get_by_label("API key").fill(site.secrets["ann"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/runs$"))
    expect(page.get_by_role("table", name="Runs")).to_be_visible()
    expect(page.locator("header")).to_contain_text("ann")
    session = [c for c in page.context.cookies() if c["name"] == "ef_session"]
    assert session and session[0]["httpOnly"] and site.secrets["ann"] not in session[0]["value"]

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto("/ui/runs")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_a_running_run_page_updates_live_until_it_succeeds(site: Site, page: Page) -> None:
    release = release_file(site)
    rid = site.submit("ann", "hold", {"release": str(release)})
    try:
        site.wait_status(rid, "running")
        sign_in(page, site.secrets["ann"])
        page.goto(f"/ui/runs/{rid}")
        expect(page.get_by_role("heading", level=1)).to_contain_text(rid)
        status = _status(page)
        expect(status).to_have_attribute("data-status", "running")
        expect(status).to_contain_text("running")
        page.evaluate("() => { window.__sameDocument = true; }")
    finally:
        release.write_text("go")  # never leave the run (and the server's shutdown) waiting
    expect(status).to_have_attribute("data-status", "succeeded", timeout=20_000)
    expect(status).to_contain_text("succeeded")
    expect(_step(page, "wait", "step")).to_contain_text("released")  # the steps, refreshed too
    expect(page.get_by_role("img", name="Trace waterfall")).to_be_visible()
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    assert site.run(rid)["status"] == "succeeded"


def test_an_approval_with_edited_arguments_resumes_the_run_with_them(
    site: Site, page: Page
) -> None:
    rid = site.submit("ann", "payer", "pay the invoice")
    site.wait_status(rid, "waiting")
    aid = site.approval_of(rid)
    sign_in(page, site.secrets["root"])
    page.goto("/ui/approvals")
    queue = page.get_by_role("table", name=re.compile(r"^Pending approvals"))
    expect(queue.first).to_be_visible()
    review = page.get_by_role("link", name="Review").and_(
        page.locator(f'a[href="/ui/approvals/{aid}"]')
    )
    review.click()
    expect(page).to_have_url(re.compile(f"/ui/approvals/{aid}$"))

    to, amount = page.get_by_label("to", exact=True), page.get_by_label("amount", exact=True)
    expect(to).to_have_value("x")  # what the model proposed
    expect(amount).to_have_value("0")
    to.fill("bob")
    amount.fill("90")
    page.get_by_role("button", name="Approve", exact=True).click()

    expect(page).to_have_url(re.compile(f"/ui/runs/{rid}$"))
    expect(_status(page)).to_have_attribute("data-status", "succeeded", timeout=20_000)
    page.reload()  # the finished page as rendered by the server
    gate_step, tool_step = _step(page, "tool:pay", "approval"), _step(page, "tool:pay", "tool")
    expect(gate_step).to_contain_text('"bob"')  # the decision, with the edited arguments
    expect(tool_step).to_contain_text("paid 90 to bob")  # what the tool did with them
    expect(tool_step).to_contain_text("as the reviewer edited them")  # the input it ran with
    expect(tool_step).not_to_contain_text("as the model asked")
    run = site.run(rid)
    [tool] = [s for s in run["steps"] if s["kind"] == "tool"]
    assert "paid 90 to bob" in str(tool["output"]), tool
    [gate] = [s for s in run["steps"] if s["kind"] == "approval"]
    assert gate["output"]["arguments"] == {"to": "bob", "amount": 90}
    assert gate["output"]["decided_by"] == "user:root"


def test_filtering_runs_by_status_keeps_only_matching_rows(site: Site, page: Page) -> None:
    done = [site.submit("ann", "greet", {"name": f"f{i}"}) for i in range(2)]
    parked = site.submit("ann", "transfer", {"to": "carol", "amount": 3})
    for rid in done:
        site.wait_status(rid, "succeeded")
    site.wait_status(parked, "waiting")
    sign_in(page, site.secrets["ann"])
    page.goto("/ui/runs")
    table = page.get_by_role("table", name="Runs")
    for rid in (*done, parked):
        expect(table.locator(f'a[href="/ui/runs/{rid}"]')).to_have_count(1)

    page.get_by_label("Status").select_option("waiting")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]status=waiting"))
    expect(table.locator(f'a[href="/ui/runs/{parked}"]')).to_have_count(1)
    for rid in done:
        expect(table.locator(f'a[href="/ui/runs/{rid}"]')).to_have_count(0)
    rows = table.locator("tbody tr")
    assert rows.count() >= 1
    for row in rows.all():
        expect(row).to_contain_text("waiting")
        expect(row).not_to_contain_text("succeeded")
    expect(page.get_by_label("Status")).to_have_value("waiting")


def test_the_cost_page_shows_the_spend_and_budget_charts(site: Site, page: Page) -> None:
    answer = site.api("ann").post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "spend a cent"}]},
    )
    assert answer.status_code == 200, answer.text
    sign_in(page, site.secrets["ann"])
    page.goto("/ui/cost")
    spend = page.get_by_role("img", name="Spend over time")
    expect(spend).to_be_visible()
    budgets = page.get_by_role("table", name="Budgets")
    expect(budgets).to_be_visible()
    expect(budgets).to_contain_text("ann")
    burn = page.get_by_role("img", name=re.compile(r"^Budget .+ burn$"))
    expect(burn.first).to_be_visible()
    box = burn.first.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0
    expect(page.get_by_role("table", name="Kill switches")).to_be_visible()


def test_a_member_cannot_open_another_members_run(site: Site, page: Page) -> None:
    marker = "zq" + uuid.uuid4().hex[:10]
    rid = site.submit("ann", "greet", {"name": marker})
    site.wait_status(rid, "succeeded")

    owner = page.context.browser
    assert owner is not None
    ann = owner.new_context(base_url=site.base)
    try:
        own = ann.new_page()
        sign_in(own, site.secrets["ann"])
        own.goto(f"/ui/runs/{rid}")
        expect(own.locator("body")).to_contain_text(marker.upper())  # the owner sees it
    finally:
        ann.close()

    sign_in(page, site.secrets["bob"])
    shown = page.goto(f"/ui/runs/{rid}")
    assert shown is not None and shown.status == 404
    body = page.content()
    assert marker not in body and marker.upper() not in body
    expect(page.locator("#run-status")).to_have_count(0)
    expect(page.get_by_role("img", name="Trace waterfall")).to_have_count(0)
    page.goto("/ui/runs")
    expect(page.get_by_role("table", name="Runs")).to_be_visible()
    expect(page.locator(f'a[href="/ui/runs/{rid}"]')).to_have_count(0)


def test_the_login_form_and_approval_buttons_work_with_the_keyboard(site: Site, page: Page) -> None:
    rid = site.submit("ann", "payer", "pay the rent")
    site.wait_status(rid, "waiting")
    aid = site.approval_of(rid)

    page.goto("/ui/login")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    key = page.get_by_label("API key")
    _tab_to(page, key)
    page.keyboard.type(site.secrets["rita"])
    _tab_to(page, page.get_by_role("button", name="Sign in"))
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/ui/login" not in url)

    page.goto(f"/ui/approvals/{aid}")
    for name in ("Approve", "Reject", "Answer instead of the tool"):
        _tab_to(page, page.get_by_role("button", name=name, exact=True))
    for label in ("Reason", "Answer"):
        expect(page.get_by_label(label, exact=True)).to_be_editable()
    page.goto(f"/ui/approvals/{aid}")
    _tab_to(page, page.get_by_label("Reason", exact=True))
    page.keyboard.type("not this month")
    _tab_to(page, page.get_by_role("button", name="Reject", exact=True))
    page.keyboard.press("Enter")
    # rita may decide but not see ann's run: she is back on the approval, now decided
    expect(page.locator("#approval-status")).to_have_attribute("data-status", "rejected")
    expect(page.get_by_role("button", name="Reject", exact=True)).to_have_count(0)
    run = site.wait_status(rid, "succeeded")
    [gate] = [s for s in run["steps"] if s["kind"] == "approval"]
    assert gate["output"]["action"] == "reject" and gate["output"]["reason"] == "not this month"
    assert gate["output"]["decided_by"] == "user:rita"
