"""Chaos: 100 runs of a multi-step agent with side-effecting tools while ``elevenfactor worker``
processes are SIGKILLed at random moments, on SQLite and on PostgreSQL, with two workers.

Every worker lives a random 0.3-1.5 s after it reports ``worker_started``, is SIGKILLed and is
restarted at once, until all runs have succeeded. The workload (``tests.support.chaos_agent``)
is the real agent loop: four model turns, five tool calls (two turns call two tools in
parallel), a durable timer that parks the run, and a last ``ctx.step`` with a side effect.
Every model request and tool call logs its execution in a ledger outside the runtime's tables
(``tests.support.chaos_ledger``) that survives the kills.

What this proves, and how:

- **Every run completes** with the answer and result its input determines, and its journal's
  hash chain verifies (``verify_run``).
- **Each side effect happens exactly once**: the effects table holds exactly the six expected
  effects of every run, one row each, each keyed by the step key of the journal step that
  recorded it. A step interrupted between its effect and its journal write is executed again
  by the next worker (at-least-once execution, counted and reported as duplicates); the step
  key makes the effect idempotent, and the test checks that every re-execution is of that kind.
- **No run is executed by two workers**, in three parts:
  1. *Journal writes are fenced*: in every run the fence of the journal's events never
     decreases in write order, so once a newer lease wrote, no older holder wrote again.
  2. *Every execution happened under the executor's own lease*: when an execution began, the
     run's row was ``running`` and leased to the executing process (the ledger reads the row;
     on PostgreSQL in the same transaction as the effect).
  3. *Executions under different leases never overlap in time*: for two executions of one run
     under fences f1 < f2, the first ended (or its process had been SIGKILLed and reaped) before
     the second began. Every re-execution of a step follows the SIGKILL of the process that
     executed it before, and the journal records the step with the fence of its last execution.

  A lease is time-based, so "executed by two workers" cannot be excluded in general (a paused
  process may outlive its lease); what holds here, and is asserted, is that it did not happen:
  no execution started or continued after another worker had taken the run over.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from elevenfactor.runtime import get_run, load_events, run_result, submit_run, verify_run
from elevenfactor.store import Store, migrate, open_store
from tests.support import chaos_ledger
from tests.support.chaos_agent import expected_answer, expected_effects
from tests.support.chaos_ledger import Attempt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXE = str(Path(sys.executable).parent / "elevenfactor")
ROOT = Path(__file__).resolve().parents[2]
RUNS = 100
WORKERS = 2
CONCURRENCY = 8
LEASE_SECONDS = 1.5
LIFETIME = (0.3, 1.5)  # seconds a worker lives once it has started, before its SIGKILL
DEADLINE = 120.0
PROJECT = """
providers: {t: {type: test}}
models: {echo: {provider: t, model: e}}
routes: {default: {chain: [echo]}}
programs: ["tests.support.chaos_agent:programs"]
"""


@dataclass
class Slot:
    """One worker position: a process that is killed and replaced over and over."""

    index: int
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    kill_at: float | None = None
    incarnation: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        self.incarnation += 1
        self.log = self.home / f"worker{self.index}-{self.incarnation}.log"
        self.logs.append(self.log)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [EXE, "worker", "--concurrency", str(CONCURRENCY)],
                cwd=self.home,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.kill_at = None

    def started(self) -> bool:
        return self.log is not None and b'"worker_started"' in self.log.read_bytes()

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log else ""
            pytest.fail(
                f"worker {self.proc.pid} exited by itself ({self.proc.returncode}):\n{tail}"
            )

    def kill(self) -> tuple[int, float]:
        """SIGKILL the worker and reap it; return its pid and when it was certainly dead."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return self.proc.pid, time.time()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Chaos:
    """What the chaos loop did."""

    killed_at: dict[int, float] = field(default_factory=dict)
    elapsed: float = 0.0


def _ledger_url(store_url: str, home: Path) -> str:
    return store_url if store_url.startswith("postgresql") else f"sqlite:///{home}/ledger.db"


async def _statuses(store: Store) -> Counter[str]:
    rows = await store.fetchall("SELECT status, COUNT(*) FROM runs GROUP BY status")
    return Counter({str(s): int(n) for s, n in rows})


