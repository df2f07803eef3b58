"""The approvals queue and approval page over a real server outside dev mode, on SQLite and
PostgreSQL: who sees and decides what (a reviewer its group's, an admin its organisation's, a
member its own runs' read-only, others 404), the arguments form built from the tool's schema,
an invalid edit answered on the page with nothing decided, and decisions that the run then
follows — the edited arguments are what the tool runs with, a rejection or an answer means the
tool never runs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import pytest
from pydantic import BaseModel, Field

from elevenfactor.config import Settings, load_project
from elevenfactor.governance import create_key, create_user, local_admin
from elevenfactor.store import migrate, open_store
from elevenfactor.tools import FunctionToolset
from tests.conftest import _pg_schema_url
from tests.support.serve import wait_for
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

pay = FunctionToolset(name="pay")
SENT: list[dict[str, Any]] = []
"""Every call of ``send_money`` that ran (the tool appends its arguments)."""


class Address(BaseModel):
    city: str
    country: Literal["FR", "DE", "US"] = "FR"


@pay.tool(risk="write")
def send_money(
    to: str,
    amount: Annotated[int, Field(ge=0, le=1000)],
    address: Address = Address(city="Paris"),  # noqa: B008 - a default the schema shows
    currency: Literal["EUR", "USD"] = "EUR",
    urgent: bool = False,
    memo: str | None = None,
    tags: list[str] | None = None,
) -> str:
    """Send money to someone."""
    SENT.append({"to": to, "amount": amount, "address": address.model_dump()})
    return f"sent {amount} {currency} to {to}"


PROJECT = f"""
providers: {{t: {{type: test}}}}
models: {{echo: {{provider: t, model: e}}}}
routes: {{default: {{chain: [echo]}}}}
toolsets: {{pay: "{__name__}:pay"}}
programs: ["tests.support.programs:programs"]
mcp_server:
  tools: ["pay.*"]
  approval: [{{tools: [pay.send_money], group: finance}}]
"""
AGENT = """
instructions: Pay people.
model: default
tools: [{toolset: pay}]
approval:
  - tools: [send_money]
    group: finance
