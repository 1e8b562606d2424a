"""The limiters (shared.domain.governor) on a fake clock, and their place in the HTTP seam.

No wall-clock timing: "seconds" are the fake clock's. Each test states one sentence of the module docstring.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.adapters.aml_http import AzureMLHttp
from shared.domain.governor import Governor, Limiter, limiter_key, remaining_from_headers
from shared.domain.urls import UrlPolicy
from tests.support.loopback import FakeCredential, LoopbackServer, Reply, Seen

RTT = 0.02


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limiter(clock: FakeClock, **knobs: Any) -> Limiter:
    return Limiter(clock=clock, sleep=clock.sleep, **knobs)


def clean_round_trips(lim: Limiter, clock: FakeClock, count: int, *, remaining: int | None = None) -> None:
    """``count`` round trips, each one call sent now and answered after ``RTT`` (no 429)."""
    for _ in range(count):
        sent = lim.acquire()
        clock.now += RTT
        lim.answered(sent, remaining=remaining)


def drive(
    lim: Limiter, clock: FakeClock, seconds: float, *, refill: float, burst: int, counts: bool, in_flight: int = 16
) -> list[tuple[float, bool]]:
    """Calls without end (``in_flight`` at most) against a service's token bucket, each answered after ``RTT``,
    with its remaining count when ``counts``; a 429 waits its Retry-After (1 s) before it is sent again.
    Returns (answered at, throttled) for every call."""
    tokens, stamp, pending, answers, retries = float(burst), clock.now, [], [], 0
    end = clock.now + seconds
    while clock.now < end:
        due = [p for p in pending if p[0] <= clock.now]
        for p in sorted(due):
            pending.remove(p)
            at, sent, admitted, left = p
            answers.append((at, not admitted))
            lim.answered(sent, throttled=not admitted, remaining=left if counts else None)
            retries += not admitted
        wait = lim.reserve() if len(pending) < in_flight else None
        if wait is None:
            clock.now = min([p[0] for p in pending] or [clock.now + lim.poll])
            continue
        sent = clock.now + wait
        tokens, stamp = min(float(burst), tokens + (sent - stamp) * refill), sent
        admitted = tokens >= 1
        tokens -= admitted
        pending.append((sent + RTT, sent, admitted, int(tokens)))
        if wait > 0:
            clock.now = min([sent] + [p[0] for p in pending])
    return answers


def shared_throttling(lim: Limiter, clock: FakeClock) -> None:
    """A full burst of calls, most of them answered 429: a limit every call is hitting."""
    sent = [lim.acquire() for _ in range(40)]
    clock.now += RTT
    for i, at in enumerate(sent):
        lim.answered(at, throttled=i % 4 != 0)


# -- a stray 429 -------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    calls=st.integers(min_value=30, max_value=400),
    strays=st.lists(st.integers(min_value=0, max_value=399), max_size=2, unique=True),
)
def test_stray_429s_delay_no_other_call_and_set_no_pace(calls: int, strays: list[int]):
    # GIVEN an unpaced limiter, WHEN at most quorum-1 answers in the window are 429s
    clock = FakeClock()
    lim = limiter(clock)
    for i in range(calls):
        sent = lim.acquire()
        clock.now += RTT / 4
        lim.answered(sent, throttled=i in strays)
    # THEN nothing paced: the next call goes at once
    assert lim.pace is None
    assert lim.reserve() == 0


@settings(max_examples=40, deadline=None)
@given(every=st.integers(min_value=25, max_value=10_000), seed=st.integers(0, 10_000))
def test_sporadic_429s_at_a_few_percent_never_hold_another_call(every: int, seed: int):
    # GIVEN answers where one in ``every`` (4% at most) is a 429: faults, not a limit
    clock = FakeClock()
    lim = limiter(clock)
    for i in range(2000):
        sent = lim.acquire()
        clock.now += 0.002
        lim.answered(sent, throttled=(i + seed) % every == 0)
    # THEN no call but the throttled one ever waited
    assert lim.pace is None and clock.slept == []


def test_a_429_telling_a_full_bucket_is_stray_and_one_telling_an_empty_one_is_shared():
    clock = FakeClock()
    lim = limiter(clock)
    clean_round_trips(lim, clock, 20, remaining=11999)
    # WHEN a 429 says the bucket still holds plenty: a fault of one call, not the limit
    lim.answered(clock.now - RTT, throttled=True, remaining=11999)
    assert lim.shared_events == 0 and lim.reserve() == 0
    # WHEN a 429 says the bucket is empty (ARM's 429s carry the count 0): the limit, shared by every call
    lim.answered(clock.now, throttled=True, remaining=0)
    # THEN no call goes until an answer brings a count again (or the count is too old to trust)
    assert lim.reserve() is None
    clock.now += lim.window / 8 + 0.01
    assert lim.reserve() == 0 and lim.reserve() is None  # then one at a time


# -- shared throttling -------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(calls=st.integers(min_value=20, max_value=400))
def test_shared_throttling_paces_the_other_calls_and_pauses_none(calls: int):
    clock = FakeClock()
    lim = limiter(clock)
    clean_round_trips(lim, clock, calls)
    # WHEN most calls of a burst are answered 429 (each of those waits its Retry-After in the seam)
    shared_throttling(lim, clock)
    # THEN the other calls go one per 1/pace from now: paced, none held for a Retry-After
    assert lim.pace is not None
    first, second = lim.reserve(), lim.reserve()
    assert first is not None and second is not None
    assert first <= 1.0 / lim.pace + 1e-9
    assert second - first == pytest.approx(1.0 / lim.pace)


@settings(max_examples=60, deadline=None)
@given(
    admitted=st.integers(min_value=20, max_value=600),
    extra=st.integers(min_value=0, max_value=300),
    paced=st.booleans(),
)
def test_without_counts_the_pace_never_falls_below_what_was_admitted(admitted: int, extra: int, paced: bool):
    # GIVEN ``admitted`` calls answered over the last second, then a storm of 429s
    clock = FakeClock()
    lim = limiter(clock)
    if paced:
        shared_throttling(lim, clock)
        clock.now += 5.0
    answered_at = []
    for _ in range(admitted):
        sent = lim.acquire()
        clock.now += 1.0 / admitted
        lim.answered(sent)
        answered_at.append(clock.now)
    for _ in range(admitted // 3 + 3 + extra):  # shared: a quarter of the answers or more
        lim.answered(clock.now - RTT, throttled=True)
        clock.now += 0.001
    # THEN the pace is at least the admitted rate over the window (it cannot collapse)
    in_window = sum(1 for at in answered_at if at >= clock.now - 0.001 - lim.window)
    assert lim.pace is not None
    assert lim.pace >= (1 - lim.cut) * in_window / lim.window - 1e-9


def test_a_429_while_paced_lowers_the_pace_and_holds_no_other_call_for_its_retry_after():
    clock = FakeClock()
    lim = limiter(clock)
    shared_throttling(lim, clock)
    clock.now += 2.0
    clean_round_trips(lim, clock, 3)
    before = lim.pace
    assert before is not None
    # WHEN one 429 arrives for a call sent after the last change
    sent = lim.acquire()
    clock.now += RTT
    lim.answered(sent, throttled=True)
    # THEN the pace is lower, and the next call waits for that pace only
    assert lim.pace is not None and lim.pace < before
    assert (lim.reserve() or 0) <= 1.0 / lim.pace + 1e-9


def test_decreases_come_at_most_once_per_round_trip():
    clock = FakeClock()
    lim = limiter(clock)
    shared_throttling(lim, clock)
    events = lim.shared_events
    # WHEN more 429s arrive for calls sent before that decrease
    for _ in range(30):
        lim.answered(clock.now - 0.5, throttled=True)
    # THEN the pace is not cut again
    assert lim.shared_events == events


# -- recovery -------------------------------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(refill=st.floats(min_value=50.0, max_value=300.0))
def test_clean_round_trips_bring_back_full_speed_within_seconds(refill: float):
    # GIVEN a limiter paced by a service bucket that answers 429s and tells no count
    clock = FakeClock()
    lim = limiter(clock)
    while lim.pace is None and clock.now < 10.0:
        drive(lim, clock, 0.25, refill=refill, burst=30, counts=False)
    assert lim.pace is not None
    # WHEN the limit is gone and every answer is clean (20 ms round trips, calls wanting more)
    drive(lim, clock, 0.5, refill=1e9, burst=10**9, counts=False)
    base, started = lim.pace, clock.now
    paces = {}
    while clock.now - started < 10.0:
        drive(lim, clock, 0.5, refill=1e9, burst=10**9, counts=False)
        paces[round(clock.now - started)] = lim.pace
    # THEN the pace grows slowly at first (the limit may be near), then fast: twice within 5 s, 5x within 10 s
    assert base is not None and all(p is not None for p in paces.values())
    assert paces[1] <= 1.2 * base
    assert paces[5] >= 2 * base and paces[10] >= 5 * base


def test_the_pace_grows_per_round_trip_not_per_answer():
    clock = FakeClock()
    lim = limiter(clock)
    shared_throttling(lim, clock)
    clock.now += 1.0
    # WHEN 50 answers arrive for calls all sent in the same round trip
    sent = [clock.now for _ in range(50)]
    clock.now += RTT
    lim.answered(sent[0])
    after_one = lim.pace
    for at in sent[1:]:
        lim.answered(at)
    # THEN the 49 others add nothing: the pace follows the round trips since it was set, not the answers
    assert after_one is not None and lim.pace == pytest.approx(after_one)


# -- remaining counts ------------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(refill=st.floats(min_value=20.0, max_value=400.0), burst=st.integers(min_value=10, max_value=250))
def test_with_counts_the_credit_keeps_the_bucket_from_emptying(refill: float, burst: int):
    # GIVEN a service bucket that tells its remaining count on every answer, and calls wanting far more
    assume(burst >= 4 * refill * RTT)  # a bucket that holds a few round trips' refill (ARM: 250, 25/s)
    clock = FakeClock()
    lim = limiter(clock)
    answers = drive(lim, clock, 4.0, refill=refill, burst=burst, counts=True)
    # THEN no call is throttled after the first round trip (sent before any count was known), and the
    # service admits close to its refill rate (after the burst)
    assert not any(throttled and at > RTT + 1e-9 for at, throttled in answers)
    assert len(answers) >= burst + 0.7 * refill * 3.0 - 30


@settings(max_examples=20, deadline=None)
@given(refill=st.floats(min_value=100.0, max_value=400.0), burst=st.integers(min_value=30, max_value=60))
def test_without_counts_the_pace_settles_near_the_refill_rate_with_few_429s(refill: float, burst: int):
    # GIVEN a service bucket that answers 429 (Retry-After: 1) when empty and tells no count, and calls wanting more
    clock = FakeClock()
    lim = limiter(clock)
    drive(lim, clock, 4.0, refill=refill, burst=burst, counts=False)
    before = lim.throttled
    answers = drive(lim, clock, 8.0, refill=refill, burst=burst, counts=False)
    # THEN after the first seconds the service admits most of what it can, and answers few 429s
    admitted = sum(1 for _, throttled in answers if not throttled)
    assert admitted >= 0.7 * refill * 8.0
    assert lim.throttled - before <= 0.06 * admitted
    assert lim.pace is not None and lim.pace <= 1.5 * refill


def test_remaining_from_headers_takes_the_smallest_count():
    headers = {
        "x-ms-ratelimit-remaining-subscription-reads": "11999",
        "X-MS-RATELIMIT-REMAINING-RESOURCE": "Microsoft.Compute/Get3Min;190,Microsoft.Compute/Get30Min;1199",
        "content-type": "application/json",
    }
    assert remaining_from_headers(headers) == 190
    assert remaining_from_headers({"content-type": "x"}) is None
    assert remaining_from_headers(None) is None


# -- one limiter per service limit ------------------------------------------------------------------------------------

ENDPOINTS = {
    "arm": "https://management.azure.com",
    "experiments": "https://{location}.experiments.azureml.net",
    "modelmanagement": "https://{location}.modelmanagement.azureml.net",
}


def test_arm_is_limited_per_subscription_and_each_service_on_its_own():
    sub_a = limiter_key("https://management.azure.com/subscriptions/AAA/resourceGroups/r?api-version=1", ENDPOINTS)
    assert sub_a == limiter_key("https://MANAGEMENT.azure.com/subscriptions/aaa/providers/x", ENDPOINTS)
    assert sub_a != limiter_key("https://management.azure.com/subscriptions/bbb/resourceGroups/r", ENDPOINTS)
    history = limiter_key("https://westeurope.experiments.azureml.net/history/v1.0/subscriptions/AAA/x", ENDPOINTS)
    assert history.startswith("experiments|") and history != sub_a
    assert history == limiter_key("https://westeurope.experiments.azureml.net/history/v1.0/subscriptions/bbb/y", ENDPOINTS)
    assert history != limiter_key("https://eastus.experiments.azureml.net/history/v1.0/subscriptions/AAA/x", ENDPOINTS)


def test_families_behind_one_host_are_told_apart_by_their_path():
    base = "http://127.0.0.1:8080"
    endpoints = {"arm": f"{base}/arm", "experiments": f"{base}/exp/{{location}}", "aether": f"{base}/aether/{{location}}"}
    assert limiter_key(f"{base}/exp/westeurope/history/v1.0/x", endpoints).startswith("experiments|")
    assert limiter_key(f"{base}/aether/westeurope/api/x", endpoints).startswith("aether|")
    assert limiter_key(f"{base}/arm/subscriptions/s1/x", endpoints).endswith("|s1")


def test_one_limiter_throttling_leaves_the_other_alone():
    clock = FakeClock()
    governor = Governor(ENDPOINTS, clock=clock, sleep=clock.sleep)
    a = governor.limiter("https://management.azure.com/subscriptions/aaa/x")
    b = governor.limiter("https://management.azure.com/subscriptions/bbb/x")
    shared_throttling(a, clock)
    assert a.pace is not None
    assert b.reserve() == 0 and b.pace is None


def test_families_throttled_with_their_subscription_join_its_limiter_and_others_keep_their_own():
    clock = FakeClock()
    governor = Governor(ENDPOINTS, clock=clock, sleep=clock.sleep)
    arm = "https://management.azure.com/subscriptions/aaa/x"
    history = "https://westeurope.experiments.azureml.net/history/v1.0/subscriptions/aaa/x"
    models = "https://westeurope.modelmanagement.azureml.net/api/subscriptions/aaa/x"
    # GIVEN both data-plane families of the subscription answered clean
    for url in (history, models):
        governor.answered(url, governor.limiter(url).acquire())
    assert governor.limiter(history) is not governor.limiter(arm)
    # WHEN ARM and run history are both throttled by most calls of a burst, telling no count
    for url in (arm, history):
        sent = [governor.limiter(url).acquire() for _ in range(40)]
        clock.now += RTT
        for i, at in enumerate(sent):
            governor.answered(url, at, throttled=i % 4 != 0)
    # THEN run history draws on the subscription's limiter (one bucket, it seems); model management, never
    # throttled, keeps its own
    assert governor.limiter(history) is governor.limiter(arm)
    assert governor.limiter(models) is not governor.limiter(arm)
    assert governor.limiter(models).pace is None


# -- in the HTTP seam ---------------------------------------------------------------------------------------------


def _client(base: str, sleep: Any) -> AzureMLHttp:
    policy = UrlPolicy({"arm": f"{base}/arm", "experiments": f"{base}/exp/{{location}}"})
    return AzureMLHttp(
        FakeCredential(),
        scope="https://management.core.windows.net/.default",
        policy=policy,
        max_attempts=3,
        connect_timeout=2,
        read_timeout=5,
        sleep=sleep,
    )


def test_a_429_makes_its_own_call_wait_the_retry_after_then_retry():
    answers = iter([Reply(429, {"Retry-After": "7"}, {}), Reply(200, {}, {"ok": True})])

    def route(seen: Seen, server: Any) -> Reply:
        return next(answers)

    slept: list[float] = []
    with LoopbackServer(route) as server:
        aml = _client(server.base_url, slept.append)
        response = aml.get(f"{server.base_url}/arm/subscriptions/s1/x")
        other = aml.limiter(f"{server.base_url}/arm/subscriptions/s1/y")
    assert response.body == {"ok": True}
    assert slept == [7.0]
    # the one 429 holds no other call of that limit
    assert other.pace is None and other.reserve() == 0


def test_success_answers_feed_the_remaining_count_to_the_limiter():
    fed: list[int | None] = []
    with LoopbackServer(lambda seen, server: Reply(200, {"x-ms-ratelimit-remaining-subscription-reads": "3"}, {})) as server:
        aml = _client(server.base_url, lambda s: None)
        lim = aml.limiter(f"{server.base_url}/arm/subscriptions/s1/x")
        answered = lim.answered
        lim.answered = lambda sent, **kw: (fed.append(kw.get("remaining")), answered(sent, **kw))  # type: ignore[method-assign]
        aml.get(f"{server.base_url}/arm/subscriptions/s1/x")
    assert fed == [3] and lim.throttled == 0
