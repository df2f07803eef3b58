"""Dev mode's cross-site guard over real HTTP, on the API and on ``/mcp``, on both stores.

Dev mode serves without a key, so anything a foreign web page can make a browser send must be
refused: a DNS-rebound ``Host``, a foreign ``Origin``, a "simple" POST (no JSON content type, so
no CORS preflight). A key that is given is still checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp.server.lowlevel import Server as McpServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_user, local_admin
from elevenfactor.server._state import mcp_security
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.serve import wait_for
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
        "programs": ["tests.support.programs:programs"],
        "toolsets": {"calc": "tests.support.programs:calc"},
        "mcp_server": {"tools": ["calc.add"]},
    }
)
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "cross-site-test", "version": "0"},
    },
}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


def mcp_message(resp: httpx.Response) -> Any:
    """The JSON-RPC answer of an ``/mcp`` POST, sent as plain JSON or as an SSE stream."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        data = [ln[5:].strip() for ln in resp.text.splitlines() if ln.startswith("data:")]
        return orjson.loads(next(d for d in reversed(data) if d))
    return resp.json()


CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
RUN = {"program": "greet", "input": {"name": "x"}}


@dataclass
class Site:
    """A dev-mode server, a real key of user ``dana``, and a run parked on an approval."""

    base: str
    port: int
    gw_mcp: StreamableHTTPSessionManager
    secret: str
    waiting_run: str
    approval: str

    def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            return c.request(method, path, **kw)

    def run_ids(self) -> set[str]:
        listed = self.send("GET", "/v1/runs", params={"limit": 1000})
        assert listed.status_code == 200, listed.text
        return {r["id"] for r in listed.json()["data"]}

    def untouched(self) -> None:
        """The parked run and its approval are as they were."""
        run = self.send("GET", f"/v1/runs/{self.waiting_run}").json()
        assert run["status"] == "waiting"
        [item] = self.send("GET", "/v1/approvals", params={"run_id": self.waiting_run}).json()[
            "data"
        ]
        assert item["status"] == "pending"


async def _setup(url: str) -> str:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        await create_user(db, admin, "dana")
        _, secret = await create_key(db, admin, "dana-laptop", user="dana")
        return secret
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp: Path = tmp_path_factory.mktemp(f"cross-site-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secret = asyncio.run(_setup(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=True, in_process_worker=True)
    with running_gateway(settings, PROJECT) as (base, gw):
        assert gw.mcp is not None
        with httpx.Client(base_url=base, timeout=30) as c:
            created = c.post(
                "/v1/runs", json={"program": "transfer", "input": {"to": "bob", "amount": 1}}
            )
            assert created.status_code == 201, created.text
            rid = created.json()["id"]
            wait_for(
                lambda: c.get(f"/v1/runs/{rid}").json()["status"] == "waiting", "the run to park"
            )
            [item] = c.get("/v1/approvals", params={"run_id": rid}).json()["data"]
        yield Site(base, int(base.rsplit(":", 1)[1]), gw.mcp, secret, rid, item["id"])


def _requests(site: Site) -> list[tuple[str, str, dict[str, Any]]]:
    """One request per endpoint, each valid apart from what a test changes."""
    return [
        ("GET", "/v1/models", {}),
        ("GET", "/v1/runs", {}),
        ("POST", "/v1/runs", {"json": RUN}),
        ("GET", f"/v1/runs/{site.waiting_run}", {}),
        ("GET", f"/v1/runs/{site.waiting_run}/events", {}),
        ("POST", f"/v1/runs/{site.waiting_run}/cancel", {"json": {}}),
        ("DELETE", f"/v1/runs/{site.waiting_run}", {"params": {"reason": "x"}}),
        ("GET", "/v1/approvals", {}),
        ("POST", f"/v1/approvals/{site.approval}", {"json": {"action": "approve"}}),
        ("POST", "/v1/chat/completions", {"json": CHAT}),
        ("POST", "/mcp", {"json": INIT, "headers": MCP_ACCEPT}),
    ]


def _refused(resp: httpx.Response, status: int, code: str, param: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    err = resp.json()["error"]
    assert (err["code"], err["param"], err["type"]) == (code, param, "invalid_request_error")


@pytest.mark.parametrize(
    "host",
    [
        "evil.example.com",
        "evil.example.com:{port}",
        "localhost.evil.example.com:{port}",
        "127.0.0.1.nip.io:{port}",
        "localhost:{port}@evil.example.com",
        "10.0.0.7:{port}",
    ],
)
def test_a_foreign_host_is_refused_everywhere(site: Site, host: str) -> None:
    """A DNS-rebound name reaches the server with the attacker's Host: 421, nothing done."""
    before = site.run_ids()
    for method, path, kw in _requests(site):
        headers = {**kw.pop("headers", {}), "Host": host.format(port=site.port)}
        resp = site.send(method, path, headers=headers, **kw)
        _refused(resp, 421, "host_not_allowed", "host")
    assert site.run_ids() == before
    site.untouched()


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example.com",
        "https://evil.example.com:443",
        "http://localhost.evil.example.com",
        "http://127.0.0.1.nip.io:3000",
        "null",
        "file://",
    ],
)
def test_a_foreign_origin_is_refused_everywhere(site: Site, origin: str) -> None:
    before = site.run_ids()
    for method, path, kw in _requests(site):
        headers = {**kw.pop("headers", {}), "Origin": origin}
        resp = site.send(method, path, headers=headers, **kw)
        _refused(resp, 403, "origin_not_allowed", "origin")
    assert site.run_ids() == before
    site.untouched()


