"""Circuit breakers of agent runs: limits that stop one run, and the hand-off of a finished
run's outcome to its agent's breaker across runs (``governance._agent_breaker``).

A run of an agent is held to its agent's ``limits`` and to the ``breakers.run`` of every guard
policy that applies to the agent; for each breaker the tightest setting wins (the agent's own
limit on a tie). ``RunBreakers`` is fed by the agent loop:

- ``step()`` before each model request: more than ``max_steps`` trips ``steps``;
- ``tool_call(name, args)`` for each call the model asks for, before any of the turn's calls
  runs: more than ``max_tool_calls`` trips ``tool_calls``; the ``max_same_tool_call``-th call of
  one tool with the same arguments (compared as canonical JSON, so key order and spacing do not
  matter) trips ``same_tool_call`` — that call does not run;
- ``tool_result(name, is_error, text)`` for each result: the ``max_same_error``-th identical
  error of one tool *in the run* (in total, not only in a row: a model alternating between two
  failing calls is caught too) trips ``same_error``; errors compare with digits, hex ids and
  whitespace collapsed, case folded, so ``timeout after 30s (req 8f3a...)`` and ``timeout after
  31s (req 77c0...)`` are the same error;
- ``cost(usd)`` after each model request: a spend over ``max_cost_usd`` trips ``cost``;
- ``now(t)`` with the run's journaled clock (``ctx.now()``; the first call is the start): more
  than ``max_wall_seconds`` since the start trips ``wall_time``.

Every input is a journaled result (model responses, tool results, the journaled clock), so a
resumed run replays the same counts and trips at the same point. A trip raises
``BreakerTripped`` (code ``breaker_tripped``) with ``breaker``, ``limit`` and ``policy`` (the
policy's ``id@version``) in its details, or ``AgentLimitExceeded`` (``agent_limit``) when the
deciding limit is the agent's own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from elevenfactor.errors import AgentLimitExceeded, BreakerTripped, StepFailed
from elevenfactor.governance._agent_breaker import record_run_outcome
from elevenfactor.governance._policy_model import AgentBreaker, Policy, RunBreaker
from elevenfactor.governance._pricing import price_book
from elevenfactor.governance._principal import DEFAULT_ORG
from elevenfactor.observe import call_cost, log_event
from elevenfactor.runtime._subruns import run_child

if TYPE_CHECKING:
    from elevenfactor.config import ProjectConfig
    from elevenfactor.models import Response
    from elevenfactor.runtime._agent_spec import AgentLimits
    from elevenfactor.runtime._context import RunContext
    from elevenfactor.runtime._programs import Programs
    from elevenfactor.runtime._runs import Lease
    from elevenfactor.store import Store

__all__ = [
    "BLOCKING_CODES",
    "AgentBreakers",
    "Limit",
    "PolicySource",
    "RunBreakers",
    "RunLimits",
    "args_digest",
    "combine_agent_breakers",
    "error_digest",
    "normalise_error",
    "response_cost",
    "run_delegate",
    "run_ended",
]

logger = logging.getLogger("elevenfactor.breakers")

BLOCKING_CODES = frozenset({"breaker_tripped", "agent_limit", "guard_blocked"})
"""Error codes that make a failed run count as *blocked* (stopped by a guard or a breaker)
rather than *failed* in its agent's breaker."""

_NAMES = ("steps", "tool_calls", "cost", "wall_time", "same_tool_call", "same_error")
_POLICY_FIELDS = dict(zip(RunBreaker.model_fields, _NAMES, strict=True))  # max_steps -> steps
_AGENT_FIELDS = {"max_steps": "steps", "max_tool_calls": "tool_calls", "max_wall_time": "wall_time"}


class PolicySource(Protocol):
    """What resolves an agent's policies (``PolicyBook``): its own ``policy:``, else the
    project's default."""

    def for_agent(self, agent_policy: str | None) -> list[Policy]:
        """The policies that apply to an agent naming ``agent_policy``."""
        ...


@dataclass(frozen=True, slots=True)
class Limit:
    """One breaker's limit and where it comes from (``policy`` None: the agent's limits)."""

    value: int | float | Decimal
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class RunLimits:
    """The limits a run is held to, one per breaker (None: not limited)."""

    steps: Limit | None = None
    tool_calls: Limit | None = None
    cost: Limit | None = None
    wall_time: Limit | None = None
    same_tool_call: Limit | None = None
    same_error: Limit | None = None

    @classmethod
    def combine(cls, agent: AgentLimits | None, policies: Sequence[Policy] = ()) -> RunLimits:
        """The tightest of the agent's ``limits`` and each policy's ``breakers.run``, breaker
        by breaker (the agent's limit, then the earliest policy, on a tie)."""
        found: dict[str, Limit] = {}

        def offer(name: str, value: Any, policy: str | None) -> None:
            if value is None:
                return
            if name not in found or value < found[name].value:
                found[name] = Limit(value, policy)

        if agent is not None:
            for attr, name in _AGENT_FIELDS.items():
                offer(name, getattr(agent, attr), None)
        for policy in policies:
            run = policy.spec.breakers.run
            for attr, name in _POLICY_FIELDS.items():
                offer(name, getattr(run, attr), policy.ref)
        return cls(**found)


