"""Trust nothing that comes back (issue #17): a hostile implementation of the endpoints, on loopback.

The seam tests talk to a scripted loopback server through the real ``AzureMLHttp``; the pipeline tests put
the workspace emulator behind a tampering proxy (tests/security/conftest.py) and let one endpoint answer
with something hostile: endless, trickling, huge, deep, NaN, dot ids, cross-path nextLinks, huge
Retry-After. Each must end with its coded error, within bounds set small here, memory flat.
No test measures speed: the bounds are the app's own settings, a hang would hit pytest-timeout.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from shared.adapters.aml_http import AzureMLHttp
from shared.domain.errors import UnreadableResponseError
from shared.service.delete import ARM_TERMINAL, Poller
from shared.service.processor import handle
from tests.security.test_ssrf import policy_for
from tests.support.bundles import DEMO_TARGET, app_services, blob_container, read_bundle
from tests.support.loopback import FakeCredential, LoopbackServer, Reply, Seen

MIB = 1024 * 1024


def seam(base: str, **options: Any) -> AzureMLHttp:
    settings: dict[str, Any] = {
        "max_attempts": 2,
        "connect_timeout": 2,
        "read_timeout": 2,
        "sleep": lambda s: None,
        "max_response_bytes": 1 * MIB,
        "response_deadline": 1.0,
    }
    settings.update(options)
    return AzureMLHttp(
        FakeCredential(), scope="https://management.core.windows.net/.default", policy=policy_for(base), **settings
    )


def endless() -> Iterator[bytes]:
    yield b'{"value": ["'
    while True:
        yield b"x" * 65536


def trickle(stop: float) -> Iterator[bytes]:
    yield b'{"value": ['
    while time.monotonic() < stop:  # a server that would go on for a minute, a byte at a time
        time.sleep(0.05)
        yield b" "
    yield b"]}"


def deep(levels: int) -> bytes:
    return b'{"value": ' + b"[" * levels + b"]" * levels + b"}"


# -- the seam: bounded reads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reply", "code"),
    [
        ("endless chunked body", lambda: Reply(200, {}, chunks=endless()), "response_too_large"),
        ("huge declared body", lambda: Reply(200, {}, b'{"value": "' + b"x" * (2 * MIB) + b'"}'), "response_too_large"),
        ("trickling body", lambda: Reply(200, {}, chunks=trickle(time.monotonic() + 60)), "response_too_slow"),
        ("10,000 levels deep", lambda: Reply(200, {}, deep(10_000)), "response_too_deep"),
        ("200 levels deep", lambda: Reply(200, {}, deep(200)), "response_too_deep"),
        ("huge error body", lambda: Reply(500, {}, chunks=endless()), "response_too_large"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_hostile_body_is_a_coded_error_with_flat_memory(name, reply, code):
    # GIVEN a server answering a GET with a hostile body
    with LoopbackServer(lambda seen, server: reply()) as server:
        aml = seam(server.base_url)
        tracemalloc.start()
        try:
            # WHEN the seam reads it
            with pytest.raises(UnreadableResponseError) as info:
                aml.get(f"{server.base_url}/mms/westeurope/api/models")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # THEN it ends with the coded error, once (the same server gives the same answer: not retried),
    # and what it held stayed near the 1 MiB limit, whatever the server would have sent
    assert info.value.code == code, name
    assert len(server.seen) == 1
    assert peak < 16 * MIB


def test_a_body_read_is_stopped_and_its_connection_not_reused():
    # GIVEN a server whose first answer is endless and whose second is fine
    replies = iter([Reply(200, {}, chunks=endless()), Reply(200, {}, {"value": []})])
    with LoopbackServer(lambda seen, server: next(replies)) as server:
        aml = seam(server.base_url)
        with pytest.raises(UnreadableResponseError):
            aml.get(f"{server.base_url}/arm/x")
        # THEN the next call reads its own answer, not the rest of the endless one
        assert aml.get(f"{server.base_url}/arm/y").body == {"value": []}


def test_nan_and_infinity_are_read_and_left_for_the_bundle_to_null():
    with LoopbackServer(lambda seen, server: Reply(200, {}, b'{"a": NaN, "b": Infinity, "c": 1e999}')) as server:
        body = seam(server.base_url).get(f"{server.base_url}/arm/x").body
    assert set(body) == {"a", "b", "c"}  # scrub_record turns them into null when written (tested below)


def test_a_huge_retry_after_on_a_call_is_capped():
    # GIVEN a 429 asking for 999999 seconds, then an answer
    slept: list[float] = []
    replies = iter([Reply(429, {"Retry-After": "999999"}), Reply(200, {}, {"ok": True})])
    with LoopbackServer(lambda seen, server: next(replies)) as server:
        aml = seam(server.base_url, max_retry_after=3.0, sleep=slept.append)
        assert aml.get(f"{server.base_url}/arm/x").body == {"ok": True}
    # THEN no wait was longer than DSR_MAX_RETRY_AFTER_SECONDS
    assert slept and max(slept) <= 3.0


def test_a_service_error_text_is_never_copied():
    # GIVEN a 400 whose error "code" is a sentence with a person's e-mail
    body = {"error": {"code": "Contact jane.doe@contoso.com for access", "message": "jane.doe@contoso.com said no"}}
    with LoopbackServer(lambda seen, server: Reply(400, {}, body)) as server:
        with pytest.raises(Exception) as info:
            seam(server.base_url).get(f"{server.base_url}/arm/x")
    # THEN our message carries the status only
    assert "jane" not in str(info.value) and info.value.code == "http_400"  # type: ignore[attr-defined]


# -- long-running operations -------------------------------------------------------------------------------------------


def test_an_lro_asking_for_a_huge_retry_after_ends_at_its_deadline():
    # GIVEN a status URL that is forever "InProgress" and asks to be polled again in 999999 seconds
    waits: list[float] = []

    def route(seen: Seen, server: LoopbackServer) -> Reply:
        return Reply(
            202 if seen.method == "DELETE" else 200,
            {"Azure-AsyncOperation": f"{server.base_url}/arm/op", "Retry-After": "999999"},
            {"status": "InProgress"},
        )

    with LoopbackServer(route) as server:
        aml = seam(server.base_url)
        first = aml.delete(f"{server.base_url}/arm/ws")
        now = [0.0]

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            now[0] += seconds

        poller = Poller(aml, deadline_seconds=30, max_retry_after=5, sleep=sleep, clock=lambda: now[0])
        # WHEN the poller follows it
        result = poller.follow(first, terminal=ARM_TERMINAL, status_field="status")
    # THEN every wait is capped, and the operation is reported as timed out at the deadline
    assert result == "timeout"
    assert waits and max(waits) <= 5 and sum(waits) <= 30


# -- through the real pipeline: emulator behind a tampering proxy ----------------------------------------------------------


def models_list(seen: Seen) -> bool:
    return seen.method == "GET" and "/models?" in seen.path


@pytest.fixture
def tight(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DSR_MAX_RESPONSE_BYTES": str(1 * MIB),
        "DSR_RESPONSE_DEADLINE_SECONDS": "1",
        "DSR_READ_TIMEOUT_SECONDS": "2",
        "DSR_MAX_ATTEMPTS": "2",
        "DSR_MAX_RETRY_AFTER_SECONDS": "0.2",
        "DSR_LRO_DEADLINE_SECONDS": "1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (lambda: Reply(200, {}, chunks=endless()), "response_too_large"),
        (lambda: Reply(200, {}, chunks=trickle(time.monotonic() + 60)), "response_too_slow"),
        (lambda: Reply(200, {}, deep(5_000)), "response_too_deep"),
    ],
    ids=["endless", "trickling", "deep"],
)
def test_an_export_reports_a_hostile_page_for_its_kind_and_finishes_the_rest(proxy, tight, make_request, publisher, answer, code):
    # GIVEN the models list answers with a hostile body
    proxy.intercept = lambda seen: answer() if models_list(seen) else None
    tracemalloc.start()
    try:
        # WHEN an export of models and computes runs
        event = handle(json.dumps(make_request(resourceKinds=["models", "computes"])), app_services(publisher))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN models carry the coded error, computes are exported, the request is not failed as a whole
    errors = {(e["code"], e["kind"]) for e in event["data"]["errors"]}
    assert errors == {(code, "models")}
    assert event["data"]["status"] == "partially_completed"
    [counts] = event["data"]["counts"].values()
    assert counts["computes"] > 0
    assert peak < 32 * MIB


@pytest.mark.integration
def test_nan_and_infinity_reach_the_bundle_as_null_and_it_parses_strictly(proxy, dsr_env, make_request, publisher):
    def tamper(seen: Seen, reply: Reply) -> Reply:
        if models_list(seen) and reply.status == 200:
            body = json.loads(reply.body)
            for model in body.get("value") or []:
                model["accuracy"] = float("nan")
                model["loss"] = float("inf")
            reply.body = json.dumps(body).encode()  # Python writes NaN and Infinity, as a sloppy server would
        return reply

    proxy.tamper = tamper
    request = make_request(resourceKinds=["models"])
    event = handle(json.dumps(request), app_services(publisher))
    assert event["data"]["status"] == "completed"
    manifest, files = read_bundle(dsr_env, request["requestId"])
    strict = {"parse_constant": lambda c: pytest.fail(f"{c} in a bundle")}
    for entry in manifest["files"]:
        raw = blob_container(dsr_env).download_blob(entry["name"]).readall()
        lines = [json.loads(line, **strict) for line in raw.splitlines() if line]
        assert lines and all(line["data"]["accuracy"] is None and line["data"]["loss"] is None for line in lines)
    assert manifest["nonFiniteNulled"] == 2 * sum(len(v) for v in files.values())


@pytest.mark.integration
@pytest.mark.parametrize("bad_id", ["..", ".", "%2E%2E"])
def test_a_dot_id_is_refused_and_never_sent(proxy, make_request, publisher, bad_id):
    def tamper(seen: Seen, reply: Reply) -> Reply:
        if models_list(seen) and reply.status == 200:
            body = json.loads(reply.body)
            if body.get("value"):
                body["value"][0]["id"] = bad_id
            reply.body = json.dumps(body).encode()
        return reply

    proxy.tamper = tamper
    body = make_request(operation="delete", resourceKinds=["models"])
    event = handle(json.dumps(body), app_services(publisher))
    # THEN the id is reported as invalid_id, and no request ever had a dot segment (encoded or not)
    assert "invalid_id" in {e["code"] for e in event["data"]["errors"]}
    for seen in proxy.seen:
        segments = seen.path.split("?")[0].split("/")
        assert not {".", "..", "%2E", "%2E%2E", "%2e%2e", "%252E%252E"} & set(segments), seen.path
    assert any(s.method == "DELETE" for s in proxy.seen), "the other models are still deleted"


@pytest.mark.integration
def test_a_next_link_to_another_workspace_on_the_same_host_is_not_followed(proxy, make_request, publisher):
    other = (
        f"/mms/westeurope/api/subscriptions/{DEMO_TARGET['subscriptionId']}/resourceGroups/rg-other"
        "/providers/Microsoft.MachineLearningServices/workspaces/ws-other/models"
    )

    def tamper(seen: Seen, reply: Reply) -> Reply:
        if models_list(seen) and reply.status == 200:
            body = json.loads(reply.body)
            body["nextLink"] = f"{proxy.base_url}{other}?$skipToken=x"
            reply.body = json.dumps(body).encode()
        return reply

    proxy.tamper = tamper
    event = handle(json.dumps(make_request(resourceKinds=["models"])), app_services(publisher))
    assert ("untrusted_url", "models") in {(e["code"], e["kind"]) for e in event["data"]["errors"]}
    assert not any("ws-other" in s.path for s in proxy.seen)


@pytest.mark.integration
def test_a_purge_whose_operation_never_ends_is_reported_as_lro_timeout(proxy, tight, make_request, publisher):
    # GIVEN the workspace purge is accepted, then its operation stays InProgress asking for 999999 s waits
    def intercept(seen: Seen) -> Reply | None:
        if seen.method == "DELETE" and "/workspaces/" in seen.path and "/models" not in seen.path and "/arm/" in seen.path:
            return Reply(202, {"Azure-AsyncOperation": f"{proxy.base_url}/arm/operations/never", "Retry-After": "999999"})
        if "/arm/operations/never" in seen.path:
            return Reply(200, {"Retry-After": "999999"}, {"status": "InProgress"})
        return None

    proxy.intercept = intercept
    body = make_request(
        operation="delete", resourceKinds=["models"], deleteWorkspace=True, confirmWorkspace=DEMO_TARGET["workspace"]
    )
    event = handle(json.dumps(body), app_services(publisher))
    # THEN the poll ended at DSR_LRO_DEADLINE_SECONDS with lro_timeout, not after 999999 s
    assert ("lro_timeout", "workspace") in {(e["code"], e["kind"]) for e in event["data"]["errors"]}
    assert any("/arm/operations/never" in s.path for s in proxy.seen)


@pytest.mark.integration
def test_a_subject_request_never_purges_a_workspace(proxy, make_request, publisher):
    body = make_request(
        operation="delete",
        scope="subject",
        subject={"objectId": "00000000-0000-0000-0000-000000000000"},
        deleteWorkspace=True,
        confirmWorkspace=DEMO_TARGET["workspace"],
    )
    event = handle(json.dumps(body), app_services(publisher))
    assert event["data"]["status"] == "rejected"
    assert [(e["code"], e["field"]) for e in event["data"]["errors"]] == [("workspace_delete_subject_scope", "deleteWorkspace")]
    assert proxy.seen == []


@pytest.mark.integration
def test_a_dry_run_with_delete_workspace_lists_the_purge(proxy, make_request, publisher):
    body = make_request(
        operation="delete", resourceKinds=["models"], dryRun=True, deleteWorkspace=True, confirmWorkspace=DEMO_TARGET["workspace"]
    )
    event = handle(json.dumps(body), app_services(publisher))
    planned = [p for p in event["data"]["plan"] if p["kind"] == "workspace"]
    assert len(planned) == 1 and planned[0]["result"] == "planned"
    [purge] = event["data"]["workspaceDeletes"].values()
    assert purge == {"result": "planned", "verified": False, "purge": True}
    assert not any(s.method == "DELETE" for s in proxy.seen)
