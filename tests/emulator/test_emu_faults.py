"""Injected faults, rate limiting and latency: AML endpoints only, every family, paging requests included."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from tools.emulator import DEMO_RESOURCE_GROUP, DEMO_SUBSCRIPTION, DEMO_WORKSPACE, EmulatorConfig, EmulatorServer

from ._client import API, AmlClient, fetch_token, ws_path

WS = ws_path()
DEMO = (DEMO_SUBSCRIPTION, DEMO_RESOURCE_GROUP, DEMO_WORKSPACE)


def _urls(aml: AmlClient) -> dict[str, str]:
    """One GET per family, including a paging request and an aether GET."""
    models_page_2 = aml.get(aml.mms(f"api/{WS}/models"), API).json()["nextLink"]
    run = aml.get(aml.exp(f"history/v1.0/{WS}/experiments/churn-training/runs")).json()["value"][0]
    return {
        "arm": aml.arm(f"{WS}?api-version=2019-11-01"),
        "mms-page-2": models_page_2,
        "history": aml.exp(f"history/v1.0/{WS}/experiments"),
        "artifacts": aml.exp(f"artifact/v1.0/{WS}/artifacts/origins/ExperimentRun/containers/{run['runId']}"),
        "aether": aml.aether(f"api/v1.0/{WS}/Experiments/unknown-but-routed"),
    }


def test_429_faults_carry_retry_after_on_every_family(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN every AML request is throttled with Retry-After 3
    urls = _urls(aml)
    emu.configure(faults={"429": 1.0}, retry_after=3)
    for name, url in urls.items():
        # WHEN the request is sent
        response = aml.get(url)
        # THEN 429 with an integer Retry-After; not the bucket's 429, so ARM's remaining-reads header tells the
        # bucket's real count (no rate limit: 11999), and the data planes, which tell none, send none
        assert response.status_code == 429, name
        assert response.headers["Retry-After"] == "3"
        remaining = response.headers.get("x-ms-ratelimit-remaining-subscription-reads")
        assert remaining == ("11999" if name == "arm" else None), name
    # AND run history says RequestThrottled in its error body; ARM uses its own envelope
    assert aml.get(urls["history"]).json()["error"]["code"] == "RequestThrottled"
    assert aml.get(urls["arm"]).json()["error"]["code"] == "TooManyRequests"
    assert aml.get(urls["mms-page-2"]).json()["statusCode"] == 429


def test_drop_faults_close_the_connection_without_a_response(emu: EmulatorServer, aml: AmlClient) -> None:
    urls = _urls(aml)
    emu.configure(faults="drop=1")
    for name, url in urls.items():
        with pytest.raises(requests.ConnectionError):
            aml.get(url)
        entry = emu.requests()[-1]
        assert entry["dropped"] is True and entry["status"] is None and entry["fault"] == "drop", name


def test_faults_never_touch_the_token_or_control_endpoints(emu: EmulatorServer) -> None:
    # GIVEN every AML request fails
    emu.configure(faults={"503": 1.0}, rate=1, burst=1, latency_ms=0)
    # WHEN tokens and the control API are used many times
    for _ in range(5):
        assert fetch_token(emu)
        assert requests.get(f"{emu.base_url}/_emulator/requests", timeout=5).status_code == 200
    # THEN they all answered; the AML endpoint did not
    aml = AmlClient(emu)
    statuses = {aml.get(aml.arm(WS), API).status_code for _ in range(3)}
    aml.close()
    assert statuses <= {429, 503}


def test_503_faults_send_retry_after(emu: EmulatorServer, aml: AmlClient) -> None:
    emu.configure(faults={"503": 1.0}, retry_after=2)
    response = aml.get(aml.exp(f"history/v1.0/{WS}/experiments"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "ServiceUnavailable"


def test_a_retrying_client_still_collects_everything_under_random_faults(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN a third of all AML requests fail in one way or another
    emu.configure(faults="429=0.15,503=0.1,drop=0.1")
    # WHEN a client that retries walks paged lists of several styles
    models, _ = aml.walk_next_link(aml.mms(f"api/{WS}/models"), API)
    computes, _ = aml.walk_next_link(aml.arm(f"{WS}/computes"), API)
    experiments, _ = aml.walk_token(aml.exp(f"history/v1.0/{WS}/experiments"), "$continuationtoken")
    # THEN it still gets exactly the truth
    truth = emu.expected_ids(*DEMO)
    assert {m["id"] for m in models} == truth["models"]
    assert {c["id"] for c in computes} == truth["computes"]
    assert {e["experimentId"] for e in experiments} == truth["experiments"]
    # AND faults did happen, on paging requests too
    faulted = [r for r in emu.requests() if r["fault"]]
    assert {r["fault"] for r in faulted} == {"429", "503", "drop"}
    assert any("$skipToken" in r["query"] or "$skiptoken" in r["query"] for r in faulted)


def _fault_sequence(seed: int) -> list[str | None]:
    with EmulatorServer(EmulatorConfig(seed=seed, faults={"429": 0.3, "drop": 0.2})) as emu:
        aml = AmlClient(emu)
        for _ in range(60):
            try:
                aml.get(aml.arm(WS), API)
            except requests.ConnectionError:
                pass
        aml.close()
        return [r["fault"] for r in emu.requests() if r["family"] == "arm"]


def test_faults_are_seeded_and_roughly_as_frequent_as_asked() -> None:
    first, again, other = _fault_sequence(7), _fault_sequence(7), _fault_sequence(8)
    assert first == again
    assert first != other
    counts = Counter(first)
    assert 8 <= counts["429"] <= 30 and 4 <= counts["drop"] <= 22 and counts[None] >= 15


def test_rate_limit_is_a_token_bucket_over_aml_requests(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN a bucket of 3 refilled at 5 per second
    emu.configure(rate=5, burst=3)
    url = aml.exp(f"history/v1.0/{WS}/experiments")
    # WHEN 4 requests arrive at once
    statuses = [aml.get(url).status_code for _ in range(4)]
    # THEN the burst passes and the next one is throttled with a whole-second Retry-After
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    throttled = aml.get(url)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"]["code"] == "RequestThrottled"
    assert emu.requests()[-1]["fault"] == "throttled"
    # AND the count is told where counts are told: ARM's 429 says 0, run history's (like its answers) nothing
    assert "x-ms-ratelimit-remaining-subscription-reads" not in throttled.headers
    arm_throttled = aml.get(aml.arm(WS), API)
    assert arm_throttled.status_code == 429
    assert arm_throttled.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    # AND the token endpoint is not limited
    assert fetch_token(emu)
    # AND the bucket refills
    time.sleep(0.3)
    assert aml.get(url).status_code == 200


def test_latency_delays_aml_requests_only(emu: EmulatorServer, aml: AmlClient) -> None:
    emu.configure(latency_ms=150)
    started = time.monotonic()
    assert aml.get(aml.arm(WS), API).status_code == 200
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    fetch_token(emu)
    assert time.monotonic() - started < 0.15


def test_counts_are_told_on_arm_answers_by_default_on_every_answer_or_on_none(emu: EmulatorServer, aml: AmlClient) -> None:
    # GIVEN a bucket, and the three ways a service may tell (or not) what is left of it
    history = aml.exp(f"history/v1.0/{WS}/experiments")
    told = {}
    for mode, knobs in {
        "arm": {},
        "every": {"rate_headers": True},
        "none": {"arm_headers": False},
    }.items():
        emu.configure(**{"rate": 50, "burst": 20, "rate_headers": False, "arm_headers": True, **knobs})
        told[mode] = [
            "x-ms-ratelimit-remaining-subscription-reads" in aml.get(url, *extra).headers
            for url, extra in ((aml.arm(WS), (API,)), (history, ()))
        ]
    # THEN ARM only by default (as Azure), every family with rate_headers, none with arm_headers off
    assert told == {"arm": [True, False], "every": [True, True], "none": [False, False]}
