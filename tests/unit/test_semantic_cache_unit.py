"""The semantic cache without a store: its namespace (what must match exactly for two requests
to share answers), when it applies, its config and how a hit is reported."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from elevenfactor.config import CacheConfig, SemanticCacheConfig, parse_project
from elevenfactor.errors import ConfigError
from elevenfactor.models import (
    AssistantMessage,
    Attempt,
    Call,
    Message,
    ModelRegistry,
    ModelSettings,
    SystemMessage,
    ToolDefinition,
    ToolMessage,
    UserMessage,
    semantic_namespace,
)
from elevenfactor.models._semantic_cache import build_semantic, last_user_text, semantic_scope
from elevenfactor.models._semantic_index import SemanticIndex
from elevenfactor.server._cache_headers import cache_headers

SYSTEM = SystemMessage(content="You answer questions about geography.")


def ns(
    messages: Sequence[Message],
    settings: ModelSettings | None = None,
    *,
    version: str = "v1",
    embedder: str = "local/all-MiniLM-L6-v2",
    scope: Sequence[str] = ("org_a", "user_a"),
) -> str:
    return semantic_namespace(
        messages,
        settings or ModelSettings(temperature=0),
        version,
        embedder=embedder,
        scope=scope,
    )


def ask(text: str, *before: Message) -> list[Message]:
    return [SYSTEM, *before, UserMessage(content=text)]


def test_the_namespace_ignores_only_the_last_questions_text() -> None:
    base = ns(ask("What is the capital of France?"))
    assert base == ns(ask("capital of france??"))
    assert len(base) == 64 and int(base, 16) >= 0
    # the request's user and tags are not part of the exact key either
    tagged = ModelSettings(temperature=0, user="someone", tags=["t"])
    assert ns(ask("x"), tagged) == base


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda: ns([SystemMessage(content="Be brief."), UserMessage(content="q")]),
                     id="system prompt"),
        pytest.param(lambda: ns([UserMessage(content="q")]), id="no system prompt"),
        pytest.param(
            lambda: ns(ask("q", UserMessage(content="hi"), AssistantMessage(content="hello"))),
            id="earlier turns",
        ),
        pytest.param(lambda: ns([SYSTEM, UserMessage(content="q", name="bob")]), id="speaker"),
        pytest.param(lambda: ns(ask("q"), ModelSettings(temperature=0.7)), id="temperature"),
        pytest.param(lambda: ns(ask("q"), ModelSettings(temperature=0, seed=3)), id="seed"),
        pytest.param(
            lambda: ns(ask("q"), ModelSettings(temperature=0, tools=[ToolDefinition(name="f")])),
            id="tools",
        ),
        pytest.param(
            lambda: ns(ask("q"), ModelSettings(temperature=0, prompt_version="p2")),
            id="prompt version",
        ),
        pytest.param(lambda: ns(ask("q"), version="v2"), id="model version"),
        pytest.param(lambda: ns(ask("q"), embedder="other/embedder"), id="embedder"),
        pytest.param(lambda: ns(ask("q"), scope=("org_a", "user_b")), id="user"),
        pytest.param(lambda: ns(ask("q"), scope=("org_a",)), id="org scope"),
        pytest.param(lambda: ns(ask("q"), scope=("org_b", "user_a")), id="organisation"),
    ],
)  # fmt: skip
def test_the_namespace_changes_with_everything_else(other: Any) -> None:
    assert other() != ns(ask("What is the capital of France?"))


def test_it_applies_to_a_conversation_ending_with_a_users_question() -> None:
    assert last_user_text(ask("where?")) == "where?"
    assert last_user_text([]) is None
    assert last_user_text(ask("   ")) is None
    assert last_user_text([*ask("q"), AssistantMessage(content="a")]) is None
    assert last_user_text([*ask("q"), ToolMessage(content="42", tool_call_id="c1")]) is None


def test_the_scope_comes_from_the_call() -> None:
    call = Call(org_id="org_a", user_id="user_a")
    assert semantic_scope("user", call) == ("org_a", "user_a")
    assert semantic_scope("org", call) == ("org_a",)
    assert semantic_scope("user", Call(org_id="org_a")) is None
    assert semantic_scope("org", Call(org_id="org_a")) == ("org_a",)
    assert semantic_scope("org", Call()) is None  # unknown caller: no semantic cache


def _route(semantic: Any, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"t": {"type": "test"}},
        "models": {"m": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["m"], "cache": {"ttl": 60, "semantic": semantic}}},
        **extra,
    }


def test_config_defaults_are_the_safe_ones() -> None:
    conf = SemanticCacheConfig()
    assert (conf.threshold, conf.scope, conf.embedder) == (0.95, "user", None)
    project = parse_project(_route({}))
    route_cache = project.routes["default"].cache
    assert route_cache is not None and route_cache.semantic == SemanticCacheConfig()
    assert CacheConfig().semantic is None


@pytest.mark.parametrize(
    ("semantic", "key"),
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1.01}, "threshold"),
        ({"threshold": "nan"}, "threshold"),
        ({"scope": "team"}, "scope"),
        ({"max_entries": 0}, "max_entries"),
        ({"timeout": 0}, "timeout"),
        ({"treshold": 0.9}, "treshold"),
    ],
)
def test_config_refuses_bad_values_naming_the_key(semantic: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_project(_route(semantic), source="elevenfactor.yaml")
    assert info.value.key == f"routes.default.cache.semantic.{key}", info.value.message
    assert "elevenfactor.yaml" in info.value.message


def test_an_unknown_embedder_is_refused_at_load_time() -> None:
    with pytest.raises(ConfigError) as info:
        parse_project(_route({"embedder": "nope"}), source="elevenfactor.yaml")
    assert info.value.key == "routes.default.cache.semantic.embedder"
    assert "'nope'" in info.value.message and "local" in info.value.message
    named = parse_project(
        _route(
            {"embedder": "mini", "threshold": 1},
            embeddings={"default": "mini", "models": {"mini": {"provider": "local"}}},
        )
    )
    assert named.routes["default"].cache is not None


class _NoEmbedders:
    def get(self, name: str | None = None) -> Any:
        from elevenfactor.errors import ModelNotFound

        raise ModelNotFound(f"no embedding model {name!r}")


def test_a_route_without_an_available_embedder_is_a_config_error() -> None:
    project = parse_project(_route({}))
    index = SemanticIndex(store=None)  # type: ignore[arg-type]  # never queried here
    conf = project.routes["default"].cache
    with pytest.raises(ConfigError) as info:
        build_semantic("default", conf, "v", index, None)
    assert info.value.key == "routes.default.cache.semantic.embedder"
    with pytest.raises(ConfigError) as info:
        build_semantic("default", conf, "v", index, _NoEmbedders())
    assert info.value.key == "routes.default.cache.semantic.embedder"
    # without a store (a library user, `config check`) the route has its exact cache only
    registry = ModelRegistry.from_project(project)
    assert registry.semantic is None
    assert build_semantic("default", conf, "v", None, None) is None


def test_a_hit_is_reported_in_the_path_and_the_headers() -> None:
    call = Call()
    assert cache_headers(call) == {}
    call.attempts.append(Attempt("m", "t", "echo-1", "ok", 3.0))
    assert cache_headers(call) == {} and call.path == ["m:ok"]
    exact = Call(cache_hit=True, attempts=[Attempt("m", "t", "echo-1", "cache_hit", 0.2)])
    assert cache_headers(exact) == {"x-elevenfactor-cache": "hit"}
    near = Call(
        cache_hit=True,
        attempts=[Attempt("m", "t", "echo-1", "semantic_hit", 4.0, similarity=0.97314)],
    )
    assert near.path == ["m:semantic_hit@0.9731"]
    assert cache_headers(near) == {
        "x-elevenfactor-cache": "semantic",
        "x-elevenfactor-cache-similarity": "0.9731",
    }


def test_float32_rounding_does_not_turn_an_identical_question_into_a_miss() -> None:
    from elevenfactor.models._semantic_index import _Space

    space = _Space(3, 0.0)
    vector = np.array([0.6, 0.8, 0.0], np.float32)
    space.extend([(1, vector.astype("<f4").tobytes(), 10.0)], now=1.0)
    [(row, sim)] = space.best(vector, 1.0, now=1.0)
    assert row == 1 and sim == pytest.approx(1.0)
    assert space.best(vector, 1.0, now=10.0) == []  # expired
