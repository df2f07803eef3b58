"""Online evaluation, the sampling side: which finished runs an online rule
(``evals.online`` in the project file) scores, decided without I/O, and the durable scoring
run a sampled run gets.

The decision is a pure function of the rule's name and the run's id (``sample_point``), so
every worker process agrees and a run whose end is settled twice is sampled once. The worker
calls ``OnlineSampler`` as a run ends, *before* it writes the end (the ``run_ending`` hook of
``RunExecutor``): a sampled run's scoring run is submitted with an id derived from the rule
and the run (``scoring_run_id``), so submitting it again is a no-op, and a worker killed
between the submission and the end's write re-executes the run, reaches the same end and
submits nothing new. The scoring run starts ``START_DELAY`` seconds later and waits for the
run's end to be written before it reads it (``_online_program``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from elevenfactor.config import OnlineRule
from elevenfactor.governance import DEFAULT_ORG, Principal
from elevenfactor.observe import log_event

if TYPE_CHECKING:
    from elevenfactor.runtime._runs import Lease
    from elevenfactor.store import Store

__all__ = [
    "ONLINE_EVAL",
    "ONLINE_TAG",
    "START_DELAY",
    "OnlineSampler",
    "sample_point",
    "sampled",
    "scorer_identity",
    "scoring_run_id",
]

logger = logging.getLogger("elevenfactor.evals.online")

ONLINE_EVAL = "elevenfactor.online_eval"
"""The built-in program of scoring runs (also the agent name of a judge's model calls)."""
ONLINE_TAG = "online-eval"
"""The tag every scoring run carries (with ``online-eval:<rule>``)."""
START_DELAY = 1.0
"""Seconds between a run's end and its scoring run's start."""
_MCP_TOOL = "mcp.tool"
_EVAL_TAG = "eval:"


def sample_point(rule: str, run_id: str) -> float:
    """Where ``run_id`` falls in [0, 1) for ``rule``: the first 64 bits of
    SHA-256(rule NUL run_id), scaled. Uniform over run ids, and the same in every process."""
    digest = hashlib.sha256(f"{rule}\0{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def sampled(rule: str, run_id: str, share: float) -> bool:
    """Whether ``rule``, sampling ``share`` of runs, scores ``run_id``."""
    return share > 0 and sample_point(rule, run_id) < share


def scoring_run_id(rule: str, run_id: str) -> str:
    """The id of the scoring run of ``run_id`` under ``rule``: one per (rule, run)."""
    return "oe_" + hashlib.sha256(f"online\0{rule}\0{run_id}".encode()).hexdigest()[:40]


def scorer_identity(rule: str) -> str:
    """The user id a rule's scoring runs and scores carry: ``scorer:<rule>``."""
    return f"scorer:{rule}"


def _matches(rule: OnlineRule, program: str, tags: Sequence[str], status: str) -> bool:
    if status not in rule.status:
        return False
    if program == _MCP_TOOL and rule.agent != program:
        return False
    if rule.agent != program and not fnmatch.fnmatchcase(program, rule.agent):
        return False
    return all(t in tags for t in rule.tags)


class OnlineSampler:
    """The ``run_ending`` hook of a worker: submits the scoring runs of a run that ends (see
    the module docstring). Costs nothing when no rule matches the run's program."""

    def __init__(self, rules: Sequence[OnlineRule]) -> None:
        self.rules = tuple(rules)

    def due(self, program: str, tags: Sequence[str], status: str, run_id: str) -> list[OnlineRule]:
        """The rules that sample this run (its parent is not checked here)."""
        if program == ONLINE_EVAL or any(t.startswith(_EVAL_TAG) for t in tags):
            return []
        return [
            r
            for r in self.rules
            if _matches(r, program, tags, status) and sampled(r.name, run_id, r.sample)
        ]

    async def __call__(self, store: Store, lease: Lease, status: str) -> list[str]:
        """Submit the scoring runs of ``lease``'s run, ending ``status``; their ids. Never
        raises: a submission that fails is logged, and the run ends as it would have."""
        due = self.due(lease.program, lease.tags, status, lease.run_id)
        if not due:
            return []
        try:
            return await self._submit(store, lease, due)
        except Exception:
            logger.exception("submitting the scoring runs of run %s failed", lease.run_id)
            return []

    async def _submit(self, store: Store, lease: Lease, due: list[OnlineRule]) -> list[str]:
        from elevenfactor.runtime._runs import submit_run

        if any(not r.children for r in due):
            row = await store.fetchone("SELECT parent_id FROM runs WHERE id = ?", (lease.run_id,))
            if row is not None and row[0] is not None:
                due = [r for r in due if r.children]
        org = lease.owner.org_id if lease.owner is not None else DEFAULT_ORG
        start = time.time() + START_DELAY
        out: list[str] = []
        for rule in due:
            who = scorer_identity(rule.name)
            owner = Principal(org_id=org, user_id=who, user_name=who, via="system")
            try:
                rid = await submit_run(
                    store,
                    ONLINE_EVAL,
                    {"rule": rule.name, "run_id": lease.run_id},
                    run_id=scoring_run_id(rule.name, lease.run_id),
                    queue=rule.queue,
                    max_attempts=3,
                    start_at=start,
                    owner=owner,
                    tags=(ONLINE_TAG, f"{ONLINE_TAG}:{rule.name}"),
                )
            except Exception:
                logger.exception(
                    "submitting the %s scoring run of %s failed", rule.name, lease.run_id
                )
                continue
            out.append(rid)
            log_event(
                logger, "online_eval_sampled", run_id=lease.run_id, rule=rule.name, scoring_run=rid
            )
        return out
