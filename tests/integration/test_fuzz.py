"""Property-based fuzzing of every runs/approvals/chat endpoint over real HTTP, on both stores.

Bodies and query strings come from each endpoint's own schema (``model_json_schema()``) and from
arbitrary JSON: nested values, integers past 64 bits, floats up to 1e308, strings with NUL,
control characters and astral unicode, nulls for every field, wrong types; path ids include
``/``, ``%00`` and thousands of characters. Whatever comes in, the server answers without a 5xx,
every 4xx is an OpenAI-style error object with a ``code`` (and a ``param`` for a 400), nothing
hangs, and the server (and its database connections) still work afterwards.

One server per store serves the whole module; Hypothesis drives it from a sync test.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from pydantic import BaseModel

from elevenfactor.governance import create_key, create_user, local_admin
from elevenfactor.server._budget_schemas import BudgetCreate, KillCreate
from elevenfactor.server._schemas import (
    ApprovalDecision,
    ApprovalQuery,
    CostQuery,
    RunCreate,
    RunDeleteQuery,
    RunQuery,
)
from elevenfactor.store import migrate, open_store
from tests.conftest import _pg_schema_url
from tests.support.serve import Server, wait_for

pytestmark = pytest.mark.integration

PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: echo-1}}
routes: {default: {chain: [echo]}}
programs: ["tests.support.programs:programs"]
"""

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
"""Moderate, so the module runs in well under two minutes per store; ``FUZZ_EXAMPLES=2000`` for
a deeper run."""

# -- strategies -------------------------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\x1b[31mred",
    "\r\n",
    "\u202eevil",
    "\ufeff",
    "\U0001f600",
    "\U0001d54f" * 50,
    "' OR 1=1 --",
    "%00",
    "../..",
    "a/b",
    "x" * 5000,
]
texts = st.one_of(st.text(max_size=40), st.sampled_from(SPECIAL_TEXT))
"""Strings with NUL, control characters and unicode (never lone surrogates: those cannot be
encoded as UTF-8; ``RAW_BODIES`` sends them as JSON escapes)."""
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**31, 2**63, 2**64, 2**70, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, 0.5]),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


def from_model(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects valid against ``model``'s JSON schema.

    hypothesis-jsonschema 0.23.1 cannot draw objects with this Hypothesis (it calls the removed
    ``many.more()``), so objects are assembled here from ``from_schema`` of each property."""
    return _schema_strategy(model.model_json_schema())  # type: ignore[return-value]


def _schema_strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "anyOf" in schema:
        extra = {k: v for k, v in schema.items() if k not in ("anyOf", "default", "title")}
        return st.one_of([_schema_strategy({**extra, **s}) for s in schema["anyOf"]])
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        strategy = st.fixed_dictionaries(
            {k: _schema_strategy(props[k]) for k in sorted(required)},
            optional={k: _schema_strategy(v) for k, v in props.items() if k not in required},
        )
        if schema.get("additionalProperties", True) is not False and not props:
            return st.dictionaries(texts, json_values, max_size=4)
        return strategy
    if not {"type", "enum", "const"} & set(schema):
        return json_values  # "any JSON value"
    return from_schema({k: v for k, v in schema.items() if k not in ("default", "title")})


def mutated(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Near-misses: a valid object with one field wrong, every field null, unknown fields, or
    not an object at all."""
    names = sorted(model.model_json_schema()["properties"])
    valid = from_model(model)
    one_wrong = st.tuples(valid, st.sampled_from(names), json_values).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    all_null = st.just(dict.fromkeys(names))
    unknown = st.tuples(valid, st.dictionaries(texts, json_values, min_size=1, max_size=3)).map(
        lambda t: {**t[1], **t[0]}
    )
    return st.one_of(one_wrong, all_null, unknown, json_values)


def as_query(data: dict[str, Any]) -> list[tuple[str, str]]:
    """A schema-valid object as query items (``None`` means "left out")."""
    return [(k, str(v)) for k, v in data.items() if v is not None]


def query_of(model: type[BaseModel]) -> st.SearchStrategy[list[tuple[str, str]]]:
    names = sorted(model.model_json_schema()["properties"])
    keys = st.one_of(st.sampled_from(names), st.text(max_size=10))
    values = st.one_of(texts, scalars.map(json.dumps), st.sampled_from(["0", "-1", "1e9", "nul"]))
    return st.one_of(
        from_model(model).map(as_query),
        st.lists(st.tuples(keys, values), max_size=5),
    )


def path_ids(known: list[str]) -> st.SearchStrategy[str]:
    """Percent-encoded path segments: real ids, garbage, ``/``, NUL, very long."""
    raw = st.one_of(
        st.text(min_size=1, max_size=60),
        st.sampled_from(SPECIAL_TEXT[1:]),
        st.integers(201, 3000).map(lambda n: "a" * n),
    )
    return st.one_of(
        st.sampled_from(known),
        raw.map(lambda s: quote(s, safe="")),
        raw.map(lambda s: quote(s, safe="/:@")),
        st.sampled_from(
            ["%00", "a%00b", "%2F", "a%2Fb", "%zz", "%", "%2e%2e", "..%2F..", "%C0%AF"]
        ),
    )


RAW_BODIES = [
    b"",
    b"{",
    b"[]",
    b"null",
    b"0",
    b'"x"',
    b"1e400",
    b'{"a": 1e400}',
    b"NaN",
    b'{"x": NaN}',
    b'"\\ud800"',
    b'{"reason": "\\udfff"}',
    b"\xff\xfe\x00",
    b'{"program": "greet", "program": "transfer"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b'{"input": "' + b"\\u0000" * 1000 + b'"}',
]
raw_bodies = st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64))

