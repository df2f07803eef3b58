"""The eval suite file format (factor 11): ``evals/NAME.yaml``.

```yaml
description: Support answers
target: {route: support}           # or {agent: NAME} or {workflow: NAME}
defaults:                          # applied to every case
  expect: [{type: max_latency_ms, value: 5000}]
  repeats: 3                       # runs per case (non-determinism)
  pass_rate: 0.67                  # share of repeats that must pass
  judge_route: judge               # route of `judge` scorers that name none
cases:                             # inline, and/or
  - id: refund
    input: How do I get a refund?  # text, chat messages, or a payload dict
    expect: [{type: contains, value: refund}]
cases_file: support.jsonl          # one case per line, relative to the suite file
```

**promptfoo compatibility**: ``tests:`` (``description``, ``vars``, ``assert``) is read as
cases. A test's input is ``vars.input`` when that is text, else the whole ``vars`` dict. Its
assertions map onto scorers: ``equals`` → ``exact``; ``contains``/``icontains`` →
``contains``; ``not-contains``/``not-icontains`` → ``not_contains``; ``contains-any``,
``contains-all`` (and ``icontains-*``) → ``contains`` (mode ``any``/``all``); ``regex``/
``not-regex`` → ``regex``; ``is-json`` (value: an optional schema) and ``contains-json`` →
``json_schema``; ``cost`` → ``max_cost_usd``; ``latency`` → ``max_latency_ms``;
``llm-rubric`` → ``judge`` (``provider`` is the route). Other types (``javascript``,
``python``, ``similar``, ...) are errors naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from elevenfactor.evals._observed import Scorer
from elevenfactor.evals._scorers import (
    ContainsScorer,
    ExactScorer,
    JsonSchemaScorer,
    NotContainsScorer,
    RegexScorer,
)
from elevenfactor.evals._scorers_calls import (
    MaxCostScorer,
    MaxLatencyScorer,
    MaxTokensScorer,
    TrajectoryScorer,
)
from elevenfactor.evals._scorers_ext import CustomScorer, GuardScorer, JudgeScorer
from elevenfactor.models._messages import Message

__all__ = [
    "CASE_ID",
    "PROMPTFOO_TYPES",
    "Case",
    "Defaults",
    "PromptfooAssert",
    "PromptfooTest",
    "ScorerSpec",
    "Suite",
    "SuiteFile",
    "Target",
]

CASE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$"
"""What a case id may look like."""

ScorerSpec = Annotated[
    ExactScorer
    | ContainsScorer
    | NotContainsScorer
    | RegexScorer
    | JsonSchemaScorer
    | TrajectoryScorer
    | MaxCostScorer
    | MaxLatencyScorer
    | MaxTokensScorer
    | GuardScorer
    | JudgeScorer
    | CustomScorer,
    Field(discriminator="type"),
]
"""One entry of ``expect:``, tagged by ``type:``."""

_SPEC: TypeAdapter[Any] = TypeAdapter(ScorerSpec)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Target(_Model):
    """What the suite's cases run against: exactly one of a route, an agent or a workflow."""

    route: str | None = Field(default=None, min_length=1)
    agent: str | None = Field(default=None, min_length=1)
    workflow: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [k for k in ("route", "agent", "workflow") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `route`, `agent` or `workflow`")
        return self

    @property
    def kind(self) -> str:
        """``route``, ``agent`` or ``workflow``."""
        return next(k for k in ("route", "agent", "workflow") if getattr(self, k) is not None)

    @property
    def name(self) -> str:
        """The route's, agent's or workflow's name."""
        return str(getattr(self, self.kind))


class Defaults(_Model):
    """What applies to every case unless the case says otherwise."""

    expect: list[ScorerSpec] = Field(default_factory=list)
    repeats: int = Field(default=1, ge=1, le=100)
    pass_rate: float = Field(default=1.0, ge=0, le=1)
    judge_route: str | None = Field(default=None, min_length=1)


class Case(_Model):
    """One case: an input (text, chat messages or a payload dict), template ``vars`` and the
    scorers its output must pass."""

    id: str | None = Field(default=None, pattern=CASE_ID)
    description: str = ""
    input: str | list[Message] | dict[str, Any]
    vars: dict[str, Any] = Field(default_factory=dict)
    expect: list[ScorerSpec] = Field(default_factory=list)
    repeats: int | None = Field(default=None, ge=1, le=100)
    pass_rate: float | None = Field(default=None, ge=0, le=1)
    tags: list[str] = Field(default_factory=list)

    @property
    def key(self) -> str:
        """The case's id (the loader gives every case one)."""
        return self.id or "?"

    def input_text(self) -> str:
        """The input as text: itself, the last user message, or the payload's JSON."""
        if isinstance(self.input, str):
            return self.input
        if isinstance(self.input, dict):
            return json.dumps(self.input, ensure_ascii=False, sort_keys=True, default=str)
        users = [m.content for m in self.input if m.role == "user"]
        return str(users[-1]) if users else ""


_SIMPLE: dict[str, tuple[str, dict[str, Any]]] = {
    "equals": ("exact", {}),
    "contains": ("contains", {}),
    "icontains": ("contains", {"ignore_case": True}),
    "contains-any": ("contains", {"mode": "any"}),
    "icontains-any": ("contains", {"mode": "any", "ignore_case": True}),
    "contains-all": ("contains", {"mode": "all"}),
    "icontains-all": ("contains", {"mode": "all", "ignore_case": True}),
    "not-contains": ("not_contains", {}),
    "not-icontains": ("not_contains", {"ignore_case": True}),
}
PROMPTFOO_TYPES = (
    *_SIMPLE,
    "regex",
    "not-regex",
    "is-json",
    "contains-json",
    "cost",
    "latency",
    "llm-rubric",
)
"""The promptfoo assertion types read (see the module docstring for the mapping)."""


class PromptfooAssert(_Model):
    """A promptfoo assertion, read as one of our scorers."""

    type: str
    value: Any = None
    threshold: float | None = None
    provider: str | None = None
    metric: str | None = None

    @model_validator(mode="after")
    def _maps(self) -> PromptfooAssert:
        if self.type not in PROMPTFOO_TYPES:
            raise ValueError(
                f"unsupported promptfoo assertion type {self.type!r} (supported: "
                + ", ".join(PROMPTFOO_TYPES)
                + ")"
            )
        self.to_spec()
        return self

    def _spec_dict(self) -> dict[str, Any]:
        t, v = self.type, self.value
        if t in _SIMPLE:
            kind, extra = _SIMPLE[t]
            return {"type": kind, "value": v, **extra}
        if t in ("regex", "not-regex"):
            return {"type": "regex", "pattern": v, "negate": t == "not-regex"}
        if t in ("is-json", "contains-json"):
            return {"type": "json_schema", "schema": v, "find": t == "contains-json"}
        if t in ("cost", "latency"):
            kind = "max_cost_usd" if t == "cost" else "max_latency_ms"
            return {"type": kind, "value": self.threshold}
        spec = {"type": "judge", "rubric": v, "route": self.provider}
        return spec if self.threshold is None else {**spec, "threshold": self.threshold}

    def to_spec(self) -> Scorer:
        """Our scorer for this assertion (``ValueError`` when its value does not fit)."""
        spec = {k: v for k, v in self._spec_dict().items() if v is not None}
        if self.metric:
            spec["name"] = self.metric
        try:
            out: Scorer = _SPEC.validate_python(spec)
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc)}
            raise ValueError(f"{self.type!r} assertion: {first['msg']}") from None
        return out


