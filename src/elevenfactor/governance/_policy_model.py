"""The schema of a guard policy file (``policies/NAME.yaml``).

A policy lists, per stage, the rules that inspect content there and what each does when it
fires; the circuit breakers of runs and agents that use it; and what happens to redacted
originals, stored payloads and logs. One schema validates the files, feeds ``guard show`` and
the generated reference.

```yaml
description: Support bot
escalate: {group: security, timeout: 3600}
stages:
  input:
    - {rule: pii, action: redact}            # placeholders: the provider never sees them
    - {rule: secrets, action: block}
    - {rule: injection, action: block, threshold: 0.8}
  retrieved:
    - {rule: injection, action: escalate}
  tool_call:
    - {rule: sql, action: escalate, group: dba}
    - {rule: paths, root: /srv/data}
    - {rule: urls, allow: ["https://*.example.com/"]}
    - {rule: money, max: 500, currency: EUR, action: escalate}
    - {rule: tools, deny: ["*.delete*"]}
    - {rule: args, tools: {billing.refund: {amount: {max: 100}}}}
  output:
    - {rule: secrets, action: block}
    - {rule: phrases, deny: ["internal use only"]}
    - {rule: length, max_chars: 8000}
breakers:
  run: {max_cost_usd: 0.50, max_same_tool_call: 3, max_same_error: 3}
  agent: {window_seconds: 900, min_runs: 10, max_error_rate: 0.5}
```
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from elevenfactor.governance._guard_args import ArgRule
from elevenfactor.governance._guard_types import Action, Stage
from elevenfactor.governance._policy_breakers import (
    AgentBreaker,
    BreakerConfig,
    EscalateConfig,
    RunBreaker,
)

__all__ = [
    "AgentBreaker",
    "ArgsRule",
    "BreakerConfig",
    "ContentRule",
    "EscalateConfig",
    "InjectionRule",
    "JsonSchemaRule",
    "LengthRule",
    "MoneyRule",
    "PathsRule",
    "PhrasesRule",
    "PiiRule",
    "Policy",
    "PolicyFile",
    "RelevanceRule",
    "RuleSpec",
    "RunBreaker",
    "SecretsRule",
    "SqlRule",
    "StagesConfig",
    "ToolsRule",
    "TopicsRule",
    "UrlsRule",
    "rule_stages",
]

_Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")]
_Pattern = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Strict):
    """What every rule has: an action when it fires, an optional name verdicts carry (default:
    the rule kind, e.g. ``pii``), and a reviewer group for ``escalate`` (default: the policy's)."""

    action: Action = Field(default="block", description="What happens when the rule fires.")
    name: _Name | None = Field(
        default=None, description="The rule's name in verdicts and errors; default: `rule`."
    )
    group: _Name | None = Field(
        default=None,
        description="Reviewer group for `escalate`; default: the policy's `escalate.group`.",
    )

    @property
    def label(self) -> str:
        """The name verdicts carry."""
        return self.name or str(getattr(self, "rule", "rule"))


class PiiRule(_Rule):
    """Personal data: e-mail, phone, payment card (Luhn), IBAN (mod-97), national ids, IP."""

    rule: Literal["pii"]
    action: Action = Field(default="redact", description="What happens when the rule fires.")
    kinds: list[str] | None = Field(
        default=None, description="Kinds to look for (see `guard kinds`); default: all."
    )
    mode: Literal["placeholder", "mask"] = Field(
        default="placeholder",
        description="`placeholder`: reversible tokens (the model round trip restores the "
        "value for the user); `mask`: irreversibly replaced. Rules at `output` always mask.",
    )


class SecretsRule(_Rule):
    """API keys and tokens (known prefixes, JWT, PEM, auth headers, keyword + entropy)."""

    rule: Literal["secrets"]
    kinds: list[str] | None = Field(default=None, description="Kinds to look for; default: all.")
    mode: Literal["placeholder", "mask"] = Field(
        default="mask", description="How `redact` rewrites a secret."
    )


class InjectionRule(_Rule):
    """Prompt injection and jailbreak attempts: rules plus the local classifier, on text
    normalised against homoglyphs, invisible characters and base64-wrapped payloads."""

    rule: Literal["injection"]
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Classifier probability at which the rule fires."
    )
    classifier: bool = Field(
        default=True, description="Use the local classifier besides the rules."
    )


