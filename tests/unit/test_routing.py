"""Cost-aware routing: rules on prompt size and tools, and escalation to a stronger route when
the cheap one fails or its answer is rejected by a validator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from elevenfactor.config import parse_project
from elevenfactor.errors import ConfigError, UpstreamServerError
from elevenfactor.models import (
    Call,
    Escalate,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ResponseFormat,
    ToolDefinition,
    UserMessage,
    prompt_tokens,
)
from elevenfactor.models._cache import StreamAssembler

SHORT: list[Message] = [UserMessage(content="hi")]
LONG: list[Message] = [UserMessage(content="x" * 4000)]  # ~1000 estimated tokens
TOOLS = [ToolDefinition(name="lookup")]


def project(routes: dict[str, Any], **models: Any) -> dict[str, Any]:
    base = {
        name: {"provider": "t", "model": f"{name}-1", "retry": {"attempts": 1}}
        for name in ("cheap", "mid", "strong")
    }
    return {
        "providers": {"t": {"type": "test"}},
        "models": {**base, **models},
        "routes": routes,
    }


def registry(routes: dict[str, Any]) -> ModelRegistry:
    return ModelRegistry.from_project(parse_project(project(routes)))


RULES = {
    "default": {
        "chain": ["strong"],
        "rules": [
            {"min_prompt_tokens": 500, "use": "mid"},
            {"max_prompt_tokens": 100, "tools": False, "use": "cheap"},
            {"tags": ["batch"], "use": "cheap"},
        ],
    }
}


def test_prompt_tokens_is_bytes_over_four() -> None:
    assert prompt_tokens(LONG, ModelSettings()) == 1000
    assert prompt_tokens([UserMessage(content="é" * 8)], ModelSettings()) == 4
    assert prompt_tokens(SHORT, ModelSettings(tools=TOOLS)) > prompt_tokens(SHORT, ModelSettings())


@pytest.mark.parametrize(
    ("messages", "settings", "tags", "route"),
    [
        (LONG, ModelSettings(), [], "mid"),
        (SHORT, ModelSettings(), [], "cheap"),
        (SHORT, ModelSettings(tools=TOOLS), [], "default"),  # tools: not the cheap rule
        (SHORT, ModelSettings(tools=TOOLS), ["batch"], "cheap"),
        (LONG, ModelSettings(), ["batch"], "mid"),  # the first match wins
    ],
)
def test_rules_on_size_tools_and_tags(
    messages: list[Message], settings: ModelSettings, tags: list[str], route: str
) -> None:
    reg = registry(RULES)
    resolved = reg.resolve("default", tags, messages=messages, settings=settings)
    assert resolved.route == route


async def test_without_the_request_rules_apply_per_request() -> None:
    reg = registry(RULES)
    resolved = reg.resolve("default", [])
    assert resolved.route == "default"
    call = Call(route=resolved.route)
    response = await resolved.model.request(SHORT, ModelSettings(), call)
    assert call.route == "cheap" and call.path == ["cheap:ok"]
    assert response.model == "cheap-1"
    call = Call(route=resolved.route)
    chunks = [c async for c in resolved.model.request_stream(LONG, ModelSettings(), call)]
    assert call.route == "mid" and chunks[-1].finish_reason == "stop"


def test_tag_rules_still_resolve_without_the_request() -> None:
    reg = registry({"default": {"chain": ["strong"], "rules": [{"tags": ["b"], "use": "cheap"}]}})
    assert reg.resolve("default", ["b"]).route == "cheap"
    assert reg.resolve("default", []).route == "default"


@pytest.mark.parametrize(
    ("route", "match"),
    [
        ({"chain": ["strong"], "rules": [{"use": "cheap"}]}, "at least one of tags"),
        ({"chain": ["strong"], "validator": "json"}, "needs 'escalate_to'"),
        ({"chain": ["strong"], "validator": "fancy", "escalate_to": "cheap"}, "unknown validator"),
        ({"chain": ["strong"], "escalate_to": "nowhere"}, "unknown name 'nowhere'"),
        ({"chain": ["strong"], "rules": [{"tools": "maybe", "use": "cheap"}]}, "valid boolean"),
        ({"chain": ["strong"], "cache": {"ttl": -1}}, "greater than 0"),
    ],
)
def test_bad_routing_config_names_the_key(route: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_project(project({"default": route}), source="elevenfactor.yaml")
    assert "routes.default" in str(info.value) or "default" in str(info.value.details)


def test_an_unloadable_validator_names_the_key() -> None:
    with pytest.raises(ConfigError, match="cannot load validator") as info:
        registry(
            {"default": {"chain": ["cheap"], "validator": "nope.mod:f", "escalate_to": "strong"}}
        )
    assert "routes.default.validator" in str(info.value.to_dict())


def test_an_escalation_cycle_is_refused() -> None:
    with pytest.raises(ConfigError, match="route cycle"):
        registry(
            {
                "default": {"chain": ["cheap"], "escalate_to": "b"},
                "b": {"chain": ["strong"], "escalate_to": "default"},
            }
        )


# -- escalation -------------------------------------------------------------------------------

ESCALATING = {
    "default": {"chain": ["cheap"], "validator": "json", "escalate_to": "strong_route"},
    "strong_route": {"chain": ["strong"]},
}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_rejected_answer_escalates(stream: bool) -> None:
    reg = registry(ESCALATING)
    model = reg.resolve("default").model
    call = Call()
    if stream:
        assembler = StreamAssembler()
        async for chunk in model.request_stream(SHORT, ModelSettings(), call):
            assembler.add(chunk)
        response = assembler.response()
    else:
        response = await model.request(SHORT, ModelSettings(), call)
    assert response.message.content == "echo: hi"  # not JSON: rejected
    assert call.path == ["cheap:rejected", "strong:ok"]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_accepted_answer_stands(stream: bool) -> None:
    reg = registry(ESCALATING)
    model = reg.resolve("default").model
    settings = ModelSettings(
        response_format=ResponseFormat(
            type="json_schema",
            json_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        )
    )
    call = Call()
    if stream:
        chunks = [c async for c in model.request_stream(SHORT, settings, call)]
        text = "".join(c.text for c in chunks)
    else:
        text = (await model.request(SHORT, settings, call)).message.content or ""
    assert text == '{"n": 0}'
    assert call.path == ["cheap:ok"]


def _json_validator(schema: dict[str, Any]) -> Any:
    reg = registry(ESCALATING)
    escalate = reg.routes["default"]
    assert isinstance(escalate, Escalate) and escalate.validator is not None
    return escalate.validator


@pytest.mark.parametrize(
    ("content", "ok"),
    [('{"n": 1}', True), ('{"n": "one"}', False), ("not json", False), ("", False)],
)
def test_the_json_validator_checks_the_schema(content: str, ok: bool) -> None:
    validator = _json_validator({})
    settings = ModelSettings(
        response_format=ResponseFormat(
            type="json_schema",
            json_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        )
    )
    response = Response.model_validate({"message": {"content": content}})
    assert validator(response, SHORT, settings) is ok


async def test_a_failure_escalates_and_the_path_shows_it() -> None:
    def broken(messages: Sequence[Message], settings: ModelSettings) -> Response:
        raise UpstreamServerError("cheap is down")

    strong = FunctionModel(lambda m, s: Response.model_validate({"message": {"content": "ok"}}))
    model = Escalate("r", FunctionModel(broken, name="cheap"), strong)
    response = await model.request(SHORT, ModelSettings(), Call())
    assert response.message.content == "ok"
    chunks = [c async for c in model.request_stream(SHORT, ModelSettings(), Call())]
    assert "".join(c.text for c in chunks) == "ok"


async def test_a_budget_refusal_is_not_escalated() -> None:
    from elevenfactor.errors import ModelError

    class Refused(ModelError):
        error_class = "budget"

    def refuse(messages: Sequence[Message], settings: ModelSettings) -> Response:
        raise Refused("over budget")

    strong = FunctionModel(lambda m, s: Response.model_validate({"message": {"content": "ok"}}))
    with pytest.raises(Refused):
        await Escalate("r", FunctionModel(refuse), strong).request(SHORT, ModelSettings(), Call())
    assert strong.calls == []


def reject_short(response: Response, messages: Sequence[Message], settings: ModelSettings) -> bool:
    """A user validator: answers must be longer than 100 characters."""
    return len(response.message.content or "") > 100


async def boom(response: Response, messages: Sequence[Message], settings: ModelSettings) -> bool:
    raise RuntimeError("validator bug")


@pytest.mark.parametrize("ref", [f"{__name__}:reject_short", f"{__name__}:boom"])
async def test_a_user_validator_escalates(ref: str) -> None:
    reg = registry({"default": {"chain": ["cheap"], "validator": ref, "escalate_to": "strong"}})
    call = Call()
    response = await reg.resolve("default").model.request(SHORT, ModelSettings(), call)
    assert response.model == "strong-1"
    assert call.path == ["cheap:rejected", "strong:ok"]


async def test_escalated_answers_are_cached_with_the_route() -> None:
    reg = registry({**ESCALATING, "default": {**ESCALATING["default"], "cache": {"ttl": 60}}})
    model = reg.resolve("default").model
    await model.request(SHORT, ModelSettings(temperature=0), Call())
    call = Call()
    response = await model.request(SHORT, ModelSettings(temperature=0), call)
    assert call.cache_hit and call.path == ["strong:cache_hit"]
    assert response.model == "strong-1"