class PromptfooTest(_Model):
    """A promptfoo test case."""

    description: str = ""
    vars: dict[str, Any] = Field(default_factory=dict)
    assert_: list[PromptfooAssert] = Field(default_factory=list, alias="assert")

    def to_case(self) -> Case:
        """The test as a ``Case``."""
        given = self.vars.get("input")
        return Case(
            description=self.description,
            input=given if isinstance(given, str) else dict(self.vars),
            vars=dict(self.vars),
            expect=[a.to_spec() for a in self.assert_],
        )


class SuiteFile(_Model):
    """The content of a suite file."""

    id: str | None = None
    description: str = ""
    target: Target
    defaults: Defaults = Field(default_factory=Defaults)
    cases: list[Case] = Field(default_factory=list)
    cases_file: str | None = Field(default=None, min_length=1)
    tests: list[PromptfooTest] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Suite:
    """A loaded suite: its id (the file name without ``.yaml``), version (12 hex digits of
    the hash of the suite and its cases file), and every case with an id."""

    id: str
    version: str
    full_hash: str
    file: str
    description: str
    target: Target
    defaults: Defaults
    cases: tuple[Case, ...]

    def case(self, case_id: str) -> Case:
        """The case with id ``case_id`` (``KeyError`` if none)."""
        for c in self.cases:
            if c.id == case_id:
                return c
        raise KeyError(case_id)

    def scorers_for(self, case: Case) -> list[Scorer]:
        """The suite's default scorers, then the case's own."""
        return [*self.defaults.expect, *case.expect]

    def repeats_for(self, case: Case) -> int:
        """How many times ``case`` runs."""
        return case.repeats if case.repeats is not None else self.defaults.repeats

    def pass_rate_for(self, case: Case) -> float:
        """The share of its repeats ``case`` must pass."""
        return case.pass_rate if case.pass_rate is not None else self.defaults.pass_rate

    def thresholds(self) -> dict[str, float]:
        """Each case's pass-rate threshold, by id (what a ``SuiteResult`` records)."""
        return {c.key: self.pass_rate_for(c) for c in self.cases}

    def with_tags(self, tags: Sequence[str]) -> tuple[Case, ...]:
        """The cases carrying any of ``tags`` (all cases when none given)."""
        if not tags:
            return self.cases
        return tuple(c for c in self.cases if set(tags) & set(c.tags))