ROLES = ["system", "developer", "user", "assistant", "tool", "function", "", "USER"]
content = st.one_of(
    texts,
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["text", "image_url"]) | json_values,
                "text": json_values,
            },
        ),
        max_size=3,
    ),
    json_values,
)
tool_calls = st.one_of(
    json_values,  # not a list, or a list of anything
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "id": json_values,
                "type": json_values,
                "function": json_values
                | st.fixed_dictionaries(
                    {}, optional={"name": texts | json_values, "arguments": json_values}
                ),
            },
        ),
        max_size=3,
    ),
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES) | json_values},
    optional={
        "content": content,
        "tool_calls": tool_calls,
        "tool_call_id": json_values,
        "name": json_values,
    },
)
CRASHING_SCHEMAS: list[Any] = [
    {"enum": []},
    {"anyOf": []},
    {"type": []},
    {"type": "object", "properties": {"a": 5}},
    {"type": "object", "properties": {"a": {}}, "required": 5},
]
"""Schemas the ``test`` provider's example maker used to index and iterate blindly (a 500)."""
TOOL_SCHEMAS: list[Any] = [
    {"type": "object", "properties": {"a": {"type": "integer"}}},
    {"type": "object", "properties": []},
    {"type": ["null"]},
    {"$ref": "#/nowhere"},
    {"const": None},
    [],
    "object",
    *CRASHING_SCHEMAS,
]
"""Tool parameter schemas, sane and not (a JSON schema is whatever a client sends)."""
tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "x"]) | json_values},
        optional={
            "function": json_values
            | st.fixed_dictionaries(
                {"name": texts | json_values},
                optional={
                    "description": json_values,
                    "parameters": st.sampled_from(TOOL_SCHEMAS) | json_values,
                    "strict": json_values,
                },
            )
        },
    ),
    max_size=3,
)
valid_tool_call = st.fixed_dictionaries(
    {
        "id": st.text("abc_0123", min_size=1, max_size=8),
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {
                "name": st.sampled_from(["f", "add"]),
                "arguments": st.sampled_from(["{}", '{"a": 1}', "not json"]),
            }
        ),
    }
)
text_parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2)
valid_messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["system", "developer", "user"]),
                "content": texts | text_parts,
            }
        ),
        st.fixed_dictionaries(
            {
                "role": st.just("assistant"),
                "content": st.none() | texts,
                "tool_calls": st.lists(valid_tool_call, max_size=2),
            }
        ),
        st.fixed_dictionaries(
            {"role": st.just("tool"), "tool_call_id": st.just("call_1"), "content": texts}
        ),
    ),
    min_size=1,
    max_size=4,
)
valid_tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", "add"])},
                optional={"description": texts, "parameters": st.just(TOOL_SCHEMAS[0])},
            ),
        }
    ),
    min_size=1,
    max_size=2,
)
RESPONSE_FORMATS: list[Any] = [
    {"type": "text"},
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
]
valid_chat = st.fixed_dictionaries(
    {"model": st.sampled_from(["default", "echo"]), "messages": valid_messages},
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "tools": valid_tools,
        "tool_choice": st.sampled_from(
            ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}]
        ),
        "response_format": st.sampled_from(RESPONSE_FORMATS),
        "stop": texts | st.lists(texts, max_size=2),
        "temperature": st.floats(0, 2),
        "max_tokens": st.integers(1, 1000),
        "seed": st.integers(0, 2**31),
        "user": texts,
        "parallel_tool_calls": st.booleans(),
        "metadata": st.dictionaries(texts, texts, max_size=2),
    },
)
CHAT_KEYS = [
    "tool_choice",
    "stream_options",
    "response_format",
    "tools",
    "stop",
    "temperature",
    "top_p",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "user",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "n",
    "logit_bias",
    "metadata",
    "colour",
    "stream",
    "messages",
    "model",
]
"""Hypothesis favours the first entries, so the most interesting come first."""


