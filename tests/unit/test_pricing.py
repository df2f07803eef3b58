"""Prices (issue 8): resolution order, versions, the price table's validation, worst cases for
budget reservations, cached-token costs, and the shipped list prices."""

from __future__ import annotations

import json
from typing import Any

import pytest

from elevenfactor.config import ProjectConfig, default_project, parse_project
from elevenfactor.errors import ConfigError
from elevenfactor.governance import (
    PriceBook,
    estimate_prompt_tokens,
    price_book,
    shipped_prices,
)
from elevenfactor.governance._pricing import DEFAULT_OUTPUT_CAP
from elevenfactor.models import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)
from elevenfactor.models.openai_format import response_from_openai, response_to_openai
from elevenfactor.observe import call_cost


def _project(models: dict[str, Any], prices: dict[str, Any] | None = None) -> ProjectConfig:
    data: dict[str, Any] = {"providers": {"p": {"type": "test"}}, "models": models}
    if prices is not None:
        data["prices"] = prices
    return parse_project(data, source="elevenfactor.yaml", env={})


def _p(i: float, o: float, **kw: float) -> dict[str, float]:
    return {"input_per_mtok": i, "output_per_mtok": o, **kw}


def test_resolution_order_own_price_then_name_then_model_id_then_shipped() -> None:
    project = _project(
        {
            "own": {"provider": "p", "model": "gpt-4o", "price": _p(1, 2)},
            "byname": {"provider": "p", "model": "gpt-4o"},
            "bymodel": {"provider": "p", "model": "gpt-4o-mini"},
            "shipped": {"provider": "p", "model": "gpt-4.1"},
            "snapshot": {"provider": "p", "model": "claude-sonnet-4-20250514"},
            "unpriced": {"provider": "p", "model": "my-own-model"},
        },
        {"byname": _p(3, 4), "gpt-4o-mini": _p(5, 6), "gpt-4o": _p(7, 8)},
    )
    book = PriceBook.from_project(project)
    got = {name: book.price(name) for name in book.deployments}
    assert got["own"] is not None and (got["own"].input_per_mtok, got["own"].source) == (
        1.0,
        "models.own.price",
    )
    assert got["byname"] is not None and got["byname"].source == "prices.byname"
    assert got["byname"].output_per_mtok == 4.0
    assert got["bymodel"] is not None and got["bymodel"].source == "prices.gpt-4o-mini"
    assert got["shipped"] is not None and got["shipped"].source == "default"
    assert got["shipped"].input_per_mtok == shipped_prices()["gpt-4.1"].input_per_mtok
    assert got["snapshot"] is not None and got["snapshot"].output_per_mtok == 15.0
    assert got["unpriced"] is None
    assert book.cost("unpriced", Usage(input_tokens=10)) is None
    assert book.cost("no-such-deployment", Usage(input_tokens=10)) is None


def test_unknown_price_key_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as exc:
        _project({"a": {"provider": "p", "model": "gpt-4o"}}, {"gpt-5o": _p(1, 1)})
    assert exc.value.key == "prices.gpt-5o"
    assert exc.value.source == "elevenfactor.yaml"
    assert "gpt-4o" in (exc.value.expected or "") and "a" in (exc.value.expected or "")


