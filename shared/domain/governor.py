"""Client-side admission for Azure ML: one ``Limiter`` per service limit, shared by every thread.

**Which limit.** A call counts against its host family's limit (``limiter_key``: ARM per subscription, each
data-plane service per host) until the family is seen to draw on its subscription's bucket: an answer of the
family shows the subscription's counter (``x-ms-ratelimit-remaining-subscription-*``) falling, or a 429 of it
carries that counter, or (no counters told) its limiter finds shared throttling within ``window`` seconds of
the subscription's limiter doing so. Its calls (with the answers it had) then go through the subscription's
limiter. A count that never falls (an unlimited service's) joins nothing, nor does a family never throttled.

**Per limiter:**

* *Credit.* While the latest answer (a 429's too) carried a remaining count, at most that count less ``reserve``
  calls go after the call it answered: slow down before the bucket is empty, whoever else draws on it. A
  spent count older than ``window / 8`` lets one call go at a time, until an answer brings a new one.
* *Retry-After.* A 429 makes its own call wait its Retry-After (the HTTP seam does that, and the scheduler
  lends the call's slot to other work meanwhile). No other call waits for it: a pause of all would idle a
  refilling bucket for the whole Retry-After.
* *Shared throttling*: a 429 while unpaced with the bucket shown near empty (its own count, or the latest
  one in the last ``window`` seconds, ``low_water`` or less), or ``quorum`` 429s making ``share`` of
  the last ``window`` seconds' answers. Unless every answer carries a count (the credit paces those), the
  calls are then paced at the refill rate the answers prove: the most, over an answer and now, of the calls
  sent after it and admitted, less what the bucket held then (its count; 0 for a 429 or an answer without
  one), per second since its call was sent.
* *While paced*, a 429 sets the pace ``cut`` under that proven rate, at most once per round trip. On each clean
  answer the pace is the pace set last x (1 + (round trips since it was set / ``double_after``) squared): 5%
  more after 50 round trips (the smoothed round-trip time) of clean answers, cautious near the limit just
  found; twice after 224, five times after 448. The pace is never more than ``cut`` under the bucket's refill
  over the last ``window`` seconds (answers admitted less the largest count, at most half, per second).

Pure logic: the clock and the sleep are injected, so tests drive it with a fake clock.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

REMAINING_PREFIX = "x-ms-ratelimit-remaining-"
_SUBSCRIPTION = re.compile(r"/subscriptions/([^/?#]+)", re.IGNORECASE)


def remaining_from_headers(headers: Mapping[str, str] | None, scope: str = "") -> int | None:
    """The smallest ``x-ms-ratelimit-remaining-{scope}*`` count (plain ``11999`` or ARM's ``policy;count``
    lists); None when there is no such header."""
    found: int | None = None
    for name, value in (headers or {}).items():
        if not name.lower().startswith(REMAINING_PREFIX + scope) or not isinstance(value, str):
            continue
        for part in value.split(","):
            tail = part.rsplit(";", 1)[-1].strip()
            if tail.isdigit():
                found = int(tail) if found is None else min(found, int(tail))
    return found


@functools.lru_cache(maxsize=32)
def _family_patterns(endpoints: tuple[tuple[str, str], ...]) -> list[tuple[str, re.Pattern[str]]]:
    """Each endpoint family's URL prefix as a pattern (``{location}`` matching any one label), built once."""
    patterns = []
    for family, template in endpoints:
        t = urlsplit(template.replace("{location}", "LOCATION"))
        patterns.append((family, re.compile(re.escape(f"{t.netloc}{t.path.rstrip('/')}".lower()).replace("location", "[^/.]+"))))
    return patterns