"""
# name: (roles, groups)
PEOPLE = {
    "ann": (("member",), ()),
    "bob": (("member",), ()),
    "rita": (("member", "reviewer"), ("finance",)),
    "otto": (("member", "reviewer"), ("other",)),
    "ada": (("admin",), ()),
}


@dataclass
class Site:
    base: str
    url: str
    secrets: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def api(self, who: str, method: str, path: str, **kw: Any) -> Any:
        with self.client(who) as c:
            resp = c.request(method, path, **kw)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def parked(self, who: str, program: str, data: Any) -> tuple[str, dict[str, Any]]:
        """A new run of ``who`` waiting on its approval, and the approval (JSON API)."""
        rid = self.api(who, "POST", "/v1/runs", json={"program": program, "input": data})["id"]
        found = wait_for(
            lambda: self.api(who, "GET", "/v1/approvals", params={"run_id": rid})["data"],
            "the run to park on its approval",
        )
        return rid, found[0]

    def run_status(self, rid: str) -> str:
        return str(self.api("ada", "GET", f"/v1/runs/{rid}")["status"])


async def _people(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name, (roles, groups) in PEOPLE.items():
            await create_user(db, admin, name, roles=roles, groups=groups)
            secrets[name] = (await create_key(db, admin, f"key-{name}", user=name))[1]
        return secrets
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    home: Path = tmp_path_factory.mktemp(f"ui-approvals-{request.param}")
    url = f"sqlite:///{home}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets = asyncio.run(_people(url))
    (home / "elevenfactor.yaml").write_text(PROJECT)
    (home / "agents").mkdir()
    (home / "agents" / "payer.yaml").write_text(AGENT)
    settings = Settings(
        database_url=url,
        data_dir=home,
        dev=False,
        config_file=home / "elevenfactor.yaml",
        in_process_worker=True,
    )
    with running_gateway(settings, load_project(home / "elevenfactor.yaml")) as (base, _):
        yield Site(base, url, secrets)


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _label_for(html: str, label: str) -> str:
    """The id of the control labelled ``label``."""
    found = re.search(rf'<label for="([^"]+)">{re.escape(label)}</label>', html)
    assert found, f"no label {label!r}"
    return found.group(1)


def _control(html: str, label: str) -> str:
    """The HTML of the control labelled ``label`` (up to the end of its tag or content)."""
    ident = _label_for(html, label)
    found = re.search(
        rf'<(select|textarea)[^>]*id="{ident}"[^>]*>.*?</\1>|<input[^>]*id="{ident}"[^>]*>',
        html,
        re.S,
    )
    assert found, ident
    return found.group(0)


def _decide(
    c: httpx.Client, approval_id: str, fields: dict[str, str]
) -> tuple[httpx.Response, httpx.Response]:
    page = c.get(f"/ui/approvals/{approval_id}")
    assert page.status_code == 200, page.text
    token = c.cookies["ef_csrf"]  # the double-submit token (a decided page has no form)
    return page, c.post(f"/ui/approvals/{approval_id}", data={"csrf": token, **fields})


def test_the_queue_shows_each_viewer_what_it_may_see(site: Site) -> None:
    ann_run, ann_approval = site.parked("ann", "payer", "pay x")
    bob_run, bob_approval = site.parked("bob", "transfer", {"to": "carol", "amount": 7})
    for who in ("rita", "ada"):  # the finance reviewer and the admin: both, grouped
        with site.client(who) as c:
            page = c.get("/ui/approvals")
        assert page.status_code == 200, page.text
        assert "<caption>Pending approvals — group finance</caption>" in page.text
        for approval, run in ((ann_approval, ann_run), (bob_approval, bob_run)):
            assert f'<a href="/ui/approvals/{approval["id"]}">Review</a>' in page.text
            assert f'href="/ui/runs/{run}"' in page.text
        assert "<code>send_money</code>" in page.text and "ann" in page.text
    with site.client("ann") as c:  # a member: its own run's approval only
        page = c.get("/ui/approvals")
    assert ann_approval["id"] in page.text and ann_run in page.text
    assert bob_approval["id"] not in page.text and bob_run not in page.text
    with site.client("otto") as c:  # a reviewer of another group: not these
        page = c.get("/ui/approvals")
    assert ann_approval["id"] not in page.text and bob_approval["id"] not in page.text
    with site.client("rita") as c:  # the group filter
        other = c.get("/ui/approvals", params={"group": "other"})
    assert other.status_code == 200 and 'id="no-pending"' in other.text
    assert ann_approval["id"] not in other.text


@pytest.mark.parametrize(
    "query",
    ["group=../x", "after=yesterday", "before=1:2:%00", "colour=red", "decided=maybe",
     "group=a&group=b", "group=" + "g" * 80],
)  # fmt: skip
def test_a_malformed_queue_query_is_a_400_page(site: Site, query: str) -> None:
    with site.client("rita") as c:
        page = c.get(f"/ui/approvals?{query}")
    assert page.status_code == 400, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "Error code <code>" in page.text


def test_not_signed_in_goes_to_the_login_form(site: Site) -> None:
    with site.client(None) as c:
        for path in ("/ui/approvals", "/ui/approvals/abc"):
            resp = c.get(path)
            assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/login")
        post = c.post("/ui/approvals/abc", data={"action": "approve"})
        assert post.status_code == 303 and post.headers["location"] == "/ui/login"


def test_the_approval_page_builds_the_form_from_the_tool_schema(site: Site) -> None:
    rid, approval = site.parked("ann", "payer", "pay y")
    with site.client("rita") as c:
        page = c.get(f"/ui/approvals/{approval['id']}")
    html = page.text
    assert page.status_code == 200, html
    assert f'href="/ui/runs/{rid}"' in html and "the tools the agent was offered" in html
    assert 'type="text"' in _control(html, "to") and 'value="x"' in _control(html, "to")
    amount = _control(html, "amount")
    assert 'type="number"' in amount and 'step="1"' in amount and 'value="0"' in amount
    assert 'value=""' in _control(html, "address.city")  # not proposed: empty
    country = _control(html, "address.country")
    assert country.startswith("<select") and '<option value="DE">DE</option>' in country
    assert '<option value="true">true</option>' in _control(html, "urgent")
    assert _control(html, "tags").startswith("<textarea")
    for name in ("Approve", "Reject", "Answer instead of the tool"):
        assert f">{name}</button>" in html
    for label in ("Reason", "Answer"):
        assert _label_for(html, label)
    assert "Arguments (JSON)" not in html  # the schema describes every argument
    with site.client("ann") as c:  # the run's owner: read-only
        mine = c.get(f"/ui/approvals/{approval['id']}")
    assert mine.status_code == 200 and 'id="read-only"' in mine.text
    assert ">Approve</button>" not in mine.text and 'name="csrf"' not in mine.text.split("<main")[1]
    for who in ("bob", "otto"):  # neither its owner nor its group: as unknown
        with site.client(who) as c:
            other = c.get(f"/ui/approvals/{approval['id']}")
        assert other.status_code == 404, who
        assert rid not in other.text and "send_money" not in other.text
    with site.client("rita") as c:
        assert c.get("/ui/approvals/nope").status_code == 404
        assert c.get("/ui/approvals/%3Cb%3E").status_code == 400


def test_an_invalid_edit_is_shown_next_to_its_field_and_decides_nothing(site: Site) -> None:
    rid, approval = site.parked("ann", "payer", "pay z")
    with site.client("rita") as c:
        page = c.get(f"/ui/approvals/{approval['id']}")
        amount = _label_for(page.text, "amount")
        base = {"csrf": _csrf(page), "action": "approve", "arg.to": "dora"}
        base |= {"arg.address.city": "Lyon", "arg.amount": "10"}
        for value, message in (
            ("ten", "enter a whole number"),  # not readable as the field's type
            ("5000", "5000 is greater than the maximum of 1000"),  # against the schema
            ("", "required"),  # a required argument left out
        ):
            resp = c.post(f"/ui/approvals/{approval['id']}", data={**base, "arg.amount": value})
            assert resp.status_code == 400, resp.text
            error = re.search(rf'id="{amount}-error">([^<]+)<', resp.text)
            assert error and message in error.group(1), resp.text
            assert 'aria-invalid="true"' in _control(resp.text, "amount")
            assert 'value="dora"' in _control(resp.text, "to")  # what was typed stays
            assert 'id="form-error"' in resp.text
    [pending] = site.api("ada", "GET", "/v1/approvals", params={"run_id": rid})["data"]
    assert pending["status"] == "pending" and pending["decision"] is None


def test_approving_edited_arguments_runs_the_tool_with_them(site: Site) -> None:
    rid, approval = site.parked("ann", "payer", "pay someone")
    assert approval["request"]["arguments"]["to"] == "x"
    fields = {"action": "approve", "arg.to": "erin", "arg.amount": "90",
              "arg.address.city": "Berlin", "arg.address.country": "DE"}  # fmt: skip
    with site.client("rita") as c:
        _, done = _decide(c, approval["id"], fields)
    # rita reviews ann's run without seeing it: back to the decided approval, not a 404
    assert done.status_code == 303 and done.headers["location"] == f"/ui/approvals/{approval['id']}"
    wait_for(lambda: site.run_status(rid) == "succeeded", "the run to finish")
    assert {"to": "erin", "amount": 90, "address": {"city": "Berlin", "country": "DE"}} in SENT
    shown = site.api("ada", "GET", f"/v1/runs/{rid}")
    decision = next(s for s in shown["steps"] if s["kind"] == "approval")["output"]
    assert decision["action"] == "edit" and decision["decided_by"] == "user:rita"
    assert decision["arguments"] == {"to": "erin", "amount": 90,
                                     "address": {"city": "Berlin", "country": "DE"}}  # fmt: skip
    tool = next(s for s in shown["steps"] if s["kind"] == "tool")["output"]
    assert tool["content"] == "sent 90 EUR to erin"
    with site.client("rita") as c:  # decided: no forms, and a second decision is refused
        page, again = _decide(c, approval["id"], {"action": "approve"})
    assert ">Approve</button>" not in page.text and "user:rita" in page.text
    assert again.status_code == 409 and "approval_decided" in again.text
    with site.client("rita") as c:  # the history
        history = c.get("/ui/approvals", params={"decided": "1"})
    assert "<caption>Decided approvals</caption>" in history.text
    assert approval["id"] in history.text and "edited" in history.text


def test_approving_unchanged_arguments_is_a_plain_approval(site: Site) -> None:
    rid, approval = site.parked("ann", "payer", "pay as proposed")
    with site.client("ada") as c:
        page = c.get(f"/ui/approvals/{approval['id']}")
        fields = dict(re.findall(r'name="(arg\.[^"]+)"[^>]*value="([^"]*)"', page.text))
        done = c.post(f"/ui/approvals/{approval['id']}",
                      data={"csrf": _csrf(page), "action": "approve", **fields})  # fmt: skip
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/ui/runs/{rid}"  # an admin sees the run resume
    wait_for(lambda: site.run_status(rid) == "succeeded", "the run to finish")
    shown = site.api("ada", "GET", f"/v1/runs/{rid}")
    decision = next(s for s in shown["steps"] if s["kind"] == "approval")["output"]
    assert decision["action"] == "approve" and decision["arguments"] is None


def test_reject_with_a_reason_and_answer_instead_of_the_tool(site: Site) -> None:
    before = len(SENT)
    rejected_run, rejected = site.parked("ann", "payer", "pay no one")
    answered_run, answered = site.parked("ann", "payer", "pay nobody")
    with site.client("rita") as c:
        _, empty = _decide(c, answered["id"], {"action": "answer", "answer": "  "})
        assert empty.status_code == 400 and 'id="answer-error"' in empty.text
        _, done = _decide(c, rejected["id"], {"action": "reject", "reason": "not today"})
        assert done.status_code == 303
        _, done = _decide(c, answered["id"], {"action": "answer", "answer": "already paid"})
        assert done.headers["location"] == f"/ui/approvals/{answered['id']}"
    for rid in (rejected_run, answered_run):
        wait_for(lambda rid=rid: site.run_status(rid) == "succeeded", "the run to finish")
    assert len(SENT) == before  # the tool never ran
    steps = site.api("ada", "GET", f"/v1/runs/{rejected_run}")["steps"]
    decision = next(s for s in steps if s["kind"] == "approval")["output"]
    assert (decision["action"], decision["reason"]) == ("reject", "not today")
    steps = site.api("ada", "GET", f"/v1/runs/{answered_run}")["steps"]
    decision = next(s for s in steps if s["kind"] == "approval")["output"]
    assert (decision["action"], decision["answer"]) == ("answer", "already paid")


def test_a_workflow_without_a_schema_edits_its_arguments_as_json(site: Site) -> None:
    rid, approval = site.parked("bob", "transfer", {"to": "mallory", "amount": 100})
    with site.client("rita") as c:
        page = c.get(f"/ui/approvals/{approval['id']}")
        textarea = _control(page.text, "Arguments (JSON)")
        assert "mallory" in textarea and "not checked" in page.text
        data = {"csrf": _csrf(page), "action": "approve"}
        bad = c.post(f"/ui/approvals/{approval['id']}", data={**data, "arguments_json": "{to"})
        assert bad.status_code == 400 and 'id="arguments-json-error"' in bad.text
        edited = '{"to": "trent", "amount": 60}'
        done = c.post(f"/ui/approvals/{approval['id']}", data={**data, "arguments_json": edited})
    assert done.status_code == 303, done.text
    wait_for(lambda: site.run_status(rid) == "succeeded", "the run to finish")
    result = site.api("bob", "GET", f"/v1/runs/{rid}")["result"]
    assert result == {"done": True, "to": "trent", "amount": 60, "by": "user:rita"}


def test_a_gated_mcp_call_gets_its_form_from_the_toolset(site: Site) -> None:
    call = {"tool": "pay.send_money", "arguments": {"to": "zed", "amount": 3}}
    rid, approval = site.parked("ann", "mcp.tool", call)
    assert approval["request"]["via"] == "mcp"
    with site.client("rita") as c:
        page = c.get(f"/ui/approvals/{approval['id']}")
        assert "toolset pay" in page.text and 'value="zed"' in _control(page.text, "to")
        assert _control(page.text, "address.country").startswith("<select")
        fields = {"action": "approve", "arg.to": "zed", "arg.amount": "4", "arg.urgent": "true"}
        _, done = _decide(c, approval["id"], fields)
    assert done.status_code == 303, done.text
    wait_for(lambda: site.run_status(rid) == "succeeded", "the call to run")
    assert {"to": "zed", "amount": 4, "address": {"city": "Paris", "country": "FR"}} in SENT


def test_only_those_who_may_decide_can_post(site: Site) -> None:
    rid, approval = site.parked("ann", "payer", "pay later")
    path = f"/ui/approvals/{approval['id']}"
    with site.client("ann") as c:  # its owner sees it, but may not decide it
        c.get(path)
        denied = c.post(path, data={"csrf": c.cookies["ef_csrf"], "action": "approve"})
    assert denied.status_code == 403 and "permission_denied" in denied.text
    with site.client("bob") as c:  # another member: as unknown, even with a good token
        c.get("/ui/approvals")
        hidden = c.post(path, data={"csrf": c.cookies["ef_csrf"], "action": "approve"})
    assert hidden.status_code == 404 and rid not in hidden.text
    with site.client("rita") as c:
        c.get(path)
        no_token = c.post(path, data={"action": "reject", "reason": "x"})
        assert no_token.status_code == 403 and "ui_csrf_failed" in no_token.text
        page = c.get(path)
        cross = c.post(path, data={"csrf": _csrf(page), "action": "reject"},
                       headers={"origin": "http://evil.example"})  # fmt: skip
        assert cross.status_code == 403 and "ui_cross_site" in cross.text
        odd = c.post(path, data={"csrf": _csrf(page), "action": "delete"})
        assert odd.status_code == 400 and "ui_bad_action" in odd.text
    [pending] = site.api("ada", "GET", "/v1/approvals", params={"run_id": rid})["data"]
    assert pending["status"] == "pending"