@pytest.mark.parametrize(
    ("price", "field"),
    [
        (_p(-1, 1), "input_per_mtok"),
        (_p(1, 1, per_request=-0.1), "per_request"),
        ({"input_per_mtok": 1}, "output_per_mtok"),
        ({**_p(1, 1), "currency": 1}, "currency"),
    ],
)
def test_malformed_prices_name_the_key(price: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _project({"a": {"provider": "p", "model": "m"}}, {"a": price})
    assert exc.value.key == f"prices.a.{field}"


def test_a_price_change_is_a_new_version_and_the_same_price_the_same_version() -> None:
    def version(price: dict[str, float], model: str = "m", name: str = "a") -> str:
        book = PriceBook.from_project(
            _project({name: {"provider": "p", "model": model}}, {model: price})
        )
        found = book.price(name)
        assert found is not None
        return found.version

    base = version(_p(1, 2))
    assert len(base) == 16 and int(base, 16) >= 0
    assert version(_p(1, 2)) == base
    assert version(_p(1, 2), name="b") == base  # the deployment name is not part of the price
    assert version(_p(1, 2), model="n") != base
    assert version(_p(1, 3)) != base
    assert version(_p(1, 2, cached_input_per_mtok=0.5)) != base
    assert version(_p(1, 2, per_request=0.01)) != base
    assert version(_p(1, 2, cached_input_per_mtok=1)) == base  # the default made explicit


def test_cost_counts_cached_input_and_per_request() -> None:
    book = PriceBook.from_project(
        _project(
            {"a": {"provider": "p", "model": "m"}},
            {"a": _p(2, 8, cached_input_per_mtok=0.5, per_request=0.001)},
        )
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_input_tokens=400_000)
    # 600k uncached at 2, 400k cached at 0.5, 500k out at 8, plus 0.001
    assert book.cost("a", usage) == pytest.approx(1.2 + 0.2 + 4.0 + 0.001)
    assert call_cost(book, "a", usage) == book.cost("a", usage)
    bill = book.bill("a", usage)
    assert bill.cost == pytest.approx(5.401)
    assert bill.saved == pytest.approx(400_000 * (2 - 0.5) / 1e6)  # the prompt-cache discount
    assert bill.version == book.price("a").version  # type: ignore[union-attr]
    hit = book.bill("a", usage, cache_hit=True)
    assert hit.cost == 0.0
    assert hit.saved == pytest.approx(2.0 + 4.0 + 0.001)  # what the call would have cost
    assert call_cost(book, "a", usage, cache_hit=True) == 0.0
    # more cached tokens than input tokens cannot make the cost negative
    odd = Usage(input_tokens=10, output_tokens=0, cached_input_tokens=50)
    assert book.cost("a", odd) == pytest.approx(10 * 0.5 / 1e6 + 0.001)


def test_worst_case_takes_the_dearest_deployment_and_the_output_cap() -> None:
    book = PriceBook.from_project(
        _project(
            {
                "cheap": {"provider": "p", "model": "c", "max_output_tokens": 1000},
                "dear": {"provider": "p", "model": "d", "params": {"max_tokens": 200}},
                "window": {"provider": "p", "model": "w", "context_window": 3000},
                "bare": {"provider": "p", "model": "b"},
                "free": {"provider": "p", "model": "my-own-model"},
            },
            {
                "cheap": _p(1, 2),
                "dear": _p(10, 20, per_request=0.5),
                "window": _p(1, 1),
                "bare": _p(1, 1),
            },
        )
    )
    assert book.output_cap("cheap") == 1000
    assert book.output_cap("dear") == 200
    assert book.output_cap("window") == 3000
    assert book.output_cap("bare") == DEFAULT_OUTPUT_CAP
    assert book.output_cap("nope") == DEFAULT_OUTPUT_CAP
    # max_tokens given: used for every deployment
    assert book.worst_case(["cheap"], 1000, 500) == pytest.approx((1000 * 1 + 500 * 2) / 1e6)
    # not given: each deployment's own cap
    assert book.worst_case(["cheap"], 1000, None) == pytest.approx((1000 + 1000 * 2) / 1e6)
    assert book.worst_case(["window"], 10, None) == pytest.approx((10 + 3000) / 1e6)
    assert book.worst_case(["bare"], 0, None) == pytest.approx(4096 / 1e6)
    dear = (1000 * 10 + 200 * 20) / 1e6 + 0.5
    assert book.worst_case(["cheap", "dear"], 1000, None) == pytest.approx(dear)
    # unpriced and unknown deployments count 0
    assert book.worst_case(["free", "nope"], 10**6, None) == 0.0
    assert book.worst_case([], 10, 10) == 0.0
    # the worst case is never below what the call then costs, cache discount or not
    usage = Usage(input_tokens=1000, output_tokens=200, cached_input_tokens=900)
    assert (book.cost("dear", usage) or 0) <= book.worst_case(["dear"], 1000, None)


def test_estimate_prompt_tokens_bounds_the_bytes_sent() -> None:
    text = "héllo wörld, ünïcode 🙂 " * 20
    messages: list[Message] = [
        SystemMessage(content="be brief"),
        UserMessage(content=text, name="ann"),
        AssistantMessage(
            content=None, tool_calls=[ToolCall(id="c1", name="add", arguments='{"a": 1}')]
        ),
        ToolMessage(content="2", tool_call_id="c1"),
    ]
    plain = estimate_prompt_tokens(messages, ModelSettings())
    content_bytes = sum(len(t.encode()) for t in ("be brief", text, "ann", "2"))
    assert plain >= content_bytes + 4 * 8
    assert plain >= len(text.encode()) > len(text)  # bytes, not characters
    tool = ToolDefinition(name="add", description="adds", parameters={"type": "object"})
    with_tools = estimate_prompt_tokens(messages, ModelSettings(tools=[tool]))
    assert with_tools > plain + len(tool.model_dump_json())
    # OpenAI's documented overhead is ~4 tokens per message: 8 per message covers it
    assert estimate_prompt_tokens([UserMessage(content="")], ModelSettings()) >= 8


def test_shipped_defaults_parse_and_the_local_model_is_free() -> None:
    prices = shipped_prices()
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3",
                  "o4-mini", "claude-3-5-haiku", "claude-sonnet-4", "claude-opus-4"):  # fmt: skip
        assert prices[model].input_per_mtok > 0
        assert prices[model].output_per_mtok > prices[model].input_per_mtok
    book = price_book(default_project())
    local = book.price("smollm2")
    assert local is not None and local.source == "default"
    assert book.cost("smollm2", Usage(input_tokens=100, output_tokens=100)) == 0.0