def limiter_key(url: str, endpoints: Mapping[str, str]) -> str:
    """Which limit a call counts against: ``family|host|path prefix`` of the endpoint family serving it
    (``{location}`` filled from the URL), and for ARM the subscription in the path."""
    parts = urlsplit(url)
    here = f"{parts.netloc}{parts.path}".lower()
    best = ("", "")
    for family, pattern in _family_patterns(tuple(endpoints.items())):
        found = pattern.match(here)
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
        reserve: int = 2,
        cut: float = 0.05,
        double_after: float = 224.0,
        poll: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.window, self.quorum, self.share, self.low_water, self.reserve_calls = window, quorum, share, low_water, reserve
        self.cut, self.double_after, self.poll = cut, double_after, poll
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._answers: deque[tuple[float, float, bool, int | None]] = deque()  # (at, sent at, throttled, count; a 429's: 0)
        self._sent: deque[float] = deque()  # send times in the window
        self._count: tuple[float, float, int] | None = None  # the latest count: (answered at, its call's send time, count)
        self._counted_last = False  # the latest clean answer carried a count
        self._answered_at = -1e18  # the latest answer
        self._most = 0  # the largest count seen: the bucket
        self._pace: float | None = None  # calls/s; None: unpaced
        self._base = 0.0  # the pace set last
        self._next_slot = 0.0
        self._cut_at = -1e18  # the pace set last (a round trip: an answer to a call sent since)
        self._rtt: float | None = None  # the round-trip time, smoothed over the clean answers
        self._shared_at = -1e18  # shared throttling found, or the pace cut
        self.throttled = 0  # 429s answered
        self.shared_events = 0  # shared throttling found (unpaced) or the pace cut (paced)

    @property
    def pace(self) -> float | None:
        return self._pace

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pace = None if self._pace is None else round(self._pace, 1)
            return {"pace": pace, "throttled": self.throttled, "sharedEvents": self.shared_events}

    def reserve(self) -> float | None:
        """Claim the next send slot: how long to wait before sending (0: now), or None when the count's credit
        is spent (ask again after an answer)."""
        with self._lock:
            now = self._clock()
            self._forget(now)
            count = self._count
            if (
                self._counted_last
                and count is not None
                and sum(1 for at in self._sent if at > count[1]) >= count[2] - self.reserve_calls
            ):
                if now - count[0] <= self.window / 8:
                    return None
                if self._sent and self._sent[-1] > self._answered_at and now - self._sent[-1] <= self.window / 8:
                    return None  # a spent count too old to trust: one call at a time until an answer brings a new one
            slot = now
            if self._pace is not None:
                slot = max(slot, self._next_slot)
                self._next_slot = slot + 1.0 / self._pace
            self._sent.append(slot)
            return slot - now

    def acquire(self) -> float:
        """Block until a call may be sent; returns the send time (hand it back to ``answered``)."""
        while True:
            wait = self.reserve()
            if wait is None:
                self._sleep(self.poll)
                continue
            if wait > 0:
                self._sleep(wait)
            return self._clock()

    def answered(self, sent_at: float, *, throttled: bool = False, remaining: int | None = None) -> bool:
        """The service answered a call sent at ``sent_at`` (a 404 or 409 counts: it was admitted); True when that
        showed shared throttling (unpaced till then)."""
        with self._lock:
            shared = False
            now = self._answered_at = self._clock()
            self._forget(now)
            self._answers.append((now, sent_at, throttled, 0 if throttled and remaining is None else remaining))
            self.throttled += throttled
            if throttled and sent_at >= self._cut_at:
                count = self._count
                counts = [remaining] if remaining is not None else []  # its own count, and the latest one
                counts += [count[2]] if count is not None and now - count[0] <= self.window else []
                low = any(c <= self.low_water for c in counts)
                if self._pace is None and (low or self._quorum()):  # shared throttling
                    shared, self._shared_at = True, now
                    if any(a[3] is None for a in self._answers if not a[2]):  # counts on every answer: the credit paces
                        self._set_pace(now, self._refill_rate(now))
                elif self._pace is not None:
                    self._set_pace(now, min(self._pace, self._refill_rate(now)) * (1 - self.cut))
                    self._shared_at = now
            if not throttled or remaining is not None:  # a 429's count is a count too
                self._counted_last = remaining is not None
            if remaining is not None:  # the count of the latest call sent (answers may come out of order)
                if self._count is None or sent_at > self._count[1] or remaining <= self._count[2]:
                    self._count = (now, max(sent_at, self._count[1] if self._count else sent_at), remaining)
                self._most = max(self._most, remaining)
            if not throttled:
                rtt = max(now - sent_at, 1e-3)
                self._rtt = rtt if self._rtt is None else 0.9 * self._rtt + 0.1 * rtt
                if self._pace is not None:  # round trips since the pace was set, squared: cautious, then fast
                    self._pace = self._base * (1 + ((now - self._cut_at) / self._rtt / self.double_after) ** 2)
            return shared

    def shared_lately(self) -> bool:
        """Shared throttling found (or the pace cut) in the last ``window`` seconds."""
        with self._lock:
            return self._clock() - self._shared_at <= self.window

    def absorb(self, other: Limiter) -> None:
        """Take ``other``'s answers in the window (its family now draws on this limiter's bucket)."""
        with other._lock:
            answers, sent = list(other._answers), list(other._sent)
            pace = other._pace
        with self._lock:
            self._answers = deque(sorted([*self._answers, *answers]))
            self._sent = deque(sorted([*self._sent, *sent]))
            if pace is not None or self._pace is not None:  # paced: at what the joined answers show admitted
                self._set_pace(self._clock(), max(pace or 0.0, self._pace or 0.0, self._refill_rate(self._clock())))

    # -- internals (lock held) ---------------------------------------------------------------------
    def _forget(self, now: float) -> None:
        while self._answers and self._answers[0][0] < now - self.window:
            self._answers.popleft()
        while self._sent and self._sent[0] < now - self.window:
            self._sent.popleft()

    def _quorum(self) -> bool:
        throttled = sum(1 for a in self._answers if a[2])
        return throttled >= self.quorum and throttled >= self.share * max(len(self._answers), 10 * self.quorum)

    def _refill_rate(self, now: float) -> float:
        """The service's refill rate: since an answer's call was sent, the calls sent after the answer and
        admitted, less what the bucket held (the answer's count, else 0), per second; the most of these over
        ``window / 40`` or more."""
        sent = sorted(a[1] for a in self._answers if not a[2])
        rates = [
            (len(sent) - bisect_right(sent, at) - (level or 0)) / (now - sent_at)
            for at, sent_at, _, level in self._answers
            if now - sent_at >= self.window / 40
        ]
        return max(rates, default=0.0)

    def _set_pace(self, now: float, pace: float) -> None:
        """The new pace, never below what the window admitted."""
        admitted = sum(1 for a in self._answers if not a[2])
        seen = min(self.window, max(self.window / 4, now - min((a[1] for a in self._answers), default=now)))
        floor = (admitted - min(self._most, admitted // 2)) / seen  # the bucket's refill over the window
        self._pace = self._base = max(pace, (1 - self.cut) * floor, 0.1)
        self._cut_at = now
        self.shared_events += 1


class Governor:
    """The limiters of the process, one per service limit (see the module docstring); thread-safe."""

    def __init__(self, endpoints: Mapping[str, str], **limiter_options: Any) -> None:
        self._endpoints = dict(endpoints)
        self._options = limiter_options
        self._largest: dict[str, int] = {}  # the largest subscription count each family has shown
        self._lock = threading.Lock()
        self._limiters: dict[str, Limiter] = {}
        self._joined: set[str] = set()  # family keys (with the subscription) under their subscription's limiter
        self._members: dict[str, dict[str, str]] = {}  # subscription -> its data-plane families seen: member -> key

    def _route(self, url: str) -> tuple[str, str, str | None]:
        """The family's key, the family's key in this subscription, and the subscription's (None: no subscription)."""
        key = limiter_key(url, self._endpoints)
        found = _SUBSCRIPTION.search(urlsplit(url).path)
        if found is None:
            return key, key, None
        return key, f"{key}|{found.group(1).lower()}", f"subscription|{found.group(1).lower()}"

    def _get(self, key: str) -> Limiter:
        found = self._limiters.get(key)
        if found is None:
            found = self._limiters[key] = Limiter(**self._options)
        return found

    def limiter(self, url: str) -> Limiter:
        key, member, subscription = self._route(url)
        with self._lock:
            if subscription and (key.startswith("arm|") or member in self._joined):
                return self._get(subscription)
            if subscription:
                self._members.setdefault(subscription, {})[member] = key
            return self._get(key)

    def answered(
        self,
        url: str,
        sent_at: float,
        *,
        headers: Mapping[str, str] | None = None,
        throttled: bool = False,
    ) -> tuple[Limiter, bool]:
        """The service answered a call to ``url`` sent at ``sent_at``: its family may join its subscription's
        limiter, which then takes the answer. Returns that limiter, and whether shared throttling now paces it."""
        counts = {k: v for k, v in (headers or {}).items() if k.lower().startswith(REMAINING_PREFIX)}  # read once
        self.declared(url, remaining_from_headers(counts, "subscription-"), throttled=throttled)
        limiter = self.limiter(url)
        shared = limiter.answered(sent_at, throttled=throttled, remaining=remaining_from_headers(counts))
        if shared:
            self._join_throttled_together(url)
        return limiter, shared

    def _join_throttled_together(self, url: str) -> None:
        """Shared throttling found for ``url``'s limiter: the data-plane families of its subscription whose
        limiters found it in the same ``window`` as the subscription's join the subscription's limiter (one
        bucket, it seems: their answers together tell its refill)."""
        subscription = self._route(url)[2]
        if subscription is None:
            return
        with self._lock:
            target = self._limiters.get(subscription)
            if target is None or not target.shared_lately():
                return
            families = self._members.get(subscription, {})
            candidates = [(m, k) for m, k in families.items() if m not in self._joined]
        for m, k in candidates:
            source = self._limiters.get(k)
            if source is not None and source.shared_lately():
                self._join(m, k, subscription)

    def declared(self, url: str, count: int | None, *, throttled: bool = False) -> None:
        """An answer to ``url`` (a 429: ``throttled``) showed its subscription's counter at ``count`` (None: no
        such header)."""
        key, member, subscription = self._route(url)
        if count is None or not subscription or key.startswith("arm|"):
            return
        with self._lock:
            largest = self._largest.get(member)
            self._largest[member] = max(count, largest or 0)
            if member in self._joined or not (throttled or (largest is not None and count < largest)):
                return
        self._join(member, key, subscription)

    def _join(self, member: str, key: str, subscription: str) -> None:
        """``member`` (a family in a subscription) draws on the subscription's bucket from now on."""
        with self._lock:
            if member in self._joined:
                return
            self._joined.add(member)
            source = self._limiters.get(key)
            target = self._get(subscription)
        if source is not None:
            target.absorb(source)

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            limiters = dict(self._limiters)
        return {key: limiter.stats() for key, limiter in limiters.items()}


__all__ = ["Governor", "Limiter", "limiter_key", "remaining_from_headers"]
