"""Fixtures of the dashboard's browser tests: a real ``elevenfactor serve`` (not dev mode, real
API keys, its in-process worker) per store, Debian's Chromium driven by Playwright (one browser
per session, a fresh context per test), signing in through the login form, and a screenshot of
every test's page, pass or fail, in ``test-artifacts/ui/<test>.png``.

Chromium comes from Debian (``scripts/browser.sh``, run by ``make test``); Playwright's own
browser download is never used."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from elevenfactor.governance import create_key, create_user, local_admin, set_budget
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url, free_port
from tests.support.serve import EXE, ROOT, Server, _ready, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "ui"
TIMEOUT_MS = 10_000
"""How long a Playwright action or expectation waits before it fails."""

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
prices: {echo: {input_per_mtok: 1000, output_per_mtok: 0, per_request: 0.01}}
programs: ["tests.support.programs:programs", "tests.browser.programs:programs"]
toolsets: {bank: "tests.browser.programs:bank"}
"""
PAYER = """name: payer
model: default
instructions: Pay what the user asks for.
tools: [{toolset: bank}]
approval:
  - tools: [pay]
    group: finance
"""
"""An agent whose (deterministic test) model calls ``pay`` with ``{"to": "x", "amount": 0}``;
every call waits for a reviewer of ``finance`` (or an admin)."""

USERS: dict[str, dict[str, Any]] = {
    "root": {"roles": ("admin",)},
    "ann": {"roles": ("member",)},
    "bob": {"roles": ("member",)},
    "rita": {"roles": ("member", "reviewer"), "groups": ("finance",)},
}
FINISHED = ("succeeded", "failed", "cancelled")
STORES = ("sqlite", "postgresql")
T = TypeVar("T")


