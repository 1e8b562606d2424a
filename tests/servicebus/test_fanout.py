"""Fan-out and fan-in in the Function app path (contract 6.2), with competing consumers on the request queue
(the real ``ServiceBusRequestQueue`` adapter over the signature-checked Service Bus fake), real blob state
(Azurite) and the emulator: one outcome per request whatever the consumers do — one dies mid-workspace,
two workspaces finish at the same moment, messages are redelivered, a workspace keeps failing."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.bootstrap import build_services
from shared.domain.errors import RetryableError
from shared.ports import ApiResponse, StateConflict
from shared.service import fanout
from shared.service.processor import Services, handle
from shared.service.state import StateStore
from shared.service.watchdog import sweep
from shared.settings import load_settings
from tests.support.bundles import DEMO_TARGET, RecordingPublisher, read_bundle
from tests.support.queue_broker import Broker, Killed
from tools.emulator import DEMO_SUBSCRIPTION, JANE, SECOND_LOCATION, SECOND_WORKSPACE, TENANT_SUBSCRIPTIONS, EmulatorServer

pytestmark = pytest.mark.integration

SECOND = {**DEMO_TARGET, "workspace": SECOND_WORKSPACE, "location": SECOND_LOCATION}
KINDS = ["models", "computes", "experiments", "runs", "metrics"]


class Clock:
    """The state store's clock: a test moves it past leases and idle times instead of sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def tenant(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator.configure(tenant_workspaces=6)
    emulator.reset()
    yield emulator
    emulator.configure(tenant_workspaces=0)
    emulator.reset()


@pytest.fixture
def settings(dsr_env: dict[str, str]) -> Any:
    return dataclasses.replace(
        load_settings(),
        lease_seconds=5,
        watchdog_idle_seconds=1,
        max_delivery_count=3,
        workspace_concurrency=2,
        checkpoint_seconds=0.2,
    )


def consumer(
    settings: Any,
    publisher: RecordingPublisher,
    clock: Clock,
    *,
    aml: Callable[[Any], Any] | None = None,
    backend: Callable[[Any], Any] | None = None,
    bundles: Callable[[Any], Any] | None = None,
) -> Services:
    """One Function instance: its own clients and state store (sharing the storage and the clock)."""
    services = build_services(settings, publishers=[publisher], with_servicebus=False)
    real = services.state()
    store = StateStore(backend(real.backend) if backend else real.backend, lease_seconds=settings.lease_seconds, clock=clock)
    the_aml = aml(services.aml()) if aml else services.aml()
    the_bundles = bundles(services.bundles()) if bundles else services.bundles()
    return dataclasses.replace(services, state=lambda: store, aml=lambda: the_aml, bundles=lambda: the_bundles)


class KillingAml:
    """The AzureML port of a consumer that dies after ``after`` GETs."""

    def __init__(self, inner: Any, switch: threading.Event, after: int) -> None:
        self.inner, self.switch, self.after, self.gets = inner, switch, after, 0
        self.lock = threading.Lock()

    def get(self, url: str) -> ApiResponse:
        with self.lock:
            self.gets += 1
            if self.switch.is_set() or self.gets > self.after:
                self.switch.set()
                raise Killed
        return self.inner.get(url)

    def delete(self, url: str) -> ApiResponse:
        raise AssertionError("an export deletes nothing")

    def post(self, url: str, body: dict[str, Any]) -> ApiResponse:
        return self.inner.post(url, body)


class DeadBackend:
    """The state backend of a dead consumer: it writes nothing more (its lease simply lapses)."""

    def __init__(self, inner: Any, switch: threading.Event) -> None:
        self.inner, self.switch = inner, switch

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.switch.is_set():
                if name == "replace":
                    raise StateConflict("dead")
                raise Killed
            return method(*args, **kwargs)

        return call


