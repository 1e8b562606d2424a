"""The scheduler: runs steps on a bounded thread pool, in lanes, until none is left or it is told to stop.

It knows nothing of what a step is. A step returns the steps it makes possible, so dependent work starts as
soon as its parent is done (not level by level). The steps wait in depth-first pre-order: a step's children
come before the steps after it, in the order it gave them. While at most ``frontier`` steps wait, the steps
``first`` picks (for the export, a list's next page: a list's pages are the critical path) start before the
others; once more wait, strictly the first in order, so the work finishes what it opened before it opens
more, and the steps waiting (and a checkpoint that holds them) stay bounded.

Each step belongs to a lane (for the export: one service limit, as the rate governor keys its limiters). A lane
has at most ``concurrency`` steps in flight, and all lanes together at most ``2 * concurrency - 1``: a lane that
is paced or throttled holds at most about half the slots, so it never starves another, and ``concurrency`` 1
is a plain sequential loop. A step waiting out a Retry-After or a backoff (``shared.ports.wait_aside``) lends
its slot meanwhile, and takes it back, before any new step, when the wait is over: one throttled call does not
idle a slot for a second (at ``concurrency`` 1 it keeps it: still sequential). How a step waits aside is the
``wait_aside`` context variable the caller names (``shared.ports.WAIT_ASIDE`` for the export), which the
scheduler sets for each step.
"""

from __future__ import annotations

import bisect
import contextvars
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextvars import ContextVar
from operator import attrgetter
from queue import Empty, SimpleQueue
from typing import Any, Generic, NamedTuple, TypeVar

S = TypeVar("S")
_ORDER = attrgetter("order")
Order = tuple[int, ...]  # a step's place in depth-first pre-order: its parent's, then its index among its siblings


class Lanes(Generic[S]):
    def __init__(
        self,
        run_step: Callable[[S], list[S]],
        lane: Callable[[S], Hashable],
        *,
        first: Callable[[S], bool] | None = None,
        concurrency: int,
        frontier: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint: Callable[[list[S]], object] | None = None,
        checkpoint_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        thread_name: str = "dsr-lanes",
        wait_aside: ContextVar[Callable[[float, Callable[[float], object]], None] | None] | None = None,
    ) -> None:
        self.run_step = run_step
        self.lane = lane
        self.first = first
        self.concurrency = max(1, concurrency)
        self.frontier = frontier or 4 * self.concurrency
        self.should_stop = should_stop or (lambda: False)
        self.checkpoint = checkpoint
        self.checkpoint_seconds = checkpoint_seconds
        self.clock = clock
        self.thread_name = thread_name
        self.wait_aside = wait_aside

    @property
    def total_slots(self) -> int:
        return 2 * self.concurrency - 1

    def run(self, steps: Iterable[S]) -> list[S] | None:
        """Run ``steps`` and every step they lead to. ``None`` once all have run; the steps still waiting, in
        order (none under way), when ``should_stop`` said stop. Every ``checkpoint_seconds`` the pool quiesces
        (the steps under way finish) and ``checkpoint`` is given the steps waiting, in order; while a step waits out
        a Retry-After (the pool would idle for it), the checkpoint waits, up to three times as long."""
        pending: list[_Waiting[S]] = []
        self._enqueue(pending, (), list(steps))
        running: dict[Future[list[S]], _Waiting[S]] = {}
        slots = _Slots(self.concurrency, self.total_slots)
        last_checkpoint = self.clock()
        with ThreadPoolExecutor(max_workers=slots.threads, thread_name_prefix=self.thread_name) as pool:
            while pending or running:
                stop = self.should_stop()
                # a checkpoint is due; while a step waits out a Retry-After, not before three times as long
                since = self.clock() - last_checkpoint
                patient = since < 3 * self.checkpoint_seconds
                due = self.checkpoint is not None and since >= self.checkpoint_seconds
                if stop or (due and not (patient and slots.aside)):
                    # quiesce: let the steps under way finish, so that what waits is the whole of the work left;
                    # a checkpoint (not a stop) gives up for now when a step goes to wait out a Retry-After
                    for future in as_completed(running):
                        self._finished(pending, running, future, slots)
                        if not stop and patient and slots.aside:
                            break
                    if stop:
                        return [entry.step for entry in pending]
                    if not running:
                        assert self.checkpoint is not None
                        self.checkpoint([entry.step for entry in pending])
                        last_checkpoint = self.clock()
                while (entry := self._next_step(pending, slots)) is not None:
                    context = contextvars.copy_context()
                    if self.wait_aside is not None:
                        context.run(self.wait_aside.set, slots.aside_for(entry.lane))
                    future = pool.submit(context.run, self.run_step, entry.step)
                    running[future] = entry
                    future.add_done_callback(slots.events.put)
                # the next event: a step done (its future) or a slot lent (None); then every other one queued
                try:
                    event = slots.events.get(timeout=self.checkpoint_seconds)
                except Empty:
                    continue
                while True:
                    if event is not None and event in running:
                        self._finished(pending, running, event, slots)
                    try:
                        event = slots.events.get_nowait()
                    except Empty:
                        break
        return None

    def _finished(
        self,
        pending: list[_Waiting[S]],
        running: dict[Future[list[S]], _Waiting[S]],
        future: Future[list[S]],
        slots: _Slots,
    ) -> None:
        """A step is done: its slot is free, its children wait in its place."""
        entry = running.pop(future)
        slots.release(entry.lane)
        self._enqueue(pending, entry.order, future.result())

    def _enqueue(self, pending: list[_Waiting[S]], parent: Order, children: list[S]) -> None:
        """Children take their parent's place in depth-first pre-order, in the order the parent gave them (side by
        side: none of the parent's other descendants can be waiting yet)."""
        if not children:
            return
        entries = [
            _Waiting((*parent, i), child, self.lane(child), self.first is not None and self.first(child))
            for i, child in enumerate(children)
        ]
        at = bisect.bisect_left(pending, entries[0].order, key=_ORDER)
        pending[at:at] = entries

    def _next_step(self, pending: list[_Waiting[S]], slots: _Slots) -> _Waiting[S] | None:
        """The first waiting step, in depth-first pre-order, whose lane has a free slot; while at most
        ``frontier`` steps wait, one that ``first`` picks before any other. Takes its slot."""
        full = slots.full_lanes()
        if full is None:
            return None  # every slot is taken
        passes = (True, False) if self.first is not None and len(pending) <= self.frontier else (False,)
        for first_only in passes:
            for i, entry in enumerate(pending):
                if (first_only and not entry.first) or entry.lane in full:
                    continue
                if slots.take(entry.lane):
                    del pending[i]
                    return entry
                full.add(entry.lane)  # a step back from waiting aside took it meanwhile
        return None


