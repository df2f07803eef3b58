"""Property-based fuzzing of every dashboard route over real HTTP, on SQLite and PostgreSQL.

The routes come from the app itself (``server.ui.ROUTES``), so a page added later is fuzzed
too. Path ids are other people's real runs and approvals, ``/``, NUL, dot segments, unicode and
thousands of characters; query strings use the pages' own parameter names (read from their
query and form models) with hostile values; forms are posted with and without a valid session
and CSRF token, with other bodies and content types, from other sites; cookies and
``Authorization`` headers are malformed. Whatever comes in: no 5xx, an HTML page (its error
code shown when it is a 4xx) or a redirect within the dashboard, never the input's markup
verbatim, the sign-in, CSRF and cross-site rules kept — and the server still serves afterwards.

``FUZZ_EXAMPLES`` scales the number of examples (the default, 300, takes 10-15 s per store
on two cores; ``FUZZ_EXAMPLES=1000`` looks harder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import markupsafe
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from elevenfactor.config import Settings, parse_project
from elevenfactor.server import create_app
from elevenfactor.server.ui import is_ui_path
from elevenfactor.server.ui._approval_form import JSON_FIELD
from tests.conftest import _pg_schema_url
from tests.ui import ui_fuzz_world as w
from tests.ui.conftest import PROJECT
from tests.ui.ui_fuzz_world import GETS, POSTS, ROUTES, UiRoute, World, check, gateway_415
from tests.ui.ui_fuzz_world import page_code as code

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WHO = ["ada", "bob", "sue", "key", None]
"""Signed in as the admin ``ada`` or the members ``bob``/``sue`` (a session cookie), with
``ann``'s API key (no cookie), or not at all."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"uifuzz-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    server, world = w.open_world(tmp, url)
    try:
        yield world
    finally:
        world.client.close()
        server.stop()


def test_every_dashboard_route_the_app_serves_is_fuzzed(tmp_path: Path) -> None:
    """``ROUTES`` (what the properties draw from) are all of the app's routes under ``/ui``."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db", data_dir=tmp_path, dev=False)
    app = create_app(settings, parse_project(PROJECT))
    served = {
        (route.path, method)
        for route in app.app.routes
        if isinstance(route, Route) and is_ui_path(route.path)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served == {(r.path, r.method) for r in ROUTES} and len(served) >= 20


def _at(path: str, method: str = "GET") -> UiRoute:
    return next(r for r in ROUTES if (r.path, r.method) == (path, method))


def _session(world: World, route: UiRoute, who: str | None) -> w.Session | None:
    """``who``'s session; a new one to sign out with (the others serve the whole module)."""
    if who not in world.sessions:
        return None
    return world.sign_in(who) if route.path == "/ui/logout" else world.sessions[who]


def _headers(world: World, session: w.Session | None, who: str | None) -> dict[str, str]:
    if session is not None:
        return {"Cookie": session.cookie()}
    return w.auth(world.secrets["ann"]) if who == "key" else {}


def _expect_sign_in(route: UiRoute, who: str | None, resp: httpx.Response) -> None:
    """A page that needs a user shows nothing to a visitor who is not signed in: it is sent
    to the login form (unless a fuzzed id made the path another route's: 404, 405, 307)."""
    if who is None and route.signed_in and route.matches(resp) and not gateway_415(resp):
        assert resp.status_code in (303, 307, 404, 405), resp.text[:500]
        if resp.status_code == 303:
            assert resp.headers["location"].startswith("/ui/login"), resp.headers["location"]


@FUZZ
@given(data=st.data(), route=st.sampled_from(ROUTES), who=st.sampled_from(WHO))
@example(data=None, route=_at("/ui/login", "POST"), who="ada")  # its 400 had no error code
def test_every_route_with_fuzzed_path_ids(
    world: World, data: st.DataObject | None, route: UiRoute, who: str | None
) -> None:
    known = [*world.known(), *w.XSS]
    ids = [data.draw(w.path_ids(known)) for _ in range(route.params)] if data else []
    session = _session(world, route, who)
    headers = _headers(world, session, who)
    if route.method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = f"csrf={session.csrf if session else ''}&reason=fuzz".encode()
        resp = world.send("POST", route.fill(ids), headers, body)
    else:
        resp = world.send("GET", route.fill(ids), headers)
    check(resp)
    if resp.status_code == 404 and resp.request.url.path.startswith("/ui"):
        assert code(resp.text) is not None
    _expect_sign_in(route, who, resp)


CUSTOM = "range=custom&since=9999-12-31&until="