async def _run_chaos(store: Store, slots: list[Slot], rng: random.Random) -> Chaos:
    """Kill and restart workers at random moments until every run has succeeded."""
    chaos = Chaos()
    start = time.monotonic()
    for slot in slots:
        slot.start()
    try:
        while True:
            counts = await _statuses(store)
            if counts["succeeded"] == RUNS:
                break
            bad = {s: n for s, n in counts.items() if s in ("failed", "cancelled")}
            if bad:
                rows = await store.fetchall(
                    "SELECT id, status, error FROM runs WHERE status IN ('failed', 'cancelled')"
                )
                pytest.fail(f"runs ended badly: {bad}: {rows[:3]}")
            assert time.monotonic() - start < DEADLINE, (
                f"not done after {DEADLINE:.0f}s: {dict(counts)}, {len(chaos.killed_at)} kills"
            )
            now = time.monotonic()
            for slot in slots:
                slot.check_alive()
                if slot.kill_at is None and slot.started():
                    slot.kill_at = now + rng.uniform(*LIFETIME)
                elif slot.kill_at is not None and now >= slot.kill_at:
                    pid, dead = slot.kill()
                    chaos.killed_at[pid] = dead
                    slot.start()
            await asyncio.sleep(0.02)
    finally:
        chaos.elapsed = time.monotonic() - start
        for slot in slots:
            slot.stop()
    return chaos


def _end(a: Attempt, killed_at: dict[int, float]) -> float:
    """When execution ``a`` certainly ended: its recorded end, or its process's reaping."""
    if a.t_end is not None:
        return a.t_end
    assert a.pid in killed_at, f"{a} never finished, but its worker {a.pid} was not killed"
    return killed_at[a.pid]


def _check_executions(
    run_id: str,
    attempts: list[Attempt],
    journal: dict[str, Any],
    killed_at: dict[int, float],
) -> None:
    """Parts 2 and 3 of "no run is executed by two workers" (see the module docstring)."""
    for a in attempts:
        assert a.status == "running" and a.owner_pid == a.pid, (
            f"{a.kind} {a.name} ({a.step_key}) ran in process {a.pid} while the run was "
            f"{a.status} and leased to {a.owner}"
        )
    by_fence: dict[int, list[Attempt]] = defaultdict(list)
    for a in attempts:
        assert a.fence is not None
        by_fence[a.fence].append(a)
    fences = sorted(by_fence)
    for f in fences:
        assert len({a.pid for a in by_fence[f]}) == 1, f"run {run_id}: fence {f} in two processes"
    for i, f1 in enumerate(fences):
        ended = max(_end(a, killed_at) for a in by_fence[f1])
        for f2 in fences[i + 1 :]:
            began = min(a.t_start for a in by_fence[f2])
            assert ended <= began, (
                f"run {run_id}: an execution under fence {f1} (process "
                f"{by_fence[f1][0].pid}) overlapped one under fence {f2} (process "
                f"{by_fence[f2][0].pid}) by {ended - began:.3f}s"
            )
    by_key: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_key[a.step_key].append(a)
    for key, execs in by_key.items():
        step_id = key.split(":", 1)[1]
        ev = journal.get(step_id)
        assert ev is not None and ev.status == "done", f"{key} executed but not journaled"
        assert ev.kind == execs[0].kind or (ev.kind == "step" and execs[0].name == "receipt")
        key_fences = [a.fence or 0 for a in execs]
        assert key_fences == sorted(set(key_fences)), (
            f"{key} executed twice under one lease: {execs}"
        )
        assert execs[-1].fence == ev.fence, f"{key} journaled by fence {ev.fence}: {execs}"
        for earlier, later in pairwise(execs):
            assert earlier.pid in killed_at and killed_at[earlier.pid] <= later.t_start, (
                f"{key} re-executed by {later.pid} though {earlier.pid} was not killed before"
            )
    for step_id, ev in journal.items():
        if ev.kind in ("model", "tool") or (ev.kind == "step" and ev.name == "receipt"):
            assert f"{run_id}:{step_id}" in by_key, f"{run_id}:{step_id} has no execution"