class PhrasesRule(_Rule):
    """Denied phrases (case-insensitive, on normalised text) or regular expressions."""

    rule: Literal["phrases"]
    deny: list[_Pattern] = Field(default_factory=list, description="Phrases that must not appear.")
    patterns: list[_Pattern] = Field(
        default_factory=list, description="Regular expressions that must not match."
    )

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns[{i}] is not a valid regular expression: {exc}") from exc
        return value


class TopicsRule(_Rule):
    """Denied topics, each a list of keywords or phrases; a topic fires when ``min_hits`` of
    its keywords appear."""

    rule: Literal["topics"]
    deny: dict[_Name, list[_Pattern]] = Field(description="Topic name to its keywords.")
    min_hits: int = Field(default=1, ge=1, description="Distinct keywords that make a hit.")


class LengthRule(_Rule):
    """Content longer than a limit."""

    rule: Literal["length"]
    max_chars: int = Field(ge=1, description="Most characters allowed.")


class JsonSchemaRule(_Rule):
    """The output must be JSON valid against ``schema`` (output stage only)."""

    rule: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema", description="A JSON Schema (2020-12).")


class RelevanceRule(_Rule):
    """An on-task check of the output by a model route (output stage only)."""

    rule: Literal["relevance"]
    action: Action = Field(default="monitor", description="What happens when the rule fires.")
    route: str = Field(description="The route or model that judges.")
    task: str = Field(default="", description="What the assistant is for, given to the judge.")
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="The judge's relevance score below which it fires."
    )


class ToolsRule(_Rule):
    """Tool allow and deny lists (shell-style patterns; deny wins; names are compared folded)."""

    rule: Literal["tools"]
    allow: list[_Pattern] = Field(default_factory=lambda: ["*"], description="Allowed tools.")
    deny: list[_Pattern] = Field(default_factory=list, description="Denied tools.")


class ArgsRule(_Rule):
    """Argument predicates per tool pattern: ranges, lengths, regexes, enums, required."""

    rule: Literal["args"]
    tools: dict[_Pattern, dict[str, ArgRule]] = Field(
        description="Tool name pattern to {dotted argument path: predicate}."
    )


class _ArgsScoped(_Rule):
    args: list[_Pattern] = Field(
        default_factory=list,
        description="Argument paths to inspect (dotted, `*` for any key); default: the "
        "rule's usual names.",
    )
    tools: list[_Pattern] = Field(
        default_factory=lambda: ["*"], description="Tools the rule applies to (patterns)."
    )


class SqlRule(_ArgsScoped):
    """SQL that destroys data: DROP, TRUNCATE, DELETE/UPDATE without a real WHERE (parsed)."""

    rule: Literal["sql"]
    dialect: str | None = Field(
        default=None, description="sqlglot dialect; default: every common reading."
    )


class PathsRule(_ArgsScoped):
    """File paths outside a sandbox root (after `..`, symlinks, encodings)."""

    rule: Literal["paths"]
    root: str = Field(description="The sandbox root.")


class UrlsRule(_ArgsScoped):
    """URLs outside an allow-list (scheme, host, port, path prefix)."""

    rule: Literal["urls"]
    allow: list[_Pattern] = Field(description="Allowed URL patterns.")


class MoneyRule(_ArgsScoped):
    """Money amounts above a threshold."""

    rule: Literal["money"]
    max: Decimal = Field(ge=0, description="The largest amount allowed.")
    currency: str | None = Field(
        default=None, description="ISO code the threshold is in; amounts in others fire."
    )


