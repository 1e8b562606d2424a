"""A client-side rate governor, shared by every thread of the process, that learns the API's limit.

Every HTTP attempt takes a permit (``acquire``) and reports how it ended (``succeeded``, ``throttled``,
``release``). From those reports the governor keeps three things:

* **a pause** (Retry-After): one 429 stops every thread until its Retry-After has passed, not just its own;
* **a pacing rate** (a token bucket, GCRA-style with reserved slots, so waiting threads do not stampede):
  unlimited until the first 429; then set from what the service demonstrably admitted, and grown back
  slowly while calls succeed;
* **a concurrency limit** (AIMD): halved on a throttling event, one more permit after each window of
  successes, never under what the pacing rate needs at the observed latency (Little's law).

How the rate is learnt. The service is modelled as a token bucket (rate R, burst B), which is how Azure
Resource Manager and the Azure ML data plane throttle. A *throttling event* is the first 429 of a permit
granted after the previous event (the other requests already in flight when it arrives belong to the same
event and do not cut the rate again). At an event the governor knows, for the *cycle* since the previous
pause ended: how long it lasted (T), how many calls it admitted (N), how fast it was sending, and when
each call was admitted. From that:

* lower bound (the "measured admitted throughput"): calls admitted between two events over the time
  between them, pause included. The bucket is empty at an event, so nothing was admitted that was not
  refilled in between: ``<= R``, tight for long cycles;
* drain bound, once B is known: the bucket is empty now, so for every earlier instant t of the cycle,
  ``admitted(t, now) <= B + R * (now - t)``; the largest ``(admitted - B) / (now - t)`` is a lower
  bound that is tight after a slow probe above the limit;
* upper bound: the pacing rate that got throttled (the send rate, while unlimited);
* two-point fit: a cycle that starts with a full bucket and is paced above R from its start ends after
  admitting ``N = B + R * T``; two such cycles of different lengths give R and B. Accepted only when
  consistent (within the bounds, below both cycles' pacing and send rates, B >= 0, far enough apart),
  with an uncertainty from a call's worth of noise on the counts and milliseconds on the durations.

The new rate is the largest of: the lower bound, ``margin`` x the drain bound, and either the fit less
three standard errors (a margin within [``margin``, 0.98]), or ``margin`` x the previous estimate when
the throttled rate was above it (a probe that confirms it), or (a little under) the geometric middle of
the lower and upper bounds, a binary search. The first event has no lower bound: ``first_backoff`` x the
send rate, which overshoots a little on purpose, so that the next cycle, paced above R, gives the fit.
Between events the rate grows with the streak of successes, quadratically (slow near the learnt limit,
faster far from it) and at most to twice its base: ``base * (1 + growth * (x / tau)**2)`` where x is
the streak in seconds of pacing at the base rate. ``tau`` is ``probe_seconds`` once the limit is known
well (a precise fit, a confirming probe, or tight bounds) and ``guess_seconds`` otherwise, because a
probe above the limit costs a whole Retry-After.

``x-ms-ratelimit-remaining-*`` headers (Azure Resource Manager sends them on every response) are used
when present: a success reporting at most ``low_water`` requests left triggers a soft event, a rate
decrease without a pause, at most once a second, so the pipeline slows down before the first 429.

The logic is pure: the clock and the sleep are injected; ``try_acquire``/``confirm`` expose the
non-blocking steps so that tests can drive it with a fake clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

REMAINING_PREFIX = "x-ms-ratelimit-remaining-"


@dataclass(frozen=True)
class Permit:
    """One attempt's right to call: ``epoch`` is the throttling epoch it was granted in."""

    epoch: int
    granted_at: float


@dataclass(frozen=True)
class Reservation:
    """The answer of ``try_acquire``: a permit usable after ``wait`` seconds (confirm it then), or, when
    ``permit`` is None, a wait of ``wait`` seconds (None: until a permit is released) before asking again."""

    permit: Permit | None
    wait: float | None


@dataclass
class _Cycle:
    start: float
    base: float  # the pacing rate it started at (inf: unlimited)
    admitted: int = 0
    sent: int = 0
    times: deque[float] = field(default_factory=lambda: deque(maxlen=8192))  # the latest admissions


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def remaining_from_headers(headers: Mapping[str, str] | None) -> int | None:
    """The smallest ``x-ms-ratelimit-remaining-*`` count in the headers (None: no such header).

    Values are plain counts (``11999``) or ARM's ``policy;count`` lists (``Microsoft.Compute/Get3Min;1199``).
    """
    if not headers:
        return None
    found: int | None = None
    for name, value in headers.items():
        if not name.lower().startswith(REMAINING_PREFIX) or not isinstance(value, str):
            continue
        for part in value.split(","):
            tail = part.rsplit(";", 1)[-1].strip()
            if tail.isdigit():
                count = int(tail)
                found = count if found is None else min(found, count)
    return found


