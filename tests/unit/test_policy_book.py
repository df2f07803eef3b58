"""Which policies apply to a gateway call or an agent run: attachments by key, team and route,
the default (shipped or the project's own, or none), labels, and references checked at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from elevenfactor.config import GuardsConfig, parse_project
from elevenfactor.errors import ConfigError
from elevenfactor.governance._policy_book import SHIPPED_DEFAULT, PolicyBook, parse_policy_ref

STRICT = "description: strict\nstages:\n  input: [{rule: injection, action: block}]\n"
RELAXED = "description: relaxed\n"
PII = "description: pii\nstages:\n  input: [{rule: pii}]\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "strict.yaml").write_text(STRICT)
    (policies / "relaxed.yaml").write_text(RELAXED)
    (policies / "pii.yaml").write_text(PII)
    return tmp_path


def _book(project: Path, **guards: Any) -> PolicyBook:
    return PolicyBook.load(GuardsConfig.model_validate(guards), project)


def _ids(policies: list[Any]) -> list[str]:
    return [p.id for p in policies]


def test_every_attached_policy_applies_in_order_key_team_route(project: Path) -> None:
    book = _book(
        project,
        keys={"bot": "strict"},
        teams={"research": "relaxed"},
        routes={"gpt-4o": "pii"},
    )
    assert _ids(book.for_call("bot", "research", "gpt-4o")) == ["strict", "relaxed", "pii"]
    assert _ids(book.for_call("bot", None, None)) == ["strict"]
    assert _ids(book.for_call("other-key", "research", "small")) == ["relaxed"]
    assert _ids(book.for_call(None, None, "gpt-4o")) == ["pii"]


def test_a_call_with_nothing_attached_gets_the_default(project: Path) -> None:
    book = _book(project, keys={"bot": "strict"})
    [policy] = book.for_call("someone", "team", "route")
    assert policy.id == "default" and policy.file == SHIPPED_DEFAULT
    assert book.for_call(None, None, None) == [policy]
    # the default is not added on top of an attached policy
    assert _ids(book.for_call("bot", None, None)) == ["strict"]


def test_a_version_attached_twice_applies_once(project: Path) -> None:
    (project / "policies" / "strict-copy.yaml").write_text(STRICT)  # same text: same version
    book = _book(
        project,
        keys={"bot": "strict"},
        teams={"research": "strict"},
        routes={"gpt-4o": "strict-copy"},
    )
    assert _ids(book.for_call("bot", "research", "gpt-4o")) == ["strict"]
    assert _ids(book.for_call(None, "research", None)) == ["strict"]


def test_for_call_answers_from_its_cache_and_callers_cannot_corrupt_it(project: Path) -> None:
    book = _book(project, keys={"bot": "strict"}, routes={"gpt-4o": "pii"})
    first = book.for_call("bot", None, "gpt-4o")
    first.clear()
    assert _ids(book.for_call("bot", None, "gpt-4o")) == ["strict", "pii"]
    # unknown names share one entry: the cache is bounded by the configuration
    for i in range(100):
        book.for_call(f"key-{i}", f"team-{i}", f"route-{i}")
    assert len(book._calls) == 2


def test_the_project_default_replaces_the_shipped_one(project: Path) -> None:
    (project / "policies" / "default.yaml").write_text("description: ours\n")
    book = _book(project)
    [policy] = book.for_call(None, None, None)
    assert policy.file == "policies/default.yaml"
    assert policy.spec.description == "ours"
    assert book.get("default") is policy


def test_a_null_default_applies_nothing(project: Path) -> None:
    book = _book(project, default=None, keys={"bot": "strict"})
    assert book.for_call(None, None, None) == []
    assert book.for_agent(None) == []
    assert book.default == []
    assert _ids(book.for_call("bot", None, None)) == ["strict"]
    assert "default" in book.ids()  # still there to attach by name


def test_another_policy_as_the_default(project: Path) -> None:
    book = _book(project, default="strict")
    assert _ids(book.for_call("k", "t", "r")) == ["strict"]
    assert _ids(book.for_agent(None)) == ["strict"]


def test_an_agents_policy_else_the_default(project: Path) -> None:
    book = _book(project)
    assert _ids(book.for_agent("pii")) == ["pii"]
    assert _ids(book.for_agent(None)) == ["default"]
    with pytest.raises(ConfigError, match="unknown policy 'nope'"):
        book.for_agent("nope")


def test_labels_and_version_prefixes_resolve_to_the_file_on_disk(project: Path) -> None:
    disk = _book(project).get("strict")
    book = _book(
        project,
        keys={"bot": "strict@production"},
        labels={"strict": {"production": disk.version, "old": "0123456789ab"}},
    )
    disk = book.get("strict")
    assert book.for_call("bot", None, None) == [disk]
    assert book.get("strict@production") is disk
    assert book.get(f"strict@{disk.full_hash[:8]}") is disk
    assert book.get(f"strict@{disk.full_hash.upper()}") is disk
    assert book.labels_of("strict", disk.full_hash) == ("production",)
    with pytest.raises(ConfigError, match=r"label 'old' .* is not the file on disk") as info:
        book.get("strict@old")
    assert info.value.hint is not None and "store" in info.value.hint
    with pytest.raises(ConfigError, match="policy 'strict' has no label 'staging'"):
        book.get("strict@staging")
    with pytest.raises(ConfigError, match="not a policy reference"):
        book.get("strict@a@b")


def test_ids_and_all_list_the_policies_on_disk_with_the_default(project: Path) -> None:
    book = _book(project)
    assert book.ids() == ["default", "pii", "relaxed", "strict"]
    assert [p.id for p in book.all()] == book.ids()


@pytest.mark.parametrize(
    ("guards", "key", "message"),
    [
        ({"keys": {"bot": "nope"}}, "guards.keys.bot", "unknown policy 'nope'"),
        ({"teams": {"research": "nope"}}, "guards.teams.research", "unknown policy 'nope'"),
        ({"routes": {"gpt-4o": "nope@prod"}}, "guards.routes.gpt-4o", "unknown policy 'nope'"),
        ({"default": "nope"}, "guards.default", "unknown policy 'nope'"),
        ({"keys": {"bot": "strict@prod"}}, "guards.keys.bot", "has no label 'prod'"),
        (
            {"keys": {"bot": "strict@0123456789ab"}},
            "guards.keys.bot",
            "version 0123456789ab of policy 'strict' is not the file on disk",
        ),
        ({"labels": {"nope": {"prod": "0123456789ab"}}}, "guards.labels.nope", "unknown policy"),
    ],
)
def test_a_reference_to_nothing_is_an_error_naming_the_key(
    project: Path, guards: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyBook.load(GuardsConfig.model_validate(guards), project, source="elevenfactor.yaml")
    assert info.value.key == key
    assert info.value.source == "elevenfactor.yaml"
    assert message in info.value.message
    assert str(info.value).startswith(f"elevenfactor.yaml: {key}: ")


def test_an_unknown_policy_lists_the_known_ones(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _book(project, keys={"bot": "strictt"})
    assert info.value.expected is not None
    assert "default, pii, relaxed, strict" in info.value.expected


def test_an_invalid_policy_file_fails_the_load(project: Path) -> None:
    (project / "policies" / "broken.yaml").write_text("stages: {input: [{rule: sql}]}\n")
    with pytest.raises(ConfigError, match=r"policies/broken.yaml:1: stages.input\[0\].rule"):
        _book(project)


def test_the_policy_directory_comes_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "guards").mkdir()
    (tmp_path / "guards" / "strict.yaml").write_text(STRICT)
    book = PolicyBook.load(GuardsConfig(dir="guards", keys={"bot": "strict"}), tmp_path)
    assert book.for_call("bot", None, None)[0].file == "guards/strict.yaml"
    # without a directory only the shipped default exists
    assert PolicyBook.load(GuardsConfig(dir="missing"), tmp_path).ids() == ["default"]


def test_parse_policy_ref() -> None:
    assert parse_policy_ref("strict") == ("strict", None)
    assert parse_policy_ref("strict@production") == ("strict", "production")
    with pytest.raises(ConfigError):
        parse_policy_ref("")


def test_the_project_file_checks_guards_routes_and_reference_syntax() -> None:
    models = {
        "providers": {"local": {"type": "local"}},
        "models": {"small": {"provider": "local", "model": "x"}},
    }
    config = parse_project({**models, "guards": {"routes": {"small": "strict"}}})
    assert config.guards.routes == {"small": "strict"}
    assert config.guards.default == "default" and config.guards.dir == "policies"
    with pytest.raises(ConfigError) as info:
        parse_project({**models, "guards": {"routes": {"big": "strict"}}}, source="p.yaml")
    assert info.value.key == "guards.routes.big" and "small" in str(info.value.expected)
    with pytest.raises(ConfigError) as info:
        parse_project({"guards": {"keys": {"bot": "strict@@x"}}}, source="p.yaml")
    assert info.value.key == "guards.keys.bot"
    with pytest.raises(ConfigError) as info:
        parse_project({"guards": {"labels": {"strict": {"prod": "XYZ"}}}}, source="p.yaml")
    assert info.value.key == "guards.labels.strict.prod"
    with pytest.raises(ConfigError) as info:
        parse_project({"guards": {"polices": {}}}, source="p.yaml")
    assert info.value.key == "guards.polices"