class _Waiting(NamedTuple, Generic[S]):
    order: Order  # its place in depth-first pre-order
    step: S
    lane: Hashable
    first: bool  # ``first`` picks it


class _Slots:
    """The slots of a run: per lane at most ``per_lane`` held, in all ``total``. A step waiting aside lends its
    slot; when its wait is over it takes it back before any new step starts (``take`` refuses its lane, and any
    lane while all slots would be full)."""

    def __init__(self, per_lane: int, total: int) -> None:
        self.per_lane, self.total = per_lane, total
        self.threads = 2 * total  # a thread per slot, and as many for the steps waiting aside
        self._held: Counter[Hashable] = Counter()
        self._returning: Counter[Hashable] = Counter()
        self._aside = 0
        self._cond = threading.Condition()
        self.events: SimpleQueue[Future[Any] | None] = SimpleQueue()  # steps done, and None for a slot lent

    def full_lanes(self) -> set[Hashable] | None:
        """The lanes with no free slot now; None when every slot is taken."""
        with self._cond:
            if self._all_taken():
                return None
            return {lane for lane in self._held.keys() | self._returning.keys() if self._lane_taken(lane)}

    def take(self, lane: Hashable) -> bool:
        """Hold a slot of ``lane`` if it has one free (and so does the run)."""
        with self._cond:
            if self._all_taken() or self._lane_taken(lane):
                return False
            self._held[lane] += 1
            return True

    # a slot is taken when held, or owed to a step back from waiting aside (lock held)
    def _all_taken(self) -> bool:
        return self._held.total() + self._returning.total() >= self.total

    def _lane_taken(self, lane: Hashable) -> bool:
        return self._held[lane] + self._returning[lane] >= self.per_lane

    def release(self, lane: Hashable) -> None:
        with self._cond:
            self._held[lane] -= 1
            if self._aside:  # a step back from waiting aside may be waiting for this slot
                self._cond.notify_all()

    @property
    def aside(self) -> int:
        """How many steps wait aside now."""
        with self._cond:
            return self._aside

    def aside_for(self, lane: Hashable) -> Callable[[float, Callable[[float], object]], None]:
        def aside(seconds: float, sleep: Callable[[float], object]) -> None:
            with self._cond:
                lend = self.per_lane > 1 and self._aside < self.threads - self.total
                if lend:
                    self._aside += 1
                    self._held[lane] -= 1
                    self.events.put(None)
            sleep(seconds)
            if not lend:
                return
            with self._cond:
                self._returning[lane] += 1
                # its own slot is owed to it: wait only for the steps that hold one
                self._cond.wait_for(lambda: self._held[lane] < self.per_lane and self._held.total() < self.total)
                self._returning[lane] -= 1
                self._held[lane] += 1
                self._aside -= 1

        return aside


__all__ = ["Lanes"]