async def _check(
    store: Store, ledger_url: str, orders: dict[str, str], chaos: Chaos
) -> dict[str, Any]:
    attempts = chaos_ledger.read_attempts(ledger_url)
    effects = chaos_ledger.read_effects(ledger_url)
    attempts_by_run: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        attempts_by_run[a.run_id].append(a)
    effects_by_run: dict[str, list[chaos_ledger.Effect]] = defaultdict(list)
    for e in effects:
        effects_by_run[e.run_id].append(e)
    assert set(effects_by_run) <= set(orders) and set(attempts_by_run) <= set(orders)

    claims = 0
    two_workers = 0
    for rid, order in orders.items():
        run = await get_run(store, rid)
        assert run.status == "succeeded", run.error
        result = await run_result(store, run)
        assert result == {
            "answer": expected_answer(order),
            "turns": 4,
            "receipt": f"receipt for {order}",
        }
        report = await verify_run(store, rid)
        assert report.ok, report
        events = await load_events(store, rid)
        fences = [e.fence for e in events]
        assert fences == sorted(fences), f"run {rid}: journal fences go back: {fences}"
        journal = {e.step_id: e for e in events}
        # Exactly once: the expected effects, one row each, each from a journaled step.
        got = sorted(
            (e.name, orjson.dumps(e.args, option=orjson.OPT_SORT_KEYS)) for e in effects_by_run[rid]
        )
        want = sorted(
            (n, orjson.dumps(a, option=orjson.OPT_SORT_KEYS)) for n, a in expected_effects(order)
        )
        assert got == want, f"run {rid} ({order}): effects {got} != {want}"
        for e in effects_by_run[rid]:
            ev = journal.get(e.step_key.split(":", 1)[1])
            assert ev is not None and ev.status == "done", f"effect {e.step_key} not journaled"
        _check_executions(rid, attempts_by_run[rid], journal, chaos.killed_at)
        claims += run.fence
        two_workers += len({a.pid for a in attempts_by_run[rid]}) > 1

    per_key = Counter(a.step_key for a in attempts)
    kinds = {a.step_key: a.kind for a in attempts}
    dup = Counter(kinds[k] for k, n in per_key.items() for _ in range(n - 1))
    return {
        "runs": len(orders),
        "seconds": round(chaos.elapsed, 1),
        "kills": len(chaos.killed_at),
        "claims": claims,
        "claims_beyond_fault_free": claims - 2 * len(orders),
        "runs_executed_by_several_workers": two_workers,
        "effects": len(effects),
        "executions": len(attempts),
        "killed_mid_execution": sum(a.t_end is None for a in attempts),
        "duplicate_tool_executions_deduped": dup["tool"],
        "duplicate_model_requests": dup["model"],
    }


def _log_problems(slots: list[Slot]) -> tuple[list[str], int]:
    errors, lost = [], 0
    for slot in slots:
        for log in slot.logs:
            for line in log.read_text(errors="replace").splitlines():
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    record = {"level": "error", "msg": line}  # not ours: a crash
                if record.get("msg") == "lease_lost":
                    lost += 1
                if record.get("level") in ("error", "critical"):
                    errors.append(f"{log.name}: {line[:1500]}")
    return errors, lost


@pytest.mark.timeout(240)
async def test_sigkilled_workers_lose_nothing_and_repeat_nothing(
    store_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    ledger_url = _ledger_url(store_url, tmp_path)
    (tmp_path / "elevenfactor.yaml").write_text(PROJECT)
    chaos_ledger.create(ledger_url)
    store = await open_store(store_url)
    try:
        await migrate(store)
        orders: dict[str, str] = {}
        for i in range(RUNS):
            order = f"order-{i:03d}"
            orders[await submit_run(store, "chaos_order", {"order": order})] = order
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
        env.update(
            DATABASE_URL=store_url,
            PYTHONPATH=str(ROOT),
            ELEVENFACTOR_LEASE_SECONDS=str(LEASE_SECONDS),
            ELEVENFACTOR_LOG_LEVEL="info",
            CHAOS_LEDGER_URL=ledger_url,
        )
        slots = [Slot(i, tmp_path, env) for i in range(WORKERS)]
        chaos = await _run_chaos(store, slots, rng)
        summary = await _check(store, ledger_url, orders, chaos)
    finally:
        await store.close()
    errors, lost = _log_problems(slots)
    summary.update(lease_lost_in_live_workers=lost, seed=seed)
    print(f"\nchaos {store_url.split(':', 1)[0]}: {summary}")
    assert not errors, "\n".join(errors[:20])
    assert summary["kills"] >= 3, "too few kills to call this chaos"
    assert summary["killed_mid_execution"] >= 1
    assert summary["runs_executed_by_several_workers"] >= 1
