"""Fixtures shared by the dashboard tests: a real server on each store, with people and keys.

``ui_site`` (module scope; SQLite and PostgreSQL) serves the gateway on loopback outside dev
mode (no in-process worker: runs stay as seeded). In the default organisation: the admin
``ada``; the members ``ann`` and ``bob`` (no team); ``sue`` and ``sam``, members of team
``crew``, which shares its runs. In another organisation (``two``): the member ``eve``.
``UiSite`` holds their keys and principals, clients that send a key (``client``/``get``) or
sign in through the login form (``with site.signed_in(who) as (client, csrf)``), and
``seed`` to write data with a store of its own. A test module that needs other settings (a
worker, its own programs) calls ``serve_ui_site`` from its own fixture.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from elevenfactor.config import ProjectConfig, Settings, parse_project
from elevenfactor.governance import (
    Principal,
    create_key,
    create_team,
    create_user,
    local_admin,
    principal_for_user,
)
from elevenfactor.server import Gateway
from elevenfactor.store import Store, migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.server import running_gateway

T = TypeVar("T")

PROJECT: dict[str, Any] = {
    "providers": {"t": {"type": "test"}},
    "models": {"echo": {"provider": "t", "model": "echo-1"}},
    "routes": {"default": {"chain": ["echo"]}},
    "programs": ["tests.support.programs:programs"],
}
"""The default project: the test provider and the shared test programs (``greet``...)."""

PEOPLE: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "ada": ("default", None, ("admin",)),
    "ann": ("default", None, ("member",)),
    "bob": ("default", None, ("member",)),
    "sue": ("default", "crew", ("member",)),
    "sam": ("default", "crew", ("member",)),
    "eve": ("two", None, ("member",)),
}
"""name: (organisation, team, roles). Team ``crew`` shares its runs."""

OTHER_ORG = "org_two"


@dataclass
class UiSite:
    """A running gateway, its database and everyone's keys and principals."""

    base: str
    url: str
    dialect: str
    gw: Gateway
    secrets: dict[str, str]
    principals: dict[str, Principal]

    def client(self, who: str | None = None) -> httpx.Client:
        """A client sending ``who``'s key (None: anonymous); redirects are not followed."""
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def get(self, who: str | None, path: str, **params: Any) -> httpx.Response:
        """``GET path`` as ``who``, with ``params`` as the query string if any are given (else
        ``path``'s own query string is kept)."""
        with self.client(who) as c:
            return c.get(path, params=params or None)

    @contextmanager
    def signed_in(self, who: str) -> Iterator[tuple[httpx.Client, str]]:
        """A client signed in as ``who`` through the login form (a session cookie, no key
        header) and the CSRF token its forms must carry; closed on exit."""
        with httpx.Client(base_url=self.base, timeout=30) as c:
            form = c.get("/ui/login")
            done = c.post(
                "/ui/login",
                data={"csrf": csrf_of(form.text), "api_key": self.secrets[who], "next": "/ui/runs"},
            )
            assert done.status_code == 303, done.text
            page = c.get("/ui/runs")
            yield c, csrf_of(page.text)

    def seed(self, job: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``job`` with a store of its own on the site's database and return its result."""

        async def main() -> T:
            db = await open_store(self.url)
            try:
                return await job(db)
            finally:
                await db.close()

        return asyncio.run(main())


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


async def _people(url: str) -> tuple[dict[str, str], dict[str, Principal]]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        await create_team(db, admin, "crew", shares=True)
        await db.execute(
            "INSERT INTO orgs (id, name, created_at) VALUES (?, 'two', 0)", (OTHER_ORG,)
        )
        other = Principal(OTHER_ORG, "user_root_two", "root-two", roles=frozenset({"admin"}))
        secrets: dict[str, str] = {}
        principals: dict[str, Principal] = {}
        for name, (org, team, roles) in PEOPLE.items():
            actor = admin if org == "default" else other
            await create_user(db, actor, name, team=team, roles=roles)
            _, secrets[name] = await create_key(db, actor, f"key-{name}", user=name)
            principals[name] = await principal_for_user(db, name, org=org)
        return secrets, principals
    finally:
        await db.close()


@contextmanager
def serve_ui_site(
    url: str,
    data_dir: Path,
    *,
    worker: bool = False,
    project: ProjectConfig | None = None,
) -> Iterator[UiSite]:
    """Migrate ``url``, add ``PEOPLE`` and serve it (``worker``: run runs in the server)."""
    secrets, principals = asyncio.run(_people(url))
    settings = Settings(database_url=url, data_dir=data_dir, dev=False, in_process_worker=worker)
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    with running_gateway(settings, project or parse_project(PROJECT)) as (base, gw):
        yield UiSite(base, url, dialect, gw, secrets, principals)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ui_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiSite]:
    """A served gateway with ``PEOPLE`` on each store, fresh for each test module."""
    tmp = tmp_path_factory.mktemp(f"ui-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    with serve_ui_site(url, tmp) as site:
        yield site
