"""The project file's ``evals:``: where eval suites live, and the **online evaluation** rules
that score a share of production runs after they end (see ``EvalsConfig``)."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from elevenfactor.config._models import _Strict
from elevenfactor.config._prompts import PROMPT_NAME

__all__ = ["RULE_NAME", "EvalsConfig", "OnlineRule"]

RULE_NAME = PROMPT_NAME
"""A rule's name: letters, digits, ``_``, ``.`` and ``-`` (not first), at most 100."""
_AGENT = r"^[A-Za-z0-9_.*?\[\]!\-]{1,200}$"
_TAG = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
EndStatus = Literal["succeeded", "failed", "cancelled"]
"""The end states a rule may sample."""


def _scorer_errors(specs: list[dict[str, Any]]) -> None:
    """Raise ``ValueError`` naming the first scorer spec that does not validate."""
    from elevenfactor.evals._online_specs import check_scorer_specs  # the evals layer

    check_scorer_specs(specs)


class OnlineRule(_Strict):
    """One online evaluation rule (see ``evals:``)."""

    name: str = Field(
        pattern=RULE_NAME,
        description="The rule's name, recorded with each score (`metadata.rule`) and in the "
        "scorer's identity `scorer:<name>`.",
    )
    agent: str = Field(
        pattern=_AGENT,
        description="The agent or program whose runs are sampled: a name or a shell-style "
        "pattern (`support*`). `mcp.tool` runs match only when named exactly.",
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Only runs carrying every one of these tags.",
    )
    sample: float = Field(
        ge=0, le=1, allow_inf_nan=False, description="Share of matching runs scored (0 to 1)."
    )
    status: list[EndStatus] = Field(
        default_factory=lambda: list[EndStatus](["succeeded"]),
        min_length=1,
        description="The end states a run must have to be sampled.",
    )
    children: bool = Field(
        default=False, description="Also sample child runs (delegations, hand-offs)."
    )
    expect: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Scorers, with the specs of an eval suite's `expect:` (`type:` exact, "
        "contains, not_contains, regex, json_schema, trajectory, max_cost_usd, "
        "max_latency_ms, max_tokens, guard, judge, custom). Applied after the suite's.",
    )
    suite: str | None = Field(
        default=None,
        pattern=RULE_NAME,
        description="An eval suite (`<evals.dir>/<suite>.yaml`) whose `defaults.expect` and "
        "`defaults.judge_route` the rule uses.",
    )
    judge_route: str | None = Field(
        default=None,
        min_length=1,
        description="The route of `judge` scorers that name none (else the suite's).",
    )
    queue: str = Field(
        default="default",
        pattern=_TAG,
        description="The queue scoring runs go to (give scorers their own workers).",
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not re.match(_TAG, tag):
                raise ValueError(f"{tag!r} is not a valid tag")
        return value

    @field_validator("expect")
    @classmethod
    def _scorers(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _scorer_errors(value)
        return value

    @model_validator(mode="after")
    def _something_to_score(self) -> OnlineRule:
        if not self.expect and self.suite is None:
            raise ValueError(f"rule {self.name!r} needs `expect:` scorers or a `suite:`")
        if self.suite is None and self.judge_route is None:
            for i, spec in enumerate(self.expect):
                if spec.get("type") == "judge" and not spec.get("route"):
                    raise ValueError(
                        f"rule {self.name!r}: expect[{i}] is a judge scorer without a `route`;"
                        " give it one or set the rule's `judge_route`"
                    )
        return self

    def judge_routes(self) -> list[tuple[str, str]]:
        """``(key, route)`` of every route the rule names."""
        out: list[tuple[str, str]] = []
        if self.judge_route is not None:
            out.append(("judge_route", self.judge_route))
        for i, spec in enumerate(self.expect):
            route = spec.get("route") if spec.get("type") == "judge" else None
            if isinstance(route, str):
                out.append((f"expect[{i}].route", route))
        return out


class EvalsConfig(_Strict):
    """Where eval suites live, and the online evaluation rules.

    Each rule picks the runs of an agent (a name or a shell-style pattern such as ``support*``;
    with ``tags``, only runs carrying all of them) that ended in one of ``status``, and samples
    ``sample`` of them: the decision is a hash of the rule's name and the run's id, so every
    process agrees and a retried run's end never samples it twice. A sampled run gets a durable
    scoring run (the built-in program ``elevenfactor.online_eval``, owned by ``scorer:<rule>``
    in the run's organisation, on ``queue``): it reads the run as evals read it (result, tool
    calls, tokens, cost, latency), applies the rule's scorers (``expect``, with the same scorer
    specs as an eval suite; or ``suite``: the suite's ``defaults.expect`` and ``judge_route``)
    and writes one feedback row per scorer on the run (``source: online``). A judge scorer's
    model call is a metered call of the scoring run (budgets, kill switches, cost reports, agent
    ``elevenfactor.online_eval``). Scoring runs, eval runs (tagged ``eval:<suite>``) and child
    runs (unless ``children: true``) are never sampled. Runs cancelled before a worker picked
    them up never end on a worker and are not sampled.

    ```yaml
    evals:
      online:
        - name: support-quality
          agent: support
          sample: 0.1
          status: [succeeded]
          judge_route: judge
          expect:
            - {type: contains, value: refund}
            - {type: judge, rubric: "Polite and accurate"}
        - name: billing-suite
          agent: "billing*"
          tags: [production]
          sample: 0.05
          suite: billing            # evals/billing.yaml's defaults.expect
    ```
    """

    dir: str = Field(
        default="evals", description="Where the eval suite files live, relative to the project."
    )
    online: list[OnlineRule] = Field(
        default_factory=list,
        description="Online evaluation rules: which finished runs are scored, and how.",
    )

    @field_validator("online")
    @classmethod
    def _unique(cls, value: list[OnlineRule]) -> list[OnlineRule]:
        seen: set[str] = set()
        for rule in value:
            if rule.name in seen:
                raise ValueError(f"two online rules are named {rule.name!r}")
            seen.add(rule.name)
        return value

    def unknown_reference(
        self, models: Collection[str], routes: Collection[str]
    ) -> tuple[str, str, list[str]] | None:
        """The first judge route of an online rule that names neither a model nor a route,
        as (key, name, known names), or None."""
        targets = set(models) | set(routes)
        for i, rule in enumerate(self.online):
            for key, route in rule.judge_routes():
                if route not in targets:
                    return f"evals.online[{i}].{key}", route, sorted(targets)
        return None
