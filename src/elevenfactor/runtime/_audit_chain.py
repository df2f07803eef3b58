"""A run's chain checked link by link, with what most likely happened at the first broken one."""

from __future__ import annotations

from elevenfactor.runtime._journal import Event, event_hash

__all__ = ["check_chain"]


def _hash_at(ev: Event, n: int, prev: str) -> str:
    return event_hash(
        prev,
        ev.run_id,
        n,
        ev.step_id,
        ev.kind,
        ev.name,
        ev.status,
        ev.output_hash,
        ev.error,
        ev.fence,
        ev.created_at,
    )


def check_chain(events: list[Event], genesis: str) -> tuple[int, str] | None:
    """The first broken link of a run's chain as ``(position, what happened)``, or None.

    Beyond "this link is broken" it tells what most likely happened there: an event edited in
    place, an event inserted (the next one still links past it), an event deleted (the one now
    in its place was written at the next position), or an event out of order.
    """
    prev = genesis
    for i, ev in enumerate(events):
        if ev.n != i:
            return i, f"event {i} is missing (deleted; event {ev.n} follows event {i - 1})"
        if ev.prev_hash == prev and ev.expected_hash() == ev.hash:
            prev = ev.hash
            continue
        nxt = events[i + 1] if i + 1 < len(events) else None
        before = events[i - 1] if i > 0 else None
        if nxt is not None and nxt.prev_hash == prev and _hash_at(nxt, i, prev) == nxt.hash:
            return i, f"event {i} was inserted: the event after it links past it"
        if (
            before is not None
            and ev.prev_hash == before.prev_hash
            and _hash_at(ev, i - 1, ev.prev_hash) == ev.hash
        ):
            return i - 1, f"event {i - 1} was inserted: the event after it links past it"
        if ev.prev_hash == prev:
            return i, f"event {i} was edited: its content no longer matches its hash"
        if _hash_at(ev, i + 1, ev.prev_hash) == ev.hash:
            return i, f"event {i} was deleted: the event now at {i} was written at position {i + 1}"
        if ev.expected_hash() == ev.hash and i == 0:
            return 0, "event 0 does not link to the run's genesis hash"
        if ev.expected_hash() == ev.hash:
            return i - 1, (
                f"event {i - 1} was rewritten (or events reordered): event {i} links to a"
                " different event"
            )
        return i, f"event {i} was replaced: neither its link nor its content checks out"
    return None
