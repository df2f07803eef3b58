"""Dashboard sign-in on both stores, through a real server: the key is checked once and the
browser keeps only a session cookie (HttpOnly, SameSite=Strict, scoped to /ui) whose token is
stored hashed; forms need the CSRF token and a same-site origin; signing out, revoking the
key or expiry ends the session; ``next`` never leads off the site; unknown dashboard paths and
static files are answered as pages, never as 500s."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, create_user, local_admin, revoke_key
from elevenfactor.governance._ui_sessions import purge_ui_sessions
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = {
    "providers": {"t": {"type": "test"}},
    "models": {"echo": {"provider": "t", "model": "e"}},
}


@dataclass
class Site:
    base: str
    url: str
    secrets: dict[str, str]
    key_ids: dict[str, str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30, follow_redirects=False)


async def _seed(url: str) -> tuple[dict[str, str], dict[str, str]]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        secrets, ids = {}, {}
        for name in ("ann", "bob"):
            await create_user(db, admin, name, roles=("member",))
            key, secrets[name] = await create_key(db, admin, f"key-{name}", user=name)
            ids[name] = key.id
        return secrets, ids
    finally:
        await db.close()


async def _sql(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    db = await open_store(url)
    try:
        return [tuple(r) for r in await db.fetchall(sql, params)]
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp(f"ui-session-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    secrets, ids = asyncio.run(_seed(url))
    settings = Settings(database_url=url, data_dir=tmp, dev=False, in_process_worker=False)
    with running_gateway(settings, parse_project(PROJECT)) as (base, _):
        yield Site(base, url, secrets, ids)


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _sign_in(c: httpx.Client, key: str, next_: str = "/ui/runs") -> httpx.Response:
    form = c.get("/ui/login")
    assert form.status_code == 200, form.text
    return c.post("/ui/login", data={"csrf": _csrf(form), "api_key": key, "next": next_})


def test_not_signed_in_goes_to_the_login_form_and_back(site: Site) -> None:
    with site.client() as c:
        resp = c.get("/ui/runs?status=failed")
        assert resp.status_code == 303
        assert resp.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dfailed"
        done = _sign_in(c, site.secrets["ann"], "/ui/runs?status=failed")
        assert done.status_code == 303 and done.headers["location"] == "/ui/runs?status=failed"


def test_signing_in_sets_a_hashed_strict_http_only_session(site: Site) -> None:
    with site.client() as c:
        form = c.get("/ui/login")
        assert form.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in form.headers["content-security-policy"]
        assert 'for="api_key"' in form.text and ">Sign in<" in form.text
        done = _sign_in(c, site.secrets["ann"])
        assert done.status_code == 303
        cookie = next(v for k, v in done.headers.multi_items() if k == "set-cookie")
        assert cookie.startswith("ef_session=")
        low = cookie.lower()
        assert "httponly" in low and "samesite=strict" in low and "path=/ui" in low
        token = cookie.split("=", 1)[1].split(";", 1)[0]
        assert site.secrets["ann"] not in cookie
        rows = asyncio.run(_sql(site.url, "SELECT token_hash, key_id FROM ui_sessions"))
        assert (hashlib.sha256(token.encode()).hexdigest(), site.key_ids["ann"]) in rows
        assert all(token not in str(r) for r in rows)
        page = c.get("/ui/runs")
        assert page.status_code == 200, page.text
        assert "ann" in page.text and "Sign out" in page.text


def test_wrong_or_missing_keys_and_stale_forms_are_refused(site: Site) -> None:
    with site.client() as c:
        bad = _sign_in(c, "ef_not_a_real_key_0000000000")
        assert bad.status_code == 401 and "not valid" in bad.text
        assert "ef_session" not in bad.headers.get("set-cookie", "")
        empty = _sign_in(c, "   ")
        assert empty.status_code == 400 and "Enter an API key" in empty.text
        stale = c.post("/ui/login", data={"csrf": "x" * 30, "api_key": site.secrets["ann"]})
        assert stale.status_code == 403 and "ef_session" not in stale.headers.get("set-cookie", "")
        huge = c.post(
            "/ui/login",
            content=b"api_key=" + b"a" * 40_000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 400 and "larger than" in huge.text
        odd = c.post(
            "/ui/login",
            content=b"\xff\xfe%%%&&&==",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert odd.status_code in (400, 403) and odd.headers["content-type"].startswith("text/html")


def test_next_never_leads_off_the_site(site: Site) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/v1/runs"):
        with site.client() as c:
            done = _sign_in(c, site.secrets["ann"], target)
            assert done.status_code == 303 and done.headers["location"] == "/ui/runs", target


def test_forms_need_the_token_and_this_site(site: Site) -> None:
    with site.client() as c:
        assert _sign_in(c, site.secrets["ann"]).status_code == 303
        token = c.cookies["ef_csrf"]
        no_token = c.post("/ui/logout", data={"x": "1"})
        assert no_token.status_code == 403 and "ui_csrf_failed" in no_token.text
        wrong = c.post("/ui/logout", data={"csrf": "y" * 32})
        assert wrong.status_code == 403
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
            cross = c.post("/ui/logout", data={"csrf": token}, headers=headers)
            assert cross.status_code == 403 and "ui_cross_site" in cross.text, headers
        plain = c.post("/ui/logout", content=b"csrf=" + token.encode(),
                       headers={"content-type": "text/plain"})  # fmt: skip
        assert plain.status_code == 415  # a cross-site "simple" request type is refused
        assert c.get("/ui/runs").status_code == 200  # none of these signed it out


def test_sign_out_revocation_and_expiry_end_the_session(site: Site) -> None:
    with site.client() as c:
        assert _sign_in(c, site.secrets["ann"]).status_code == 303
        token = c.cookies["ef_csrf"]
        out = c.post("/ui/logout", data={"csrf": token}, headers={"origin": site.base})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert c.get("/ui/runs").status_code == 303
    with site.client() as c:  # bob's key revoked: his open session ends at the next page
        assert _sign_in(c, site.secrets["bob"]).status_code == 303
        assert c.get("/ui/runs").status_code == 200

        async def revoke() -> None:
            db = await open_store(site.url)
            try:
                await revoke_key(db, local_admin("cli"), site.key_ids["bob"])
            finally:
                await db.close()

        asyncio.run(revoke())
        time.sleep(0.05)
        assert c.get("/ui/runs").status_code == 303
    with site.client() as c:  # expiry
        assert _sign_in(c, site.secrets["ann"]).status_code == 303
        asyncio.run(_sql(site.url, "UPDATE ui_sessions SET expires_at = 1 RETURNING key_id"))
        assert c.get("/ui/runs").status_code == 303


def test_the_housekeeper_purges_expired_sign_ins(site: Site) -> None:
    async def purge() -> tuple[int, int]:
        db = await open_store(site.url)
        try:
            now = time.time()
            await db.execute(
                "INSERT INTO ui_sessions (token_hash, key_id, org_id, user_id, created_at,"
                " last_seen_at, expires_at) VALUES ('old', 'k', 'o', 'u', 1, 1, 2),"
                " ('new', 'k', 'o', 'u', ?, ?, ?)",
                (now, now, now + 3600),
            )
            gone = await purge_ui_sessions(db, now)
            left = await db.fetchall("SELECT token_hash FROM ui_sessions WHERE key_id = 'k'")
            await db.execute("DELETE FROM ui_sessions WHERE key_id = 'k'")
            return gone, len(left)
        finally:
            await db.close()

    gone, left = asyncio.run(purge())
    assert gone >= 1 and left == 1


def test_a_bearer_key_works_without_a_session(site: Site) -> None:
    with site.client() as c:
        page = c.get("/ui/runs", headers={"Authorization": f"Bearer {site.secrets['bob']}"})
        assert page.status_code == 200 and "Sign out" not in page.text
        bad = c.get("/ui/runs", headers={"Authorization": "Bearer ef_wrong"})
        assert bad.status_code == 303


def test_static_files_and_unknown_paths(site: Site) -> None:
    with site.client() as c:
        css = c.get("/ui/static/ui.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        again = c.get("/ui/static/ui.css", headers={"if-none-match": css.headers["etag"]})
        assert again.status_code == 304
        assert c.get("/ui/static/ui.js").headers["content-type"].startswith("text/javascript")
        for path in ("/ui/static/nope.css", "/ui/static/..%2f_page.py", "/ui/static/_page.py",
                     "/ui/nope", "/ui/runs/x/y/z/w"):  # fmt: skip
            resp = c.get(path)
            assert resp.status_code == 404, path
            assert resp.headers["content-type"].startswith("text/html"), path
        assert c.put("/ui/login").status_code == 405
        assert c.get("/ui").headers["location"] == "/ui/runs"
