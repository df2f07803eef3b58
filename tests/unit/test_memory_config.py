"""The project file's ``memory:``: the documented example parses; mistakes name the key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from elevenfactor.config import parse_project
from elevenfactor.errors import ConfigError

EXAMPLE = """
memory:
  embedder: local
  recall: {k: 5, min_score: 0.3, weights: {similarity: 0.7, recency: 0.2, importance: 0.1}}
  half_life_days: 30
  spaces:
    team-notes: {grants: {writer-agent: [read, write], reader-agent: [read]}}
  extract: {route: default, enabled: false}
"""


def test_the_documented_example() -> None:
    memory = parse_project(yaml.safe_load(EXAMPLE)).memory
    assert memory.recall.k == 5 and memory.recall.weights.similarity == 0.7
    assert memory.spaces["team-notes"].grants == {
        "writer-agent": ["read", "write"],
        "reader-agent": ["read"],
    }
    assert memory.extract.enabled is False and memory.supersede_threshold == 0.92
    assert memory.tool.write == ["user", "agent"] and memory.default_ttl_days is None


@pytest.mark.parametrize(
    ("bad", "key", "words"),
    [
        ({"spaces": {"a b": {}}}, "memory.spaces", "space name"),
        ({"spaces": {"s": {"grants": {"x y": ["read"]}}}}, "memory.spaces.s.grants", "agent"),
        ({"spaces": {"s": {"grants": {"a": ["admin"]}}}}, "memory.spaces.s.grants", "read"),
        ({"tool": {"read": ["team:x"]}}, "memory.tool.read", "space:NAME"),
        ({"tool": {"write": []}}, "memory.tool.write", "at least 1"),
        ({"recall": {"weights": {"similarity": 0, "recency": 0, "importance": 0}}},
         "memory.recall.weights", "above 0"),
        ({"recall": {"k": 0}}, "memory.recall.k", "greater than or equal"),
        ({"half_life_days": 0}, "memory.half_life_days", "greater than"),
        ({"supersede_threshold": 1.5}, "memory.supersede_threshold", "less than"),
        ({"extract": {"scope": "space"}}, "memory.extract.scope", "user"),
        ({"colour": "red"}, "memory.colour", "unknown key"),
    ],
)  # fmt: skip
def test_mistakes_name_the_key(bad: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_project({"memory": bad})
    assert key in str(err.value) and words in str(err.value)