def _discover_request(make_request: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    body = make_request(
        scope="subject",
        subject={"objectId": JANE.object_id, "upn": JANE.upn},
        resourceKinds=KINDS,
        discover={"subscriptions": [DEMO_SUBSCRIPTION, *TENANT_SUBSCRIPTIONS]},
    )
    del body["targets"]
    return body


def _content(env: dict[str, str], request_id: str) -> dict[str, list[str]]:
    manifest, files = read_bundle(env, request_id)
    assert manifest["requestId"] == request_id
    out = {}
    for name, lines in files.items():
        ids = [line["id"] for line in lines]
        assert len(ids) == len(set(ids)), f"duplicates in {name}"
        out[name.removeprefix(f"{request_id}/")] = sorted(ids)
    return out


def test_competing_consumers_and_one_killed_mid_workspace_give_one_outcome_and_the_cli_bundle(
    settings, dsr_env, tenant, make_request, publisher
):
    # GIVEN a discovered export over 8 workspaces, and three consumers, one of which dies mid-workspace
    clock = Clock()
    switch = threading.Event()
    dying = consumer(
        settings, publisher, clock, aml=lambda a: KillingAml(a, switch, after=3), backend=lambda b: DeadBackend(b, switch)
    )
    consumers = [dying, consumer(settings, publisher, clock), consumer(settings, publisher, clock)]
    broker = Broker()
    body = _discover_request(make_request)
    broker.sender.send_request(body, message_id=body["requestId"])
    # WHEN the consumers drain the queue
    broker.run(consumers)
    # THEN the dying consumer died holding a workspace, whose request is not finished yet
    assert switch.is_set()
    assert publisher.events == []
    # WHEN its lease lapses and the watchdog runs, and the living consumers drain the queue again
    clock.offset += 600
    tally = sweep(consumers[1], broker.sender)
    assert tally == {"requeued": 1, "failed": 0}
    broker.run(consumers[1:])
    # THEN exactly one outcome was published, listing every workspace once
    [event] = publisher.events
    data = event["data"]
    assert data["status"] == "completed", data["errors"]
    assert data["discovered"] == 8 and len({w["workspace"] for w in data["workspaces"]}) == 8
    assert len([v for _, v in broker.verdicts if v.outcome is not None]) == 1
    # AND no outcome of a workspace of its own ever went out, and nothing went to the dead-letter queue
    assert all(e["data"]["requestId"] == body["requestId"] for e in publisher.events) and broker.dead == []
    # AND the bundle is exactly the one dsr process makes of the same request, without duplicates
    fanned = _content(dsr_env, body["requestId"])
    again = {**body, "requestId": body["requestId"] + "-cli"}
    cli_event = handle(json.dumps(again), build_services(settings, publishers=[RecordingPublisher()], with_servicebus=False))
    assert cli_event["data"]["workspaces"] == data["workspaces"]
    assert _content(dsr_env, again["requestId"]) == fanned and fanned


def test_two_workspaces_finishing_together_publish_one_outcome_and_write_one_manifest(
    settings, dsr_env, emulator, make_request, publisher, monkeypatch
):
    # GIVEN two workspaces whose children will record their results at the same moment
    clock = Clock()
    manifests: list[str] = []

    class CountingBundles:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def put_json(self, name: str, document: Any) -> None:
            manifests.append(name)
            self.inner.put_json(name, document)

    consumers = [consumer(settings, publisher, clock, bundles=CountingBundles) for _ in range(2)]
    body = make_request(targets=[DEMO_TARGET, SECOND], resourceKinds=KINDS)
    broker = Broker()
    broker.sender.send_request(body, message_id=body["requestId"])
    held = broker.take()
    assert held is not None
    broker.settle(held, broker.deliver(held, consumers[0]))  # the parent fans out
    together, both_recorded = threading.Barrier(2), threading.Barrier(2)
    record, finalize = fanout.record_result, fanout.finalize

    def at_once(*args: Any, **kwargs: Any) -> None:
        together.wait(timeout=60)
        record(*args, **kwargs)

    def finish_together(*args: Any, **kwargs: Any) -> Any:
        both_recorded.wait(timeout=60)  # each child now sees every result recorded
        return finalize(*args, **kwargs)

    monkeypatch.setattr(fanout, "record_result", at_once)
    monkeypatch.setattr(fanout, "finalize", finish_together)
    # WHEN two consumers each take one child and finish together
    children = [broker.take(), broker.take()]
    assert all(children) and broker.take() is None
    threads = [
        threading.Thread(target=lambda h=h, s=s: broker.settle(h, broker.deliver(h, s))) for h, s in zip(children, consumers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # THEN one outcome, one manifest
    [event] = publisher.events
    assert event["data"]["status"] == "completed" and len(event["data"]["workspaces"]) == 2
    assert manifests == [f"{body['requestId']}/manifest.json"]
    # WHEN both children are delivered again (a lock lost after the work was done)
    monkeypatch.setattr(fanout, "record_result", record)
    monkeypatch.setattr(fanout, "finalize", finalize)
    for child in children:
        assert child is not None
        assert broker.deliver(child, consumers[1]).action == "complete"
    # THEN still one outcome, one manifest
    assert len(publisher.events) == 1 and len(manifests) == 1


class FailingForWorkspace:
    """Azure ML unreachable for one workspace: every call to it fails as a dropped connection would."""

    def __init__(self, inner: Any, workspace: str) -> None:
        self.inner, self.workspace = inner, workspace

    def get(self, url: str) -> ApiResponse:
        if f"/workspaces/{self.workspace}" in url:
            raise RetryableError("connection failed", code="connection_failed")
        return self.inner.get(url)

    def delete(self, url: str) -> ApiResponse:
        return self.inner.delete(url)

    def post(self, url: str, body: dict[str, Any]) -> ApiResponse:
        return self.inner.post(url, body)


def test_a_workspace_that_keeps_failing_ends_as_a_failed_workspace_not_a_stuck_request(
    settings, dsr_env, emulator, make_request, publisher
):
    # GIVEN a two-workspace request whose second workspace never answers
    clock = Clock()
    consumers = [consumer(settings, publisher, clock, aml=lambda a: FailingForWorkspace(a, SECOND_WORKSPACE)) for _ in range(2)]
    body = make_request(targets=[DEMO_TARGET, SECOND], resourceKinds=["models"])
    broker = Broker()
    broker.sender.send_request(body, message_id=body["requestId"])
    # WHEN the consumers drain the queue (each failure is redelivered, up to DSR_MAX_DELIVERY_COUNT = 3)
    broker.run(consumers)
    # THEN one outcome: the request partially completed, the second workspace failed with the cause
    [event] = publisher.events
    assert event["data"]["status"] == "partially_completed"
    by_ws = {w["workspace"].rsplit("/", 1)[1]: w for w in event["data"]["workspaces"]}
    assert by_ws[DEMO_TARGET["workspace"]]["status"] == "completed"
    assert by_ws[SECOND_WORKSPACE]["status"] == "failed"
    assert by_ws[SECOND_WORKSPACE]["errors"][0]["code"] == "azure_ml_unavailable"
    # AND the child was redelivered before it was given up, and never dead-lettered
    child = [v.action for m, v in broker.verdicts if m.startswith(body["requestId"] + ":ws:1")]
    assert child == ["redeliver", "redeliver", "complete"] and broker.dead == []
