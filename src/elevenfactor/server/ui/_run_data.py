"""Everything the run page shows, read in a fixed handful of queries (none per step).

The run is read with ``get_run`` and the viewer's principal (another member's run is
``RunNotFound``: the same 404 as an unknown id); every other query names the run's id and
repeats the viewer's scope on the table it reads (approvals, child runs, retries, call records),
so nothing of a run the viewer may not read can reach the page. Indexes used: the journal's
primary key ``(run_id, n)``, ``runs_parent``, ``approvals_run``, ``model_calls_run_id``, the
``erasures`` primary key ``(subject, location)`` and the blobs' primary key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.governance import Principal
from elevenfactor.runtime import Event, RunInfo, get_run
from elevenfactor.runtime._retention_audit import Erased, load_erased
from elevenfactor.store import Store

__all__ = [
    "MAX_RETRIES",
    "STEP_PAGE",
    "ApprovalRow",
    "CallRow",
    "RunData",
    "RunLink",
    "decoded",
    "load_run",
    "next_retry",
    "retry_ids",
    "retry_root",
]

STEP_PAGE = 500
"""Journal steps shown on one page (``?from=N`` shows the next ones)."""
MAX_RETRIES = 20
"""Retries the dashboard submits for one run (``RUN:retry-1`` ... ``RUN:retry-20``)."""
_RETRY = ":retry-"
_CALLS_MAX = 5000
_LINKS_MAX = 200
_EVENT_COLUMNS = (
    "run_id, n, step_id, kind, name, status, output_hash, error, fence, created_at, prev_hash, hash"
)


@dataclass(frozen=True, slots=True)
class CallRow:
    """A model call record of the run (``model_calls``)."""

    id: str
    created_at: float
    latency_ms: float
    tokens_in: int
    tokens_out: int
    cost: float | None
    route: str
    deployment: str | None
    status: str
    request_hash: str | None
    cache_hit: bool


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """An approval the run asked for."""

    id: str
    step_id: str
    name: str
    status: str
    request_hash: str
    group: str | None
    created_at: float
    decided_at: float | None


@dataclass(frozen=True, slots=True)
class RunLink:
    """Another run linked to this one (a child, a retry, the original of a retry)."""

    id: str
    status: str
    program: str = ""
    input_hash: str | None = None


@dataclass
class RunData:
    """A run as its page needs it."""

    info: RunInfo
    tags: tuple[str, ...]
    trace_id: str | None
    session_id: str | None
    owner: str | None
    team: str | None
    events: list[Event]
    """The journal steps shown (from ``first``, at most ``STEP_PAGE``)."""
    first: int
    size: int
    """Steps shown on a page (``STEP_PAGE``)."""
    more: bool
    """Steps follow the ones shown."""
    total_events: int
    contents: dict[str, bytes]
    """Payloads by hash: step outputs shown, input, result, model requests, approval requests
    and child inputs (each present unless erased or missing)."""
    erased: Erased
    calls: list[CallRow]
    approvals: list[ApprovalRow]
    children: list[RunLink]
    retries: list[RunLink]
    retry_of: RunLink | None
    has_guards: bool
    """A guard policy applied to the run (it has ``guard`` steps): payloads are redacted."""
    notes: list[str] = field(default_factory=list)


def retry_root(run_id: str) -> tuple[str, int]:
    """The run a dashboard retry ``run_id`` retried, and which retry it is (0: not a retry)."""
    root, sep, n = run_id.rpartition(_RETRY)
    if sep and root and n.isdigit() and 1 <= int(n) <= MAX_RETRIES and n == str(int(n)):
        return root, int(n)
    return run_id, 0


def retry_ids(root: str) -> list[str]:
    """The ids of the dashboard's retries of ``root``, in order (fewer when ids grow too long)."""
    return [f"{root}{_RETRY}{i}" for i in range(1, MAX_RETRIES + 1) if len(root) + 10 <= 200]


async def next_retry(store: Store, root: str) -> int | None:
    """The number of the next dashboard retry of ``root`` (None: none is left). Reads which
    retry ids exist, whoever owns them, only to pick a free one: nothing else of them."""
    ids = retry_ids(root)
    if not ids:
        return None
    marks = ", ".join("?" for _ in ids)
    taken = {
        str(r[0]) for r in await store.fetchall(f"SELECT id FROM runs WHERE id IN ({marks})", ids)
    }
    return next((i for i, rid in enumerate(ids, 1) if rid not in taken), None)