@pytest.mark.parametrize(
    "ctype",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-patch+json",
        None,
    ],
)
def test_a_simple_cross_site_post_is_refused_and_does_nothing(
    site: Site, ctype: str | None
) -> None:
    """What a form or ``fetch(..., {mode: "no-cors"})`` can send: no run, no cancel, no
    decision, no model call."""
    before = site.run_ids()
    headers = {"Content-Type": ctype} if ctype else {}
    for path, body in (
        ("/v1/runs", b'{"program": "greet", "input": {"name": "x"}}'),
        (f"/v1/runs/{site.waiting_run}/cancel", b"{}"),
        (f"/v1/approvals/{site.approval}", b'{"action": "approve"}'),
        ("/v1/chat/completions", b'{"model": "default", "messages": []}'),
        ("/mcp", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'),
    ):
        resp = site.send("POST", path, content=body, headers={**headers, **MCP_ACCEPT})
        _refused(resp, 415, "unsupported_media_type", "content-type")
    assert site.run_ids() == before
    site.untouched()


@pytest.mark.parametrize(
    "authorization", ["Bearer ef_deadbeef_not-a-real-key", "Bearer sk-typo", "Basic ZGV2Og=="]
)
def test_a_wrong_key_is_refused_even_in_dev_mode(site: Site, authorization: str) -> None:
    before = site.run_ids()
    for method, path, kw in _requests(site):
        headers = {**kw.pop("headers", {}), "Authorization": authorization}
        resp = site.send(method, path, headers=headers, **kw)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["error"]["code"] == "invalid_api_key"
    assert site.run_ids() == before
    site.untouched()


@pytest.mark.parametrize(
    ("authorization", "owner"), [(None, "local"), ("Bearer dev", "local"), ("key", "dana")]
)
def test_no_key_the_dev_placeholder_and_a_real_key_work(
    site: Site, authorization: str | None, owner: str
) -> None:
    headers = {}
    if authorization == "key":
        headers["Authorization"] = f"Bearer {site.secret}"
    elif authorization:
        headers["Authorization"] = authorization
    assert site.send("GET", "/v1/models", headers=headers).status_code == 200
    created = site.send("POST", "/v1/runs", json=RUN, headers=headers)
    assert created.status_code == 201, created.text
    user_id = created.json()["owner"]["user_id"]
    assert (user_id == "user_local") == (owner == "local")
    chat = site.send("POST", "/v1/chat/completions", json=CHAT, headers=headers)
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "echo: hi"
    mcp = site.send("POST", "/mcp", json=INIT, headers={**headers, **MCP_ACCEPT})
    assert mcp.status_code == 200 and "result" in mcp_message(mcp), mcp.text


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("localhost:{port}", None),
        ("127.0.0.1:{port}", None),
        ("[::1]:{port}", None),
        ("localhost", None),
        ("localhost:{port}", "http://localhost:3000"),
        ("127.0.0.1:{port}", "http://127.0.0.1:5173"),
        ("localhost:{port}", "https://localhost"),
        ("localhost:{port}", "http://[::1]:8080"),
    ],
)
def test_loopback_hosts_and_origins_are_served(site: Site, host: str, origin: str | None) -> None:
    headers = {"Host": host.format(port=site.port)}
    if origin:
        headers["Origin"] = origin
    assert site.send("GET", "/v1/runs", headers=headers).status_code == 200
    assert site.send("POST", "/v1/runs", json=RUN, headers=headers).status_code == 201
    chat = site.send("POST", "/v1/chat/completions", json=CHAT, headers=headers)
    assert chat.status_code == 200
    mcp = site.send("POST", "/mcp", json=INIT, headers={**headers, **MCP_ACCEPT})
    assert mcp.status_code == 200 and "result" in mcp_message(mcp), mcp.text


