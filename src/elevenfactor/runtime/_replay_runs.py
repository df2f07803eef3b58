"""Starting what-if replays and reading them back (the ``replays`` table, m028), and selecting
the recorded runs a many-runs replay takes (``replay --runs QUERY``).

A what-if replay of a run is a new run of ``elevenfactor.replay`` owned by whoever asked for
it, tagged ``replay`` (plus the original's tags), and a ``replays`` row linking the two. The
original must be a finished agent run the caller may read; the change is checked (the model
exists, the agent uses the prompt, the policy resolves) before anything is submitted. Reads of
a replay are scoped by its owner columns in SQL: another member's replay is ``NotFound``.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.errors import NotFound, RequestError
from elevenfactor.governance import Principal, check_id, parse_when
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._replay import load_replayable, replay_run
from elevenfactor.runtime._replay_compare import WhatIfReport, compare_runs
from elevenfactor.runtime._replay_whatif import (
    WHAT_IF_PROGRAM,
    WhatIf,
    WhatIfProgram,
    release_agent,
    what_if_input,
)
from elevenfactor.runtime._runs import submit_run
from elevenfactor.store import Store

__all__ = [
    "ReplayRow",
    "get_replay",
    "parse_query",
    "replay_report",
    "select_runs",
    "start_what_if",
]

MAX_RUNS = 1000
_STATUSES = {
    "succeeded": ("succeeded",),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
    "finished": ("succeeded", "failed", "cancelled"),
}
_KEYS = frozenset({"program", "agent", "status", "since", "until", "tag", "limit"})


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """A what-if replay as stored."""

    id: str
    batch_id: str | None
    run_id: str
    replay_run_id: str
    options: dict[str, Any]
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "batch_id": self.batch_id,
            "run_id": self.run_id,
            "replay_run_id": self.replay_run_id,
            "options": self.options,
            "created_at": self.created_at,
        }


async def start_what_if(
    store: Store,
    programs: Programs,
    principal: Principal,
    run_id: str,
    options: WhatIf,
    *,
    batch_id: str | None = None,
    queue: str = "default",
) -> ReplayRow:
    """Submit the what-if replay of ``run_id`` with ``options`` (see the module docstring)."""
    options.check()
    loaded = await load_replayable(store, run_id, principal)
    program = programs.get(WHAT_IF_PROGRAM)
    if not isinstance(program, WhatIfProgram):
        raise RequestError(f"{WHAT_IF_PROGRAM!r} is not the built-in what-if program")
    if not hasattr(programs.get(loaded.info.program), "spec"):
        raise RequestError(
            f"run {run_id} is a run of the workflow {loaded.info.program!r}; a what-if replay "
            "changes an agent's model, prompt, policy or release",
            code="invalid_value",
            param="run",
            hint="replay it without a change: a deterministic replay",
        )
    release = None
    if options.release is not None:
        release = await release_agent(store, options.release, loaded.info.program)
    program.agent(loaded.info.program, options, release)  # the change applies (else its error)
    recording = await replay_run(store, programs, run_id, principal, loaded=loaded)
    payload = what_if_input(
        run_id,
        loaded.info.program,
        loaded.payload,
        options,
        recording.pins,
        loaded.by_step,
        loaded.payloads,
        release,
    )
    tags = list(dict.fromkeys(["replay", *loaded.lease.tags]))[:32]
    rid = await submit_run(
        store,
        WHAT_IF_PROGRAM,
        payload,
        run_id=f"replay_{uuid.uuid4().hex}",
        owner=principal,
        tags=tags,
        queue=queue,
    )
    row = ReplayRow(f"rp_{uuid.uuid4().hex}", batch_id, run_id, rid, options.to_dict(), time.time())
    org_id, team_id, user_id, key_id = principal.owner()
    await store.execute(
        "INSERT INTO replays (id, batch_id, run_id, replay_run_id, options, org_id, team_id,"
        " user_id, key_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.id, batch_id, run_id, rid, orjson.dumps(row.options).decode(),
            org_id, team_id, user_id, key_id, row.created_at,
        ),
    )  # fmt: skip
    return row


async def get_replay(store: Store, principal: Principal, replay_id: str) -> ReplayRow:
    """The replay ``replay_id`` if ``principal`` may read it (``NotFound`` otherwise)."""
    scope, params = principal.scope()
    row = await store.fetchone(
        "SELECT id, batch_id, run_id, replay_run_id, options, created_at FROM replays"
        f" WHERE id = ? AND {scope}",
        (replay_id, *params),
    )
    if row is None:
        raise NotFound(f"no replay with id {replay_id!r}", code="replay_not_found")
    return ReplayRow(row[0], row[1], row[2], row[3], orjson.loads(row[4]), float(row[5]))


async def replay_report(store: Store, row: ReplayRow) -> WhatIfReport:
    """The divergence report of ``row`` (computed now from both runs)."""
    return await compare_runs(store, row.run_id, row.replay_run_id, row.options)


def parse_query(text: str) -> dict[str, Any]:
    """``program=support status=succeeded since=7d tag=x limit=100`` as filters; a
    ``RequestError`` naming the bad term (``agent`` is ``program``; ``tag`` repeats)."""
    out: dict[str, Any] = {"tags": [], "status": "succeeded", "limit": 100}
    for term in text.split():
        key, sep, value = term.partition("=")
        if not sep or key not in _KEYS or not value:
            raise RequestError(
                f"--runs: {term!r} is not a filter",
                code="invalid_value",
                param="runs",
                hint="KEY=VALUE terms: " + ", ".join(sorted(_KEYS)),
            )
        if key in ("program", "agent"):
            out["program"] = check_id(value, "program")
        elif key == "status":
            if value not in _STATUSES:
                raise RequestError(
                    f"--runs: status must be one of {', '.join(_STATUSES)}",
                    code="invalid_value",
                    param="runs",
                )
            out["status"] = value
        elif key in ("since", "until"):
            out[key] = parse_when(value, "runs")
        elif key == "tag":
            out["tags"].append(check_id(value, "runs"))
        else:
            if not value.isdigit() or not 1 <= int(value) <= MAX_RUNS:
                raise RequestError(
                    f"--runs: limit must be 1-{MAX_RUNS}", code="invalid_value", param="runs"
                )
            out["limit"] = int(value)
    return out


async def select_runs(store: Store, principal: Principal, query: str) -> list[str]:
    """The ids of the finished runs ``query`` selects among those ``principal`` may read,
    newest first (what-if runs themselves excluded)."""
    f = parse_query(query)
    scope, params = principal.scope()
    statuses = _STATUSES[f["status"]]
    where = [scope, f"status IN ({', '.join('?' for _ in statuses)})", "program <> ?"]
    args: list[Any] = [*params, *statuses, WHAT_IF_PROGRAM]
    if "program" in f:
        where.append("program = ?")
        args.append(f["program"])
    if "since" in f:
        where.append("created_at >= ?")
        args.append(f["since"])
    if "until" in f:
        where.append("created_at < ?")
        args.append(f["until"])
    for tag in f["tags"]:
        where.append("tags LIKE ? ESCAPE '!'")
        args.append("%" + re.sub(r"([!%_])", r"!\1", orjson.dumps(tag).decode()) + "%")
    rows = await store.fetchall(
        f"SELECT id FROM runs WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?",
        (*args, f["limit"]),
    )
    return [str(r[0]) for r in rows]