ContentRule = PiiRule | SecretsRule | InjectionRule | PhrasesRule | TopicsRule | LengthRule
RuleSpec = Annotated[
    PiiRule
    | SecretsRule
    | InjectionRule
    | PhrasesRule
    | TopicsRule
    | LengthRule
    | JsonSchemaRule
    | RelevanceRule
    | ToolsRule
    | ArgsRule
    | SqlRule
    | PathsRule
    | UrlsRule
    | MoneyRule,
    Field(discriminator="rule"),
]

_CONTENT: frozenset[Stage] = frozenset({"input", "retrieved", "tool_result", "output"})
_TOOL_CALL: frozenset[Stage] = frozenset({"tool_call"})
_OUTPUT: frozenset[Stage] = frozenset({"output"})
_REDACTING = frozenset({"pii", "secrets", "phrases"})


def rule_stages(rule: str) -> frozenset[Stage]:
    """The stages a rule kind may stand at."""
    if rule in {"tools", "args", "sql", "paths", "urls", "money"}:
        return _TOOL_CALL
    if rule in {"json_schema", "relevance"}:
        return _OUTPUT
    if rule in {"pii", "secrets", "phrases", "length"}:
        return _CONTENT | _TOOL_CALL
    return _CONTENT


class StagesConfig(_Strict):
    """The rules at each stage, in order (they run concurrently; the most severe action wins,
    the earliest rule on a tie)."""

    input: list[RuleSpec] = Field(default_factory=list, description="User messages.")
    retrieved: list[RuleSpec] = Field(
        default_factory=list, description="Retrieved passages and memories."
    )
    tool_call: list[RuleSpec] = Field(
        default_factory=list, description="A tool's name and arguments before it runs."
    )
    tool_result: list[RuleSpec] = Field(
        default_factory=list, description="What a tool (or MCP server) returned."
    )
    output: list[RuleSpec] = Field(default_factory=list, description="The answer.")

    @model_validator(mode="after")
    def _placed(self) -> StagesConfig:
        for stage in ("input", "retrieved", "tool_call", "tool_result", "output"):
            for i, spec in enumerate(getattr(self, stage)):
                if stage not in rule_stages(spec.rule):
                    allowed = ", ".join(sorted(rule_stages(spec.rule)))
                    raise ValueError(
                        f"{stage}[{i}]: rule {spec.rule!r} cannot stand at {stage} "
                        f"(it can at: {allowed})"
                    )
                if spec.action == "redact" and spec.rule not in _REDACTING:
                    raise ValueError(
                        f"{stage}[{i}]: rule {spec.rule!r} cannot redact (only "
                        f"{', '.join(sorted(_REDACTING))} can); use block, escalate or monitor"
                    )
        return self

    def rules(self, stage: Stage) -> list[Any]:
        """The rules at ``stage``."""
        return list(getattr(self, stage))


class PolicyFile(_Strict):
    """The content of ``policies/NAME.yaml``."""

    id: _Name | None = Field(default=None, description="Must equal the file name when given.")
    description: str = Field(default="", max_length=2000)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    escalate: EscalateConfig = Field(default_factory=EscalateConfig)
    breakers: BreakerConfig = Field(default_factory=BreakerConfig)
    on_error: Literal["block", "allow"] = Field(
        default="block",
        description="A guard that fails (an exception, a judge route down): `block` fails "
        "closed, `allow` records it and lets the content through.",
    )
    keep_original: bool = Field(
        default=False,
        description="Keep the original of redacted content in the journal (runs) and call "
        "records (gateway); otherwise only the redacted text is stored.",
    )


class Policy(BaseModel):
    """A loaded policy: its id, version (12 hex digits of the SHA-256 of the file) and rules."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    version: str
    full_hash: str
    file: str
    source: str
    spec: PolicyFile

    @property
    def ref(self) -> str:
        """``id@version``: what verdicts, journal steps and call records carry."""
        return f"{self.id}@{self.version}"
