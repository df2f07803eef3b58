"""What the seeded store holds: its size, its people and the mix of programs, statuses, tags and
models. Everything random comes from one ``random.Random`` seeded with ``SEED``, so a plan always
yields the same store shape (ids and timestamps aside: they are anchored at seeding time)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AGENTS",
    "APPROVAL_TOOLS",
    "DEPLOYMENTS",
    "GROUPS",
    "ORGS",
    "RARE_PROGRAM",
    "RARE_TAG",
    "SEED",
    "SEED_VERSION",
    "TAGS",
    "TEAMS",
    "USERS",
    "WORKFLOWS",
    "Person",
    "SeedPlan",
]

SEED_VERSION = 4
"""Bump when the generated data changes shape: the cache key (``bench/.cache/ui-v<N>-...``)."""
SEED = 13

ORGS = (("org_default", "default"), ("org_acme", "acme"))
TEAMS = (
    ("org_default", "platform", True),
    ("org_default", "research", False),
    ("org_default", "support", True),
    ("org_acme", "ops", True),
)
GROUPS = ("finance", "ops", "security")


@dataclass(frozen=True, slots=True)
class Person:
    """A user (or service account) of the seeded store, with the share of runs and gateway calls
    it owns (``weight``)."""

    org_id: str
    name: str
    roles: tuple[str, ...]
    team: str | None
    weight: float
    groups: tuple[str, ...] = ()
    kind: str = "user"


USERS = (
    Person("org_default", "ada", ("admin",), "platform", 0.02),
    Person("org_default", "rita", ("reviewer",), "support", 0.03, ("finance", "ops")),
    Person("org_default", "rex", ("reviewer",), "platform", 0.02, ("security",)),
    Person("org_default", "mia", ("member",), "support", 0.08),
    Person("org_default", "max", ("member",), "support", 0.07),
    Person("org_default", "mo", ("member",), "research", 0.06),
    Person("org_default", "nia", ("member",), "research", 0.05),
    Person("org_default", "noah", ("member",), "platform", 0.06),
    Person("org_default", "olga", ("member",), "platform", 0.04),
    Person("org_default", "pat", ("member",), "support", 0.05),
    Person("org_default", "quinn", ("member",), None, 0.03),
    Person("org_default", "sam", ("member",), "research", 0.04),
    Person("org_default", "tia", ("member",), "support", 0.05),
    Person("org_default", "uma", ("member",), None, 0.02),
    Person("org_default", "svc-ci", ("member",), None, 0.18, kind="service"),
    Person("org_acme", "amy", ("admin",), "ops", 0.02),
    Person("org_acme", "ben", ("member",), "ops", 0.06),
    Person("org_acme", "bea", ("member",), "ops", 0.04),
    Person("org_acme", "ray", ("reviewer",), "ops", 0.02, ("ops",)),
    Person("org_acme", "svc-etl", ("member",), None, 0.05, kind="service"),
)
"""20 users; ``ada`` (admin) and ``mia`` (member) are the bench's principals."""

AGENTS = {"support": 0.30, "triage": 0.12, "research": 0.07, "coder": 0.06, "summarizer": 0.02}
"""Agent programs and their share of runs."""
WORKFLOWS = {"ingest": 0.18, "nightly-report": 0.08, "billing-sync": 0.06, "webhook-fanout": 0.05}
"""Workflow programs and their share of runs (with ``elevenfactor.eval``: the rest)."""
RARE_PROGRAM = "summarizer"
TAGS = {"prod": 0.55, "staging": 0.15, "batch": 0.12, "customer:globex": 0.08, "priority": 0.05}
"""Run tags and the share of runs carrying each (independently)."""
RARE_TAG = "incident"
"""On about 0.3 % of runs: what a tag filter that has to look far back finds."""
APPROVAL_TOOLS = ("refund", "send_email", "delete_record", "deploy")

DEPLOYMENTS = (
    # deployment, provider, route, $ per 1M input, $ per 1M output, share
    ("gpt-4o-mini", "openai", "fast", 0.15, 0.60, 0.40),
    ("gpt-4o", "openai", "smart", 2.50, 10.0, 0.15),
    ("claude-haiku", "anthropic", "fast", 0.80, 4.0, 0.20),
    ("claude-sonnet", "anthropic", "smart", 3.0, 15.0, 0.10),
    ("smollm2-135m", "local", "local", 0.0, 0.0, 0.10),
    ("minilm-embed", "local", "embed", 0.0, 0.0, 0.05),
)


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """How much to seed. ``runs`` over ``days``; about ``events`` journal events (the runs'
    shapes decide the exact count) and ``calls`` model calls in all."""

    runs: int = 100_000
    events: int = 1_000_000
    calls: int = 300_000
    days: int = 30
    pending_approvals: int = 400
    eval_results: int = 600
    feedback: int = 20_000

    @classmethod
    def scaled(cls, scale: float) -> SeedPlan:
        """The full plan times ``scale`` (at least a handful of everything)."""
        full = cls()
        return cls(
            runs=max(60, int(full.runs * scale)),
            events=max(600, int(full.events * scale)),
            calls=max(180, int(full.calls * scale)),
            days=full.days,
            pending_approvals=max(3, int(full.pending_approvals * scale)),
            eval_results=max(6, int(full.eval_results * scale)),
            feedback=max(20, int(full.feedback * scale)),
        )

    @property
    def key(self) -> str:
        """Names the cached store: the seeder's version and the plan's size."""
        return f"ui-v{SEED_VERSION}-{self.runs}r-{self.events}e-{self.calls}c"