def test_probes_answer_any_host(site: Site) -> None:
    """Load balancers probe by IP or internal name: health checks are not guarded (and do
    nothing)."""
    for path in ("/healthz", "/readyz"):
        resp = site.send("GET", path, headers={"Host": "10.0.0.7", "Origin": "http://evil.example"})
        assert resp.status_code == 200


async def _mcp_probe(
    security: TransportSecuritySettings, headers: dict[str, str]
) -> httpx.Response:
    """``initialize`` straight to an MCP transport with ``security`` (no elevenfactor guard in
    front of it)."""
    manager = StreamableHTTPSessionManager(
        McpServer("probe"), stateless=True, json_response=True, security_settings=security
    )
    async with manager.run():
        transport = httpx.ASGITransport(app=manager.handle_request)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            return await c.post("/mcp", json=INIT, headers={**MCP_ACCEPT, **headers})


async def test_the_mcp_transport_itself_refuses_rebound_hosts_in_dev_mode(site: Site) -> None:
    """Defence in depth: the MCP SDK's own DNS-rebinding protection is on, with the settings the
    server gave it, so ``/mcp`` stays protected even without the guard in front."""
    security = site.gw_mcp.security_settings
    assert security is not None and security.enable_dns_rebinding_protection
    foreign_host = await _mcp_probe(security, {"Host": "evil.example.com"})
    assert (foreign_host.status_code, foreign_host.text) == (421, "Invalid Host header")
    foreign_origin = await _mcp_probe(
        security, {"Host": "127.0.0.1:8000", "Origin": "http://evil.example.com"}
    )
    assert (foreign_origin.status_code, foreign_origin.text) == (403, "Invalid Origin header")
    for headers in (
        {"Host": "127.0.0.1:8000"},
        {"Host": "localhost:8000", "Origin": "http://localhost:3000"},
    ):
        ok = await _mcp_probe(security, headers)
        assert ok.status_code == 200 and "result" in ok.json()
    # Outside dev mode it is on exactly when the served hosts are configured.
    assert not mcp_security(Settings(dev=False)).enable_dns_rebinding_protection
    pinned = mcp_security(Settings(dev=False, allowed_hosts="api.example.com"))
    assert pinned.enable_dns_rebinding_protection
    assert (await _mcp_probe(pinned, {"Host": "api.example.com"})).status_code == 200
    assert (await _mcp_probe(pinned, {"Host": "localhost:8000"})).status_code == 421


def test_loopback_names_are_case_insensitive_on_mcp_as_on_the_api(site: Site) -> None:
    """Host names are case-insensitive: what the guard serves, the MCP transport serves too
    (it compares exactly, so the server hands it the lower-case form)."""
    headers = {"Host": f"LOCALHOST:{site.port}"}
    assert site.send("GET", "/v1/runs", headers=headers).status_code == 200
    mcp = site.send("POST", "/mcp", json=INIT, headers={**headers, **MCP_ACCEPT})
    assert mcp.status_code == 200, mcp.text


def test_loopback_origins_are_case_insensitive_on_mcp_as_on_the_api(site: Site) -> None:
    headers = {"Origin": "http://LOCALHOST:3000"}
    assert site.send("GET", "/v1/runs", headers=headers).status_code == 200
    mcp = site.send("POST", "/mcp", json=INIT, headers={**headers, **MCP_ACCEPT})
    assert mcp.status_code == 200, mcp.text