def test_price_book_is_cached_per_project() -> None:
    project = default_project()
    assert price_book(project) is price_book(project)
    assert price_book(default_project()) is not price_book(project)


def test_cached_tokens_are_parsed_and_served_in_openai_format() -> None:
    body = {
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 5,
            "total_tokens": 55,
            "prompt_tokens_details": {"cached_tokens": 32},
        },
    }
    response = response_from_openai(body)
    assert response.usage.cached_input_tokens == 32
    out = response_to_openai(response, completion_id="x", created=0, model="m")
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 32}
    assert out["usage"]["total_tokens"] == 55


def test_cost_prices_lists_each_deployment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from elevenfactor.cli import main

    monkeypatch.delenv("ELEVENFACTOR_CONFIG_FILE", raising=False)
    (tmp_path / "elevenfactor.yaml").write_text(
        "providers: {p: {type: test}}\n"
        "models:\n"
        "  a: {provider: p, model: gpt-4o-mini}\n"
        "  b: {provider: p, model: mine}\n"
        "prices: {mine: {input_per_mtok: 1, output_per_mtok: 2, per_request: 0.5}}\n"
    )
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["cost", "prices", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["deployment"]: r for r in json.loads(out.output)}
    assert rows["a"]["source"] == "default" and rows["a"]["input_per_mtok"] == 0.15
    assert rows["b"]["source"] == "prices.mine" and rows["b"]["per_request"] == 0.5
    table = CliRunner().invoke(main, ["cost", "prices"])
    assert table.exit_code == 0 and "prices.mine" in table.output
    (tmp_path / "elevenfactor.yaml").write_text(
        "providers: {p: {type: test}}\nprices: {nothing: {input_per_mtok: 1, output_per_mtok: 2}}\n"
    )
    bad = CliRunner().invoke(main, ["cost", "prices"])
    assert bad.exit_code == 2 and "prices.nothing" in bad.output
