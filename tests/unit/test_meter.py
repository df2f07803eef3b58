"""The meter's pure parts: which deployments a route may reach (what its worst case is priced
at and which ``model:`` budgets match), holds as journaled, downgrade policies, tag rules."""

from __future__ import annotations

import pytest

from elevenfactor.config import parse_project
from elevenfactor.errors import BudgetExceeded, RequestError
from elevenfactor.governance import Hold, check_tags, reachable
from elevenfactor.server._admit import downgrade_target

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {
            name: {"provider": "t", "model": name}
            for name in ("cheap", "strong", "backup", "judge", "lone")
        },
        "routes": {
            "chain": {"chain": ["strong", "backup"]},
            "mix": {"weights": [{"model": "chain", "weight": 3}, {"model": "cheap"}]},
            "tagged": {"chain": ["cheap"], "rules": [{"tags": ["hard"], "use": "mix"}]},
            "escalating": {"chain": ["cheap"], "validator": "json", "escalate_to": "judged"},
            "judged": {"chain": ["judge"]},
        },
        "default_route": "chain",
    }
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lone", ("lone",)),
        ("chain", ("backup", "strong")),
        ("mix", ("backup", "cheap", "strong")),
        ("tagged", ("backup", "cheap", "strong")),
        ("escalating", ("cheap", "judge")),
        ("nothing", ()),
    ],
)
def test_reachable_deployments(name: str, expected: tuple[str, ...]) -> None:
    assert reachable(PROJECT, name) == expected


def test_a_hold_survives_the_journal() -> None:
    hold = Hold("h1", 0.25, (("bud_a", "2026-12-01"), ("bud_b", "total")), 123.5, ("bud_b",))
    assert Hold.from_dict(hold.to_dict()) == hold
    assert Hold("h2", 0.0).empty and not hold.empty


def _refusal(policy: str) -> BudgetExceeded:
    return BudgetExceeded("over", budget="org", on_exceed=policy)


def test_downgrade_targets() -> None:
    known = {"chain", "cheap", "mix"}
    assert downgrade_target(_refusal("downgrade:cheap"), "chain", known) == "cheap"
    assert downgrade_target(_refusal("downgrade:cheap"), "cheap", known) is None  # already
    assert downgrade_target(_refusal("downgrade:gone"), "chain", known) is None  # unknown
    assert downgrade_target(_refusal("refuse"), "chain", known) is None
    assert downgrade_target(_refusal("approve:finance"), "chain", known) is None


def test_tags_are_ids_deduplicated_and_few() -> None:
    assert check_tags(["a", "env:prod", "a"]) == ("a", "env:prod")
    for bad in (["no spaces"], [""], "a,b", [f"t{i}" for i in range(33)]):
        with pytest.raises(RequestError) as caught:
            check_tags(bad, "x-tags")  # type: ignore[arg-type]
        assert caught.value.param == "x-tags"