@FUZZ
@given(
    data=st.data(),
    target=st.sampled_from(GETS).flatmap(lambda r: st.tuples(st.just(r), w.queries(r))),
    who=st.sampled_from(WHO),
)
# Was a 500: the hour (or day) after the last bucket of a range ending in 9999 overflowed.
@example(data=None, target=(_at("/ui/cost"), CUSTOM + "253402300799"), who="ada")
@example(data=None, target=(_at("/ui/cost"), CUSTOM + "253402300799&per=day"), who="bob")
@example(data=None, target=(_at("/ui/quality"), CUSTOM + "253402300799"), who="ada")
def test_get_with_hostile_query_strings(
    world: World, data: st.DataObject | None, target: tuple[UiRoute, str], who: str | None
) -> None:
    route, query = target
    ids = [data.draw(st.sampled_from(world.known())) for _ in range(route.params)] if data else []
    headers = _headers(world, world.sessions.get(who or ""), who)
    resp = world.send("GET", f"{route.fill(ids)}?{query}", headers)
    event(f"GET {route.path} -> {resp.status_code}")
    check(resp)
    _expect_sign_in(route, who, resp)


# -- forms ------------------------------------------------------------------------------------

BODIES = [b"", b"\xff\xfe\x00", b"%", b"a=%ff", b"=&=&", b'{"csrf": "x"}', b"x" * 300_000,
          b"a=1&" * 3000, b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1']  # fmt: skip
FORM = "application/x-www-form-urlencoded"
CTYPES = [FORM, FORM + "; charset=utf-16", FORM.upper(), FORM + " ; x=\x80", FORM + ";;;",
          "application/json", "multipart/form-data; boundary=b", "text/plain", "", "*/*",
          "application/octet-stream"]  # fmt: skip
CSRF = ["valid", "missing", "wrong", "empty", "no cookie", "short cookie"]
SAME_SITE: list[dict[str, str]] = [{}, {"Sec-Fetch-Site": "same-origin", "Origin": "null"},
                                   {"Sec-Fetch-Site": "none"}]  # fmt: skip
CROSS_SITE: list[dict[str, str]] = [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                    {"Origin": "http://["}, {"Sec-Fetch-Site": "cross-site"},
                                    {"Sec-Fetch-Site": "same-site"}]  # fmt: skip


@st.composite
def posts(
    draw: st.DrawFn, world: World
) -> tuple[UiRoute, str, bool, str, bytes, str, dict[str, str]]:
    """A form post: route, path, whether its ids are real, CSRF case, body, content type and
    the headers saying where it comes from; about half of them pass every check."""
    route = draw(st.sampled_from(POSTS))
    known = world.known()
    ids = [draw(st.sampled_from(known) | w.path_ids(known)) for _ in range(route.params)]
    pairs = st.lists(st.tuples(w.names, w.values), max_size=6).map(w._query)
    body = draw(
        st.one_of(
            pairs.map(str.encode),
            w.model_queries(route.models).map(str.encode),
            st.sampled_from(BODIES),
            st.binary(max_size=64),
        )
    )
    return (
        route,
        route.fill(ids),
        set(ids) <= set(known),
        draw(st.sampled_from(CSRF) | st.just("valid")),
        body,
        draw(st.sampled_from(CTYPES) | st.just(FORM)),
        draw(st.sampled_from(SAME_SITE + CROSS_SITE) | st.just({})),
    )


@FUZZ
@given(data=st.data(), who=st.sampled_from(WHO))
def test_form_posts(world: World, data: st.DataObject, who: str | None) -> None:
    route, path, real, case, body, ctype, site = data.draw(posts(world), label="post")
    session = _session(world, route, who)
    headers = {**site, **({"Content-Type": ctype} if ctype else {})}
    token = session.csrf if session else "t" * 32
    cookie = {"no cookie": None, "short cookie": "abc"}.get(case, token)
    sent = {"valid": token, "missing": None, "wrong": "w" * 32, "empty": ""}.get(case, cookie)
    if session is not None:
        jar = [f"ef_session={session.token}", *([f"ef_csrf={cookie}"] if cookie else [])]
        headers["Cookie"] = "; ".join(jar)
    elif who == "key":
        headers.update(w.auth(world.secrets["ann"]))
    if sent is not None and body[:1] != b"{":
        body = f"csrf={w._encode(sent)}&".encode() + body
    resp = world.send("POST", path, headers, body)
    event(f"POST {route.path} {case} -> {resp.status_code}")
    check(resp)
    _expect_sign_in(route, who, resp)
    cross = site in CROSS_SITE
    if (cross or case != "valid") and who is not None:  # nothing a forged form asks is done
        # (307: Starlette's trailing-slash redirect, before any route ran)
        assert resp.status_code >= 400 or resp.status_code == 307, f"{path} {case} {site}"
    reached = real and not gateway_415(resp) and (who is not None or not route.signed_in)
    if cross and reached:  # refused as cross-site (or the approval is not one to see: 404)
        assert resp.status_code in (403, 404), resp.text[:2000]
        assert resp.status_code == 404 or code(resp.text) == "ui_cross_site", resp.text[:2000]
    if resp.status_code == 403 and route.signed_in and who is not None:
        assert code(resp.text) in ("ui_csrf_failed", "ui_cross_site", "permission_denied")


@pytest.mark.parametrize(
    ("headers", "fields", "status", "error"),
    [
        ({"Origin": "http://evil.example"}, {"api_key": "ann"}, 403, "ui_cross_site"),
        ({"Sec-Fetch-Site": "cross-site"}, {"api_key": "ann"}, 403, "ui_cross_site"),
        ({}, {"csrf": "w" * 32, "api_key": "ann"}, 403, "ui_csrf_failed"),
        ({}, {"api_key": " "}, 400, "ui_bad_form"),
        ({}, {"api_key": "ef_nobody_" + "x" * 30}, 401, "invalid_api_key"),
    ],
)
def test_login_refusals_carry_their_status_and_code(
    world: World, headers: dict[str, str], fields: dict[str, str], status: int, error: str
) -> None:
    """Found by the fuzzing: the sign-in page's refusals showed no error code, and a form from
    another site was a 400 there (a 403 on every other form); none of them signs anyone in."""
    csrf = "c" * 32
    key = world.secrets.get(fields["api_key"], fields["api_key"])
    body = w._query([("csrf", csrf), *{**fields, "api_key": key}.items()]).encode()
    headers = {**headers, "Cookie": f"ef_csrf={csrf}", "Content-Type": FORM}
    resp = world.send("POST", "/ui/login", headers, body)
    check(resp)
    assert (resp.status_code, code(resp.text)) == (status, error), resp.text[:2000]
    assert "ef_session" not in resp.headers.get("set-cookie", "")


# -- decisions on pending approvals ----------------------------------------------------------

HOSTILE_JSON = ["[" * 3000 + "]" * 3000, '{"amount": 1e400}', '{"to": "\\ud800"}', "NaN", "{",
                '{"amount": -Infinity}', '{"to": "a\\u0000b", "amount": 1}', "1" * 5000, "[]",
                '{"amount": ' + "9" * 400 + "}", '{"to": "x", "amount": 1, "to": 2}']  # fmt: skip
json_texts = st.one_of(
    st.sampled_from(HOSTILE_JSON),
    st.dictionaries(w.texts, st.none() | st.booleans() | st.floats() | w.texts, max_size=3).map(
        lambda d: json.dumps(d, allow_nan=True)
    ),
    w.values,
)
decisions = st.fixed_dictionaries(
    {"action": st.sampled_from(["approve", "approve", "reject", "answer"]) | w.values},
    optional={JSON_FIELD: json_texts, "reason": w.values, "answer": w.values, "arg.to": w.values},
)


@FUZZ
@given(fields=decisions)
# Were 500s: JSON nested deeper than the parser's stack, a lone surrogate escape (the
# decision could not be stored). Were accepted: 1e400 (read as infinity, stored as null), an
# integer beyond 64 bits (the run then failed and GET /v1/approvals answered 500 ever after).
@example(fields={"action": "approve", JSON_FIELD: HOSTILE_JSON[0]})
@example(fields={"action": "approve", JSON_FIELD: HOSTILE_JSON[1]})
@example(fields={"action": "approve", JSON_FIELD: HOSTILE_JSON[2]})
@example(fields={"action": "approve", JSON_FIELD: '{"to": "b", "amount": 18446744073709551616}'})
def test_decisions_with_hostile_fields(world: World, fields: dict[str, str]) -> None:
    """A pending approval decided (as the admin) with any fields: decided as the form says,
    or the page again (400) with the fields in error, nothing decided."""
    aid = world.pending()
    s = world.sessions["ada"]
    body = w._query([("csrf", s.csrf), *fields.items()]).encode()
    resp = world.send(
        "POST", f"/ui/approvals/{aid}", {"Cookie": s.cookie(), "Content-Type": FORM}, body
    )
    event(f"decide {fields['action'][:10]!r} -> {resp.status_code}")
    check(resp)
    decided = world.approval(aid)
    if resp.status_code != 303:
        assert resp.status_code == 400, resp.text[:2000]
        assert code(resp.text) in ("ui_bad_form", "ui_bad_action"), resp.text[:3000]
        assert decided["status"] == "pending", decided
        return
    assert decided["status"] != "pending", decided
    edited = decided["decision"]["arguments"]
    if edited is not None:  # what the run executes is what the form said, exactly
        said = json.loads(fields.get(JSON_FIELD, "").strip() or "{}")
        assert json.dumps(edited, sort_keys=True) == json.dumps(said, sort_keys=True), fields


# -- cookies and credentials ------------------------------------------------------------------

COOKIES = ["ef_session=", "ef_session=x", "ef_session=" + "a" * 4000, "ef_csrf=" + "b" * 4000,
           'ef_session="quoted"', "ef_session=%00", "ef_session=\x80\xff\t1", "ef_session",
           "ef_session=a; ef_session=b", "ef_csrf=c; ef_csrf=d", "=; ;;; =x",
           "ef_session=" + w.XSS[0], "ef_csrf=%3Cscript%3E"]  # fmt: skip
AUTHS = ["", "Bearer", "Bearer \tx", "Bearer  x", "Basic Zm9vOmJhcg==", "bearer ef_x", "Token x",
         "Bearer dev", "Bearer " + "k" * 6000, "Bearer ef_\x80\xff", "Bearer ef_a b c",
         "Bearer " + w.XSS[0]]  # fmt: skip
"""Header values a client can send (no CR, LF or NUL; DEL is refused by the HTTP parser)."""


@FUZZ
@given(
    data=st.data(),
    route=st.sampled_from(ROUTES),
    cookies=st.lists(st.sampled_from(COOKIES), max_size=3),
    with_session=st.sampled_from([None, "before", "after"]),
    authorization=st.none() | st.sampled_from(AUTHS),
)
def test_hostile_cookies_and_credentials(
    world: World,
    data: st.DataObject,
    route: UiRoute,
    cookies: list[str],
    with_session: str | None,
    authorization: str | None,
) -> None:
    path = route.fill([data.draw(st.sampled_from(world.known())) for _ in range(route.params)])
    real = [world.sessions["bob"].cookie()]
    jar = {None: cookies, "before": real + cookies, "after": cookies + real}[with_session]
    headers = {"Cookie": "; ".join(jar)} if jar else {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if route.method == "POST":
        headers["Content-Type"] = FORM
    resp = world.send(route.method, path, headers, b"csrf=x" if route.method == "POST" else b"")
    check(resp)
    if not jar and authorization is None:
        _expect_sign_in(route, None, resp)


# -- unknown paths and methods ----------------------------------------------------------------


@FUZZ
@given(
    segments=st.lists(w.path_ids(["runs", "approvals", "cost", "static", "x"]), max_size=4),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    who=st.sampled_from(["ada", None]),
)
def test_unknown_paths_and_methods(
    world: World, segments: list[str], method: str, who: str | None
) -> None:
    headers = {**_headers(world, world.sessions.get(who or ""), who), "Content-Type": FORM}
    resp = world.send(method, "/ui/" + "/".join(segments), headers, b"a=1")
    if method == "HEAD":  # no body to look at
        assert resp.status_code < 500
    else:
        check(resp)


# -- afterwards -------------------------------------------------------------------------------


def test_markup_in_stored_data_is_shown_escaped(world: World) -> None:
    """The seeded runs and approvals and a kill switch carry markup: the pages show it,
    escaped (so ``check`` not finding it verbatim means something)."""
    cookie = {"Cookie": world.sessions["ada"].cookie()}
    escaped = [str(markupsafe.escape(markup)) for markup in w.XSS]
    kill = world.post("ada", "/v1/admin/kills", {"scope": "agent:fuzz-y", "reason": w.XSS[0]})
    for path in (f"/ui/runs/{world.runs[1]}", f"/ui/approvals/{world.approvals[0]}", "/ui/cost"):
        page = world.send("GET", path, cookie)
        check(page)
        assert page.status_code == 200, page.text[:2000]
        assert any(e in page.text for e in escaped), (path, page.text[:3000])
    lifted = world.client.delete(
        f"/v1/admin/kills/{kill['id']}?reason=x", headers=w.auth(world.secrets["ada"])
    )
    assert lifted.status_code == 200, lifted.text


def test_the_server_still_serves_afterwards(world: World) -> None:
    """Pages, sign-in and every pooled database connection still work after all of the above
    (on PostgreSQL a NUL reaching a query would have broken a connection)."""
    assert world.client.get("/readyz").status_code == 200
    fresh = world.sign_in("ada")
    for path in ("/ui/runs", "/ui/approvals", "/ui/cost", "/ui/quality", "/ui/health") * 3:
        page = world.send("GET", path, {"Cookie": fresh.cookie()})
        assert page.status_code == 200, page.text[:2000]
        assert page.headers["content-type"].startswith("text/html")
    assert world.client.get("/readyz").status_code == 200