def combine_agent_breakers(policies: Sequence[Policy]) -> tuple[AgentBreaker | None, str | None]:
    """The tightest of the policies' ``breakers.agent`` settings and the refs they came from
    (comma-separated), or (None, None) when none sets one. Tightest: the lowest ``min_runs``
    and rates, the longest window (it remembers failures longest)."""
    found = [p for p in policies if p.spec.breakers.agent is not None]
    conf = [c for p in found if (c := p.spec.breakers.agent) is not None]
    if not conf:
        return None, None

    def lowest(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return min(present) if present else None

    merged = AgentBreaker(
        window_seconds=max(c.window_seconds for c in conf),
        min_runs=min(c.min_runs for c in conf),
        max_error_rate=lowest([c.max_error_rate for c in conf]),
        max_block_rate=lowest([c.max_block_rate for c in conf]),
    )
    return merged, ",".join(dict.fromkeys(p.ref for p in found))


@dataclass(frozen=True, slots=True)
class AgentBreakers:
    """An agent's breakers, resolved once when the agent is built: the limits of each of its
    runs, and its breaker across runs (None: it is never paused) with the policies it came
    from."""

    run: RunLimits
    agent: AgentBreaker | None = None
    agent_policy: str | None = None

    @classmethod
    def resolve(
        cls, limits: AgentLimits, agent_policy: str | None, source: PolicySource | None
    ) -> AgentBreakers:
        """Combine ``limits`` with the policies ``source`` gives an agent naming
        ``agent_policy`` (no source: the agent's limits alone)."""
        policies = source.for_agent(agent_policy) if source is not None else []
        breaker, refs = combine_agent_breakers(policies)
        return cls(RunLimits.combine(limits, policies), breaker, refs)


# -- comparing calls and errors ----------------------------------------------------------------

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I)
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
_ERROR_PREFIX = "Error:"
_MAX_ERROR_CHARS = 4000


def args_digest(name: str, args: str | Mapping[str, Any] | None) -> str:
    """A digest of a tool call: its name and its arguments as canonical JSON (sorted keys, no
    spaces); arguments that are not valid JSON compare as their text."""
    value: Any = args
    if isinstance(args, str):
        try:
            value = json.loads(args or "{}")
        except ValueError:
            value = {"$raw": args}
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{name}\x00{text}".encode()).hexdigest()


def normalise_error(text: str) -> str:
    """An error text with what varies between occurrences collapsed: UUIDs and hex ids, runs
    of digits, whitespace; case folded (the first 4,000 characters)."""
    out = _UUID.sub("#", text[:_MAX_ERROR_CHARS])
    out = _HEX.sub("#", out)
    out = _DIGITS.sub("#", out)
    return _SPACE.sub(" ", out).strip().casefold()


def error_digest(name: str, text: str) -> str:
    """A digest of one tool's error (see ``normalise_error``)."""
    return hashlib.sha256(f"{name}\x00{normalise_error(text)}".encode()).hexdigest()


def response_cost(project: ProjectConfig, response: Response) -> float | None:
    """What a model response cost (None: unpriced), as its budget commit charges it."""
    prices = price_book(project)
    return call_cost(prices, response.deployment, response.usage, cache_hit=response.cache_hit)


async def run_delegate(ctx: RunContext, agent: str, task: str) -> Any:
    """Run a delegated ``agent`` on ``task`` as a child run (``run_child``). When its breaker
    has paused it, ``{"output": "Error: ..."}``: the model sees the refusal as the tool's error
    and may do without it (identically on replay: the refusal is journaled)."""
    try:
        return await run_child(ctx, agent, {"input": task})
    except StepFailed as exc:
        if exc.error_code != "agent_paused":
            raise
        return {"output": f"{_ERROR_PREFIX} {exc.message}"}


def _plain(value: int | float | Decimal) -> int | float:
    return float(value) if isinstance(value, Decimal) else value


# -- the per-run breaker -----------------------------------------------------------------------


