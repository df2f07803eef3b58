"""Agent declarations: ``agents/*.yaml`` in the project (or ``AgentSpec`` in Python).

```yaml
name: support
instructions: You answer billing questions. Use the tools; never guess amounts.
# or: instructions_file: prompts/support.md
model: default                 # a route or model from elevenfactor.yaml
tools:
  - toolset: billing           # a `toolsets:` entry (Python functions) or an `mcp_servers:` one
    allow: [lookup_*, refund]
    prefix: billing_
    timeout: 10
delegates: [researcher]        # other agents, offered as tools (agent as a tool)
handoffs: [escalations]        # other agents this one may hand the conversation to
limits: {max_steps: 8, max_tool_calls: 16, max_wall_time: 120}
policy: support@production     # guard policy (policies/support.yaml); default: guards.default
output_schema: {type: object, properties: {answer: {type: string}}, required: [answer]}
approval:
  - tools: [refund]            # shell-style patterns over tool names
    risk: [write, destructive]
    when: [{arg: amount, op: ">", value: 100}]
    group: finance
    timeout: 3600
    on_timeout: reject         # or approve, or escalate:<group>
  - before_model: true         # gate every model request
```
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from elevenfactor.config._guards import POLICY_REF
from elevenfactor.context._spec import ContextSpec
from elevenfactor.errors import ConfigError
from elevenfactor.runtime._loader import report

__all__ = [
    "AgentLimits",
    "AgentMemory",
    "AgentRetrieval",
    "AgentSpec",
    "ApprovalRule",
    "ArgPredicate",
    "ToolRef",
    "load_agents",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolRef(_Strict):
    """Which toolset an agent uses, and how much of it."""

    toolset: str = Field(description="A `toolsets:` or `mcp_servers:` name in the project file.")
    allow: list[str] | None = Field(
        default=None, description="Tool names or shell-style patterns to offer; None: all."
    )
    deny: list[str] = Field(
        default_factory=list, description="Tool names or patterns to withhold (beats allow)."
    )
    prefix: str | None = Field(
        default=None, description="Prepended to the tool names the model sees."
    )
    timeout: float | None = Field(default=None, gt=0, description="Seconds per tool call.")


class AgentLimits(_Strict):
    """Bounds on one run of the agent."""

    max_steps: int = Field(default=10, ge=1, description="Model requests per run.")
    max_tool_calls: int = Field(default=32, ge=0, description="Tool calls per run.")
    max_wall_time: float | None = Field(default=300.0, gt=0, description="Seconds per run.")


class ArgPredicate(_Strict):
    """A condition on one tool argument (a dotted path into the arguments)."""

    arg: str = Field(description="Dotted path to the argument (list indexes as numbers).")
    op: Literal[
        "==", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "matches", "exists"
    ] = Field(
        description="Comparison of the argument with value: in/not_in test membership in value, "
        "contains tests value in the argument, matches is a regex search, exists needs no value."
    )
    value: Any = Field(default=None, description="The operand to compare the argument with.")


class ApprovalRule(_Strict):
    """When a human must approve. The first rule that matches a call decides."""

    tools: list[str] | None = Field(default=None, description="Tool name patterns.")
    risk: list[Literal["read", "write", "destructive"]] | None = Field(
        default=None, description="Tool risk levels the rule covers; None: any."
    )
    when: list[ArgPredicate] = Field(default_factory=list, description="All must hold.")
    before_model: bool = Field(default=False, description="Gate model requests instead.")
    group: str | None = Field(default=None, description="Reviewer group that may decide.")
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds to wait for a decision; None: no limit."
    )
    on_timeout: str = Field(
        default="reject", description="On timeout: reject, approve or escalate:<group>."
    )

    @model_validator(mode="after")
    def _shape(self) -> ApprovalRule:
        if self.before_model and (self.tools or self.risk or self.when):
            raise ValueError("a before_model rule takes no tools, risk or when")
        if not (
            self.on_timeout in ("reject", "approve") or self.on_timeout.startswith("escalate:")
        ):
            raise ValueError("on_timeout is reject, approve or escalate:<group>")
        return self


class AgentMemory(_Strict):
    """What the agent remembers across runs (the project's ``memory:`` configures how)."""

    recall: bool = Field(
        default=False,
        description="Recall the memories that best match the run's input into the context's "
        "memory section before the first model request.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["user", "agent"],
        description="Where recall looks: `user` (the run's user), `agent` (this agent), "
        "`space:NAME` (a shared space: needs a grant).",
    )
    tool: bool = Field(
        default=False, description="Offer the remember, recall and forget_memory tools."
    )
    extract: bool | None = Field(
        default=None,
        description="After the run answers, remember the facts a model finds in its "
        "conversation; None: the project's memory.extract.enabled.",
    )


class AgentRetrieval(_Strict):
    """What the agent retrieves for each run's input (an index of ``retrieval.indexes``)."""

    index: str = Field(description="The index to search (built with `elevenfactor index build`).")
    k: int = Field(default=5, ge=1, le=50, description="Passages retrieved per run.")
    mode: Literal["hybrid", "vector", "bm25"] = Field(
        default="hybrid", description="BM25 and vectors fused by reciprocal rank, or one alone."
    )
    filters: dict[str, str] = Field(
        default_factory=dict,
        description="Metadata filters: `path` (a prefix of the document path) or any metadata "
        "key (front matter, `ext`, `title`) = value.",
    )
    grounding_route: str | None = Field(
        default=None,
        description="A route that checks the cited passages support the answer (journaled; an "
        "unsupported answer is flagged in the result); None: no check.",
    )


class AgentSpec(_Strict):
    """One agent."""

    name: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", description="Agent name; defaults to the file name."
    )
    description: str = Field(
        default="", description="What the agent does; shown when offered as a delegate or handoff."
    )
    instructions: str = Field(default="", description="The system prompt.")
    instructions_file: str | None = Field(
        default=None, description="A text file (relative to the project) to use instead."
    )
    prompt: str | None = Field(
        default=None,
        description="A versioned prompt file instead of instructions: `support` (the file "
        "now), `support@production` (a label of `prompts.labels`) or `support@3f2a9c1e0b7d` "
        "(a version). Rendered with prompt_inputs at the start of each run; the version is "
        "recorded with the run and each of its model calls.",
    )
    prompt_inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Inputs of the prompt; a run's input may add or override them with its own "
        '`{"prompt_inputs": {...}}`.',
    )
    context: ContextSpec | None = Field(
        default=None,
        description="How the model's context window is shared among instructions, tools, "
        "memory, passages, history and the input; None: the defaults when the model's window "
        "is known, else the messages go as they are.",
    )
    retrieval: AgentRetrieval | None = Field(
        default=None, description="Passages retrieved for each run's input (RAG), with citations."
    )
    memory: AgentMemory | None = Field(
        default=None, description="Long-term memory: recall, memory tools, extraction."
    )
    model: str = Field(default="default", description="A route or model from the project file.")
    tools: list[ToolRef] = Field(default_factory=list)
    delegates: list[str] = Field(
        default_factory=list, description="Other agents offered to this one as tools."
    )
    handoffs: list[str] = Field(
        default_factory=list, description="Other agents this one may hand the conversation to."
    )
    limits: AgentLimits = Field(default_factory=AgentLimits)
    policy: str | None = Field(
        default=None,
        pattern=POLICY_REF,
        description="The guard policy of its runs: `support` (policies/support.yaml now), "
        "`support@production` (a label of `guards.labels`) or `support@3f2a9c1e0b7d` (a "
        "version). Its rules guard each stage of the run and its `breakers` stop a run "
        "(`breakers.run`, with `limits`: the tighter wins) and pause the agent after too many "
        "failed or blocked runs (`breakers.agent`); None: the project's `guards.default`.",
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the final output must satisfy; None: free text."
    )
    approval: list[ApprovalRule] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict, description="Model parameters.")


