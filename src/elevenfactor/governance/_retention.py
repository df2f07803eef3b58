"""Retention purges: erase run evidence older than the project's periods, keep every hash.

``apply_retention`` finds, under ``retention:`` (``config._retention``):

- **run content** — the input, every step output and the result — of runs that *ended*
  (succeeded, failed or cancelled) longer ago than the run's period (a running or waiting run
  needs its journal to resume, so it is never purged);
- **approval payloads** — the request and the decision's text — of approvals of such runs;
- **call record payloads** — request and response — of model calls older than their period;

and erases them with ``governance._retention_erase.erase`` in chunks of whole runs (each chunk
one transaction and **one ledger entry** ``retention.purge``: the policy, the counts, the time
range of the content and the Merkle root over what it erased). Error texts are kept: a step's
error is inside its event hash and the run's error inside its sealed end. ``before`` bounds a
purge further (only content older than it, and past its period: it never erases what the
policy keeps). ``dry_run`` counts and writes nothing.

Purges are deployment-wide (the project file is), an operator's act (``elevenfactor retention
apply``) or the housekeeper's, which runs one each ``ELEVENFACTOR_PURGE_INTERVAL`` when a
period is configured.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from elevenfactor.config import RetentionConfig
from elevenfactor.governance._retention_erase import Erasure, erase
from elevenfactor.store import Store

__all__ = ["RetentionResult", "apply_retention", "retention_job"]

_FINAL = "('succeeded', 'failed', 'cancelled')"
_PAGE = 500
_SYSTEM_ACTOR = {"user": "system", "via": "system"}


@dataclass
class RetentionResult:
    """What a purge erased (or, in a dry run, would erase): counts only."""

    dry_run: bool
    runs: int = 0
    inputs: int = 0
    step_outputs: int = 0
    results: int = 0
    approval_requests: int = 0
    approval_decisions: int = 0
    call_requests: int = 0
    call_responses: int = 0
    blobs_deleted: int = 0
    ledger_entries: list[int] = field(default_factory=list)
    """The ``seq`` of each ``retention.purge`` ledger entry written (one per chunk)."""
    oldest: float | None = None
    newest: float | None = None

    @property
    def erased(self) -> int:
        """Payload references erased."""
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        """Erased references by kind."""
        keys = (
            "inputs",
            "step_outputs",
            "results",
            "approval_requests",
            "approval_decisions",
            "call_requests",
            "call_responses",
        )
        return {k: int(getattr(self, k)) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {**asdict(self), "erased": self.erased}


def _tags(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return [str(t) for t in value] if isinstance(value, list) else []


class _Purge:
    def __init__(
        self,
        store: Store,
        config: RetentionConfig,
        now: float,
        before: float | None,
        dry_run: bool,
        actor: dict[str, Any],
        progress: Callable[[int], None] | None,
        chunk: int,
    ) -> None:
        self.store, self.config, self.now, self.before = store, config, now, before
        self.actor, self.progress, self.chunk = actor, progress, max(1, chunk)
        self.result = RetentionResult(dry_run)
        self.pending: list[tuple[Erasure, str]] = []  # (erasure, what it counts as)
        self.times: list[float] = []
        self.pending_runs = 0

    def cutoff(self, kind: str, program: str | None, tags: list[str]) -> float | None:
        period = self.config.period(kind, program, tags)
        if period is None:
            return None
        limit = self.now - period
        return limit if self.before is None else min(limit, self.before)

    def coarse(self, kind: str) -> float | None:
        shortest = self.config.shortest(kind)
        if shortest is None:
            return None
        limit = self.now - shortest
        return limit if self.before is None else min(limit, self.before)

    async def add(self, items: list[tuple[Erasure, str]], at: float, runs: int = 0) -> None:
        self.pending += items
        self.times.append(at)
        self.pending_runs += runs
        if len(self.pending) >= self.chunk:
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        items, self.pending = self.pending, []
        times, self.times = self.times, []
        runs, self.pending_runs = self.pending_runs, 0
        counts: dict[str, int] = {}
        for _, what in items:
            counts[what] = counts.get(what, 0) + 1
        r = self.result
        if not r.dry_run:
            body = {
                "policy": self.config.model_dump(mode="json", exclude_unset=True),
                "before": self.before,
                "counts": counts,
                "runs": runs,
                "from": min(times),
                "to": max(times),
            }
            async with self.store.transaction() as tx:
                seq, blobs = await erase(
                    tx,
                    self.store.dialect,
                    [e for e, _ in items],
                    kind="retention.purge",
                    subject="retention",
                    actor=self.actor,
                    body=body,
                )
            if seq is None:
                return
            r.ledger_entries.append(seq)
            r.blobs_deleted += blobs
        r.runs += runs
        for what, n in counts.items():
            setattr(r, what, getattr(r, what) + n)
        r.oldest = min(times) if r.oldest is None else min(r.oldest, min(times))
        r.newest = max(times) if r.newest is None else max(r.newest, max(times))

    def advance(self, n: int) -> None:
        if self.progress is not None and n:
            self.progress(n)

    async def runs(self) -> None:
        coarse = self.coarse("runs")
        if coarse is None:
            return
        after = ""
        while True:
            rows = await self.store.fetchall(
                "SELECT id, program, tags, updated_at, input_hash, result_hash FROM runs r"
                f" WHERE status IN {_FINAL} AND updated_at < ? AND id > ? AND NOT EXISTS"
                " (SELECT 1 FROM erasures e WHERE e.subject = r.id AND e.location = 'input')"
                " ORDER BY id LIMIT ?",
                (coarse, after, _PAGE),
            )
            if not rows:
                return
            after = rows[-1][0]
            due = [
                r
                for r in rows
                if (c := self.cutoff("runs", r[1], _tags(r[2]))) is not None and r[3] < c
            ]
            outputs = await self._outputs([r[0] for r in due])
            for rid, _program, _t, ended, input_hash, result_hash in due:
                items = [(Erasure(rid, "input", input_hash), "inputs")]
                if result_hash:
                    items.append((Erasure(rid, "result", result_hash), "results"))
                items += [
                    (Erasure(rid, f"event:{n}", h), "step_outputs") for n, h in outputs.get(rid, [])
                ]
                await self.add(items, float(ended), runs=1)
            self.advance(len(rows))

    async def _outputs(self, ids: list[str]) -> dict[str, list[tuple[int, str]]]:
        out: dict[str, list[tuple[int, str]]] = {}
        if not ids:
            return out
        marks = ", ".join("?" for _ in ids)
        for rid, n, digest in await self.store.fetchall(
            f"SELECT run_id, n, output_hash FROM journal WHERE run_id IN ({marks})"
            " AND output_hash IS NOT NULL ORDER BY run_id, n",
            ids,
        ):
            out.setdefault(rid, []).append((int(n), digest))
        return out

    async def approvals(self) -> None:
        coarse = self.coarse("approvals")
        if coarse is None:
            return
        after = ""
        while True:
            rows = await self.store.fetchall(
                "SELECT a.id, r.program, r.tags, r.updated_at, a.request_hash, a.decision_hash"
                " FROM approvals a JOIN runs r ON r.id = a.run_id"
                f" WHERE r.status IN {_FINAL} AND r.updated_at < ? AND a.id > ? AND NOT EXISTS"
                " (SELECT 1 FROM erasures e WHERE e.subject = a.id AND e.location = 'request')"
                " ORDER BY a.id LIMIT ?",
                (coarse, after, _PAGE),
            )
            if not rows:
                return
            after = rows[-1][0]
            for aid, program, tags, ended, request_hash, decision_hash in rows:
                cut = self.cutoff("approvals", program, _tags(tags))
                if cut is None or ended >= cut:
                    continue
                items = [(Erasure(aid, "request", request_hash), "approval_requests")]
                if decision_hash:
                    items.append((Erasure(aid, "decision", decision_hash), "approval_decisions"))
                await self.add(items, float(ended))
            self.advance(len(rows))

    async def calls(self) -> None:
        coarse = self.coarse("calls")
        if coarse is None:
            return
        after = ""
        while True:
            rows = await self.store.fetchall(
                "SELECT c.id, c.agent, c.tags, c.created_at, c.request_hash, c.response_hash"
                " FROM model_calls c WHERE c.created_at < ? AND c.id > ? AND ("
                "(c.request_hash IS NOT NULL AND NOT EXISTS (SELECT 1 FROM erasures e"
                " WHERE e.subject = c.id AND e.location = 'request')) OR"
                " (c.response_hash IS NOT NULL AND NOT EXISTS (SELECT 1 FROM erasures e"
                " WHERE e.subject = c.id AND e.location = 'response')))"
                " ORDER BY c.id LIMIT ?",
                (coarse, after, _PAGE),
            )
            if not rows:
                return
            after = rows[-1][0]
            for cid, agent, tags, created, request_hash, response_hash in rows:
                cut = self.cutoff("calls", agent, _tags(tags))
                if cut is None or created >= cut:
                    continue
                items = [
                    (Erasure(cid, loc, h), what)
                    for loc, h, what in (
                        ("request", request_hash, "call_requests"),
                        ("response", response_hash, "call_responses"),
                    )
                    if h
                ]
                await self.add(items, float(created))
            self.advance(len(rows))


async def candidates(store: Store, config: RetentionConfig, now: float) -> int:
    """Rows a purge at ``now`` looks at (runs, approvals, calls past the shortest periods):
    the total of a progress bar."""
    total = 0
    for kind, sql in (
        ("runs", f"SELECT COUNT(*) FROM runs WHERE status IN {_FINAL} AND updated_at < ?"),
        (
            "approvals",
            "SELECT COUNT(*) FROM approvals a JOIN runs r ON r.id = a.run_id"
            f" WHERE r.status IN {_FINAL} AND r.updated_at < ?",
        ),
        ("calls", "SELECT COUNT(*) FROM model_calls WHERE created_at < ?"),
    ):
        shortest = config.shortest(kind)
        if shortest is not None:
            row = await store.fetchone(sql, (now - shortest,))
            total += int(row[0]) if row else 0
    return total


async def apply_retention(
    store: Store,
    config: RetentionConfig,
    *,
    now: float | None = None,
    before: float | None = None,
    dry_run: bool = False,
    actor: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 2000,
) -> RetentionResult:
    """Erase (or with ``dry_run`` count) the content past its period (see the module
    docstring); ``progress(n)`` is called as rows are looked at; ``chunk`` erasures (whole
    runs) per transaction and ledger entry."""
    purge = _Purge(
        store,
        config,
        time.time() if now is None else now,
        before,
        dry_run,
        actor or _SYSTEM_ACTOR,
        progress,
        chunk,
    )
    if config.configured:
        await purge.runs()
        await purge.approvals()
        await purge.calls()
        await purge.flush()
    return purge.result


def retention_job(config: RetentionConfig) -> Callable[[Store, float], Awaitable[int]]:
    """A housekeeper job (``runtime._housekeeping.PurgeJob``) applying ``config``: the number
    of payloads it erased."""

    async def job(store: Store, now: float) -> int:
        return (await apply_retention(store, config, now=now)).erased

    return job