@st.composite
def one_thing_wrong(draw: st.DrawFn) -> dict[str, Any]:
    """A valid chat request with one part replaced by something else, so that the parser gets
    past everything else and reaches the broken part (and the model sees what it let through).
    """
    body = draw(valid_chat)
    msgs = body["messages"]
    where = draw(
        st.sampled_from(
            ["message field", "tool calls", "parameters", "format", "tool", "message", "key"]
        )
    )
    if where == "key":
        body[draw(st.sampled_from(CHAT_KEYS))] = draw(json_values)
    elif where == "message":
        msgs[draw(st.integers(0, len(msgs) - 1))] = draw(messages | json_values)
    elif where == "message field":
        i = draw(st.integers(0, len(msgs) - 1))
        field = draw(st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name"]))
        msgs[i] = {**msgs[i], field: draw(json_values)}
    elif where == "tool calls":
        msgs.append({"role": "assistant", "content": None, "tool_calls": draw(tool_calls)})
    elif where == "tool":
        body["tools"] = [*body.get("tools", []), *draw(tools)]
    elif where == "parameters":
        schema = draw(st.sampled_from(TOOL_SCHEMAS) | json_values)
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        body.pop("tool_choice", None)
    else:
        schema = draw(st.sampled_from(TOOL_SCHEMAS) | json_values)
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "o", "schema": schema},
        }
        body.pop("tools", None)
    return body


chat_bodies = st.one_of(
    one_thing_wrong(),
    st.fixed_dictionaries(
        {"model": st.sampled_from(["default", "echo"]) | json_values},
        optional={k: json_values for k in CHAT_KEYS if k != "model"},
    ),
    json_values,
)
good_chat = valid_chat.map(
    lambda b: {k: v for k, v in b.items() if k not in ("tools", "tool_choice", "function_call")}
)

# -- the server -------------------------------------------------------------------------------


@dataclass
class Target:
    """The server, an admin's and a member's client, and real ids to aim at."""

    base: str
    url: str
    admin: httpx.Client
    member: httpx.Client
    runs: list[str]
    approvals: list[str]

    def client(self, as_admin: bool) -> httpx.Client:
        return self.admin if as_admin else self.member