class RunBreakers:
    """The counters of one run against its ``RunLimits`` (see the module docstring). Plain
    local state: rebuilt by replay from journaled results."""

    def __init__(self, limits: RunLimits, agent: str = "", start: float | None = None) -> None:
        self.limits = limits
        self.agent = agent
        self.steps = 0
        self.tool_calls = 0
        self.spent = Decimal(0)
        self.started: float | None = start
        self.elapsed = 0.0
        self._calls: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    @property
    def timed(self) -> bool:
        """Whether a wall-time limit applies (the loop reads the journaled clock only then)."""
        return self.limits.wall_time is not None

    def step(self) -> None:
        """Count a model request about to be made."""
        self.steps += 1
        self._over("steps", self.steps, f"no answer within {self._value('steps')} steps")

    async def turn(self, ctx: RunContext) -> int:
        """``step()``, then ``now()`` with the journaled clock if a wall-time limit applies
        (the clock is read only then, so the journal is the same as without breakers); the
        0-based index of the model request about to be made."""
        self.step()
        if self.timed:
            self.now(await ctx.now())
        return self.steps - 1

    def tool_call(self, name: str, args: str | Mapping[str, Any] | None) -> None:
        """Count a tool call about to be made (``args``: the model's JSON text, or a dict)."""
        self.tool_calls += 1
        self._over(
            "tool_calls", self.tool_calls, f"more than {self._value('tool_calls')} tool calls"
        )
        key = args_digest(name, args)
        self._calls[key] += 1
        self._reached(
            "same_tool_call",
            self._calls[key],
            f"{name} called with the same arguments {self._calls[key]} times",
        )

    def tool_calls_of(self, calls: Sequence[Any]) -> None:
        """``tool_call`` for each of a turn's calls (objects with ``name`` and ``arguments``)."""
        for call in calls:
            self.tool_call(call.name, call.arguments)

    def tool_result(self, name: str, is_error: bool, error_text: str = "") -> None:
        """Count a tool's result; only errors count, by tool and normalised text."""
        if not is_error:
            return
        key = error_digest(name, error_text)
        self._errors[key] += 1
        self._reached(
            "same_error", self._errors[key], f"{name} failed the same way {self._errors[key]} times"
        )

    def tool_results_of(self, calls: Sequence[Any], results: Sequence[str]) -> None:
        """``tool_result`` for each of a turn's results as the model sees them: an error is a
        result the agent reports as ``Error: ...`` (a failed tool, bad arguments, an unknown
        tool)."""
        for call, text in zip(calls, results, strict=True):
            self.tool_result(call.name, text.startswith(_ERROR_PREFIX), text)

    def cost(self, usd: float | Decimal | None) -> None:
        """Add the cost of a model request (None: unpriced, counts as nothing)."""
        if usd is None:
            return
        self.spent += Decimal(str(usd))
        limit = self.limits.cost
        if limit is not None and self.spent > Decimal(str(limit.value)):
            self._trip("cost", limit, float(self.spent), f"spent ${self.spent:.6f}")

    def response(self, project: ProjectConfig, response: Response) -> None:
        """``cost()`` of a (journaled) model response, priced by ``project``'s prices; nothing
        to do without a cost limit."""
        if self.limits.cost is not None:
            self.cost(response_cost(project, response))

    def now(self, t: float) -> None:
        """The run's journaled clock; the first reading is the run's start."""
        if self.started is None:
            self.started = t
        self.elapsed = t - self.started
        limit = self.limits.wall_time
        if limit is not None and self.elapsed > float(limit.value):
            self._trip("wall_time", limit, self.elapsed, f"over {float(limit.value):g}s")

    def _value(self, name: str) -> int | float:
        limit: Limit | None = getattr(self.limits, name)
        return _plain(limit.value) if limit is not None else 0

    def _over(self, name: str, count: int, message: str) -> None:
        limit: Limit | None = getattr(self.limits, name)
        if limit is not None and count > limit.value:
            self._trip(name, limit, count, message)

    def _reached(self, name: str, count: int, message: str) -> None:
        limit: Limit | None = getattr(self.limits, name)
        if limit is not None and count >= limit.value:
            self._trip(name, limit, count, message)

    def _trip(self, name: str, limit: Limit, value: float, message: str) -> None:
        details: dict[str, Any] = {"breaker": name, "limit": _plain(limit.value)}
        details["policy"] = limit.policy
        prefix = f"agent {self.agent}: " if self.agent else ""
        if limit.policy is None:
            raise AgentLimitExceeded(f"{prefix}{message}", value=value, **details)
        raise BreakerTripped(
            f"{prefix}{message}: breaker {name} of policy {limit.policy} tripped"
            f" (limit {_plain(limit.value)})",
            hint="the policy's breakers.run sets the limit; raise it if the run was legitimate",
            value=value,
            **details,
        )


# -- after a run ends --------------------------------------------------------------------------


async def run_ended(
    programs: Programs, store: Store, lease: Lease, status: str, blocked: bool = False
) -> None:
    """Tell the agent's breaker across runs how a run of it ended (``succeeded``, ``failed``;
    ``blocked`` when a guard or a breaker stopped it). Other programs, agents without a breaker
    and other statuses are ignored. Never raises: the run is settled already, and a breaker
    that cannot record is logged, not allowed to fail the worker."""
    if status not in ("succeeded", "failed") or lease.program not in programs:
        return
    breakers = getattr(programs.get(lease.program), "breakers", None)
    if not isinstance(breakers, AgentBreakers) or breakers.agent is None:
        return
    outcome = "blocked" if blocked else "succeeded" if status == "succeeded" else "failed"
    org_id = lease.owner.org_id if lease.owner is not None else DEFAULT_ORG
    try:
        state = await record_run_outcome(
            store, org_id, lease.program, outcome, breakers.agent,
            run_id=lease.run_id, policy=breakers.agent_policy,
        )  # fmt: skip
    except Exception:
        logger.exception("recording the outcome of run %s failed", lease.run_id)
        return
    if state.tripped:
        log_event(
            logger, "agent_paused", agent=lease.program, org_id=org_id, run_id=lease.run_id,
            reason=state.reason, policy=breakers.agent_policy,
        )  # fmt: skip
