"""What ``test_ui_fuzz`` aims at: a served dashboard with runs, approvals and a kill switch of
several people, the dashboard's routes as the app lists them, hostile inputs, and the checks
every answer must pass.

The server is ``elevenfactor serve`` in a subprocess (with its worker, outside dev mode), not a
thread of the test process: Hypothesis checks that nothing else touches the global ``random``
state while it draws, and a server in the same process would (see ``test_fuzz``).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import strategies as st
from pydantic import BaseModel

from elevenfactor.server import ui
from elevenfactor.server.ui._approval_form import JSON_FIELD
from tests.support.serve import Server, wait_for
from tests.ui.conftest import PROJECT, _people

XSS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
"""Markup that must never come back verbatim in a page."""
SPECIAL = ["", "\x00", "a\x00b", "\x1b[31mred", "\r\n", "\t", "\x7f\x85", "\u202eevil", "\ufeff",
           "\U0001f600", "\U0001d54f" * 50, "\udcff", "' OR 1=1 --", "%00", "%", "../..", "a/b",
           "x" * 5000, *XSS]  # fmt: skip
"""Odd text: NUL and control characters, bidi and astral characters, a lone surrogate (sent
as its UTF-8-ish bytes), SQL and path tricks, very long, markup."""
NUMBERS = ["0", "-0", "-1", "1.5", "1e9", "1e309", "-1e309", "NaN", "nan", "inf", "-inf",
           "Infinity", str(2**64), str(-(2**63) - 1), "9" * 400, "0x1f", "1_000", " 7 ",
           "1e-400", "5e-324", "1e308"]  # fmt: skip
DATES = ["0000-01-01", "0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31",
         "9999-12-31T23:59:59-14:00", "10000-01-01", "2026-02-30", "2026-13-01",
         "2026-12-01T25:00", "2026-12-01T09:30Z", "2026-12-01 09:30", "1970-01-01", "2026-W01",
         "P1D", "99999999999", "-99999999999", "1e20", "9999999999d", "99999999h", "0h", "-5d",
         "12h", "7d"]  # fmt: skip


def _encode(text: str) -> str:
    """``text`` percent-encoded for a URL (lone surrogates as their UTF-8-ish bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _literals(annotation: Any) -> set[str]:
    """Every ``Literal`` value inside ``annotation`` (``Literal["a"] | None``...)."""
    if typing.get_origin(annotation) is typing.Literal:
        return {str(v) for v in typing.get_args(annotation)}
    return {word for arg in typing.get_args(annotation) for word in _literals(arg)}


def _models() -> list[type[BaseModel]]:
    """The query and form models of every dashboard module (so a new page's are fuzzed)."""
    out: dict[str, type[BaseModel]] = {}
    for info in pkgutil.iter_modules(ui.__path__):
        module = importlib.import_module(f"{ui.__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseModel)
                and obj.__module__ == module.__name__
            ):
                out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [out[k] for k in sorted(out)]


MODELS = _models()
FIELDS = [(info.alias or name, info) for m in MODELS for name, info in m.model_fields.items()]
MODEL_NAMES = sorted({name for name, _ in FIELDS})
TOKENS = sorted({word for _, info in FIELDS for word in _literals(info.annotation)})
"""The pages' parameter names and the words their ``Literal`` types allow."""
PARAM_NAMES = [*MODEL_NAMES, "next", "csrf", "api_key", "action", "reason", "answer", "retry",
               JSON_FIELD, "arg.to", "arg.amount", "page", "cursor", "series", "measure",
               "bucket", "rule", "owner"]  # fmt: skip
"""Query and form names: the pages' own (from their models and forms), and a few guesses."""


# -- the world --------------------------------------------------------------------------------


@dataclass
class Session:
    """A browser signed in through the login form: its cookies and its forms' token."""

    token: str
    csrf: str

    def cookie(self) -> str:
        return f"ef_session={self.token}; ef_csrf={self.csrf}"


@dataclass
class World:
    """The server, its people's keys, signed-in sessions and real ids to aim at."""

    base: str
    client: httpx.Client
    secrets: dict[str, str]
    sessions: dict[str, Session]
    runs: list[str]
    approvals: list[str]
    kills: list[str]
    statics: list[str]

    def known(self) -> list[str]:
        return [*self.runs, *self.approvals, *self.kills, *self.statics]

    def sign_in(self, who: str) -> Session:
        """A new session for ``who`` (through the form, as a browser signs in)."""
        with httpx.Client(base_url=self.base, timeout=30) as c:
            form = c.get("/ui/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token, form.text[:2000]
            done = c.post("/ui/login", data={"csrf": token.group(1), "api_key": self.secrets[who]})
            assert done.status_code == 303, done.text
            return Session(c.cookies["ef_session"], c.cookies["ef_csrf"])

    def approval(self, approval_id: str) -> dict[str, Any]:
        """An approval of ``ann``'s as the JSON API shows it to the admin ``ada``."""
        found = self.client.get(
            "/v1/approvals?status=all&limit=1000", headers=auth(self.secrets["ada"])
        )
        assert found.status_code == 200, found.text
        [item] = [a for a in found.json()["data"] if a["id"] == approval_id]
        return dict(item)

    def post(self, who: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST path`` to the JSON API with ``who``'s key."""
        made = self.client.post(path, json=body, headers=auth(self.secrets[who]))
        assert made.status_code in (200, 201), made.text
        return dict(made.json())

    def parked(self, who: str) -> list[str]:
        """The pending approvals ``who`` sees."""
        found = self.client.get("/v1/approvals", headers=auth(self.secrets[who]))
        return [a["id"] for a in found.json()["data"]]

    def pending(self) -> str:
        """A pending approval of ``ann``'s transfer (a new one when none is left)."""
        if not self.parked("ann"):
            self.post("ann", "/v1/runs", {"program": "transfer", "input": {"to": "b", "amount": 1}})
        return str(wait_for(lambda: self.parked("ann"), "a transfer to park")[0])

    def send(
        self, method: str, raw: str, headers: dict[str, Any] | None = None, body: bytes = b""
    ) -> httpx.Response:
        """``method raw`` (path and query used as given), its body read (an event stream's
        first event only: the stream stays open while the run goes on)."""
        url = httpx.URL(self.base).copy_with(raw_path=raw.encode("ascii"))
        if headers:  # as bytes: values may hold obs-text (0x80-0xff)
            headers = {k: v.encode("latin-1") if isinstance(v, str) else v
                       for k, v in headers.items()}  # fmt: skip
        self.client.cookies.clear()
        request = self.client.build_request(method, url, headers=headers, content=body or None)
        resp = self.client.send(request, stream=True)
        try:
            if resp.headers.get("content-type", "").startswith("text/event-stream"):
                assert next(resp.iter_bytes(), b"").startswith(b"retry:")
            else:
                resp.read()
        finally:
            resp.close()
            self.client.cookies.clear()
        return resp


def _seed(world: World) -> None:
    """Runs of ``ann`` (member), ``sue`` (team crew) and ``eve`` (another organisation), the
    transfers parked at their approvals, and one kill switch of no consequence."""

    for who in ("ann", "sue", "eve"):  # markup in what the pages show: inputs, arguments
        body = {"program": "greet", "input": {"name": XSS[0], "x": XSS[1]}}
        world.runs.append(world.post(who, "/v1/runs", body)["id"])
        for n in range(2 if who == "ann" else 1):
            body = {"program": "transfer", "input": {"to": XSS[n], "amount": XSS[1 - n]}}
            world.runs.append(world.post(who, "/v1/runs", body)["id"])
    parked = world.parked
    wait_for(lambda: len(parked("ada")) == 3 and len(parked("eve")) == 1, "transfers to park")
    world.approvals += parked("ada") + parked("eve")
    world.runs.append(world.runs[0] + ":retry-1")  # a retry-shaped id that does not exist
    kill = world.post("ada", "/v1/admin/kills", {"scope": "agent:fuzz-x", "reason": XSS[1]})
    world.kills.append(kill["id"])


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def open_world(tmp: Path, url: str) -> tuple[Server, World]:
    """Migrate ``url``, add the people of ``tests.ui.conftest``, serve it and seed it."""
    secrets, _ = asyncio.run(_people(url))
    (tmp / "elevenfactor.yaml").write_text(json.dumps(PROJECT))  # YAML reads JSON
    server = Server(tmp, url, dev=False)
    server.start()
    client = httpx.Client(timeout=httpx.Timeout(20.0), follow_redirects=False)
    client.base_url = httpx.URL(server.base)
    world = World(server.base, client, secrets, {}, [], [], [], [])
    try:
        _seed(world)
        world.sessions = {who: world.sign_in(who) for who in ("ada", "bob", "sue")}
        page = world.send("GET", "/ui/runs", {"Cookie": world.sessions["ada"].cookie()})
        world.statics = sorted(set(re.findall(r"/ui/static/([A-Za-z0-9_.-]+)", page.text)))
        assert world.statics, page.text[:2000]
    except BaseException:
        client.close()
        server.stop()
        raise
    return server, world


# -- routes -----------------------------------------------------------------------------------

PARAM = re.compile(r"\{([^}:]+)(:[^}]+)?\}")


@dataclass(frozen=True)
class UiRoute:
    """One dashboard route as the app registers it."""

    path: str
    method: str
    signed_in: bool
    """Wrapped by ``ui_page``: a visitor who is not signed in is sent to the login form."""
    models: tuple[type[BaseModel], ...]
    """The query and form models its page module uses (all of them if it names none)."""

    def fill(self, ids: list[str]) -> str:
        it = iter(ids)
        return PARAM.sub(lambda _: next(it), self.path)

    @property
    def params(self) -> int:
        return len(PARAM.findall(self.path))

    def matches(self, resp: httpx.Response) -> bool:
        """Whether ``resp`` answered this route's path (".." in an id leads elsewhere)."""
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", self.path))
        return re.fullmatch(pattern, resp.request.url.raw_path.decode().split("?")[0]) is not None


def ui_routes() -> list[UiRoute]:
    """Every dashboard route (``server.ui.ROUTES``: what ``create_app`` mounts)."""
    out = []
    for path, fn, methods in ui.ROUTES:
        module = vars(importlib.import_module(fn.__module__)).values()
        models = tuple(m for m in MODELS if m in module) or tuple(MODELS)
        out += [UiRoute(path, m, hasattr(fn, "__wrapped__"), models) for m in methods]
    return out


ROUTES = ui_routes()
GETS = [r for r in ROUTES if r.method == "GET"]
POSTS = [r for r in ROUTES if r.method == "POST"]

# -- strategies -------------------------------------------------------------------------------

GOOD = ["greet", "transfer", "ann", "bob", "eve", "crew", "finance", "fuzz-nothing", "2026-01-01",
        "2020-01-01T00:00", "0", "1", "10", "0.5", "approve", "reject", "answer", "true",
        "{}", '{"to": "x", "amount": 1}', "1700000000.5:x"]  # fmt: skip
"""Values a form could well send: names, dates, small numbers, decisions, JSON, a cursor."""
texts = st.one_of(st.text(max_size=30), st.sampled_from(SPECIAL))
values = st.one_of(
    st.sampled_from(TOKENS),
    st.sampled_from(GOOD),
    st.sampled_from(NUMBERS + DATES),
    texts,
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.tuples(st.sampled_from([*NUMBERS, "1700000000.5"]), texts).map(":".join),
)
"""A parameter's value: valid words, hostile numbers and dates, cursors, control characters."""
names = st.one_of(st.sampled_from(PARAM_NAMES), texts)
RAW_QUERIES = ["%", "%zz", "a=%ff%fe", "&&&", "=x", "a=b=c", ";", "range=custom&since",
               "since=%00", "%00=1", "a" * 3000 + "=1", "status=succeeded&status=failed",
               "range=custom&since=0001-01-01&until=9999-12-31", "show=all&show=top",
               "after=1e308:x&before=-1e308:y", "limit=0", "limit=201", "from=-1",
               "part=live&from=99999999999", "a=1&" * 5000]  # fmt: skip


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


@st.composite
def model_queries(draw: st.DrawFn, models: tuple[type[BaseModel], ...]) -> str:
    """The fields of one of ``models``, each left out, given a sensible value (one of its
    own words, else a name, date or number) or a hostile one: mostly well-formed requests
    with a thing or two wrong."""
    model = draw(st.sampled_from(models))
    pairs: list[tuple[str, str]] = []
    for name, info in model.model_fields.items():
        words = sorted(_literals(info.annotation)) or GOOD
        how = draw(st.sampled_from(["out", "out", "good", "good", "hostile"]))
        if how == "good":
            pairs.append((info.alias or name, draw(st.sampled_from(words))))
        elif how == "hostile":
            pairs.append((info.alias or name, draw(values)))
    return _query(pairs)


def queries(route: UiRoute) -> st.SearchStrategy[str]:
    """A raw (already encoded) query string for ``route``."""
    return st.one_of(
        model_queries(route.models),
        st.lists(st.tuples(names, values), max_size=6).map(_query),
        st.lists(st.tuples(st.sampled_from(PARAM_NAMES), values), min_size=1, max_size=3).map(
            lambda ps: _query(ps + ps)  # every key repeated
        ),
        st.sampled_from(RAW_QUERIES),
    )


SEGMENTS = ["%00", "a%00b", "%2F", "a%2Fb", "%zz", "%", "%2e%2e", "..", ".", "..%2F..", "%C0%AF",
            "%ff", "a b"]  # fmt: skip


def path_ids(known: list[str]) -> st.SearchStrategy[str]:
    """Percent-encoded path segments: real ids of other people's runs and approvals, garbage,
    ``/``, NUL, dot segments, unicode, thousands of characters."""
    raw = st.one_of(
        st.text(min_size=1, max_size=40),
        st.sampled_from([s for s in SPECIAL if s]),
        st.integers(201, 4000).map(lambda n: "a" * n),
    )
    return st.one_of(
        st.sampled_from(known),
        raw.map(_encode),
        raw.map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="/:@")),
        st.sampled_from(SEGMENTS),
    )


def check(resp: httpx.Response) -> None:
    """What every dashboard answer must be: no 5xx, no markup echoed, HTML pages (with their
    error code when 4xx), redirects only to this site's dashboard."""
    where = f"{resp.request.method} {str(resp.request.url)[:300]} -> {resp.status_code}"
    ctype = resp.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):  # ids, kinds and statuses only: no payloads
        assert resp.status_code == 200 and resp.request.url.path.endswith("/events"), where
        return
    assert resp.status_code < 500, f"{where}: {resp.text[:800]}"
    text = resp.content.decode("utf-8", "replace")
    for markup in XSS if ctype.startswith("text/html") or not ctype else ():
        assert markup not in text.lower(), f"{where}: echoed {markup!r}"  # a program may upper-case
    if 300 <= resp.status_code < 400:
        if resp.status_code == 304:
            return
        location = resp.headers["location"]
        origin = f"{resp.request.url.scheme}://{resp.request.url.netloc.decode()}"
        if location.startswith(origin + "/"):  # Starlette's trailing-slash redirects
            location = location[len(origin) :]
        assert location.startswith("/ui") and not location.startswith("//"), where
        assert "\\" not in location, where
        return
    path = resp.request.url.path
    if not path.startswith("/ui"):  # dot segments can lead off /ui
        return
    if resp.status_code == 200 and path.startswith("/ui/static/"):
        assert ctype.startswith(("text/css", "text/javascript")), where
        return
    assert ctype.startswith("text/html"), f"{where}: {ctype} {text[:500]}"
    if resp.status_code >= 400:
        assert page_code(text), f"{where}: no error code in {text[:3000]}"


def gateway_415(resp: httpx.Response) -> bool:
    """A POST neither url-encoded nor JSON (or url-encoded to ``/ui`` itself), refused before
    any route by the gateway's cross-site guard (``server._auth.check_cross_site``), with the
    dashboard's error page (``unsupported_media_type``)."""
    sent = resp.request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    form = sent == "application/x-www-form-urlencoded" and resp.request.url.path[:4] == "/ui/"
    if resp.request.method != "POST" or sent == "application/json" or form:
        return False
    if resp.status_code != 415:
        return False
    if not resp.request.url.path.startswith("/ui"):  # dot segments can lead off /ui
        assert resp.json()["error"]["code"] == "unsupported_media_type", resp.text[:500]
        return True
    assert resp.headers["content-type"].startswith("text/html"), resp.text[:500]
    assert page_code(resp.text) == "unsupported_media_type", resp.text[:500]
    return True


def page_code(html: str) -> str | None:
    """The error code a page shows, if any."""
    found = re.search(r"Error code <code>([a-z_]+)</code>", html)
    return found.group(1) if found else None