def in_thread(job: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``job()`` to completion on a fresh event loop in another thread (Playwright's sync
    API owns this thread's loop)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(job()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


async def _seed(url: str) -> dict[str, str]:
    """Migrate ``url``; create the users (keys returned by name) and a budget of ann's."""
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets = {}
        for name, spec in USERS.items():
            await create_user(db, admin, name, **spec)
            _, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
        await set_budget(db, admin, "user:ann", 5.0, window="day")
        return secrets
    finally:
        await db.close()


class LoggedServer(Server):
    """``elevenfactor serve`` as ``Server`` starts it, its output kept in ``log``."""

    def __init__(self, home: Path, db_url: str, log: Path) -> None:
        super().__init__(home, db_url, dev=False)
        self.log = log

    def launch(self) -> None:
        """Start the process on a free loopback port; ``wait_ready`` waits for it."""
        port = free_port()
        paid = ("ELEVENFACTOR_", "OPENAI_", "ANTHROPIC_")  # no paid provider, as in tests/
        env = {k: v for k, v in os.environ.items() if not k.startswith(paid)}
        env.update(
            OPENAI_BASE_URL="http://127.0.0.1:9/paid-provider-blocked",
            DATABASE_URL=self.db_url,
            PYTHONPATH=str(ROOT),
            ELEVENFACTOR_IN_PROCESS_WORKER="true",
            ELEVENFACTOR_DRAIN_SECONDS="0",
        )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [EXE, "serve", "--port", str(port)],
                cwd=self.home,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{port}"

    def wait_ready(self) -> None:
        """Wait until ``/readyz`` answers (fails if the process exits first)."""
        wait_for(lambda: _ready(self.base + self.ready), "server ready", 60, proc=self.proc)

    def start(self) -> None:
        """Launch and wait until ready."""
        self.launch()
        self.wait_ready()


@dataclass
class Site:
    """A serving deployment on one store, its users' keys, and JSON API helpers."""

    store: str
    base: str
    home: Path
    secrets: dict[str, str]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def api(self, who: str) -> httpx.Client:
        """A JSON API client authenticated with ``who``'s key."""
        if who not in self.clients:
            headers = {"Authorization": f"Bearer {self.secrets[who]}"}
            self.clients[who] = httpx.Client(base_url=self.base, headers=headers, timeout=30)
        return self.clients[who]

    def submit(self, who: str, program: str, data: Any) -> str:
        """Start a run of ``program`` (or agent) owned by ``who``; its id."""
        made = self.api(who).post("/v1/runs", json={"program": program, "input": data})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def run(self, rid: str) -> dict[str, Any]:
        """The run as the JSON API shows it to the admin."""
        shown = self.api("root").get(f"/v1/runs/{rid}")
        assert shown.status_code == 200, shown.text
        return dict(shown.json())

    def wait_status(self, rid: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until run ``rid`` is in one of ``statuses``; the run."""
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.run(rid))
            if seen["status"] in FINISHED and seen["status"] not in statuses:
                raise AssertionError(f"run {rid} ended {seen['status']}: {seen.get('error')}")
            return seen["status"] in statuses

        wait_for(reached, f"run {rid} to be {'/'.join(statuses)}", timeout=timeout)
        return seen

    def approval_of(self, rid: str) -> str:
        """The id of the pending approval of run ``rid``."""
        listed = self.api("root").get("/v1/approvals", params={"run_id": rid})
        assert listed.status_code == 200, listed.text
        [item] = listed.json()["data"]
        return str(item["id"])

    def close(self) -> None:
        """Close the API clients."""
        for client in self.clients.values():
            client.close()


@pytest.fixture(scope="package")
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[LoggedServer, Site]]]:
    """One ``elevenfactor serve`` per store (real keys, its own worker; a fresh SQLite file and
    a fresh PostgreSQL schema), launched together so that they start up at the same time."""
    launched: dict[str, tuple[LoggedServer, Site]] = {}
    try:
        for store in STORES:
            home = tmp_path_factory.mktemp(f"browser-{store}")
            url = f"sqlite:///{home}/db.sqlite" if store == "sqlite" else _pg_schema_url(request)
            secrets = in_thread(partial(_seed, url))
            (home / "elevenfactor.yaml").write_text(PROJECT)
            (home / "agents").mkdir()
            (home / "agents" / "payer.yaml").write_text(PAYER)
            server = LoggedServer(home, url, ARTIFACTS / f"server-{store}.log")
            server.launch()
            launched[store] = (server, Site(store, server.base, home, secrets))
        yield launched
    finally:
        for server, site in launched.values():
            site.close()
            if server.proc is not None:
                server.proc.terminate()  # both drain at once
        for store, (server, _) in launched.items():
            assert server.proc is not None
            code = server.proc.wait(timeout=30)
            assert code == 0, f"the {store} server exited with {code}: see {server.log}"


@pytest.fixture(scope="module", params=STORES)
def site(request: pytest.FixtureRequest, servers: dict[str, tuple[LoggedServer, Site]]) -> Site:
    """The deployment on SQLite, then the one on PostgreSQL, each once it is ready."""
    server, deployment = servers[request.param]
    server.wait_ready()
    return deployment


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium, one for the whole browser suite (closed after it, so the
    tests that follow run without Playwright's event loop around)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/browser.sh` (make test does)")
    expect.set_options(timeout=TIMEOUT_MS)
    pw: Playwright = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        pw.stop()


def artifact_name(node_name: str) -> str:
    """``test_x[sqlite]`` → ``test_x-sqlite``: a file name for a test's screenshot."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", node_name).strip("-")


@pytest.fixture
def page(browser: Browser, site: Site, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies) on ``site``; its screenshot is saved to
    ``test-artifacts/ui/<test>.png`` afterwards, whether the test passed or not."""
    context = browser.new_context(base_url=site.base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{artifact_name(request.node.name)}.png"
        try:
            tab.screenshot(path=str(shot), full_page=True)
        except PlaywrightError as exc:  # a crashed page: say so, do not hide the test's error
            print(f"no screenshot for {request.node.name}: {exc}", file=sys.stderr)
        context.close()


def sign_in(page: Page, key: str) -> None:
    """Sign in through the login form with ``key`` and wait to leave the form."""
    page.goto("/ui/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/ui/login" not in url)


def release_file(site: Site) -> Path:
    """A path in the server's home that a ``hold`` run waits for (not yet existing)."""
    return site.home / f"release-{uuid.uuid4().hex[:12]}"
