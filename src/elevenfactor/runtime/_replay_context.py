"""The context of a deterministic replay: a finished run's program re-executed against its
journal, read-only, with no model, tool or other external call.

What is **recorded** and what is **recomputed** (``RECOMPUTED``):

- Recorded — served from the journal, never executed: every step that reaches outside the
  process or is non-deterministic: ``model``, ``tool``, ``tools`` (tool listings), ``clock``,
  ``random``, ``sleep``, ``approval``, ``subrun`` (child runs), ``budget``, ``limits``,
  ``guard`` (verdicts), ``prompt`` (a label is resolved against the store), ``session``,
  ``memory``, ``retrieval``, and a workflow's own ``step`` s.
- Recomputed — the step's function is called again and its encoded output compared byte for
  byte with the journal's: ``context`` (the context assembly's manifest) and ``grounding``
  (the grounding verdict parsed from the judge's recorded answer): pure functions of what came
  before.

Besides, every step the program issues must be the journal's step at that position (same kind
and name: a tool step's name is the tool it calls), the journal must hold no step the program
did not issue, each ``model`` step's request (the messages the program built from the recorded
outputs) must hash to a request recorded for the run in ``model_calls`` (when the run's calls
were recorded with their payloads), and the program's result (or error) must be the run's,
byte for byte. So a replay proves that the program, as deployed now, turns the recorded
answers of the outside world into exactly the requests and the result the run made.

Nothing is written: ``record`` (an approval or a child run the journal does not have) stops
the replay as a divergence. The first divergence stops it too (``ReplayStop``), except a
recomputed output that differs: that is reported and the recorded output is used, so the
replay goes on to the end.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._context import RunContext
from elevenfactor.runtime._journal import Event
from elevenfactor.runtime._run_state import RunState
from elevenfactor.store import blob_hash

__all__ = ["RECOMPUTED", "Divergence", "ReplayContext", "ReplayStop", "ReplayTracker"]

RECOMPUTED = frozenset({"context", "grounding"})
"""Step kinds whose function is pure: re-run on replay and compared with the journal."""
STRUCTURAL = frozenset({"parallel"})
"""Step kinds that take a position but write no event."""


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where a replay first differs from the recording.

    ``reason``: ``step`` (another kind or name at this position), ``missing`` (the program
    issued a step the journal does not have), ``extra`` (the journal has a step the program did
    not issue), ``output`` (a recomputed output differs), ``request`` (a model request differs
    from every recorded one), ``result`` (the result or error differs), ``write`` (the program
    tried to write an event), ``parked``, ``payload`` (a recorded output is gone), ``error``
    (the program raised where the run did not)."""

    reason: str
    step_id: str | None = None
    n: int | None = None
    """The recorded event's position in the journal (write order), when there is one."""
    kind: str | None = None
    name: str | None = None
    expected_kind: str | None = None
    expected_name: str | None = None
    expected: Any = None
    got: Any = None
    message: str = ""

    @classmethod
    def at(
        cls, reason: str, ev: Event, message: str, *, expected: Any = None, got: Any = None
    ) -> Divergence:
        """A divergence at the recorded event ``ev`` (the program issued that very step)."""
        return cls(
            reason, ev.step_id, ev.n, ev.kind, ev.name, ev.kind, ev.name,
            expected=expected, got=got, message=message,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "reason": self.reason,
            "step_id": self.step_id,
            "n": self.n,
            "kind": self.kind,
            "name": self.name,
            "expected_kind": self.expected_kind,
            "expected_name": self.expected_name,
            "expected": self.expected,
            "got": self.got,
            "message": self.message,
        }


class ReplayStop(BaseException):
    """Stops the replayed program at its first divergence (a BaseException, so ``except
    Exception`` in a program cannot swallow it)."""


def _decoded(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")


@dataclass
class ReplayTracker:
    """What one replay found, shared by the context and its branch views."""

    requests: Counter[str] = field(default_factory=Counter)
    """Request hashes of the run's recorded model calls (consumed as they match)."""
    routes: tuple[str, ...] = ()
    consumed: set[str] = field(default_factory=set)
    recomputed: int = 0
    recomputed_identical: int = 0
    requests_verified: int = 0
    requests_unverified: int = 0
    divergence: Divergence | None = None
    pins: list[tuple[str, str, bytes]] = field(default_factory=list)
    """``(tool, canonical arguments, recorded output)`` of every tool step, in issue order."""

    def diverged(self, found: Divergence) -> None:
        """Keep ``found`` if it is the first."""
        if self.divergence is None:
            self.divergence = found

    def stop(self, found: Divergence) -> ReplayStop:
        """Keep ``found`` and return the signal that stops the program."""
        self.diverged(found)
        return ReplayStop(found.message)

    def check_request(self, ev: Event, args: Sequence[Any]) -> None:
        """The model request the program built (``args[0]``, its messages) against the
        requests recorded for the run, under each of their routes."""
        messages = args[0] if args else None
        if not self.requests or not isinstance(messages, list):
            self.requests_unverified += 1
            return
        body = [m.model_dump(mode="json") if hasattr(m, "model_dump") else m for m in messages]
        for route in self.routes:
            digest = blob_hash(orjson.dumps({"model": route, "messages": body}))
            if self.requests[digest] > 0:
                self.requests[digest] -= 1
                self.requests_verified += 1
                return
        self.diverged(
            Divergence.at(
                "request",
                ev,
                f"the model request of step {ev.step_id} is none of the requests "
                "recorded for the run",
                got={"messages": body},
            )
        )

    def pin(self, args: Sequence[Any], ev: Event, output: bytes | None) -> None:
        """Keep a tool step's call and recorded output (the pins of a what-if replay)."""
        if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], dict):
            canonical = encode(args[1]).decode()
            self.pins.append((args[0], canonical, output or b"null"))


