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
is a plain sequential loop.
"""

from __future__ import annotations

import bisect
import contextvars
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

S = TypeVar("S")
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

    @property
    def total_slots(self) -> int:
        return 2 * self.concurrency - 1

    def run(self, steps: Iterable[S]) -> list[S] | None:
        """Run ``steps`` and every step they lead to. ``None`` once all have run; the steps still waiting, in
        order (none under way), when ``should_stop`` said stop. Every ``checkpoint_seconds`` the pool quiesces
        (the steps under way finish) and ``checkpoint`` is given the steps waiting, in order."""
        pending: list[tuple[Order, S]] = []
        _enqueue(pending, (), list(steps))
        running: dict[Future[list[S]], tuple[Order, S]] = {}
        in_flight: Counter[Hashable] = Counter()
        last_checkpoint = self.clock()
        with ThreadPoolExecutor(max_workers=self.total_slots, thread_name_prefix=self.thread_name) as pool:
            while pending or running:
                stop = self.should_stop()
                due = self.checkpoint is not None and self.clock() - last_checkpoint >= self.checkpoint_seconds
                if stop or due:
                    # quiesce: let the steps under way finish, so that what waits is the whole of the work left
                    for future in wait(running).done:
                        _enqueue(pending, running[future][0], future.result())
                    running, in_flight = {}, Counter()
                    if stop:
                        return [step for _, step in pending]
                    assert self.checkpoint is not None
                    self.checkpoint([step for _, step in pending])
                    last_checkpoint = self.clock()
                while (entry := self._next_step(pending, in_flight)) is not None:
                    in_flight[self.lane(entry[1])] += 1
                    running[pool.submit(contextvars.copy_context().run, self.run_step, entry[1])] = entry
                done, _ = wait(running, return_when=FIRST_COMPLETED, timeout=self.checkpoint_seconds)
                for future in done:
                    order, step = running.pop(future)
                    in_flight[self.lane(step)] -= 1
                    _enqueue(pending, order, future.result())
        return None

    def _next_step(self, pending: list[tuple[Order, S]], in_flight: Counter[Hashable]) -> tuple[Order, S] | None:
        """The first waiting step, in depth-first pre-order, whose lane has a free slot; while at most
        ``frontier`` steps wait, one that ``first`` picks before any other."""
        if sum(in_flight.values()) >= self.total_slots:
            return None
        passes = (True, False) if self.first is not None and len(pending) <= self.frontier else (False,)
        for first_only in passes:
            for i, entry in enumerate(pending):
                if first_only and not (self.first is not None and self.first(entry[1])):
                    continue
                if in_flight[self.lane(entry[1])] < self.concurrency:
                    del pending[i]
                    return entry
        return None


def _enqueue(pending: list[tuple[Order, S]], parent: Order, children: list[S]) -> None:
    """Children take their parent's place in depth-first pre-order, in the order the parent gave them."""
    for i, child in enumerate(children):
        bisect.insort(pending, ((*parent, i), child), key=_order)


def _order(entry: tuple[Order, object]) -> Order:
    return entry[0]


__all__ = ["Lanes"]
