"""One generated run, written as the runtime would have left it: its input and result blobs, its
row, its hash-chained journal (``genesis_hash`` / ``event_hash``, the project's functions), its
ledger entries (created; ended or checkpoint), its approval (created, decided or cancelled, with
the decision journaled as the step's output), its model calls and its child runs."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.ui._ledger import LedgerWriter
from bench.ui._people import Cast, Member
from bench.ui._sink import SqliteSink
from bench.ui._steps import Call, Step, agent_steps, eval_steps, workflow_steps
from elevenfactor.runtime._approvals import Decision
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._journal import event_hash, genesis_hash
from elevenfactor.runtime._settle import _end_body, end_error
from elevenfactor.store import blob_hash

__all__ = ["RunFactory", "RunSpec"]

_GROUP = {"refund": "finance", "send_email": "ops", "delete_record": "security", "deploy": "ops"}
_ACTION_STATUS = {
    "approve": "approved", "reject": "rejected", "edit": "edited", "answer": "answered",
    "timeout": "expired",
}  # fmt: skip
_WORKER = {"org_id": "org_default", "user_id": "system", "user": "system", "key_id": None,
           "via": "system"}  # fmt: skip


@dataclass(slots=True)
class RunSpec:
    """What to generate: the run's program and kind (``agent``, ``workflow``, ``eval``), owner,
    creation time, the status it ends up in, and its shape."""

    program: str
    kind: str
    member: Member
    created_at: float
    status: str
    tags: list[str] = field(default_factory=list)
    turns: int = 1
    approval: str | None = None
    """None, ``pending``, ``cancel`` or a decision action (approve, reject, edit, answer,
    timeout)."""
    child: str | None = None
    session_id: str | None = None
    run_id: str | None = None
    parent_id: str | None = None
    suite: str | None = None
    cases: int = 0


@dataclass(slots=True)
class _State:
    spec: RunSpec
    run_id: str
    trace_id: str
    events: int = 0
    prev: str = ""
    t: float = 0.0
    skip_tool: bool = False
    approval_step: str | None = None


class RunFactory:
    """Writes generated runs into a ``SqliteSink``; ``long_run`` and ``approvals`` remember what
    the bench needs to find again."""

    def __init__(
        self, rng: random.Random, sink: SqliteSink, ledger: LedgerWriter, cast: Cast
    ) -> None:
        self.rng = rng
        self.sink = sink
        self.ledger = ledger
        self.cast = cast
        self.runs = 0
        self.pending: list[str] = []

    def _hex(self, bits: int = 128) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _blob(self, data: bytes, at: float) -> str:
        digest = blob_hash(data)
        self.sink.add("blobs", (digest, len(data), data, at))
        return digest

    def emit(self, spec: RunSpec) -> tuple[str, float, Any]:
        """Write the run (and its children); its id, when it settled and its result."""
        rng = self.rng
        rid = spec.run_id or self._hex()
        program, member = spec.program, spec.member
        data = encode({"input": f"{program} request {rng.randrange(10**9)}", "lang": "en"})
        input_hash = self._blob(data, spec.created_at)
        genesis = genesis_hash(rid, program, input_hash, spec.created_at)
        org, team, user, key = member.owner
        body: dict[str, Any] = {
            "program": program, "input_hash": input_hash, "genesis": genesis,
            "parent_id": spec.parent_id, "owner": [org, team, user, key],
        }  # fmt: skip
        if spec.tags:
            body["tags"] = spec.tags
        self.ledger.add("run.created", rid, member.actor, body, spec.created_at)
        st = _State(spec, rid, self._hex(), prev=genesis)
        st.t = spec.created_at + rng.uniform(0.02, 1.5)
        status = spec.status
        if status not in ("queued",) and not (status == "cancelled" and spec.approval is None):
            status = self._journal(st, self._steps(spec))
        return self._settle(st, status, input_hash, genesis)

    def _steps(self, spec: RunSpec) -> list[Step]:
        if spec.kind == "agent":
            gate = None if spec.approval is None else self.rng.randrange(max(1, spec.turns - 1))
            return agent_steps(
                self.rng, spec.program, spec.turns, session=spec.session_id is not None,
                approval_turn=gate, child=spec.child,
            )  # fmt: skip
        if spec.kind == "eval":
            return eval_steps(self.rng, spec.suite or "suite", spec.cases)
        return workflow_steps(self.rng, spec.program, spec.child)

    def _journal(self, st: _State, steps: list[Step]) -> str:
        """Chain the steps; the status the run ends in (it may stop early: running, failed,
        waiting on its approval, cancelled while waiting)."""
        spec, rng = st.spec, self.rng
        stop = len(steps)
        if spec.status == "running":
            stop = rng.randrange(1, len(steps)) if len(steps) > 1 else 1
        fail_at = rng.randrange(len(steps)) if spec.status == "failed" else None
        for i, step in enumerate(steps[:stop]):
            if step.approval is not None:
                outcome = self._approval(st, step)
                if outcome is not None:
                    return outcome
                continue
            if st.skip_tool and step.kind == "tool":
                st.skip_tool = False
                continue
            output: Any = step.output
            if step.child is not None:
                child_id = f"{st.run_id}.{st.events}"
                child = RunSpec(
                    step.child, "agent" if step.child == "summarizer" else "workflow",
                    spec.member, st.t, "succeeded", spec.tags, turns=1, run_id=child_id,
                    parent_id=st.run_id,
                )  # fmt: skip
                _, st.t, output = self.emit(child)
            st.t += step.seconds
            if fail_at is not None and i >= fail_at and step.kind in ("model", "tool", "step"):
                err = {"type": "TimeoutError", "message": f"{step.name} timed out after 30s"}
                self._event(st, step, None, orjson.dumps(err).decode(), "failed")
                return "failed"
            self._event(st, step, output, None, "done")
        return spec.status if spec.status != "failed" else "succeeded"

    def _event(self, st: _State, step: Step, output: Any, error: str | None, status: str) -> None:
        n = st.events
        sid = str(n)
        out = None if output is None and status == "failed" else encode(output)
        out_hash = None if out is None else blob_hash(out)
        digest = event_hash(
            st.prev, st.run_id, n, sid, step.kind, step.name, status, out_hash, error, 1, st.t
        )
        self.sink.add(
            "journal",
            (st.run_id, n, sid, step.kind, step.name, status, out_hash, error, 1, st.t, st.prev,
             digest, out),
        )  # fmt: skip
        st.prev, st.events = digest, n + 1
        if step.call is not None:
            self._call(st, step.call, ok=status == "done")

    def _call(self, st: _State, call: Call, *, ok: bool) -> None:
        from bench.ui._calls_gen import call_row

        spec = st.spec
        self.sink.add(
            "model_calls",
            call_row(
                self._hex(), st.trace_id, st.t, spec.member, call, ok=ok, run_id=st.run_id,
                agent=spec.program, session_id=spec.session_id, tags=spec.tags,
                prompt=f"{spec.program}-system@a1b2c3",
            ),
        )  # fmt: skip

    def _approval(self, st: _State, step: Step) -> str | None:
        """The approval at this step: None when decided (its decision journaled), else the
        status the run stops in."""
        spec, rng = st.spec, self.rng
        tool = step.approval or "refund"
        aid, sid, name = self._hex(), str(st.events), step.name
        member = spec.member
        org = member.principal.org_id
        group = "ops" if org == "org_acme" else _GROUP[tool]
        args = {"order_id": f"o-{rng.randrange(10**6)}", "amount": round(rng.uniform(5, 900), 2),
                "note": "customer asked twice"}  # fmt: skip
        request = {"agent": spec.program, "tool": tool, "arguments": args, "risk": "high"}
        req_hash = self._blob(encode(request), st.t)
        timeout_at = st.t + 86400.0
        self.ledger.add(
            "approval.created", aid, member.actor,
            {"run_id": st.run_id, "step_id": sid, "name": name, "request_hash": req_hash,
             "group": group}, st.t,
        )  # fmt: skip
        owner = member.owner
        if spec.approval in ("pending", "cancel"):
            status = "pending" if spec.approval == "pending" else "cancelled"
            self.sink.add(
                "approvals",
                (aid, st.run_id, sid, name, status, req_hash, group, st.t, timeout_at, "reject",
                 None, None, None, *owner, None, None),
            )  # fmt: skip
            st.approval_step = aid
            if status == "pending":
                self.pending.append(aid)
                return "waiting"
            st.t += rng.uniform(60, 3600)
            self.ledger.add("approval.cancelled", aid, member.actor, {"run_id": st.run_id}, st.t)
            return "cancelled"
        action = spec.approval or "approve"
        decider = self._decider(org, group)
        decided_at = st.t + rng.uniform(30, 4 * 3600)
        decision = Decision(
            action="reject" if action == "timeout" else action,
            reason="amount over the policy limit" if action in ("reject", "timeout") else None,
            arguments={**args, "amount": 10.0} if action == "edit" else None,
            answer="Refund already issued last week." if action == "answer" else None,
            decided_by="system:timeout" if action == "timeout" else decider.principal.label,
            decided_at=decided_at,
            timed_out=action == "timeout",
            decider=None if action == "timeout" else decider.actor,
        )
        text = decision.model_dump_json()
        digest = blob_hash(text.encode())
        by_id = "system" if action == "timeout" else decider.principal.user_id
        by_actor = _WORKER if action == "timeout" else decider.actor
        status = _ACTION_STATUS[action]
        self.sink.add(
            "approvals",
            (aid, st.run_id, sid, name, status, req_hash, group, st.t, timeout_at, "reject",
             text, decision.decided_by, decided_at, *owner, by_id, digest),
        )  # fmt: skip
        self.ledger.add(
            "approval.decided", aid, by_actor,
            {"run_id": st.run_id, "status": status, "decision_hash": digest}, decided_at,
        )  # fmt: skip
        st.t = decided_at + rng.uniform(0.05, 2.0)
        self._event(st, step, decision, None, "done")
        st.skip_tool = action in ("reject", "answer", "timeout")
        return None

    def _decider(self, org: str, group: str) -> Member:
        members = self.cast.of_org(org)
        ok = [m for m in members if group in m.principal.groups] or [
            m for m in members if m.principal.is_admin
        ]
        return self.rng.choice(ok)

    def _settle(
        self, st: _State, status: str, input_hash: str, genesis: str
    ) -> tuple[str, float, Any]:
        spec, rng = st.spec, self.rng
        self.runs += 1
        head = st.prev if st.events else None
        end = st.t + rng.uniform(0.001, 0.05)
        result: Any = None
        result_hash = error = lease_owner = lease_expires = None
        attempt, fence = 1, 1
        if status == "succeeded":
            result = {"answer": f"done: {spec.program}", "items": rng.randrange(0, 50)}
            result_hash = self._blob(encode(result), end)
        elif status == "failed":
            error = end_error("step_failed", f"step {st.events - 1} failed: timed out after 30s")
        elif status == "cancelled":
            error = end_error("run_cancelled", "cancelled by request")
        elif status == "running":
            lease_owner = f"worker-{rng.randrange(1, 4)}:{rng.randrange(1000, 9999)}"
            lease_expires, end = st.t + 15.0, st.t
        elif status == "queued":
            attempt = fence = 0
            end = spec.created_at
        if status in ("succeeded", "failed", "cancelled", "waiting"):
            kind = "run.checkpoint" if status == "waiting" else "run.ended"
            body = _end_body(status, head, st.events, result_hash, error)
            self.ledger.add(kind, st.run_id, _WORKER, body, end)
        org, team, user, key = spec.member.owner
        self.sink.add(
            "runs",
            (st.run_id, spec.program, "default" if spec.kind != "eval" else "evals", 0, status,
             input_hash, result_hash, error, spec.parent_id, spec.session_id, spec.created_at,
             end, None, None, attempt, 1, 1.0, None, 0, fence, lease_owner, lease_expires,
             int(status == "cancelled"), genesis, head if status != "running" else None,
             org, team, user, key, orjson.dumps(spec.tags).decode() if spec.tags else None,
             st.trace_id, None, None),
        )  # fmt: skip
        return st.run_id, end, result