class ReplayContext(RunContext):
    """A ``RunContext`` that serves every step from the journal and writes nothing (see the
    module docstring); the divergences go to ``tracker``."""

    def __init__(self, shared: RunState, prefix: str, tracker: ReplayTracker) -> None:
        super().__init__(shared, prefix)
        self.tracker = tracker

    def reserve(self, kind: str, name: str) -> tuple[str, Event | None]:
        """The next position and its recorded event; a divergence stops the program."""
        step_id = f"{self._prefix}{self._counter}"
        self._counter += 1
        ev = self._s.by_step.get(step_id)
        if ev is None:
            if kind in STRUCTURAL:
                return step_id, None
            raise self.tracker.stop(
                Divergence(
                    "missing",
                    step_id,
                    None,
                    kind,
                    name,
                    message=f"the program issued step {step_id} ({kind} {name!r}), which the "
                    "journal does not have",
                )
            )
        if ev.kind != kind or ev.name != name:
            raise self.tracker.stop(
                Divergence(
                    "step",
                    step_id,
                    ev.n,
                    kind,
                    name,
                    ev.kind,
                    ev.name,
                    message=f"step {step_id} is {kind} {name!r} now, but the journal recorded "
                    f"{ev.kind} {ev.name!r}",
                )
            )
        self.tracker.consumed.add(step_id)
        return step_id, ev

    def check_live(self) -> None:
        """Nothing to check: a replay holds no lease."""

    def replayed(self, ev: Event, result_type: type[Any] | None = None) -> Any:
        """The recorded outcome; a payload retention dropped stops the replay."""
        gone = ev.output_hash is not None and ev.output_hash not in self._s.payloads
        if ev.status != "failed" and gone:
            raise self.tracker.stop(
                Divergence.at(
                    "payload",
                    ev,
                    f"the output of step {ev.step_id} is gone (retention)",
                )
            )
        return super().replayed(ev, result_type)

    async def record(
        self,
        step_id: str,
        kind: str,
        name: str,
        status: str,
        output: bytes | None,
        error: str | None = None,
    ) -> Event:
        """Never writes: the program wanted to record a step the journal does not have."""
        raise self.tracker.stop(
            Divergence(
                "write",
                step_id,
                None,
                kind,
                name,
                got=_decoded(output),
                message=f"the program recorded step {step_id} ({kind} {name!r}) anew",
            )
        )

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        kind: str = "step",
        result_type: type[Any] | None = None,
        retry: Any = None,
        **kwargs: Any,
    ) -> Any:
        """The recorded outcome of the step at this position (recomputed and compared for
        ``RECOMPUTED`` kinds; a model step's request checked; a tool step's call kept)."""
        _, ev = self.reserve(kind, name)
        assert ev is not None  # only structural kinds have no event, and they are not steps
        if ev.status != "failed":
            if kind in RECOMPUTED:
                await self._recompute(ev, fn, args, kwargs)
            elif kind == "model":
                self.tracker.check_request(ev, args)
            elif kind == "tool":
                out = self._s.payloads.get(ev.output_hash) if ev.output_hash else None
                self.tracker.pin(args, ev, out)
        return self.replayed(ev, result_type)

    async def _recompute(
        self, ev: Event, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        t = self.tracker
        t.recomputed += 1
        recorded = self._s.payloads.get(ev.output_hash) if ev.output_hash else None
        try:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            got: bytes | None = encode(value)
        except Exception as exc:
            t.diverged(
                Divergence.at(
                    "output",
                    ev,
                    f"recomputing step {ev.step_id} ({ev.kind} {ev.name!r}) failed",
                    expected=_decoded(recorded),
                    got=f"{type(exc).__name__}: {exc}",
                )
            )
            return
        if got == recorded:
            t.recomputed_identical += 1
            return
        t.diverged(
            Divergence.at(
                "output",
                ev,
                f"step {ev.step_id} ({ev.kind} {ev.name!r}) computes another output "
                "than the journal's",
                expected=_decoded(recorded),
                got=_decoded(got),
            )
        )

    def branch(self, step_id: str, index: int) -> RunContext:
        """A branch view sharing this replay's tracker."""
        return ReplayContext(self._s, f"{step_id}.{index}.", self.tracker)
