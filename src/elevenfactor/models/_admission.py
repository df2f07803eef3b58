"""``Admission``: a bounded queue in front of a pool of model instances, with deadlines.

A model run on this machine's cores cannot take every request at once. ``Admission`` hands out
*slots* (one per model instance) first come, first served; a request that finds no free slot
waits in a bounded queue, and one that cannot start before its admission deadline is refused
with ``ModelOverloaded`` (503), or at once with ``ModelBusy`` (429) when the queue is full. Both
carry a ``retry_after`` estimated from the observed service times (an exponentially weighted mean
of how long requests held a slot).

Slots are either *full* or *express*. A long request may only take a full slot; a short one takes
an express slot first, else a full one. So however many long requests arrive, the express slots
stay free for short ones: a short request waits behind other short requests only. Short and long
requests each have their own ``max_queue`` places, so long ones cannot crowd short ones out.

Slots are released from any thread (the model's worker thread releases its slot when generation
has really stopped), and waiters may live on any event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import deque
from dataclasses import dataclass

from elevenfactor.errors import ModelBusy, ModelOverloaded

__all__ = ["Admission", "Slot", "client_timeout"]

#: The client's own time budget for the current request in seconds (``x-elevenfactor-timeout``),
#: set by the server around local-model work only. It can shorten, never lengthen, deadlines.
client_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "elevenfactor_client_timeout", default=None
)

_ALPHA = 0.3  # weight of the newest service time in the running mean


@dataclass(eq=False, slots=True)
class Slot:
    """The right to use model instance ``index`` until released."""

    index: int
    express: bool
    started: float = 0.0


class _Waiter:
    __slots__ = ("future", "loop", "short", "slot")

    def __init__(self, short: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.short = short
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.slot: Slot | None = None


def _queue_depth(deployment: str, depth: int) -> None:
    """Report the queue depth to the metrics (imported here: ``observe`` imports ``models``)."""
    from elevenfactor.observe._metrics import admission_queue

    admission_queue(deployment, depth)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Admission:
    """Slots for ``full`` + ``express`` instances and a FIFO queue of at most ``max_queue``."""

    def __init__(
        self, full: int, express: int, *, max_queue: int, prior_service: float = 1.0
    ) -> None:
        if full < 1:
            raise ValueError("a pool needs at least one full instance")
        self.slots = [Slot(i, i >= full) for i in range(full + express)]
        self.max_queue = max_queue
        self.service = prior_service  # seconds a request holds a slot, running mean
        self.served = 0
        self._idle: list[Slot] = list(reversed(self.slots))  # a stack: warm instances first
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()
        self._who = ""  # the deployment, for the queue-depth metric (named by ``acquire``)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    @property
    def busy(self) -> int:
        """Slots in use."""
        return len(self.slots) - len(self._idle)

    def retry_after(self) -> float:
        """Seconds until a newcomer could expect a slot: the work ahead spread over the slots."""
        ahead = len(self._waiters) + len(self.slots) - len(self._idle)
        return max(1.0, self.service * ahead / len(self.slots))

    def _pick(self, short: bool) -> Slot | None:
        """An idle slot this request may use (most recently used first), or None. Locked."""
        best: Slot | None = None
        for slot in reversed(self._idle):
            if slot.express and not short:
                continue
            if best is None or (slot.express and not best.express):
                best = slot
                if slot.express or not short:
                    break
        if best is not None:
            self._idle.remove(best)
            best.started = time.monotonic()
        return best

    async def acquire(self, *, short: bool, within: float, who: str) -> Slot:
        """A slot, waiting at most ``within`` seconds; refuse with 429/503 and Retry-After."""
        loop = asyncio.get_running_loop()
        with self._lock:
            slot = self._pick(short)
            if slot is not None:
                return slot
            queued = sum(1 for w in self._waiters if w.short == short)
            if queued >= self.max_queue:  # one queue bound per lane: long ones cannot fill it
                raise ModelBusy(
                    f"{who}: the local model is busy and {queued} "
                    f"{'short' if short else 'long'} requests are already waiting "
                    f"(queue size {self.max_queue})",
                    deployment=who,
                    retry_after=self.retry_after(),
                    hint="retry later, or raise the provider's options.max_queue or instances",
                )
            waiter = _Waiter(short, loop)
            self._waiters.append(waiter)
            self._who = who
            _queue_depth(who, len(self._waiters))
        try:
            async with asyncio.timeout(max(within, 0.0)):
                await waiter.future
        except BaseException as exc:
            with self._lock:
                slot = waiter.slot
                if slot is None:
                    self._waiters.remove(waiter)
                    ahead = sum(1 for w in self._waiters if w.short or not short)
                    _queue_depth(who, len(self._waiters))
            if slot is not None:  # granted as the deadline struck: use it unless cancelled
                if isinstance(exc, TimeoutError):
                    return slot
                self.release(slot, served=False)
                raise
            if not isinstance(exc, TimeoutError):
                raise
            raise ModelOverloaded(
                f"{who}: the local model could not start this request within "
                f"{max(within, 0.0):.3g} s (its admission deadline); {self.busy} running, "
                f"{ahead} waiting",
                deployment=who,
                retry_after=self.retry_after(),
                hint="retry later; lower max_tokens, send x-elevenfactor-timeout with more time, "
                "or raise the provider's options.admission_timeout or instances",
            ) from None
        assert waiter.slot is not None
        return waiter.slot

    def release(self, slot: Slot, *, served: bool = True) -> None:
        """Give ``slot`` back (from any thread) and hand it to the first waiter that may use it."""
        now = time.monotonic()
        with self._lock:
            if served:
                took = now - slot.started
                self.service = (
                    took if not self.served else (_ALPHA * took + (1 - _ALPHA) * self.service)
                )
                self.served += 1
            while True:
                waiter = next((w for w in self._waiters if w.short or not slot.express), None)
                if waiter is None:
                    self._idle.append(slot)
                    return
                self._waiters.remove(waiter)
                _queue_depth(self._who, len(self._waiters))
                slot.started = now
                waiter.slot = slot
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # its loop is closed: nobody is waiting there any more
                    waiter.slot = None
                    continue
                return