async def _setup(url: str) -> dict[str, str]:
    db = await open_store(url)
    try:
        await migrate(db)
        admin = local_admin("cli")
        await create_user(db, admin, "ada", roles=("admin",))
        await create_user(db, admin, "max", roles=("member",))
        return {
            name: (await create_key(db, admin, f"{name}-key", user=name))[1]
            for name in ("ada", "max")
        }
    finally:
        await db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    tmp: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    url = f"sqlite:///{tmp}/test.db" if request.param == "sqlite" else _pg_schema_url(request)
    keys = asyncio.run(_setup(url))
    (tmp / "elevenfactor.yaml").write_text(PROJECT)
    # A subprocess, not a server thread: Hypothesis checks that nothing else touches the global
    # `random` state while it draws, and a server in the same process (pool jitter) would.
    server = Server(tmp, url, dev=False)
    server.start()
    timeout = httpx.Timeout(15.0)
    try:
        with (
            httpx.Client(
                base_url=server.base, timeout=timeout, headers=_auth(keys["ada"])
            ) as admin,
            httpx.Client(
                base_url=server.base, timeout=timeout, headers=_auth(keys["max"])
            ) as member,
        ):
            runs = []
            for i in range(3):
                made = member.post("/v1/runs", json={"program": "greet", "input": {"name": str(i)}})
                runs.append(made.json()["id"])
            for i in range(6):
                made = member.post(
                    "/v1/runs", json={"program": "transfer", "input": {"to": "bob", "amount": i}}
                )
                runs.append(made.json()["id"])
            wait_for(
                lambda: len(admin.get("/v1/approvals", params={"limit": 100}).json()["data"]) == 6,
                "the transfers to park",
            )
            approvals = [a["id"] for a in admin.get("/v1/approvals").json()["data"]]
            runs.append(runs[0] + ".1")  # a child-shaped id that does not exist
            yield Target(server.base, url, admin, member, runs, approvals)
    finally:
        server.stop()


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# -- the properties ---------------------------------------------------------------------------

SCHEMA_CODES = {"invalid_type", "invalid_value", "unknown_parameter", "invalid_json"}


def check(resp: httpx.Response, *, schema_valid: bool = False) -> None:
    """No 5xx; a 4xx is an OpenAI-style error object with a code (and a param for a 400).
    ``schema_valid``: the request matched the endpoint's published schema, so the validator
    must not refuse it (the schema documents exactly what is enforced)."""
    where = f"{resp.request.method} {str(resp.request.url)[:300]} -> {resp.status_code}"
    assert resp.status_code < 500, f"{where}: {resp.text[:500]}"
    if resp.status_code < 400:
        return
    assert resp.headers["content-type"].startswith("application/json"), where
    body = resp.json()
    assert set(body) == {"error"}, f"{where}: {body}"
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"], f"{where}: {err}"
    assert err["type"] in ("invalid_request_error", "authentication_error"), f"{where}: {err}"
    assert isinstance(err["code"], str) and err["code"], f"{where}: {err}"
    assert "param" in err, f"{where}: {err}"
    if resp.status_code == 400:  # the parameter at fault ("" only for a parameter named "")
        assert isinstance(err["param"], str), f"{where}: {err}"
    if schema_valid:
        assert resp.status_code != 400 or err["code"] not in SCHEMA_CODES, (
            f"{where}: a schema-valid request was refused: {err}"
        )


