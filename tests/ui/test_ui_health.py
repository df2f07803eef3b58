"""The health page over a real server outside dev mode, on SQLite and PostgreSQL: readiness as
``/readyz`` checks it, deployments with their circuit states, queue depth, workers and their
leases (counted for everyone, run ids only for their owner and the admin), kill switches; a
malformed query is a 400 page, a visitor who is not signed in goes to the login form."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_user, kill, local_admin, unkill
from elevenfactor.models import CircuitBreaker
from elevenfactor.runtime import claim_run
from elevenfactor.server import Gateway
from elevenfactor.server._readiness import readiness
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
        "programs": ["tests.support.programs:programs"],
    }
)
PEOPLE = {"ann": ("member",), "bob": ("member",), "ada": ("admin",)}


@dataclass
class Site:
    base: str
    url: str
    gw: Gateway
    secrets: dict[str, str]

    def get(self, who: str | None, path: str = "/ui/health", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            return c.get(path, **kw)

    def sql(self, job: Any) -> Any:
        async def go() -> Any:
            db = await open_store(self.url)
            try:
                return await job(db)
            finally:
                await db.close()

        return asyncio.run(go())


async def _people(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        secrets = {}
        for name, roles in PEOPLE.items():
            await create_user(db, local_admin("cli"), name, roles=roles)
            secrets[name] = (await create_key(db, local_admin("cli"), f"key-{name}", user=name))[1]
        return secrets
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    home: Path = tmp_path_factory.mktemp(f"ui-health-{request.param}")
    url = f"sqlite:///{home}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets = asyncio.run(_people(url))
    settings = Settings(database_url=url, data_dir=home, dev=False, in_process_worker=True)
    with running_gateway(settings, PROJECT) as (base, gw):
        yield Site(base, url, gw, secrets)


def _table(html: str, caption: str) -> str:
    found = re.search(rf"<table>\s*<caption>{caption}</caption>.*?</table>", html, re.S)
    assert found, f"no table {caption!r}"
    return found.group(0)


def test_everyone_signed_in_sees_readiness_providers_queues_and_workers(site: Site) -> None:
    for who in ("ann", "ada"):
        page = site.get(who)
        assert page.status_code == 200, page.text
        assert re.search(r'id="readiness" data-status="ready"', page.text)
        assert '<strong>budgets</strong>: <span class="s-ok">ok</span>' in page.text
        providers = _table(page.text, "Providers")
        assert '<th scope="row">echo</th>' in providers and "t <small" in providers
        assert '<span class="badge s-closed">closed</span>' in providers
        workers = _table(page.text, "Workers")
        assert site.gw.worker is not None and site.gw.worker.id in workers
        assert "(this server)" in workers
        _table(page.text, "Queues")


def test_an_open_circuit_is_shown_with_its_retry_time(site: Site) -> None:
    assert site.gw.registry is not None
    node: Any = site.gw.registry.deployments["echo"]
    while not isinstance(node, CircuitBreaker):
        node = node.inner
    node.opened_at, node.consecutive_failures = node._clock(), 5  # as five failures leave it
    try:
        providers = _table(site.get("ann").text, "Providers")
    finally:
        node.opened_at, node.consecutive_failures = None, 0
    assert '<span class="badge s-open">open</span>' in providers
    assert re.search(r'<td class="num">5</td>\s*<td>\d+\.\d s</td>', providers), providers


def test_queues_and_workers_are_counted_but_run_ids_shown_only_to_whom_they_belong(
    site: Site,
) -> None:
    with httpx.Client(base_url=site.base, timeout=30) as c:
        headers = {"Authorization": f"Bearer {site.secrets['ann']}"}
        body = {"program": "greet", "input": {"name": "x"}, "queue": "batch"}
        queued = c.post("/v1/runs", json=body, headers=headers).json()["id"]
        held = c.post("/v1/runs", json=body, headers=headers).json()["id"]
    queues = _table(site.get("bob").text, "Queues")  # nobody serves "batch": both queued
    assert re.search(r'batch</th>\s*<td><span class="badge s-queued">queued</span></td>\s*'
                     r'<td class="num">2</td>', queues), queues  # fmt: skip

    async def lease(db: Any) -> str:  # a worker of another process takes one, then stalls
        got = await claim_run(db, "w-elsewhere", ["batch"], 30.0)
        assert got is not None
        await db.execute("UPDATE runs SET lease_expires_at = ? WHERE id = ?",
                         (time.time() - 60, got.run_id))  # fmt: skip
        return str(got.run_id)

    running = site.sql(lease)
    assert running in (queued, held)
    for who, sees in (("ann", True), ("ada", True), ("bob", False)):
        page = site.get(who)
        workers = _table(page.text, "Workers")
        assert re.search(r"w-elsewhere</code></th>\s*<td class=\"num\">1</td>", workers), who
        assert '<span class="s-bad">1</span>' in workers  # its lease is overdue
        assert (running in _table(page.text, "Leases")) is sees, who
        assert (running in page.text) is sees, who

    async def finish(db: Any) -> None:
        await db.execute("UPDATE runs SET status = 'cancelled' WHERE queue = 'batch'")

    site.sql(finish)


def test_kill_switches_are_counted_for_the_organisation(site: Site) -> None:
    async def stop(db: Any) -> str:
        return (await kill(db, local_admin("cli"), "agent:nobody", "a test")).switch.id

    ident = site.sql(stop)
    try:
        for who in ("ann", "ada"):
            page = site.get(who)
            assert 'id="kill-switches" data-count="1"' in page.text, who
        assert 'href="/ui/cost">Manage kill switches' in site.get("ada").text
        assert "Manage kill switches" not in site.get("ann").text
    finally:

        async def lift(db: Any) -> None:
            await unkill(db, local_admin("cli"), ident, "done")

        site.sql(lift)
    assert 'data-count="0"' in site.get("ann").text


@pytest.mark.parametrize("query", ["x=1", "verbose=true", "%ff=1"])
def test_a_query_string_is_refused_with_a_400_page(site: Site, query: str) -> None:
    page = site.get("ann", f"/ui/health?{query}")
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")


def test_not_signed_in_goes_to_the_login_form(site: Site) -> None:
    page = site.get(None)
    assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=%2Fui%2Fhealth"


async def test_readiness_of_a_server_not_open_yet(tmp_path: Path) -> None:
    gw = Gateway(Settings(data_dir=tmp_path, dev=False), PROJECT)  # not opened: starting
    state = await readiness(gw)
    assert (state.status, state.ready) == ("starting", False)
    assert [(c.name, c.ok) for c in state.checks] == [("server", False)]
    gw.start_draining()
    assert (await readiness(gw)).status == "draining"