def _error(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return ConfigError(message, source=source, key=key)


def _load_one(path: Path, directory: Path) -> AgentSpec:
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "unknown position"
        raise ConfigError(f"not valid YAML at {where}", source=source) from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    try:
        spec = AgentSpec.model_validate(data)
    except ValidationError as exc:
        raise _error(exc, source) from None
    if spec.prompt is not None and (spec.instructions or spec.instructions_file):
        raise ConfigError("give a prompt or instructions, not both", source=source, key="prompt")
    if spec.instructions_file is None:
        return spec
    prompt = directory.parent / spec.instructions_file
    if spec.instructions:
        raise ConfigError(
            "give instructions or instructions_file, not both",
            source=source,
            key="instructions_file",
        )
    try:
        text = prompt.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {prompt}: {exc.strerror}", source=source, key="instructions_file"
        ) from None
    return spec.model_copy(update={"instructions": text})


def _references(
    spec: AgentSpec,
    source: str,
    agents: set[str],
    known_toolsets: Mapping[str, object] | None,
    known_models: set[str] | None,
    known_prompts: Container[str] | None = None,
) -> list[ConfigError]:
    found: list[ConfigError] = []
    if known_prompts is not None and spec.prompt is not None:
        prompt_id = spec.prompt.partition("@")[0]
        if prompt_id not in known_prompts:
            found.append(
                ConfigError(
                    f"unknown prompt {prompt_id!r}",
                    source=source,
                    key="prompt",
                    expected="the id of a prompt file in the project's prompts directory",
                )
            )
    for i, ref in enumerate(spec.tools):
        if known_toolsets is not None and ref.toolset not in known_toolsets:
            found.append(
                ConfigError(
                    f"unknown toolset {ref.toolset!r}",
                    source=source,
                    key=f"tools[{i}].toolset",
                    expected="a name under `toolsets:` or `mcp_servers:` in elevenfactor.yaml",
                )
            )
    for field in ("delegates", "handoffs"):
        for i, other in enumerate(getattr(spec, field)):
            if other not in agents:
                found.append(
                    ConfigError(
                        f"unknown agent {other!r}",
                        source=source,
                        key=f"{field}[{i}]",
                        expected="one of: " + ", ".join(sorted(agents)),
                    )
                )
    if known_models is not None and spec.model not in known_models:
        found.append(
            ConfigError(
                f"unknown model or route {spec.model!r}",
                source=source,
                key="model",
                expected="one of: " + ", ".join(sorted(known_models))
                if known_models
                else "a model or route; the project file defines none",
            )
        )
    return found


