"""The cost report (issue 8) on both stores: grouping by owners, models, tags, sessions and time;
who sees what; CSV and JSON from the CLI; call-record hash compatibility and price versions."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from elevenfactor.cli import main
from elevenfactor.config import parse_project
from elevenfactor.errors import RequestError
from elevenfactor.governance import (
    PriceBook,
    Principal,
    cost_report,
    create_key,
    create_team,
    create_user,
    local_admin,
    parse_filters,
    parse_when,
    principal_for_user,
    store_prices,
)
from elevenfactor.models import (
    AssistantMessage,
    Call,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    Usage,
    wrap_deployment,
)
from elevenfactor.models._protocol import Attempt
from elevenfactor.observe import CallRecord, CallRecorder
from elevenfactor.observe._calls import RECORD_COLUMNS_V1, record_hash
from elevenfactor.runtime import Agent, AgentDeps, AgentSpec, Programs, Worker, submit_run
from elevenfactor.runtime._audit import audit
from elevenfactor.store import Store, migrate, open_store

pytestmark = pytest.mark.integration

DAY1 = dt.datetime(2026, 11, 2, 10, 30, tzinfo=dt.UTC).timestamp()  # a Monday
DAY2 = DAY1 + 86400 + 3600  # Tuesday 11:30
PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {
            "big": {"provider": "t", "model": "big-1"},
            "small": {"provider": "t", "model": "small-1"},
        },
        "prices": {
            "big": {"input_per_mtok": 10, "output_per_mtok": 20, "cached_input_per_mtok": 1},
            "small": {"input_per_mtok": 1, "output_per_mtok": 2},
        },
    }
)
BOOK = PriceBook.from_project(PROJECT)


@dataclass
class People:
    admin: Principal
    ann: Principal  # team red
    bob: Principal  # team red
    key_ann: str


async def _people(store: Store) -> People:
    admin = local_admin("cli")
    await create_team(store, admin, "red", shares=False)
    for name in ("ann", "bob"):
        await create_user(store, admin, name, team="red")
    key, _ = await create_key(store, admin, "ann-laptop", user="ann")
    ann = await principal_for_user(store, "ann")
    bob = await principal_for_user(store, "bob")
    return People(admin, ann, bob, key.id)


def _record(
    who: Principal,
    deployment: str,
    usage: Usage,
    at: float,
    *,
    key_id: str | None = None,
    tags: list[str] | None = None,
    session: str | None = None,
    run_id: str | None = None,
    agent: str | None = None,
    cache_hit: bool = False,
    status: str = "ok",
) -> CallRecord:
    call = Call(trace_id="t", route="default", cache_hit=cache_hit)
    call.attempts.append(Attempt(deployment, "t", f"{deployment}-1", status, 1.0))
    rec = CallRecord.from_call(
        call,
        usage if status == "ok" else None,
        BOOK,
        tokens_in=0,
        tokens_out=0,
        stream=False,
        status=status,
        org_id=who.org_id,
        team_id=who.team_id,
        user_id=who.user_id,
        api_key_id=key_id,
        tags=tags or [],
        session_id=session,
        run_id=run_id,
        agent=agent,
    )
    rec.created_at = at
    return rec


async def _write(store: Store, records: list[CallRecord]) -> None:
    recorder = CallRecorder(store)
    for r in records:
        recorder.record(r)
    assert await recorder.flush() == len(records)


M = 1_000_000


async def _fixture(store: Store) -> People:
    p = await _people(store)
    await _write(
        store,
        [
            _record(p.ann, "big", Usage(input_tokens=M, output_tokens=M), DAY1, key_id=p.key_ann,
                    tags=["search", "prod"], session="s-1"),
            _record(p.ann, "small", Usage(input_tokens=M, output_tokens=0), DAY1 + 60,
                    tags=["search"], session="s-1"),
            _record(p.ann, "big", Usage(input_tokens=M, cached_input_tokens=M), DAY2),
            _record(p.bob, "big", Usage(input_tokens=M, output_tokens=M), DAY2, cache_hit=True,
                    tags=["prod"]),
            _record(p.bob, "small", Usage(), DAY2 + 60, status="error"),
        ],
    )  # fmt: skip
    return p


def _rows(report: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    for row in report.to_dict()["data"]:
        key = (row["bucket"], *(row["names"].get(d) or row["group"][d] for d in report.group_by))
        out[key] = row
    return out


async def test_report_by_user_model_and_day(store: Store) -> None:
    p = await _fixture(store)
    report = await cost_report(
        store, p.admin, group_by=["user", "model"], bucket="day", since=DAY1 - 10
    )
    rows = _rows(report)
    assert set(rows) == {
        ("2026-11-02", "ann", "big"),
        ("2026-11-02", "ann", "small"),
        ("2026-11-03", "ann", "big"),
        ("2026-11-03", "bob", "big"),
        ("2026-11-03", "bob", "small"),
    }
    assert rows[("2026-11-02", "ann", "big")]["cost"] == pytest.approx(30.0)
    assert rows[("2026-11-02", "ann", "small")]["cost"] == pytest.approx(1.0)
    cached = rows[("2026-11-03", "ann", "big")]
    assert (cached["cost"], cached["saved"], cached["tokens_cached"]) == (1.0, 9.0, M)
    hit = rows[("2026-11-03", "bob", "big")]
    assert (hit["cost"], hit["saved"]) == (0.0, 30.0)  # a response-cache hit
    failed = rows[("2026-11-03", "bob", "small")]
    assert (failed["calls"], failed["errors"], failed["unpriced"]) == (1, 1, 0)
    assert rows[("2026-11-02", "ann", "big")]["group"]["user"] == p.ann.user_id
    totals = report.totals.to_dict()
    assert (totals["calls"], totals["errors"]) == (5, 1)
    assert totals["cost"] == pytest.approx(32.0) and totals["saved"] == pytest.approx(39.0)
    # the first rows are the first day's, the most expensive first
    assert [r["bucket"] for r in report.to_dict()["data"]][:2] == ["2026-11-02"] * 2
    assert report.rows[0].figures.cost > report.rows[1].figures.cost


async def test_members_see_their_own_spend_and_admins_the_orgs(store: Store) -> None:
    p = await _fixture(store)
    mine = await cost_report(store, p.bob, group_by=["user"])
    assert [r.label("user") for r in mine.rows] == ["bob"]
    assert mine.totals.calls == 2
    # a filter on someone else's spend finds nothing
    theirs = await cost_report(store, p.bob, group_by=[], filters={"user": "ann"})
    assert theirs.rows == [] and theirs.totals.calls == 0
    org = await cost_report(store, p.admin, group_by=["team", "key"])
    rows = _rows(org)
    assert rows[(None, "red", "ann-laptop")]["calls"] == 1
    assert rows[(None, "red", None)]["calls"] == 4
    other_org = Principal(
        org_id="org_other", user_id="x", user_name="x", roles=frozenset({"admin"})
    )
    assert (await cost_report(store, other_org, group_by=["user"])).totals.calls == 0


async def test_tags_sessions_weeks_and_filters(store: Store) -> None:
    p = await _fixture(store)
    rid = await submit_run(store, "agent", {"input": "x"}, session_id="s-run", owner=p.ann)
    await _write(
        store,
        [_record(p.ann, "small", Usage(input_tokens=M), DAY2, run_id=rid, agent="helper")],
    )
    by_tag = _rows(await cost_report(store, p.admin, group_by=["tag"]))
    assert {k: v["calls"] for k, v in by_tag.items()} == {
        (None, "search"): 2,
        (None, "prod"): 2,
        (None, None): 3,
    }
    by_session = _rows(await cost_report(store, p.admin, group_by=["session", "agent"]))
    assert by_session[(None, "s-1", None)]["calls"] == 2
    assert by_session[(None, "s-run", "helper")]["calls"] == 1  # the run's session
    weeks = await cost_report(store, p.admin, group_by=[], bucket="week")
    assert [r.bucket for r in weeks.rows] == ["2026-11-02"]
    hours = _rows(await cost_report(store, p.admin, group_by=["status"], bucket="hour"))
    assert hours[("2026-11-02T10:00", "ok")]["calls"] == 2
    prod = await cost_report(store, p.admin, group_by=["model"], filters={"tag": "prod"})
    assert prod.totals.calls == 2
    assert (await cost_report(store, p.admin, group_by=[], filters={"tag": "Prod"})).rows == []
    only = await cost_report(
        store, p.admin, group_by=["provider", "route"], filters={"model": "big", "user": "ann"}
    )
    assert only.totals.calls == 2
    assert _rows(only)[(None, "t", "default")]["calls"] == 2
    window = await cost_report(store, p.admin, group_by=[], since=DAY2, until=DAY2 + 61)
    assert window.totals.calls == 4


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"group_by": ["colour"]}, "by"),
        ({"group_by": ["user", "user"]}, "by"),
        ({"group_by": [], "bucket": "year"}, "per"),
        ({"group_by": [], "filters": {"colour": "red"}}, "where"),
    ],
)
async def test_unknown_dimensions_are_request_errors(
    store: Store, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(RequestError) as exc:
        await cost_report(store, local_admin("cli"), **kwargs)
    assert exc.value.param == param and exc.value.http_status == 400


def test_parse_when_and_filters() -> None:
    now = 1_000_000.0
    assert parse_when("7d", "since", now) == now - 7 * 86400
    assert parse_when("90m", "since", now) == now - 5400
    assert parse_when("2026-11-02", "since") == dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()
    assert parse_when("2026-11-02T10:30:00+01:00", "x") == DAY1 - 3600
    assert parse_when("1700000000", "since") == 1_700_000_000.0
    for bad in ("yesterday", "7 days", "", "2026-13-01", "99999999999999999999d", "9" * 20):
        with pytest.raises(RequestError) as exc:
            parse_when(bad, "since")
        assert exc.value.param == "since"
    assert parse_filters(["model=gpt-4o", "run:r-1:step"]) == {"model": "gpt-4o", "run": "r-1:step"}
    for bad_items in (["model"], ["colour=red"], ["model=a", "model=b"], ["tag=\x00"]):
        with pytest.raises(RequestError):
            parse_filters(bad_items)


def _cli_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrate and seed the store the CLI then reads through DATABASE_URL."""

    async def setup() -> None:
        db = await open_store(store_url)
        try:
            await migrate(db)
            await _fixture(db)
        finally:
            await db.close()

    asyncio.run(setup())
    monkeypatch.setenv("DATABASE_URL", store_url)


