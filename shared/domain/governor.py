"""Client-side admission for Azure ML: one ``Limiter`` per service limit, shared by every thread.

A limit is keyed by ``limiter_key``: ARM counts per subscription, each data-plane service (run history,
model management, pipelines) per host. Per limiter:

* A throttled call (429) waits its own Retry-After, then retries; the HTTP seam does that.
* Throttling is **shared** when, in the last ``window`` seconds, at least ``quorum`` answers were 429s
  and they make at least ``share`` of the answers (of at least ``10 x quorum``). Only then does a 429
  pause the other calls, until its Retry-After has passed. One stray 429 delays its own call only.
* The **pace** (calls/s; none at first) is lowered, at most once per round trip, on shared throttling, on
  a 429 while paced, and, before any 429, when an ``x-ms-ratelimit-remaining-*`` count falls to half the
  largest seen (``low_water`` at least) and below where it was at the last cut. It becomes ``margin`` x
  the service's refill rate, measured over at least 10 answers and ``window / 8`` seconds:

  - with counts and no 429: calls admitted plus the growth of the count, since the count was last at its
    largest. Too few answers yet: no cut (the count warns early). A count falling more than twice as
    fast as this limiter's own calls explain is shared with busier limiters, and left to them;
  - after 429s: the calls admitted since the window's first 429 after the last pause (the service's
    bucket has been empty since, so what it admits is what it refills); too few answers yet:
    ``backoff`` x the pace (or the send rate of the last ``window / 8`` seconds).

  Never below what the service admitted in the last ``window`` seconds (x ``margin`` with counts), so
  that a pause cannot collapse it.
* Each clean round trip (an answer to a call sent after the last change) adds ``step`` (with counts) or
  ``probe`` (without: a probe above the limit costs a Retry-After) x the last lowered pace; at twice that
  pace the calls go unpaced again.

Pure logic: the clock and the sleep are injected, so tests drive it with a fake clock.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

REMAINING_PREFIX = "x-ms-ratelimit-remaining-"
_SUBSCRIPTION = re.compile(r"/subscriptions/([^/?#]+)", re.IGNORECASE)


def remaining_from_headers(headers: Mapping[str, str] | None) -> int | None:
    """The smallest ``x-ms-ratelimit-remaining-*`` count (plain ``11999`` or ARM's ``policy;count``
    lists); None when there is no such header."""
    found: int | None = None
    for name, value in (headers or {}).items():
        if not name.lower().startswith(REMAINING_PREFIX) or not isinstance(value, str):
            continue
        for part in value.split(","):
            tail = part.rsplit(";", 1)[-1].strip()
            if tail.isdigit():
                found = int(tail) if found is None else min(found, int(tail))
    return found


def limiter_key(url: str, endpoints: Mapping[str, str]) -> str:
    """Which limit a call counts against: ``family|host|path prefix`` of the endpoint family serving it
    (``{location}`` filled from the URL), and for ARM the subscription in the path."""
    parts = urlsplit(url)
    here = f"{parts.netloc}{parts.path}".lower()
    best = ("", "")
    for family, template in endpoints.items():
        t = urlsplit(template.replace("{location}", "LOCATION"))
        pattern = re.escape(f"{t.netloc}{t.path.rstrip('/')}".lower()).replace("location", "[^/.]+")
        found = re.match(pattern, here)
        if found and len(found.group(0)) > len(best[1]):
            best = (family, found.group(0))
    family, prefix = best
    key = f"{family or 'other'}|{prefix or parts.netloc.lower()}"
    subscription = _SUBSCRIPTION.search(parts.path)
    if family == "arm" and subscription:
        key += f"|{subscription.group(1).lower()}"
    return key


class Limiter:
    """Admission for the calls counted against one service limit (see the module docstring)."""

    def __init__(
        self,
        *,
        window: float = 2.0,
        quorum: int = 3,
        share: float = 0.2,
        low_water: int = 5,
        backoff: float = 0.7,
        margin: float = 0.95,
        step: float = 0.02,
        probe: float = 0.002,
        default_pause: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.window, self.quorum, self.share, self.low_water = window, quorum, share, low_water
        self.backoff, self.margin, self.step, self.probe, self.default_pause = backoff, margin, step, probe, default_pause
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._answers: deque[tuple[float, bool, int | None]] = deque()  # (at, throttled, remaining) in the window
        self._pace: float | None = None  # calls/s; None: unpaced
        self._base = 0.0  # the pace set at the last decrease
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._first_sent = float("inf")
        self._decreased_at = self._grown_at = -1e18  # a round trip: an answer to a call sent since
        self._counted = False  # answers carry a remaining count
        self._cut_count = 1 << 62  # the lowest remaining count since it fell low
        self._most = 0  # the largest remaining count seen
        self.throttled = 0  # 429s answered
        self.shared_events = 0  # decreases on shared throttling (429s or the remaining count)
        self.pauses = 0  # of which paused every call

    @property
    def pace(self) -> float | None:
        return self._pace

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pace = None if self._pace is None else round(self._pace, 1)
            return {"pace": pace, "throttled": self.throttled, "sharedEvents": self.shared_events, "pauses": self.pauses}

    def reserve(self) -> float:
        """Claim the next send slot; returns how long to wait before sending (0: now)."""
        with self._lock:
            now = self._clock()
            self._first_sent = min(self._first_sent, now)
            slot = max(now, self._paused_until)
            if self._pace is not None:
                slot = max(slot, self._next_slot)
                self._next_slot = slot + 1.0 / self._pace
            return slot - now

    def acquire(self) -> float:
        """Block until a call may be sent; returns the send time (hand it back to ``answered``)."""
        while True:
            wait = self.reserve()
            if wait <= 0:
                return self._clock()
            self._sleep(wait)
            with self._lock:  # a pause that came in meanwhile holds this call too
                if self._clock() >= self._paused_until:
                    return self._clock()

    def answered(
        self, sent_at: float, *, throttled: bool = False, retry_after: float | None = None, remaining: int | None = None
    ) -> None:
        """The service answered a call sent at ``sent_at`` (a 404 or 409 counts: it was admitted)."""
        with self._lock:
            now = self._clock()
            self._answers.append((now, throttled, remaining))
            self._forget(now)
            self.throttled += throttled
            if remaining is not None:
                self._counted = True
                self._most = max(self._most, remaining)
            low = remaining is not None and remaining <= max(self.low_water, self._most // 2)
            # a count that is low but no lower than at the last cut holds the pace rather than cuts it again
            falling = low and remaining is not None and remaining < self._cut_count
            if remaining is not None:
                self._cut_count = min(self._cut_count, remaining) if low else 1 << 62
            if throttled or falling:
                shared = throttled and self._shared()
                if sent_at >= self._decreased_at and (falling or shared or (throttled and self._pace is not None)):
                    self._decrease(now)
                if shared and now >= self._paused_until:
                    self.pauses += 1
                    self._paused_until = now + (self.default_pause if retry_after is None else retry_after)
            elif not low and sent_at >= self._grown_at and self._pace is not None:
                self._pace += (self.step if self._counted else self.probe) * self._base
                self._grown_at = now
                if self._pace >= 2 * self._base:
                    self._pace = None

    # -- internals (lock held) ---------------------------------------------------------------------
    def _forget(self, now: float) -> None:
        while self._answers and self._answers[0][0] < now - self.window:
            self._answers.popleft()

    def _shared(self) -> bool:
        throttled = sum(1 for a in self._answers if a[1])
        return throttled >= self.quorum and throttled >= self.share * max(len(self._answers), 10 * self.quorum)

    def _decrease(self, now: float) -> None:
        start = max(now - self.window, self._paused_until, self._first_sent)
        recent = [a for a in self._answers if a[0] >= start]
        floor = sum(1 for a in self._answers if not a[1]) / self.window
        full = [i for i, a in enumerate(recent) if a[2] is not None and a[2] >= self._most]
        counted = recent[full[-1] :] if full else [a for a in recent if a[2] is not None]
        throttled = [i for i, a in enumerate(recent) if a[1]]
        empty = recent[throttled[0] :] if throttled else []
        if counted and not throttled:
            if len(counted) < 10 or now - counted[0][0] < self.window / 8:
                return  # too soon to read a refill rate off the count: wait for it (no 429 yet)
            # just under the service's refill rate: what it admitted since its bucket was last full (or
            # since the window began), plus what its remaining count grew by meanwhile
            admitted = sum(1 for a in counted[1:] if not a[1])
            change = (counted[-1][2] or 0) - (counted[0][2] or 0)
            if admitted < -change / 2:
                return  # this limiter's calls explain less than half the fall: busier limiters share it, and cut
            rate = self.margin * max(floor, (admitted + change) / (now - counted[0][0]))
        elif len(empty) >= 10 and now - empty[0][0] >= self.window / 8:
            # the service's bucket has been empty since the first 429: what it admitted since is its refill rate
            rate = max(floor, self.margin * sum(1 for a in empty[1:] if not a[1]) / (now - empty[0][0]))
        else:
            fresh = [a for a in recent if a[0] >= now - self.window / 8]
            current = self._pace if self._pace is not None else len(fresh) / max(min(now - start, self.window / 8), 1e-3)
            rate = max(floor, self.backoff * current)
        self._pace = self._base = max(rate, 0.1)
        self._decreased_at = self._grown_at = now
        self.shared_events += 1


class Governor:
    """The limiters of the process, one per ``limiter_key``; thread-safe."""

    def __init__(self, endpoints: Mapping[str, str], **limiter_options: Any) -> None:
        self._endpoints = dict(endpoints)
        self._options = limiter_options
        self._lock = threading.Lock()
        self._limiters: dict[str, Limiter] = {}

    def limiter(self, url: str) -> Limiter:
        key = limiter_key(url, self._endpoints)
        with self._lock:
            found = self._limiters.get(key)
            if found is None:
                found = self._limiters[key] = Limiter(**self._options)
            return found

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            limiters = dict(self._limiters)
        return {key: limiter.stats() for key, limiter in limiters.items()}


__all__ = ["Governor", "Limiter", "limiter_key", "remaining_from_headers"]
