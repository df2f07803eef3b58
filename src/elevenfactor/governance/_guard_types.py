"""The vocabulary of guards (factor 10): where content is checked, what a rule found, and
what the pipeline decides.

A guard inspects content at one **stage** of a run or a gateway call and returns a
``Verdict``: ``allow``, ``block`` (the caller gets an error naming the policy and rule),
``redact`` (the content is rewritten), ``escalate`` (a reviewer decides through an approval
gate) or ``monitor`` (recorded, nothing changes). Detectors are plain functions that return
``Finding`` s — where in the text, which rule, what kind of thing — so the same detectors serve
the input, output and tool-result stages, the log scrubber and ``guard test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["ACTIONS", "STAGES", "Action", "Finding", "Guard", "Stage", "Verdict"]

Stage = Literal["input", "retrieved", "tool_call", "tool_result", "output"]
"""``input``: user messages; ``retrieved`` and ``tool_result``: text a run read from elsewhere
(indirect prompt injection); ``tool_call``: a tool's name and arguments before it runs;
``output``: the answer before the user or a downstream tool sees it."""
STAGES: tuple[Stage, ...] = ("input", "retrieved", "tool_call", "tool_result", "output")

Action = Literal["allow", "monitor", "redact", "escalate", "block"]
"""In increasing severity: when several guards answer, the most severe action wins."""
ACTIONS: tuple[Action, ...] = ("allow", "monitor", "redact", "escalate", "block")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a rule found: ``text[start:end]`` is a ``kind`` (e.g. ``email``,
    ``payment_card``, ``aws_access_key``, ``sql_drop``) according to ``rule``. ``start`` and
    ``end`` are -1 when the finding is about the whole content (a classifier's score, a tool
    name). ``detail`` says why, for people (never the matched value itself)."""

    rule: str
    kind: str
    start: int = -1
    end: int = -1
    score: float = 1.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON for the journal and ``guard test`` (positions, never the matched text)."""
        return {
            "rule": self.rule,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a guard (or the pipeline) decided about content at a stage. ``content`` is the
    rewritten content when ``action`` is ``redact``; ``policy`` is the policy's version."""

    action: Action
    findings: tuple[Finding, ...] = ()
    rule: str = ""
    policy: str = ""
    content: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> int:
        """The action's rank in ``ACTIONS`` (allow 0 … block 4)."""
        return ACTIONS.index(self.action)


@runtime_checkable
class Guard(Protocol):
    """Inspects content at a stage. Small on purpose: detectors, classifiers and model-based
    checks all fit behind it."""

    @property
    def name(self) -> str:
        """The rule name verdicts and findings carry."""
        ...

    async def check(self, stage: Stage, content: str, ctx: dict[str, Any]) -> Verdict:
        """The verdict on ``content`` at ``stage``; ``ctx`` carries the run, agent, tool and
        principal where they are known."""
        ...