def load_agents(
    directory: Path,
    known_toolsets: Mapping[str, object] | None = None,
    known_models: set[str] | None = None,
    *,
    errors: list[ConfigError] | None = None,
    known_prompts: Container[str] | None = None,
) -> dict[str, AgentSpec]:
    """Every ``*.yaml`` in ``directory`` (none if it does not exist), cross-checked: toolsets,
    models and other agents referred to must exist.

    The first error is raised; with an ``errors`` list every error is collected instead (an
    agent whose file is invalid is left out).
    """
    specs: dict[str, AgentSpec] = {}
    sources: dict[str, str] = {}
    broken: set[str] = set()  # agents whose file is invalid: not reported again as unknown

    if not directory.is_dir():
        return specs
    for path in sorted(directory.glob("*.y*ml")):
        source = str(path)
        try:
            spec = _load_one(path, directory)
        except ConfigError as exc:
            broken.add(path.stem)
            report(exc, errors)
            continue
        if spec.name in specs:
            duplicate = f"agent {spec.name!r} is also declared in {sources[spec.name]}"
            report(ConfigError(duplicate, source=source, key="name"), errors)
            continue
        specs[spec.name] = spec
        sources[spec.name] = source
    for name, spec in specs.items():
        problems = _references(
            spec, sources[name], set(specs) | broken, known_toolsets, known_models, known_prompts
        )
        for problem in problems:
            report(problem, errors)
    return specs