def test_cli_report_as_csv_json_and_table(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _cli_store(store_url, monkeypatch)
    runner = CliRunner()
    args = ["cost", "report", "--by", "user,model", "--since", "2026-11-01"]
    out = runner.invoke(main, [*args, "--format", "csv"])
    assert out.exit_code == 0, out.output
    lines = list(csv.reader(io.StringIO(out.output)))
    assert lines[0][:3] == ["user", "model", "calls"] and "saved" in lines[0]
    assert ["ann", "big"] in [line[:2] for line in lines[1:-1]]
    assert lines[-1][0] == "total" and lines[-1][2] == "5"
    doc = json.loads(runner.invoke(main, [*args, "--json"]).output)
    assert doc["totals"]["calls"] == 5 and doc["group_by"] == ["user", "model"]
    table = runner.invoke(main, [*args, "--per", "day"])
    assert table.exit_code == 0 and "saved (cache)" in table.output
    assert table.output.strip().splitlines()[-1].startswith("total")
    # acting as a member: only its own calls
    bob = json.loads(runner.invoke(main, [*args, "--json", "--as", "bob"]).output)
    assert {r["names"]["user"] for r in bob["data"]} == {"bob"}
    bad = runner.invoke(main, ["cost", "report", "--by", "colour"])
    assert bad.exit_code == 2 and "unknown dimension 'colour'" in bad.output
    bad = runner.invoke(main, ["cost", "report", "--since", "soon"])
    assert bad.exit_code == 2 and "--since" in bad.output


async def test_old_call_records_still_verify_and_cleared_columns_are_caught(store: Store) -> None:
    p = await _people(store)
    old = (
        "old-1", "t", DAY1, None, "default", "t", "big", "big-1", 0, "ok", None, 3, 4, 1.5,
        0.25, 0, "[]", None, None, p.ann.org_id, p.ann.team_id, p.ann.user_id, None,
    )  # fmt: skip
    assert len(old) == len(RECORD_COLUMNS_V1)
    await store.execute(
        f"INSERT INTO model_calls ({', '.join(RECORD_COLUMNS_V1)}, record_hash)"
        f" VALUES ({', '.join('?' for _ in old)}, ?)",
        (*old, record_hash(old)),
    )
    await _write(store, [_record(p.ann, "big", Usage(input_tokens=5, output_tokens=5), DAY2)])
    report = await audit(store)
    assert report.calls == 2 and report.findings == [], report.findings
    # the old row is in the report, with no tags, session or savings
    assert (await cost_report(store, p.admin, group_by=[])).totals.calls == 2
    await store.execute(
        "UPDATE model_calls SET agent = NULL, session_id = NULL, tags = NULL,"
        " tokens_cached = NULL, price_version = NULL, saved = NULL WHERE id <> 'old-1'"
    )
    report = await audit(store)
    assert [f.subject for f in report.findings] != []
    assert all("hash mismatch" in f.message for f in report.findings)


async def test_price_versions_are_stored_once_and_kept(store: Store) -> None:
    assert await store_prices(store, BOOK, now=1.0) == 2
    await store_prices(store, BOOK, now=2.0)
    rows = await store.fetchall("SELECT version, deployment, model, price, first_seen FROM prices")
    assert len(rows) == 2 and {r[4] for r in rows} == {1.0}
    big = BOOK.price("big")
    assert big is not None
    [row] = [r for r in rows if r[0] == big.version]
    assert (row[1], row[2], orjson.loads(row[3])["input_per_mtok"]) == ("big", "big-1", 10.0)
    changed = PriceBook.from_project(
        PROJECT.model_copy(update={"prices": {**PROJECT.prices, "big": PROJECT.prices["small"]}})
    )
    await store_prices(store, changed)
    versions = {r[0] for r in await store.fetchall("SELECT version FROM prices")}
    assert big.version in versions and len(versions) == 3
    # a record names the version it was charged at
    p = await _people(store)
    rec = _record(p.ann, "big", Usage(input_tokens=1), DAY1)
    assert rec.price_version == big.version


async def test_an_agents_calls_are_attributed_to_its_agent_run_session_and_tags(
    store: Store,
) -> None:
    p = await _people(store)

    def answer(messages: Sequence[Message], settings: ModelSettings) -> Response:
        return Response(message=AssistantMessage(content="done"), usage=Usage(input_tokens=M))

    model = FunctionModel(answer, name="small")
    registry = ModelRegistry(
        PROJECT, deployments={"small": wrap_deployment(model, "t", PROJECT.models["small"])}
    )
    spec = AgentSpec(name="helper", model="small", settings={"tags": ["batch"]})
    recorder = CallRecorder(store)
    programs = Programs()
    programs.register("helper", Agent(spec, AgentDeps(registry, {}, {}, recorder)))
    rid = await submit_run(store, "helper", "hi", session_id="sess-9", owner=p.ann)
    await Worker(store, programs).run_until_idle()
    assert await recorder.flush() == 1
    report = await cost_report(store, p.ann, group_by=["agent", "run", "session", "tag", "user"])
    [row] = report.rows
    assert row.group == {
        "agent": "helper",
        "run": rid,
        "session": "sess-9",
        "tag": "batch",
        "user": p.ann.user_id,
    }
    assert row.figures.cost == pytest.approx(1.0)
    assert (await cost_report(store, p.bob, group_by=["agent"])).rows == []


def test_cli_rollup_catches_up_and_rebuilds_without_changing_the_report(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_store(store_url, monkeypatch)
    runner = CliRunner()
    report = ["cost", "report", "--by", "user,model,tag", "--per", "day", "--json"]
    before = json.loads(runner.invoke(main, report).output)
    done = runner.invoke(main, ["cost", "rollup", "--json"])
    assert done.exit_code == 0, done.output
    first = json.loads(done.output)
    assert first["rows_written"] > 0 and first["rolled_up_through"] > DAY1
    assert json.loads(runner.invoke(main, report).output) == before  # now read from the rollup
    again = json.loads(runner.invoke(main, ["cost", "rollup", "--json"]).output)
    assert again["rows_written"] == 0  # nothing new: each hour once
    rebuilt = runner.invoke(main, ["cost", "rollup", "--rebuild", "2026-11-01"])
    assert rebuilt.exit_code == 0 and "rollup rows written; rolled up through" in rebuilt.output
    assert json.loads(runner.invoke(main, report).output) == before
    bad = runner.invoke(main, ["cost", "rollup", "--until", "2026-11-03"])
    assert bad.exit_code == 2 and "--until goes with --rebuild" in bad.output
    bad = runner.invoke(main, ["cost", "rollup", "--rebuild", "soon"])
    assert bad.exit_code == 2 and "--rebuild" in bad.output