async def _fetch_blobs(store: Store, hashes: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    todo = sorted(hashes)
    for i in range(0, len(todo), 400):
        chunk = todo[i : i + 400]
        marks = ", ".join("?" for _ in chunk)
        for digest, content in await store.fetchall(
            f"SELECT hash, content FROM blobs WHERE hash IN ({marks})", chunk
        ):
            if content is not None:
                out[str(digest)] = bytes(content)
    return out


async def _events(
    store: Store, run_id: str, first: int, size: int
) -> tuple[list[Event], dict[str, bytes], bool, bool]:
    """The shown window of the journal (``size`` steps from ``first``) with its inline outputs,
    whether more follow, and whether the run has guard steps (anywhere in its journal)."""
    rows = await store.fetchall(
        f"SELECT {_EVENT_COLUMNS}, output FROM journal WHERE run_id = ? AND n >= ?"
        " ORDER BY n LIMIT ?",
        (run_id, first, size + 1),
    )
    more = len(rows) > size
    rows = rows[:size]
    events = [Event(*r[:-1]) for r in rows]
    inline = {str(r[6]): bytes(r[-1]) for r in rows if r[-1] is not None and r[6] is not None}
    guards = any(e.kind == "guard" for e in events)
    if not guards and (first > 0 or more):
        row = await store.fetchone(
            "SELECT 1 FROM journal WHERE run_id = ? AND kind = 'guard' LIMIT 1", (run_id,)
        )
        guards = row is not None
    return events, inline, more, guards


def _scope(principal: Principal) -> tuple[str, list[Any]]:
    """The viewer's scope as a filter on rows found through the run's own index (``run_id``,
    ``parent_id``, ids): ``(...) IS TRUE`` means the same, but keeps SQLite's planner (which has
    no statistics) from taking an owner index instead and scanning the owner's every row."""
    scope, params = principal.scope()
    return f"({scope}) IS TRUE", params


async def load_run(store: Store, run_id: str, principal: Principal, first: int = 0) -> RunData:
    """The run ``run_id`` as ``principal`` may see it (``RunNotFound`` otherwise), with the
    journal steps from ``first`` on."""
    info = await get_run(store, run_id, principal)
    extra = await store.fetchone(
        "SELECT r.tags, r.trace_id, r.session_id, u.name, t.name FROM runs r"
        " LEFT JOIN users u ON u.id = r.user_id LEFT JOIN teams t ON t.id = r.team_id"
        " WHERE r.id = ?",
        (info.id,),
    )
    assert extra is not None  # get_run found it
    tags: tuple[str, ...] = tuple(orjson.loads(extra[0])) if extra[0] else ()
    size = STEP_PAGE
    events, contents, more, guards = await _events(store, info.id, first, size)
    total = first + len(events)
    if more or first:
        row = await store.fetchone("SELECT COUNT(*) FROM journal WHERE run_id = ?", (info.id,))
        total = int(row[0]) if row else total
    scope, params = _scope(principal)
    calls = [
        CallRow(str(r[0]), float(r[1]), float(r[2]), int(r[3]), int(r[4]), r[5], str(r[6]), r[7],
                str(r[8]), r[9], bool(r[10]))
        for r in await store.fetchall(
            "SELECT id, created_at, latency_ms, tokens_in, tokens_out, cost, route, deployment,"
            " status, request_hash, cache_hit FROM model_calls"
            f" WHERE run_id = ? AND {scope} ORDER BY created_at LIMIT ?",
            (info.id, *params, _CALLS_MAX),
        )
    ]  # fmt: skip
    approvals = [
        ApprovalRow(*r)
        for r in await store.fetchall(
            "SELECT id, step_id, name, status, request_hash, reviewer_group, created_at,"
            f" decided_at FROM approvals WHERE run_id = ? AND {scope} ORDER BY created_at",
            (info.id, *params),
        )
    ]
    children = [
        RunLink(str(r[0]), str(r[1]), str(r[2]), str(r[3]))
        for r in await store.fetchall(
            "SELECT id, status, program, input_hash FROM runs"
            f" WHERE parent_id = ? AND {scope} ORDER BY created_at LIMIT ?",
            (info.id, *params, _LINKS_MAX),
        )
    ]
    root, nth = retry_root(info.id)
    wanted = [i for i in retry_ids(root) if i != info.id]
    if nth:
        wanted.append(root)
    linked: dict[str, RunLink] = {}
    if wanted:
        marks = ", ".join("?" for _ in wanted)
        for r in await store.fetchall(
            f"SELECT id, status, program FROM runs WHERE id IN ({marks}) AND {scope}",
            (*wanted, *params),
        ):
            linked[str(r[0])] = RunLink(str(r[0]), str(r[1]), str(r[2]))
    retries = [linked[i] for i in retry_ids(root) if i in linked]
    hashes = {info.input_hash, *(h for h in (info.result_hash,) if h)}
    hashes |= {e.output_hash for e in events if e.output_hash and e.output_hash not in contents}
    hashes |= {c.request_hash for c in calls if c.request_hash}
    hashes |= {a.request_hash for a in approvals}
    hashes |= {c.input_hash for c in children if c.input_hash}
    contents.update(await _fetch_blobs(store, hashes - set(contents)))
    subjects = [info.id, *(a.id for a in approvals), *(c.id for c in children)]
    subjects += [c.id for c in calls if c.request_hash]
    erased = await load_erased(store, subjects)
    return RunData(
        info=info,
        tags=tags,
        trace_id=extra[1],
        session_id=extra[2],
        owner=extra[3],
        team=extra[4],
        events=events,
        first=first,
        size=size,
        more=more,
        total_events=total,
        contents=contents,
        erased=erased,
        calls=calls,
        approvals=approvals,
        children=children,
        retries=retries,
        retry_of=linked.get(root) if nth else None,
        has_guards=guards,
    )


def decoded(data: RunData, digest: str | None) -> Any:
    """The decoded payload ``digest`` if the page loaded it, else None."""
    if digest is None or digest not in data.contents:
        return None
    try:
        return orjson.loads(data.contents[digest])
    except orjson.JSONDecodeError:
        return None