class Governor:
    """Process-wide admission control for calls to one API (see the module docstring)."""

    def __init__(
        self,
        *,
        max_concurrency: int = 8,
        min_concurrency: int = 1,
        margin: float = 0.95,
        first_backoff: float = 0.5,
        backoff: float = 0.7,
        growth: float = 0.1,
        probe_seconds: float = 30.0,
        guess_seconds: float = 3.0,
        min_rate: float = 0.5,
        low_water: int = 5,
        default_pause: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.max_concurrency = max(1, int(max_concurrency))
        self.min_concurrency = max(1, min(int(min_concurrency), self.max_concurrency))
        self.margin = margin
        self.first_backoff = first_backoff
        self.backoff = backoff
        self.growth = growth
        self.probe_seconds = probe_seconds
        self.guess_seconds = guess_seconds
        self.min_rate = min_rate
        self.low_water = low_water
        self.default_pause = default_pause
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        # pause
        self._resume_at = 0.0
        # pacing (None: unlimited)
        self._rate: float | None = None
        self._base_rate = 0.0
        self._tau = guess_seconds
        self._burst = 1.0  # tokens the client may send back to back (the service's burst, once measured)
        self._tat = 0.0  # theoretical arrival time of the next call (GCRA)
        self._streak = 0  # successes since the rate was last set
        # concurrency
        self._limit = self.max_concurrency
        self._limit_streak = 0
        self._inflight = 0
        self._latency: float | None = None  # EWMA of permit-to-completion seconds
        # learning
        self._epoch = 0
        self._cycle: _Cycle | None = None
        self._cycles: list[tuple[int, float, float, float]] = []  # (admitted, seconds, send rate, base) of recent cycles
        self._last_event_at: float | None = None
        self._admitted_since_event = 0
        self._soft_at = -math.inf
        self.estimate: float | None = None  # the service's rate, once measured (calls/s)
        self.estimated_burst: float | None = None
        # observability
        self.throttled_count = 0  # every 429 (or other throttling answer) reported
        self.events = 0  # throttling events (rate decreases)
        self.soft_events = 0
        self.history: list[dict[str, Any]] = []  # the last throttling events, for logs and the bench

    # -- state -------------------------------------------------------------------------------------------
    @property
    def rate(self) -> float | None:
        """The current pacing rate (calls/s); None while unlimited."""
        with self._lock:
            return self._rate

    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rate": None if self._rate is None else round(self._rate, 2),
                "estimate": None if self.estimate is None else round(self.estimate, 2),
                "burst": None if self.estimated_burst is None else round(self.estimated_burst, 1),
                "limit": self._limit,
                "throttled": self.throttled_count,
                "events": self.events,
                "softEvents": self.soft_events,
            }

    # -- admission ---------------------------------------------------------------------------------------
    def try_acquire(self) -> Reservation:
        """One non-blocking step of ``acquire``. A returned permit with ``wait > 0`` holds a reserved slot
        (it counts against the concurrency limit): sleep ``wait`` seconds, then ``confirm`` it."""
        with self._lock:
            now = self._clock()
            if now < self._resume_at:
                return Reservation(None, self._resume_at - now)
            if self._inflight >= self._limit:
                return Reservation(None, None)
            slot = now
            if self._rate is not None:
                interval = 1.0 / self._rate
                slot = max(now, self._tat - (self._burst - 1.0) * interval)
                self._tat = max(self._tat, slot) + interval
            self._inflight += 1
            if self._cycle is None:
                self._cycle = _Cycle(start=now, base=math.inf if self._rate is None else self._rate)
            self._cycle.sent += 1
            return Reservation(Permit(self._epoch, slot), slot - now)

    def confirm(self, permit: Permit) -> bool:
        """After sleeping until its slot: True if the permit still holds; False if a throttling event or a
        pause came in between (the permit is given back; ask again)."""
        with self._lock:
            if permit.epoch == self._epoch and self._clock() >= self._resume_at:
                return True
            self._give_back(sent=permit.epoch == self._epoch)
            return False

    def acquire(self) -> Permit:
        """Block until this thread may send one request."""
        while True:
            reservation = self.try_acquire()
            permit = reservation.permit
            if permit is None:
                if reservation.wait is None:
                    with self._released:
                        if self._inflight >= self._limit:
                            self._released.wait(timeout=0.05)
                else:
                    self._sleep(min(reservation.wait, 5.0))
                continue
            if reservation.wait and reservation.wait > 0:
                self._sleep(reservation.wait)
                if not self.confirm(permit):
                    continue
            return permit

    # -- outcomes ----------------------------------------------------------------------------------------
    def succeeded(self, permit: Permit, headers: Mapping[str, str] | None = None) -> None:
        """The service admitted the call (any answer but a throttling one: a 404 used a token too)."""
        remaining = remaining_from_headers(headers)
        with self._lock:
            now = self._clock()
            self._done(permit, now)
            self._admitted_since_event += 1
            if self._cycle is not None and now >= self._cycle.start:
                self._cycle.admitted += 1
                self._cycle.times.append(now)
            if (
                remaining is not None
                and remaining <= self.low_water
                and permit.epoch == self._epoch
                and now - self._soft_at >= 1.0
            ):
                self._soft_at = now
                self.soft_events += 1
                self._event(now, pause=0.0)
                return
            self._streak += 1
            self._grow()
            self._limit_streak += 1
            if self._limit_streak >= self._limit:
                self._limit_streak = 0
                self._limit = min(self.max_concurrency, self._limit + 1)

    def throttled(self, permit: Permit, retry_after: float | None, *, rate_limited: bool = True) -> None:
        """A 429 (``rate_limited``) or another answer with a Retry-After (a 503): every thread pauses for
        ``retry_after`` (``default_pause`` when the service gave none); a 429 of a permit granted since
        the last event is a new throttling event (rate and concurrency are cut)."""
        pause = self.default_pause if retry_after is None else max(0.0, float(retry_after))
        with self._lock:
            now = self._clock()
            self._done(permit, now)
            self.throttled_count += 1
            if rate_limited and permit.epoch == self._epoch:
                self._event(now, pause=pause)
            elif not rate_limited and permit.epoch == self._epoch:
                # overloaded (a 503 with Retry-After): fewer calls at once, the rate is left alone; a new
                # epoch, so that the other calls already in flight do not halve it again
                self._limit = max(self.min_concurrency, self._limit // 2)
                self._limit_streak = 0
                self._epoch += 1
            self._resume_at = max(self._resume_at, now + pause)
            cycle = self._cycle
            if cycle is not None and cycle.sent == 0 and cycle.start < self._resume_at:
                cycle.start = self._resume_at  # the calls of the next cycle start when the pause ends
                self._tat = max(self._tat, self._resume_at)
            self._released.notify_all()

    def release(self, permit: Permit) -> None:
        """The attempt ended without an answer from the service's limiter (a dropped connection, a 5xx)."""
        with self._lock:
            self._give_back(sent=False)
            self._released.notify_all()

    # -- internals (lock held) ---------------------------------------------------------------------------
    def _give_back(self, *, sent: bool) -> None:
        self._inflight = max(0, self._inflight - 1)
        if sent and self._cycle is not None and self._cycle.sent > 0:
            self._cycle.sent -= 1
        self._released.notify()

    def _done(self, permit: Permit, now: float) -> None:
        self._inflight = max(0, self._inflight - 1)
        took = max(0.0, now - permit.granted_at)
        self._latency = took if self._latency is None else 0.8 * self._latency + 0.2 * took
        self._released.notify()

    def _grow(self) -> None:
        if self._rate is None or self._base_rate <= 0:
            return
        seconds = self._streak / self._base_rate
        self._rate = self._base_rate * min(2.0, 1.0 + self.growth * (seconds / self._tau) ** 2)

    def _event(self, now: float, *, pause: float) -> None:
        """A throttling event: set the rate from what the last cycle showed, cut concurrency, start a new
        epoch and cycle (beginning when the pause ends)."""
        self.events += 1
        cycle = self._cycle or _Cycle(start=now, base=self._rate or math.inf)
        seconds = max(0.0, now - cycle.start)
        send_rate = cycle.sent / seconds if seconds > 0 and cycle.sent else None
        lower = None
        if self._last_event_at is not None and now > self._last_event_at:
            lower = self._admitted_since_event / (now - self._last_event_at)
        upper = self._rate if self._rate is not None else send_rate  # it was throttled at this rate
        drained = self._drain_bound(cycle, now)
        current = (cycle.admitted, seconds, send_rate or 0.0, cycle.base)
        fit, error = self._fit(current, lower, upper)
        first = self._rate is None and self.estimate is None
        candidates = [self.min_rate]
        if lower is not None:
            candidates.append(lower)
        if drained is not None:
            candidates.append(self.margin * drained)
        if fit is not None:
            # a precise fit earns a thinner margin (three standard errors, within [margin, 0.98])
            candidates.append(min(0.98, max(self.margin, 1.0 - 3 * error)) * fit)
        elif self.estimate is not None and upper is not None and upper > self.estimate:
            # throttled while probing above the estimate: the estimate stands
            candidates.append(self.margin * self.estimate)
            error = 0.0
        elif lower is not None and upper is not None and upper > lower:
            # R is within [lower, upper]: try (a little under) the geometric middle, a binary search
            self.estimate = None
            candidates.append(min(self.backoff * upper, self.margin * math.sqrt(lower * upper)))
        elif upper is not None:
            self.estimate = None
            candidates.append((self.first_backoff if first else self.backoff) * upper)
        new_rate = max(candidates)
        self.history = [
            *self.history[-49:],
            {
                "at": round(now, 3),
                "pause": round(pause, 3),
                "cycleSeconds": round(seconds, 3),
                "admitted": cycle.admitted,
                "sent": cycle.sent,
                "lower": _round(lower),
                "upper": _round(upper),
                "drained": _round(drained),
                "fit": _round(fit),
                "rate": round(new_rate, 2),
            },
        ]
        # probe slowly only when the limit is known well: a probe above it costs a whole Retry-After
        best_lower = max(lower or 0.0, drained or 0.0)
        confident = error <= 1 - self.margin or (upper is not None and 0 < upper <= 1.25 * best_lower)
        self._tau = self.probe_seconds if confident else self.guess_seconds
        self._rate = new_rate
        self._base_rate = new_rate
        self._streak = 0
        if send_rate is not None and cycle.admitted:
            self._cycles = [*self._cycles[-4:], current]
        # concurrency: halve, but keep what the new rate needs at the observed latency
        need = math.ceil(new_rate * (self._latency or 0.0) * 1.5)
        self._limit = max(self.min_concurrency, min(self.max_concurrency, max(self._limit // 2, need)))
        self._limit_streak = 0
        # a new epoch: slots reserved so far are void; pacing restarts when the pause ends
        self._epoch += 1
        resume = max(self._resume_at, now + pause)
        self._tat = resume
        self._cycle = _Cycle(start=resume, base=new_rate)
        self._last_event_at = now
        self._admitted_since_event = 0

    def _drain_bound(self, cycle: _Cycle, now: float) -> float | None:
        """A lower bound of R from the admissions before this event, once the burst B is known: the bucket
        is empty now, so for any earlier instant t, admitted(t, now) <= B + R * (now - t)."""
        if self.estimated_burst is None or not cycle.times:
            return None
        span = max(0.25, 4 * (self._latency or 0.0))
        best: float | None = None
        for count, at in enumerate(reversed(cycle.times), start=1):
            if now - at >= span:
                bound = (count - self.estimated_burst) / (now - at)
                best = bound if best is None else max(best, bound)
        return best if best is not None and best > 0 else None

    def _fit(
        self, current: tuple[int, float, float, float], lower: float | None, upper: float | None
    ) -> tuple[float | None, float]:
        """The service's rate from this cycle and an earlier one (N = B + R*T), when consistent: both paced
        above it from their start (so the bucket drained all along), and far enough apart to be precise.
        Returns the rate and its relative uncertainty."""
        n1, t1, s1, base1 = current
        span = max(0.05, 2 * (self._latency or 0.0))
        best: tuple[float, float, float] | None = None  # (error, rate, burst)
        for n0, t0, s0, base0 in self._cycles:
            if abs(t1 - t0) < span or abs(n1 - n0) < 10:
                continue
            rate = (n1 - n0) / (t1 - t0)
            burst = n1 - rate * t1
            if rate <= 0 or burst < 0 or rate > min(s0, s1, base0, base1):
                continue
            if (lower is not None and rate < 0.9 * lower) or (upper is not None and rate > upper):
                continue
            # a call's worth of noise on each count, a few milliseconds on each duration
            error = 2.0 / abs(n1 - n0) + 0.01 / abs(t1 - t0)
            if best is None or error < best[0]:
                best = (error, rate, burst)
        if best is None:
            return None, math.inf
        error, rate, burst = best
        self.estimate = rate
        self.estimated_burst = burst
        self._burst = max(1.0, min(burst / 2.0, rate * 0.25))
        return rate, error


__all__ = ["Governor", "Permit", "Reservation", "remaining_from_headers"]
