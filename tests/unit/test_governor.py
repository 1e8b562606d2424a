"""The rate governor (shared.domain.governor): pure logic on a fake clock, and its place in the HTTP seam.

No wall-clock timing here: "seconds" are the fake clock's, and the simulation of a throttling service is a
deterministic discrete-event loop, so the assertions are about the algorithm, not about this machine.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

import pytest

from shared.adapters.aml_http import AzureMLHttp
from shared.domain.errors import NotFoundError, ThrottledError
from shared.domain.governor import Governor, Permit, remaining_from_headers
from shared.domain.urls import UrlPolicy
from tests.support.loopback import FakeCredential, LoopbackServer, Reply, Seen


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def governor(clock: FakeClock, **knobs: object) -> Governor:
    return Governor(clock=clock, sleep=clock.sleep, **knobs)  # type: ignore[arg-type]


def grant(gov: Governor) -> Permit:
    reservation = gov.try_acquire()
    assert reservation.permit is not None and reservation.wait == 0, reservation
    return reservation.permit


def run_calls(gov: Governor, clock: FakeClock, count: int, seconds: float) -> None:
    """``count`` calls spread over ``seconds`` (or paced slower by the governor), each admitted at once."""
    for _ in range(count):
        gov.succeeded(gov.acquire())
        clock.now += seconds / count


# -- pause and epochs ------------------------------------------------------------------------------------------------


def test_unlimited_until_the_first_429():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=4)
    for _ in range(1000):
        gov.succeeded(grant(gov))
    assert gov.rate is None and gov.events == 0 and clock.slept == []


def test_a_429_pauses_every_thread_for_its_retry_after():
    clock = FakeClock()
    gov = governor(clock)
    a, b = grant(gov), grant(gov)
    gov.throttled(a, 2.0)
    waiting = gov.try_acquire()
    assert waiting.permit is None and waiting.wait == pytest.approx(2.0)
    gov.succeeded(b)  # the other call in flight still completes
    clock.now += 2.0
    assert gov.try_acquire().permit is not None


def test_a_429_without_retry_after_pauses_for_the_default():
    clock = FakeClock()
    gov = governor(clock, default_pause=0.75)
    gov.throttled(grant(gov), None)
    assert gov.try_acquire().wait == pytest.approx(0.75)


def test_the_429s_of_calls_already_in_flight_are_one_event():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=8)
    run_calls(gov, clock, 100, 0.5)
    permits = [grant(gov) for _ in range(8)]
    for permit in permits:
        gov.throttled(permit, 1.0)
    assert gov.throttled_count == 8 and gov.events == 1
    assert gov.inflight == 0


def test_the_first_event_paces_at_half_the_rate_that_was_sent():
    clock = FakeClock()
    gov = governor(clock)
    run_calls(gov, clock, 99, 0.5)  # 99 calls + the throttled one in 0.5 s: 200 calls/s sent
    gov.throttled(grant(gov), 1.0)
    assert gov.rate == pytest.approx(100, rel=0.02)


def test_a_permit_reserved_before_an_event_is_given_back():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=8)
    run_calls(gov, clock, 99, 0.5)
    gov.throttled(grant(gov), 0.0)  # paced from now on
    clock.now += 1.0
    first = grant(gov)
    reserved = gov.try_acquire()
    assert reserved.permit is not None and reserved.wait and reserved.wait > 0
    gov.throttled(first, 0.5)  # an event while the second one sleeps towards its slot
    clock.now += reserved.wait
    assert gov.confirm(reserved.permit) is False
    assert gov.inflight == 0


def test_a_503_with_retry_after_pauses_and_halves_concurrency_but_sets_no_rate():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=8)
    first, second = grant(gov), grant(gov)
    gov.throttled(first, 3.0, rate_limited=False)
    gov.throttled(second, 3.0, rate_limited=False)  # in flight already: the same overload
    assert gov.rate is None and gov.events == 0 and gov.limit == 4
    assert gov.try_acquire().wait == pytest.approx(3.0)


# -- pacing ------------------------------------------------------------------------------------------------------------


def test_acquire_paces_calls_at_the_rate():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=1000)
    run_calls(gov, clock, 99, 0.5)
    gov.throttled(grant(gov), 1.0)
    rate = gov.rate
    assert rate is not None
    clock.now += 1.0
    times = []
    for _ in range(50):
        permit = gov.acquire()
        times.append(clock.now)
        gov.release(permit)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1 / rate, rel=0.01)


def test_the_rate_grows_back_on_a_streak_of_successes_but_at_most_twice():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=1000)
    run_calls(gov, clock, 99, 0.5)
    gov.throttled(grant(gov), 0.0)
    base = gov.rate
    assert base is not None
    for _ in range(int(base * 3)):  # three seconds' worth of successes
        gov.succeeded(gov.acquire())
    grown = gov.rate
    assert grown is not None and grown > base
    for _ in range(int(base * 1000)):
        gov.succeeded(gov.acquire())
    assert gov.rate == pytest.approx(2 * base)


def test_after_a_long_cycle_the_rate_is_between_what_was_admitted_and_what_was_throttled():
    """Lower bound: what was admitted between two events, over the time between them; upper bound: the
    pacing rate that was throttled."""
    clock = FakeClock()
    gov = governor(clock, max_concurrency=1000)
    run_calls(gov, clock, 99, 0.5)
    gov.throttled(grant(gov), 0.0)
    clock.now += 1.0
    run_calls(gov, clock, 600, 10.0)  # 60/s admitted for 10 s, then throttled
    throttled_at = gov.rate
    assert throttled_at is not None
    gov.throttled(grant(gov), 0.0)
    rate = gov.rate
    assert rate is not None and 600 / 11.0 <= rate < throttled_at


# -- concurrency -------------------------------------------------------------------------------------------------------


def test_concurrency_is_a_limit_that_halves_on_an_event_and_grows_by_one_per_window():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=8)
    permits = [grant(gov) for _ in range(8)]
    blocked = gov.try_acquire()
    assert blocked.permit is None and blocked.wait is None
    gov.throttled(permits[0], 0.0)
    for permit in permits[1:]:
        gov.release(permit)
    assert gov.limit == 4
    clock.now += 10
    for _ in range(4):
        gov.succeeded(gov.acquire())
    assert gov.limit == 5
    for _ in range(1000):
        gov.succeeded(gov.acquire())
    assert gov.limit == 8


def test_concurrency_is_not_cut_below_what_the_rate_needs_at_the_latency():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=64)
    for _ in range(400):  # 1 s of calls, each taking 200 ms
        permit = grant(gov)
        clock.now += 0.2
        gov.succeeded(permit)
        clock.now -= 0.2 - 1 / 400
    gov.throttled(grant(gov), 0.0)
    rate = gov.rate
    assert rate is not None
    assert gov.limit >= math.ceil(rate * 0.2)


# -- x-ms-ratelimit-remaining ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ms-ratelimit-remaining-subscription-reads": "11999"}, 11999),
        ({"x-ms-ratelimit-remaining-subscription-reads": "12", "x-ms-ratelimit-remaining-tenant-reads": "7"}, 7),
        ({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/GetOperation3Min;1199,Microsoft.Compute/Get30Min;2"}, 2),
        ({"content-type": "application/json"}, None),
        ({"x-ms-ratelimit-remaining-subscription-reads": "n/a"}, None),
        ({}, None),
    ],
)
def test_remaining_counts_are_read_from_the_headers(headers, expected):
    assert remaining_from_headers(headers) == expected


def test_a_low_remaining_count_slows_down_before_any_429():
    clock = FakeClock()
    gov = governor(clock)
    run_calls(gov, clock, 99, 0.5)
    gov.succeeded(grant(gov), {"x-ms-ratelimit-remaining-subscription-reads": "3"})
    assert gov.soft_events == 1 and gov.rate is not None
    reservation = gov.try_acquire()
    assert reservation.permit is not None and reservation.wait == 0  # paced, but no pause
    gov.succeeded(reservation.permit, {"x-ms-ratelimit-remaining-subscription-reads": "2"})
    assert gov.soft_events == 1  # at most one a second


def test_a_high_remaining_count_changes_nothing():
    clock = FakeClock()
    gov = governor(clock)
    for _ in range(100):
        gov.succeeded(grant(gov), {"x-ms-ratelimit-remaining-subscription-reads": "11000"})
    assert gov.rate is None and gov.soft_events == 0


# -- against a simulated token-bucket service --------------------------------------------------------------------------


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    worker: int = field(compare=False)
    action: str = field(compare=False)
    permit: Permit | None = field(compare=False, default=None)


@dataclass
class SimResult:
    seconds: float
    calls: int
    throttled: int


def simulate(gov: Governor, clock: FakeClock, *, rate: float, burst: int, calls: int, workers: int, latency: float) -> SimResult:
    """``workers`` threads export ``calls`` items through ``gov`` from a service that is a token bucket
    (``rate``, ``burst``) answering 429 with a whole-second Retry-After, like the emulator."""
    tokens, stamp = float(burst), 0.0
    seq = itertools.count()
    queue: list[_Event] = [_Event(0.0, next(seq), w, "acquire") for w in range(workers)]
    blocked: list[int] = []
    done = throttled = 0
    while queue and done < calls:
        event = heapq.heappop(queue)
        clock.now = event.at
        if event.action == "acquire":
            reservation = gov.try_acquire()
            if reservation.permit is None:
                if reservation.wait is None:
                    blocked.append(event.worker)
                else:
                    heapq.heappush(queue, _Event(clock.now + reservation.wait, next(seq), event.worker, "acquire"))
            elif reservation.wait:
                heapq.heappush(
                    queue, _Event(clock.now + reservation.wait, next(seq), event.worker, "confirm", reservation.permit)
                )
            else:
                heapq.heappush(queue, _Event(clock.now + latency, next(seq), event.worker, "answer", reservation.permit))
        elif event.action == "confirm":
            assert event.permit is not None
            action = "answer" if gov.confirm(event.permit) else "acquire"
            heapq.heappush(
                queue,
                _Event(
                    clock.now + (latency if action == "answer" else 0),
                    next(seq),
                    event.worker,
                    action,
                    event.permit if action == "answer" else None,
                ),
            )
        else:
            assert event.permit is not None
            tokens, stamp = min(burst, tokens + (clock.now - stamp) * rate), clock.now
            if tokens >= 1:
                tokens -= 1
                done += 1
                gov.succeeded(event.permit)
            else:
                throttled += 1
                gov.throttled(event.permit, max(1, math.ceil((1 - tokens) / rate)))
            heapq.heappush(queue, _Event(clock.now, next(seq), event.worker, "acquire"))
            for worker in blocked:
                heapq.heappush(queue, _Event(clock.now, next(seq), worker, "acquire"))
            blocked = []
    return SimResult(clock.now, done, throttled)


@pytest.mark.parametrize(
    ("rate", "burst", "workers", "latency"),
    [
        (150, 30, 8, 0.02),  # the bench's rate-bound case
        (150, 30, 32, 0.02),  # more threads than the limit needs
        (25, 250, 16, 0.15),  # Azure Resource Manager's reads bucket, real-world latency
        (60, 60, 8, 0.05),
    ],
)
def test_against_a_token_bucket_it_learns_the_rate_and_runs_just_under_it(rate, burst, workers, latency):
    clock = FakeClock()
    gov = governor(clock, max_concurrency=workers)
    calls = int(rate * 60)
    result = simulate(gov, clock, rate=rate, burst=burst, calls=calls, workers=workers, latency=latency)
    ideal = (calls - burst) / rate
    assert result.calls == calls
    assert result.throttled < 0.02 * calls, gov.stats()
    assert result.seconds <= 1.2 * ideal, (result, ideal, gov.stats())
    assert gov.rate is not None and gov.rate <= rate * 1.05, gov.stats()


def test_against_an_unlimited_service_it_never_slows_down():
    clock = FakeClock()
    gov = governor(clock, max_concurrency=8)
    result = simulate(gov, clock, rate=1e9, burst=10**9, calls=2000, workers=8, latency=0.02)
    assert result.throttled == 0 and gov.rate is None
    assert result.seconds == pytest.approx(2000 / 8 * 0.02, rel=0.01)


# -- in the HTTP seam --------------------------------------------------------------------------------------------------


def _client(base: str, gov: Governor, sleep: object) -> AzureMLHttp:
    policy = UrlPolicy(
        {
            "arm": f"{base}/arm",
            "modelmanagement": f"{base}/mms/{{location}}",
            "experiments": f"{base}/exp/{{location}}",
            "aether": f"{base}/aether/{{location}}",
        }
    )
    return AzureMLHttp(
        FakeCredential(),
        scope="https://management.core.windows.net/.default",
        policy=policy,
        max_attempts=3,
        connect_timeout=2,
        read_timeout=5,
        sleep=sleep,
        governor=gov,
    )


def test_every_attempt_goes_through_the_governor_and_a_429_teaches_it():
    clock = FakeClock()
    gov = governor(clock)
    answers = iter([Reply(429, {"Retry-After": "2"}, {"error": {"code": "TooManyRequests"}}), Reply(200, {}, {"value": []})])

    def route(seen: Seen, server: LoopbackServer) -> Reply:
        return next(answers)

    with LoopbackServer(route) as server:
        aml = _client(server.base_url, gov, clock.sleep)
        assert aml.get(f"{server.base_url}/arm/subscriptions/x").body == {"value": []}
    assert gov.throttled_count == 1 and gov.events == 1 and gov.rate is not None
    assert 2.0 in clock.slept  # the Retry-After, waited in the governor (for every thread)
    assert gov.inflight == 0


def test_a_permanent_answer_counts_as_admitted_and_frees_the_permit():
    clock = FakeClock()
    gov = governor(clock)
    with LoopbackServer(lambda seen, server: Reply(404, {}, {"error": {"code": "NotFound"}})) as server:
        aml = _client(server.base_url, gov, clock.sleep)
        with pytest.raises(NotFoundError):
            aml.get(f"{server.base_url}/arm/subscriptions/x")
    assert gov.inflight == 0 and gov.throttled_count == 0


def test_giving_up_on_429s_still_frees_every_permit():
    clock = FakeClock()
    gov = governor(clock)
    with LoopbackServer(lambda seen, server: Reply(429, {"Retry-After": "1"}, {})) as server:
        aml = _client(server.base_url, gov, clock.sleep)
        with pytest.raises(ThrottledError):
            aml.get(f"{server.base_url}/arm/subscriptions/x")
    assert gov.inflight == 0 and gov.throttled_count == 3


def test_each_origin_has_its_own_governor_shared_by_its_calls():
    aml = AzureMLHttp(
        FakeCredential(),
        scope="https://management.core.windows.net/.default",
        policy=UrlPolicy({"arm": "https://management.azure.com"}),
        max_concurrency=4,
    )
    arm = aml.governor("https://management.azure.com/subscriptions/x")
    assert aml.governor("https://MANAGEMENT.azure.com/other") is arm
    assert aml.governor("https://westeurope.experiments.azureml.net/history") is not arm
    assert arm.max_concurrency == 4
