"""The OpenAPI document: valid OpenAPI 3.1, complete, and built from the validating schemas."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from elevenfactor.config import Settings, parse_project
from elevenfactor.errors import RequestError
from elevenfactor.server import _schemas as s
from elevenfactor.server import create_app
from elevenfactor.server._docs import render_docs
from elevenfactor.server._openapi import OPERATIONS, REF, build_document
from elevenfactor.server._wire import _KNOWN, parse_chat_request

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_document()


def _served(tmp_path: Path) -> set[tuple[str, str]]:
    """Every (path, method) the app serves: its Starlette routes and the GatewayApp fast paths."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/x.db", dev=True), PROJECT)
    served = {("/v1/chat/completions", "post"), ("/mcp", "post")}
    for route in app.app.routes:
        assert isinstance(route, Route)
        if route.path == "/ui" or route.path.startswith("/ui/"):
            continue  # the dashboard's HTML pages: listed in the README, not the JSON API's
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # drop converters (":path")
        served |= {(path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return served


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_served_route_is_documented_and_nothing_else(
    doc: dict[str, Any], tmp_path: Path
) -> None:
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    served = _served(tmp_path)
    assert served - documented == set(), "served but not in the OpenAPI document"
    assert documented - served == set(), "documented but not served"


def test_operations_point_at_the_validating_models(doc: dict[str, Any]) -> None:
    """The body schema of an operation is the endpoint's pydantic model's own JSON schema."""
    bodies = {
        ("/v1/runs", "post"): s.RunCreate,
        ("/v1/approvals/{approval_id}", "post"): s.ApprovalDecision,
        ("/v1/admin/users", "post"): s.AdminUserCreate,
        ("/v1/admin/users/{name}", "patch"): s.AdminUserUpdate,
        ("/v1/admin/teams", "post"): s.AdminTeamCreate,
        ("/v1/admin/keys", "post"): s.AdminKeyCreate,
        ("/v1/admin/keys/{key_id}", "patch"): s.AdminKeyUpdate,
        ("/v1/chat/completions", "post"): s.ChatCompletionRequest,
    }
    for (path, method), model in bodies.items():
        body = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": REF.format(model=model.__name__)}
        want = model.model_json_schema(ref_template=REF)
        want.pop("$defs", None)
        assert doc["components"]["schemas"][model.__name__] == want
    queries = {("/v1/runs", "get"): s.RunQuery, ("/v1/approvals", "get"): s.ApprovalQuery}
    for (path, method), model in queries.items():
        names = {p["name"] for p in doc["paths"][path][method]["parameters"]}
        assert names == set(model.model_fields)
    reason = doc["paths"]["/v1/runs/{run_id}"]["delete"]["parameters"]
    assert {"name": "reason", "in": "query", "required": True}.items() <= reason[1].items()


def test_security_bearer_key_except_health_and_docs(doc: dict[str, Any]) -> None:
    scheme = doc["components"]["securitySchemes"]["apiKey"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    open_ops = {
        (path, m)
        for path, item in doc["paths"].items()
        for m, op in item.items()
        if not op["security"]
    }
    assert open_ops == {
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
    }
    err = doc["components"]["schemas"]["ErrorObject"]
    assert set(err["required"]) == {"message", "type", "param", "code"}


def test_chat_schema_names_the_parameters_the_parser_accepts() -> None:
    fields = {f.alias or name for name, f in s.ChatCompletionRequest.model_fields.items()}
    assert fields == _KNOWN


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "weather?", "name": "ann"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
            },
            "temperature": 0.5,
            "top_p": 1,
            "max_completion_tokens": 10,
            "stop": "END",
            "seed": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
        },
    ],
)
def test_chat_bodies_the_parser_accepts_match_the_schema(
    doc: dict[str, Any], body: dict[str, Any]
) -> None:
    parse_chat_request(body, [])
    _check(doc, body)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 7},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1},
    ],
)
def test_chat_bodies_the_parser_refuses_the_schema_refuses(
    doc: dict[str, Any], body: dict[str, Any]
) -> None:
    with pytest.raises(RequestError):
        parse_chat_request(body, [])
    with pytest.raises(jsonschema.ValidationError):
        _check(doc, body)


def _check(doc: dict[str, Any], body: dict[str, Any]) -> None:
    schema = {"$ref": REF.format(model="ChatCompletionRequest"), "components": doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def test_docs_page_lists_every_operation_with_its_fields(doc: dict[str, Any]) -> None:
    page = render_docs(doc)

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.names.append(tag)

    parser = Tags()
    parser.feed(page)
    assert "script" not in parser.names and "link" not in parser.names
    assert "http://" not in page and "https://" not in page
    for op in OPERATIONS:
        assert f"<code>{op.path}</code>" in page
    for field in ("max_attempts", "deadline_seconds", "tool_choice", "response_format"):
        assert f"<td class=p>{field}</td>" in page
    assert "<td class=p>run_id</td>" in page and "in path" in page
