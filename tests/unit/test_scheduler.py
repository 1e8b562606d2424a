"""The scheduler: lanes capped at ``concurrency``, all lanes at ``2c - 1``, sequential at 1, depth-first pre-order,
the steps ``first`` picks ahead while few wait."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextvars import ContextVar
from typing import Any

from shared.service.scheduler import Lanes


class Held:
    """Steps named ``lane:n`` that each wait until as many steps are in flight as the caps allow (``per_lane`` in
    a lane, ``wanted`` in all, of the steps not done yet), or ``patience`` runs out; recording the most in flight
    per lane and in all."""

    def __init__(self, steps: list[str], *, per_lane: int, wanted: int, patience: float = 5.0) -> None:
        self.per_lane = per_lane
        self.wanted = wanted
        self.patience = patience
        self.left = Counter(lane_of(step) for step in steps)
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_total = 0
        self.cond = threading.Condition()

    def _full(self) -> bool:
        possible = min(self.wanted, sum(min(self.per_lane, n) for n in self.left.values()))
        return sum(self.in_flight.values()) >= possible

    def run(self, step: str) -> list[str]:
        lane = lane_of(step)
        with self.cond:
            self.in_flight[lane] += 1
            self.most[lane] = max(self.most[lane], self.in_flight[lane])
            self.most_total = max(self.most_total, sum(self.in_flight.values()))
            self.cond.notify_all()
            self.cond.wait_for(self._full, timeout=self.patience)
            self.in_flight[lane] -= 1
            self.left[lane] -= 1
            self.cond.notify_all()
        return []


def lane_of(step: str) -> str:
    return step.split(":")[0]


def test_each_lane_holds_at_most_concurrency_and_all_lanes_at_most_2c_minus_1():
    # GIVEN two lanes of ten steps each, at concurrency 3, each step waiting until 5 (2c - 1) are in flight
    steps = [f"arm:{i}" for i in range(10)] + [f"exp:{i}" for i in range(10)]
    held = Held(steps, per_lane=3, wanted=5)
    # WHEN they run
    left = Lanes(held.run, lane_of, concurrency=3).run(steps)
    # THEN all ran, no lane had more than 3 in flight, and all together reached 5, never more
    assert left is None
    assert max(held.most.values()) == 3
    assert held.most_total == 5


def test_all_lanes_together_never_exceed_2c_minus_1():
    # GIVEN three steps in each of two lanes at concurrency 3, each waiting until all six are in flight
    steps = [f"arm:{i}" for i in range(3)] + [f"exp:{i}" for i in range(3)]
    held = Held(steps, per_lane=3, wanted=6, patience=0.3)
    # WHEN they run
    Lanes(held.run, lane_of, concurrency=3).run(steps)
    # THEN no more than five were ever in flight, though each lane had room for three
    assert held.most_total == 5


def test_concurrency_one_runs_one_step_at_a_time_across_lanes():
    # GIVEN one step in each of two lanes at concurrency 1, each waiting until both are in flight
    steps = ["arm:0", "exp:0"]
    held = Held(steps, per_lane=1, wanted=2, patience=0.3)
    # WHEN they run
    Lanes(held.run, lane_of, concurrency=1).run(steps)
    # THEN they ran one after the other
    assert held.most_total == 1


def test_concurrency_one_is_a_sequential_loop_in_order():
    # GIVEN steps in two lanes, where each step leads to one more, at concurrency 1
    order: list[str] = []
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def run(step: str) -> list[str]:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
            order.append(step)
        with lock:
            in_flight -= 1
        return [step + "+"] if not step.endswith("+") else []

    # WHEN they run
    Lanes(run, lane_of, concurrency=1).run(["arm:a", "exp:b", "arm:c"])
    # THEN one ran at a time, each step's children before the steps after it (depth-first pre-order)
    assert most == 1
    assert order == ["arm:a", "arm:a+", "exp:b", "exp:b+", "arm:c", "arm:c+"]


def children(step: str) -> list[str]:
    return {"t:root": ["t:a", "t:b", "t:p2"], "t:a": ["t:a1"]}.get(step, [])


def run_in_order(frontier: int, *, first: bool = True) -> list[str]:
    order: list[str] = []

    def run(step: str) -> list[str]:
        order.append(step)
        return children(step)

    picks = (lambda step: step.endswith("p2")) if first else None
    Lanes(run, lane_of, concurrency=1, frontier=frontier, first=picks).run(["t:root"])
    return order


def test_the_steps_wait_in_depth_first_pre_order():
    # GIVEN a root that leads to a, b and p2, where a leads to a1, and no step picked to go first
    # WHEN they run
    order = run_in_order(10, first=False)
    # THEN a step's children run before the steps after it
    assert order == ["t:root", "t:a", "t:a1", "t:b", "t:p2"]


def test_a_picked_step_goes_first_only_while_few_steps_wait():
    # GIVEN the same steps, with p2 (say, a list's next page) picked to go first
    # WHEN they run with a frontier of 10, and with a frontier of 2 (three waiting is past it)
    few, many = run_in_order(10), run_in_order(2)
    # THEN within the frontier p2 starts at once; past it, steps go in order until few wait again
    assert few == ["t:root", "t:p2", "t:a", "t:a1", "t:b"]
    assert many == ["t:root", "t:a", "t:a1", "t:p2", "t:b"]


def test_a_stop_returns_the_steps_still_waiting_and_a_due_checkpoint_sees_them():
    # GIVEN a run that checkpoints at every turn (its clock moves 1 s per reading) and is told to stop after
    # the root has run
    ran: list[str] = []
    seen: list[list[str]] = []
    ticks = iter(range(1000))

    def run(step: str) -> list[str]:
        ran.append(step)
        return children(step)

    lanes = Lanes(
        run,
        lane_of,
        concurrency=1,
        should_stop=lambda: len(ran) >= 2,
        checkpoint=lambda pending: seen.append(list(pending)),
        checkpoint_seconds=1,
        clock=lambda: float(next(ticks)),
    )
    # WHEN it runs
    left = lanes.run(["t:root"])
    # THEN it stopped with the steps not run, none under way, and a checkpoint had seen the root's children
    assert ran == ["t:root", "t:a"]
    assert left == ["t:a1", "t:b", "t:p2"]
    assert ["t:a", "t:b", "t:p2"] in seen


def test_a_step_waiting_aside_lends_its_slot_and_takes_it_back_within_the_cap():
    # GIVEN a lane of concurrency 2 and a step that waits out a Retry-After through the scheduler's hook
    aside: ContextVar[Any] = ContextVar("aside", default=None)
    cond = threading.Condition()
    in_flight = most = 0
    seen: dict[str, Any] = {}

    def run(step: str) -> list[str]:
        nonlocal in_flight, most
        if step == "arm:throttled":

            def sleep(seconds: float) -> None:  # the Retry-After: over once two other steps ran side by side
                with cond:
                    seen["lent"] = cond.wait_for(lambda: most >= 2, timeout=2.0)

            aside.get()(1.0, sleep)
            with cond:
                seen["others when back"] = in_flight
            return []
        with cond:
            in_flight += 1
            most = max(most, in_flight)
            cond.notify_all()
            cond.wait_for(lambda: in_flight >= 2, timeout=0.5)
            in_flight -= 1
            cond.notify_all()
        return []

    # WHEN it runs first, with two more steps of its lane
    Lanes(run, lane_of, concurrency=2, wait_aside=aside).run(["arm:throttled", "arm:1", "arm:2"])
    # THEN while it waited both others ran at once (its slot was lent), and once back it held its slot again:
    # at most one other step was in flight with it
    assert seen["lent"] is True
    assert seen["others when back"] <= 1


def test_at_concurrency_one_a_step_waiting_aside_keeps_its_slot():
    # GIVEN a sequential run whose first step waits out a Retry-After
    aside: ContextVar[Any] = ContextVar("aside", default=None)
    started: list[str] = []
    seen: dict[str, Any] = {}

    def run(step: str) -> list[str]:
        started.append(step)
        if step == "arm:throttled":
            aside.get()(0.2, lambda seconds: time.sleep(seconds))
            seen["others started meanwhile"] = started[1:]
        return []

    # WHEN it runs
    Lanes(run, lane_of, concurrency=1, wait_aside=aside).run(["arm:throttled", "exp:1"])
    # THEN nothing else started while it waited: still a plain sequential loop
    assert seen["others started meanwhile"] == []
    assert started == ["arm:throttled", "exp:1"]
