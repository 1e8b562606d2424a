"""The scheduler: runs steps on a bounded thread pool, in lanes, until none is left or it is told to stop.

It knows nothing of what a step is. A step returns the steps it makes possible, so dependent work starts as
soon as its parent is done (not level by level). Once more than ``frontier`` steps wait, the newest run first
(depth first), so that the steps waiting, and a checkpoint that holds them, stay bounded.

Each step belongs to a lane (for the export: one service limit, as the rate governor keys its limiters). A lane
has at most ``concurrency`` steps in flight, and all lanes together at most ``2 * concurrency - 1``: a lane that
is paced or throttled holds at most about half the slots, so it never starves another, and ``concurrency`` 1
is a plain sequential loop.
"""

from __future__ import annotations

import contextvars
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

S = TypeVar("S")


class Lanes(Generic[S]):
    def __init__(
        self,
        run_step: Callable[[S], list[S]],
        lane: Callable[[S], Hashable],
        *,
        concurrency: int,
        frontier: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint: Callable[[deque[S]], object] | None = None,
        checkpoint_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        thread_name: str = "dsr-lanes",
    ) -> None:
        self.run_step = run_step
        self.lane = lane
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

    def run(self, steps: Iterable[S]) -> deque[S] | None:
        """Run ``steps`` and every step they lead to. ``None`` once all have run; the steps still waiting
        (none under way) when ``should_stop`` said stop. Every ``checkpoint_seconds`` the pool quiesces (the
        steps under way finish) and ``checkpoint`` is given the steps waiting."""
        pending: deque[S] = deque(steps)
        running: dict[Future[list[S]], Hashable] = {}
        in_flight: Counter[Hashable] = Counter()
        last_checkpoint = self.clock()
        with ThreadPoolExecutor(max_workers=self.total_slots, thread_name_prefix=self.thread_name) as pool:
            while pending or running:
                stop = self.should_stop()
                due = self.checkpoint is not None and self.clock() - last_checkpoint >= self.checkpoint_seconds
                if stop or due:
                    # quiesce: let the steps under way finish, so that what waits is the whole of the work left
                    for future in wait(running).done:
                        pending.extend(future.result())
                    running, in_flight = {}, Counter()
                    if stop:
                        return pending
                    assert self.checkpoint is not None
                    self.checkpoint(pending)
                    last_checkpoint = self.clock()
                while (step := self._next_step(pending, in_flight)) is not None:
                    lane = self.lane(step)
                    in_flight[lane] += 1
                    running[pool.submit(contextvars.copy_context().run, self.run_step, step)] = lane
                done, _ = wait(running, return_when=FIRST_COMPLETED, timeout=self.checkpoint_seconds)
                for future in done:
                    in_flight[running.pop(future)] -= 1
                    pending.extend(future.result())
        return None

    def _next_step(self, pending: deque[S], in_flight: Counter[Hashable]) -> S | None:
        """The next step whose lane has a free slot: the oldest (breadth first) while few wait, the newest
        (depth first) once more than ``frontier`` do."""
        if sum(in_flight.values()) >= self.total_slots:
            return None
        order = range(len(pending) - 1, -1, -1) if len(pending) > self.frontier else range(len(pending))
        for i in order:
            if in_flight[self.lane(pending[i])] < self.concurrency:
                step = pending[i]
                del pending[i]
                return step
        return None


__all__ = ["Lanes"]
