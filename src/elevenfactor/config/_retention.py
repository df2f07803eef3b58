"""The project file's ``retention:``: how long run evidence keeps its content.

A purge erases the *content* of what is older than its period (the payload bytes) and keeps
every hash, so each run's chain, the approvals, the call records and the ledger still verify;
the purge itself is a ledger entry (see ``elevenfactor.governance._retention``).

```yaml
retention:
  default: {runs: 90d, approvals: 90d, calls: 30d}
  programs:
    support: {runs: 7d, calls: 7d}     # a program or agent name
    audit-trail: {runs: null}          # keep this program's runs forever
  tags:
    pii: {runs: 1d, calls: 1d}         # runs and calls carrying this tag
```

A period is a number and a unit (``s``, ``m``, ``h``, ``d``, ``w``): ``30d``, ``12h``;
``null`` keeps content forever (the default for everything, so nothing is erased unless a
period is set). A field left out of a rule inherits: a matching tag rule first (the shortest
period among the matching tags), then the program's rule, then ``default``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from elevenfactor.config._models import _Strict

__all__ = ["RETENTION_KINDS", "RetentionConfig", "RetentionRule", "parse_period"]

RETENTION_KINDS = ("runs", "approvals", "calls")
"""What a rule sets a period for."""

_PERIOD = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def parse_period(text: str) -> float:
    """Seconds in ``30d`` / ``12h`` / ``45m`` / ``90s`` / ``2w``; ``ValueError`` otherwise."""
    match = _PERIOD.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a period such as 30d, 12h, 45m or 2w")
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a period above zero")
    return seconds


def _check(value: str | None) -> str | None:
    if value is not None:
        parse_period(value)
    return value


class RetentionRule(_Strict):
    """Periods after which content is erased (hashes kept). A field left out inherits from the
    next rule (tag, then program, then ``default``); ``null`` keeps content forever."""

    runs: str | None = Field(
        default=None,
        description="Run content — the input, every step output and the result — of runs that "
        "ended longer ago than this (`30d`, `12h`; null: forever). Error texts are not erased: "
        "a step's error is inside its event hash, so erasing it would break the chain.",
    )
    approvals: str | None = Field(
        default=None,
        description="Approval payloads — the request (the gated call's arguments) and the "
        "decision's text (reason, edited arguments) — of runs that ended longer ago than this "
        "(null: forever). Who decided, when and the decision's hash stay.",
    )
    calls: str | None = Field(
        default=None,
        description="Call record payloads — the request and response bodies — of model calls "
        "made longer ago than this (null: forever). Tokens, cost and the record hash stay.",
    )

    @field_validator("runs", "approvals", "calls")
    @classmethod
    def _periods(cls, value: str | None) -> str | None:
        return _check(value)

    def period(self, kind: str) -> tuple[bool, float | None]:
        """``(set, seconds)`` for ``kind``: whether this rule sets it (explicitly, ``null``
        included), and the period in seconds (None: forever)."""
        if kind not in self.model_fields_set:
            return False, None
        value: str | None = getattr(self, kind)
        return True, None if value is None else parse_period(value)


class RetentionConfig(_Strict):
    """Retention of run evidence (see ``elevenfactor retention show``)."""

    default: RetentionRule = Field(
        default_factory=RetentionRule,
        description="Periods for everything no program or tag rule covers (all null: forever).",
    )
    programs: dict[str, RetentionRule] = Field(
        default_factory=dict,
        description="Rules per program or agent name (a call matches by its agent).",
    )
    tags: dict[str, RetentionRule] = Field(
        default_factory=dict,
        description="Rules per run or call tag; when several match, the shortest period wins.",
    )

    @field_validator("programs", "tags")
    @classmethod
    def _names(cls, value: dict[str, RetentionRule]) -> dict[str, RetentionRule]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a program, agent or tag name")
        return value

    @property
    def configured(self) -> bool:
        """Whether any period is set (else a purge has nothing to do)."""
        rules = [self.default, *self.programs.values(), *self.tags.values()]
        return any(r.period(k)[1] is not None for r in rules for k in RETENTION_KINDS)

    def period(
        self, kind: str, program: str | None, tags: list[str] | tuple[str, ...]
    ) -> float | None:
        """The period (seconds; None: forever) of ``kind`` content of a run of ``program`` (or
        a call of that agent) carrying ``tags``."""
        found = [r.period(kind) for t in tags if (r := self.tags.get(t)) is not None]
        chosen = [seconds for is_set, seconds in found if is_set]
        if chosen:
            finite = [s for s in chosen if s is not None]
            return min(finite) if finite else None
        rule = self.programs.get(program) if program is not None else None
        if rule is not None:
            is_set, seconds = rule.period(kind)
            if is_set:
                return seconds
        return self.default.period(kind)[1]

    def shortest(self, kind: str) -> float | None:
        """The shortest period of ``kind`` in any rule (None: every rule keeps it forever)."""
        rules = [self.default, *self.programs.values(), *self.tags.values()]
        finite = [s for r in rules if (s := r.period(kind)[1]) is not None]
        return min(finite) if finite else None