def send(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request whose path is used as given (already percent-encoded)."""
    url = httpx.URL(client.base_url.join("/")).copy_with(raw_path=path.encode("ascii"))
    headers = kw.pop("headers", {})
    if "content" in kw:
        headers.setdefault("Content-Type", "application/json")
    return client.request(method, url, headers=headers, **kw)


def encode(body: Any) -> bytes:
    """JSON with integers of any size (which ``orjson`` and ``httpx`` refuse to write)."""
    return json.dumps(body).encode()


def still_serving(t: Target) -> None:
    """The server and every pooled database connection still work."""
    assert t.admin.get("/readyz").status_code == 200
    for _ in range(12):
        assert t.admin.get("/v1/runs", params={"limit": 5}).status_code == 200
        assert t.admin.get("/v1/approvals", params={"status": "all"}).status_code == 200


@FUZZ
@given(body=from_model(RunCreate), program=st.sampled_from([None, "greet", "transfer"]))
def test_run_creation_from_the_schema(
    target: Target, body: dict[str, Any], program: str | None
) -> None:
    if program is not None:
        body = {**body, "program": program}
    resp = target.member.post("/v1/runs", content=encode(body), headers=_json())
    check(resp, schema_valid=True)
    if resp.status_code == 400:
        # The one rule the schema cannot say: a program (or agent) must be named.
        assert (resp.json()["error"]["param"], body.get("program"), body.get("agent")) == (
            "program",
            None,
            None,
        ), resp.text


@FUZZ
@given(body=mutated(RunCreate), as_admin=st.booleans())
def test_run_creation_with_arbitrary_json(target: Target, body: Any, as_admin: bool) -> None:
    resp = target.client(as_admin).post("/v1/runs", content=encode(body), headers=_json())
    check(resp)
    if resp.status_code == 201:
        assert resp.json()["object"] == "run"


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


@FUZZ
@given(
    query=st.one_of(
        from_model(RunQuery).map(lambda q: ("/v1/runs", as_query(q), True)),
        from_model(ApprovalQuery).map(lambda q: ("/v1/approvals", as_query(q), True)),
        query_of(RunQuery).map(lambda q: ("/v1/runs", q, False)),
        query_of(ApprovalQuery).map(lambda q: ("/v1/approvals", q, False)),
        query_of(RunQuery).map(lambda q: ("/v1/models", q, False)),
    ),
    as_admin=st.booleans(),
)
def test_list_queries(
    target: Target, query: tuple[str, list[tuple[str, str]], bool], as_admin: bool
) -> None:
    path, params, valid = query
    resp = target.client(as_admin).get(path, params=params)
    check(resp, schema_valid=valid)
    if valid:
        assert resp.status_code == 200, resp.text
    if resp.status_code == 200:
        assert resp.json()["object"] == "list"


@FUZZ
@given(data=st.data(), as_admin=st.booleans())
def test_run_paths(target: Target, data: st.DataObject, as_admin: bool) -> None:
    rid = data.draw(path_ids(target.runs), label="run id")
    client = target.client(as_admin)
    check(send(client, "GET", f"/v1/runs/{rid}"))
    with client.stream(
        "GET", client.base_url.join("/").copy_with(raw_path=f"/v1/runs/{rid}/events".encode())
    ) as events:
        if events.status_code == 200:
            assert events.headers["content-type"].startswith("text/event-stream")
        else:
            events.read()
            check(events)
    body = data.draw(st.one_of(st.just(b"{}"), raw_bodies, json_values.map(encode)), label="body")
    check(send(client, "POST", f"/v1/runs/{rid}/cancel", content=body))
    reason = data.draw(
        st.one_of(from_model(RunDeleteQuery).map(as_query), query_of(RunDeleteQuery)),
        label="query",
    )
    check(send(client, "DELETE", f"/v1/runs/{rid}", params=reason))


@FUZZ
@given(
    data=st.data(),
    body=st.one_of(
        from_model(ApprovalDecision).map(lambda b: (b, True)),
        mutated(ApprovalDecision).map(lambda b: (b, False)),
    ),
    as_admin=st.booleans(),
)
def test_decisions(
    target: Target, data: st.DataObject, body: tuple[Any, bool], as_admin: bool
) -> None:
    aid = data.draw(path_ids(target.approvals), label="approval id")
    payload, valid = body
    resp = send(target.client(as_admin), "POST", f"/v1/approvals/{aid}", content=encode(payload))
    check(resp, schema_valid=valid)


@FUZZ
@given(
    path=st.sampled_from(
        ["/v1/runs", "/v1/runs/{run}/cancel", "/v1/approvals/{approval}", "/v1/chat/completions"]
    ),
    body=raw_bodies,
    ctype=st.sampled_from(["application/json", "application/json; charset=latin-1"]),
)
def test_raw_bodies(target: Target, path: str, body: bytes, ctype: str) -> None:
    url = path.format(run=target.runs[-2], approval=target.approvals[-1])
    check(send(target.admin, "POST", url, content=body, headers={"Content-Type": ctype}))


def _chat(target: Target, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    with target.member.stream(
        "POST", "/v1/chat/completions", content=encode(body), headers={**_json(), **(headers or {})}
    ) as resp:
        resp.read()
    if resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream"):
        assert resp.text.rstrip().endswith(("data: [DONE]", "}")), resp.text[-300:]
    return resp


@FUZZ
@given(
    body=st.one_of(chat_bodies, json_values),
    tags=st.none()
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip),
)
def test_chat_completions_with_mutated_requests(
    target: Target, body: Any, tags: str | None
) -> None:
    check(_chat(target, body, {"x-elevenfactor-tags": tags} if tags is not None else {}))


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=st.sampled_from(
        [
            "/v1/runs",
            "/v1/runs/x",
            "/v1/runs/x/events",
            "/v1/runs/x/cancel",
            "/v1/approvals",
            "/v1/approvals/x",
            "/v1/chat/completions",
            "/v1/models",
            "/v1/cost",
            "/v1/budgets",
            "/v1/admin/budgets",
            "/v1/admin/budgets/x",
            "/v1/admin/kills",
            "/v1/admin/kills/x",
            "/v1/nothing",
            "/",
        ]
    ),
    body=st.one_of(st.just(b"{}"), raw_bodies),
)
def test_every_method_on_every_path(target: Target, method: str, path: str, body: bytes) -> None:
    """Methods a route does not serve, and paths nobody serves, get error objects too."""
    if method == "GET" and path.endswith("/events"):
        path = "/v1/runs/no-such-run/events"
    check(send(target.member, method, path, content=body))


@FUZZ
@given(body=good_chat)
def test_chat_completions_echo_any_text(target: Target, body: dict[str, Any]) -> None:
    resp = _chat(target, body)
    check(resp)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None, "tool_calls": 5},
        {"role": "assistant", "content": None, "tool_calls": "call_1"},
        {"role": "assistant", "content": None, "tool_calls": {"id": "x"}},
        {"role": "assistant", "content": None, "tool_calls": True},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": 5}}]},
        {"role": "assistant", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
    ],
)
def test_malformed_tool_calls_are_400_naming_the_message(
    target: Target, message: dict[str, Any]
) -> None:
    """The known one: ``tool_calls`` that is not a list used to crash the parser (a 500)."""
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}, message]}
    resp = _chat(target, body)
    check(resp)
    if message["tool_calls"] == [{"function": {"name": "f"}}]:
        assert resp.status_code == 200, resp.text
    else:
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"].startswith("messages[1].tool_calls"), resp.text


@pytest.mark.parametrize(
    "choice",
    [{"type": "function", "function": ["f"]}, {"function": "f"}, {"function": 5}, ["auto"], 7],
)
def test_malformed_tool_choice_is_400(target: Target, choice: Any) -> None:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": choice,
    }
    resp = _chat(target, body)
    check(resp)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tool_choice", resp.text


@pytest.mark.parametrize(
    ("decision", "result"),
    [
        (
            {"action": "edit", "arguments": {"to": "a\x00b\u202e", "amount": 2**70}},
            {"done": True, "to": "a\x00b\u202e", "amount": float(2**70)},
        ),
        (
            {"action": "edit", "arguments": {"to": "\U0001f600", "amount": 1e308, "\x00": None}},
            {"done": True, "to": "\U0001f600", "amount": 1e308},
        ),
        ({"action": "reject", "reason": "nope \x7f\u2028\t"}, {"done": False}),
    ],
)
def test_decisions_carrying_nul_and_odd_numbers_are_stored_and_replayed(
    target: Target, decision: dict[str, Any], result: dict[str, Any]
) -> None:
    """What the fuzzing rarely reaches: a *pending* approval decided with such values. The
    decision is journaled, the run resumes with it, and the result reads back the same."""
    made = target.member.post(
        "/v1/runs", json={"program": "transfer", "input": {"to": "bob", "amount": 1}}
    )
    rid = made.json()["id"]
    wait_for(
        lambda: target.member.get(f"/v1/runs/{rid}").json()["status"] == "waiting",
        "the transfer to park",
    )
    [item] = target.admin.get("/v1/approvals", params={"run_id": rid}).json()["data"]
    decided = target.admin.post(
        f"/v1/approvals/{item['id']}", content=encode(decision), headers=_json()
    )
    assert decided.status_code == 200, decided.text
    wait_for(
        lambda: target.member.get(f"/v1/runs/{rid}").json()["status"] == "succeeded",
        "the transfer to finish",
    )
    shown = target.member.get(f"/v1/runs/{rid}").json()
    assert {k: shown["result"][k] for k in result} == result
    [again] = target.admin.get("/v1/approvals", params={"run_id": rid, "status": "all"}).json()[
        "data"
    ]
    assert again["decision"]["arguments"] == decided.json()["decision"]["arguments"]
    assert again["decision"]["reason"] == decision.get("reason")


def test_the_server_still_works_afterwards(target: Target) -> None:
    """Runs, approvals, model calls and every pooled connection work after all of the above
    (on PostgreSQL a NUL reaching a query would have broken a connection)."""
    still_serving(target)
    made = target.member.post("/v1/runs", json={"program": "greet", "input": {"name": "end"}})
    assert made.status_code == 201, made.text
    rid = made.json()["id"]
    wait_for(
        lambda: target.member.get(f"/v1/runs/{rid}").json()["status"] == "succeeded",
        "a last run to finish",
    )
    assert target.member.get(f"/v1/runs/{rid}").json()["result"] == {"hello": "END"}
    chat = target.member.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "still here"}]},
    )
    assert chat.json()["choices"][0]["message"]["content"] == "echo: still here"


def test_odd_schemas_do_not_crash_the_test_model(target: Target) -> None:
    """Found by the fuzzing: schemas the deterministic model could not make an example of."""
    base = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    for schema in CRASHING_SCHEMAS:
        tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
        check(_chat(target, {**base, "tools": [tool]}))
        fmt = {"type": "json_schema", "json_schema": {"schema": schema}}
        check(_chat(target, {**base, "response_format": fmt}))


# -- spend: budgets, kill switches and the cost report ----------------------------------------

_BUDGET = {"limit": 1.0, "scope": "org", "window": "day", "soft": False, "on_exceed": "refuse"}


@FUZZ
@given(
    body=st.one_of(
        from_model(BudgetCreate).map(lambda b: (b, True)),
        mutated(BudgetCreate).map(lambda b: (b, False)),
    ),
    as_admin=st.booleans(),
)
@example(body=({**_BUDGET, "webhook": "http://["}, False), as_admin=True)  # was a 500
@example(body=({**_BUDGET, "webhook": "https://h:99999/"}, False), as_admin=True)
@example(body=({**_BUDGET, "webhook": "https://[::1]:8443/alerts?x=1"}, True), as_admin=True)
def test_budget_creation(target: Target, body: tuple[Any, bool], as_admin: bool) -> None:
    payload, valid = body
    resp = target.client(as_admin).post(
        "/v1/admin/budgets", content=encode(payload), headers=_json()
    )
    # A schema-valid body may still name a user or route that does not exist (404 or 400
    # invalid_budget), never fail the schema's own rules.
    check(resp, schema_valid=valid)
    if not as_admin:
        assert resp.status_code in (400, 403), resp.text
    if resp.status_code in (200, 201):
        bid = resp.json()["id"]
        check(send(target.admin, "PATCH", f"/v1/admin/budgets/{bid}", content=encode(payload)))
        check(send(target.admin, "DELETE", f"/v1/admin/budgets/{bid}"))


@FUZZ
@given(body=st.one_of(from_model(KillCreate), mutated(KillCreate)), as_admin=st.booleans())
def test_kill_switches(target: Target, body: Any, as_admin: bool) -> None:
    resp = target.client(as_admin).post("/v1/admin/kills", content=encode(body), headers=_json())
    check(resp)
    if resp.status_code in (200, 201):  # lift it at once: the other properties need calls
        kid = resp.json()["id"]
        lifted = send(target.admin, "DELETE", f"/v1/admin/kills/{kid}", params={"reason": "x"})
        assert lifted.status_code == 200, lifted.text


@FUZZ
@given(
    query=st.one_of(
        from_model(CostQuery).map(lambda q: (as_query(q), True)),
        query_of(CostQuery).map(lambda q: (q, False)),
    ),
    as_admin=st.booleans(),
)
def test_cost_queries(
    target: Target, query: tuple[list[tuple[str, str]], bool], as_admin: bool
) -> None:
    params, valid = query
    resp = target.client(as_admin).get("/v1/cost", params=params)
    check(resp, schema_valid=valid)
    if resp.status_code == 200 and resp.headers["content-type"].startswith("application/json"):
        assert resp.json()["object"] == "cost_report"
